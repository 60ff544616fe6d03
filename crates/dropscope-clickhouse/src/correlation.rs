//! Correlation (SEMANTICS rule 17) on stage B, types `events` and
//! `event_with_properties` (rows `event::key::value` over the listed
//! events' properties). The population is stage B's
//! actors who reached `from_step`; success = reached the success step. The
//! span each actor is observed over (after its first step; until its last
//! step for converters, else the window) comes from `times`. ClickHouse
//! joins the population with the `events` table (identity overrides applied
//! as stage A does; every event of the person in the date range, global
//! filters not applied — as the engine reads them) and counts distinct
//! actors per event name and outcome. The statistics (odds ratio, Fisher p,
//! BH q, Woolf interval, support, adjusted odds ratios) are the engine's
//! own functions of those counts; the adjusted analysis gets its
//! (candidate bitmask, success) patterns from a second aggregation.

use std::collections::{BTreeMap, HashMap};

use dropscope_core::query::{CorrelationOptions, CorrelationType, FunnelQuery};
use dropscope_core::result::{CorrelationResult, PersonsResult};
use dropscope_core::QueryError;
use dropscope_engine::correlation::{
    adjust_candidates, apply_adjusted, empty_result, finish, simpson_from_counts, tested_rows,
    transition_for, validate_options,
};

use crate::dispatch::refuse_amb;
use crate::events::{overrides_sql, Part};
use crate::funnel::{actors_sql, FunnelSpec};
use crate::persons::{actors_of, Actors};
use crate::sql::quote_str;
use crate::ClickHouse;

/// The supported subset of correlation queries: every option the engine
/// takes, every breakdown (the Simpson check's segments, see [`simpson`]).
pub fn check(q: &FunnelQuery) -> Result<(), QueryError> {
    let opts = q.correlation.clone().unwrap_or_default();
    validate_options(q.steps.len(), &opts)?;
    Ok(())
}

/// Event names any step can match (left out of event rows; a step
/// matching any event leaves nothing out), as the engine.
fn step_event_names(q: &FunnelQuery) -> Vec<String> {
    let mut out = Vec::new();
    for s in &q.steps {
        match &s.action {
            Some(a) => {
                if a.match_any.iter().all(|alt| alt.event.is_some()) {
                    out.extend(a.match_any.iter().filter_map(|alt| alt.event.clone()));
                }
            }
            None => out.extend(s.event.clone()),
        }
    }
    out
}

/// The group type correlation aggregates by (`aggregation: group:N`), or
/// `None` for other actors: a group actor's properties are the group's.
pub(crate) fn group_of(q: &FunnelQuery) -> Option<u8> {
    q.aggregation
        .as_deref()
        .map(str::trim)
        .and_then(|a| a.strip_prefix("group:"))
        .and_then(|g| g.parse::<u8>().ok())
}

/// Stage B's rows with the actor key as `person`: the canonical person
/// (`UInt64`), or for other aggregations (`persons::actors_of`) the actor
/// key (`String`: a group key, distinct id, property value), which every
/// correlation query joins on.
fn keyed_actors_sql(db: &str, spec: &FunnelSpec, who: Actors) -> String {
    crate::persons::keyed(
        actors_sql(db, spec),
        who,
        "bd, amb, lvl, times, start, bits, pord_t, pord_s",
    )
}

/// Stage B actors with their outcome and observed span: columns `person`
/// (the actor key, see [`group_of`]),
/// `lvl`, `times`, `bits`, `amb`, `pop` (reached `from`), `success`, `t0`,
/// `t1` (until the last step reached for converters).
fn spans_sql(db: &str, q: &FunnelQuery, spec: &FunnelSpec, opts: &CorrelationOptions) -> String {
    let (from, to) = transition_for(q, spec.steps.len());
    let equal = u8::from(opts.equal_window);
    format!(
        "SELECT person, lvl, times, bits, amb, toUInt8(bitTest(bits, {from})) AS pop, \
         toUInt8(bitTest(bits, {to})) AS success, times[1] AS t0, \
         if(success = 1 AND {equal} = 0, times[arrayReduce('max', [{last}])], times[1] + {w}) AS t1 \
         FROM ({actors})",
        last = (0..spec.steps.len())
            .map(|k| format!("if(bitTest(bits, {k}), {}, 0)", k + 1))
            .collect::<Vec<_>>()
            .join(", "),
        w = spec.window_ms,
        actors = keyed_actors_sql(db, spec, actors_of(q)),
    )
}

/// Events of the actors in `spans` inside their span: columns `person`
/// (the actor key, see [`keyed_actors_sql`]),
/// `success`, `event`, `prop_keys`, `prop_values`. `cond` filters the
/// events before the join. The events are stage A's rows before any step
/// or filter (`events::joined_sql`: overrides applied, in range; for
/// non-person actors only those with a key, as the engine regroups them).
fn span_events_sql(db: &str, spec: &FunnelSpec, who: Actors, spans: &str, cond: &str) -> String {
    let key = match who {
        Actors::Persons => "person",
        Actors::Keys => "actor",
    };
    let uses = match &spec.data.actor {
        crate::events::ActorKind::Expr(e) => format!("{e} {cond}"),
        crate::events::ActorKind::Person => cond.to_string(),
    };
    format!(
        "SELECT person, success, event, prop_keys, prop_values FROM \
         (SELECT {key} AS person, event, timestamp AS ts, prop_keys, prop_values FROM ({rows}) \
          WHERE ({cond})) AS ev \
         ALL INNER JOIN (SELECT person, success, t0, t1 FROM ({spans})) AS sp USING person \
         WHERE ts > t0 AND ts < t1",
        rows = crate::events::joined_sql(db, spec, &uses, true),
    )
}

/// The rows each actor of `pop` has: columns `person`, `success`, `name`
/// (the row name: the event name, or `event::key::value`).
fn row_names_sql(
    db: &str,
    q: &FunnelQuery,
    spec: &FunnelSpec,
    opts: &CorrelationOptions,
    pop: &str,
) -> String {
    match opts.kind {
        CorrelationType::EventWithProperties => {
            let events: Vec<String> = opts.event_names.clone().unwrap_or_default();
            let mut skip: Vec<String> = opts
                .event_exclude_property_names
                .clone()
                .unwrap_or_default();
            skip.push(dropscope_core::event::ELEMENTS_KEY.to_string());
            let cond = if events.is_empty() {
                "0".to_string()
            } else {
                format!("event IN ({})", list_sql(&events))
            };
            format!(
                "SELECT person, success, concat(event, '::', k, '::', v) AS name FROM ({}) \
                 ARRAY JOIN prop_keys AS k, prop_values AS v WHERE k NOT IN ({})",
                span_events_sql(db, spec, actors_of(q), pop, &cond),
                list_sql(&skip)
            )
        }
        CorrelationType::Properties => {
            person_rows_sql(db, q, pop, &opts.names.clone().unwrap_or_default(), "")
        }
        CorrelationType::Events => {
            let steps = step_event_names(q);
            let cond = if steps.is_empty() {
                "1".to_string()
            } else {
                format!("event NOT IN ({})", list_sql(&steps))
            };
            let events = format!(
                "SELECT person, success, event AS name FROM ({})",
                span_events_sql(db, spec, actors_of(q), pop, &cond)
            );
            match &opts.with_person_properties {
                Some(names) => format!(
                    "{events} UNION ALL {}",
                    person_rows_sql(db, q, pop, names, dropscope_core::query::PERSON_ROW_PREFIX)
                ),
                None => events,
            }
        }
    }
}

/// Property rows of the actors of `pop`: columns `person`,
/// `success`, `name` = `{prefix}key::value` — for `$all` every property
/// the actor has (a person's JSON null value reads `''`), for named keys
/// the value or `''`. Current values: the person's (`person_props`, latest
/// version), or with a group (see [`group_of`]) the group's (a JSON null
/// removes the key, as `events::group_properties_sql`); other non-person
/// actors have none (the engine's `actor_props`).
fn person_rows_sql(db: &str, q: &FunnelQuery, pop: &str, names: &[String], prefix: &str) -> String {
    let props = match (actors_of(q), group_of(q)) {
        (Actors::Persons, _) => format!(
            "SELECT person_id AS person, argMax(keys, version) AS k0, argMax(values, version) AS v0, \
             argMax(nulls, version) AS z0, argMax(deleted, version) AS del FROM {db}.person_props \
             GROUP BY person_id"
        ),
        (Actors::Keys, Some(g)) => format!(
            "SELECT group_key AS person, keys AS k0, values AS v0, \
             arrayMap(k -> toUInt8(0), keys) AS z0, toUInt8(0) AS del FROM ({})",
            crate::events::group_properties_sql(db, g)
        ),
        (Actors::Keys, None) => "SELECT '' AS person, emptyArrayString() AS k0, \
             emptyArrayString() AS v0, emptyArrayUInt8() AS z0, toUInt8(0) AS del \
             FROM system.one WHERE 0"
            .to_string(),
    };
    let mut joined = format!(
        "SELECT person, success, if(del = 1, emptyArrayString(), k0) AS K, \
         if(del = 1, emptyArrayString(), v0) AS V, if(del = 1, emptyArrayUInt8(), z0) AS Z \
         FROM (SELECT person, success FROM ({pop})) AS pp ANY LEFT JOIN ({props}) AS pr USING person"
    );
    let at_step = q.correlation.as_ref().is_some_and(|c| c.properties_at_step);
    if at_step && actors_of(q) == Actors::Persons {
        joined = at_step_sql(db, q, pop, &joined);
    }
    let prefix = quote_str(prefix);
    let mut parts = Vec::new();
    if names.iter().any(|n| n == "$all") {
        parts.push(format!(
            "SELECT person, success, concat({prefix}, k, '::', if(z = 1, '', v)) AS name \
             FROM ({joined}) ARRAY JOIN K AS k, V AS v, Z AS z"
        ));
    }
    let named: Vec<String> = names.iter().filter(|n| *n != "$all").cloned().collect();
    if !named.is_empty() {
        parts.push(format!(
            "SELECT person, success, concat({prefix}, k, '::', \
             if(indexOf(K, k) = 0 OR Z[indexOf(K, k)] = 1, '', V[indexOf(K, k)])) AS name \
             FROM ({joined}) ARRAY JOIN [{}] AS k",
            list_sql(&named)
        ));
    }
    if parts.is_empty() {
        return format!("SELECT person, success, '' AS name FROM ({pop}) WHERE 0");
    }
    parts.join(" UNION ALL ")
}

/// `properties_at_step` for persons (the engine's `props_at`): the
/// person's properties as of its `from` step time `t` — every key some
/// `$set`/`$set_once` of the person's events (all time, any distinct id
/// of the person: `person_history` kinds 1 and 2) writes takes the value
/// of its last `$set` at or before `t`, else of its first `$set_once` at or
/// before `t`, else is absent; other keys keep their current value.
/// `current`: rows `person, success, K, V, Z` (current properties); the
/// same columns come back.
fn at_step_sql(db: &str, q: &FunnelQuery, pop: &str, current: &str) -> String {
    let (from, _) = transition_for(q, q.steps.len());
    let history = format!(
        "SELECT if(ov_pid != 0, ov_pid, own_id) AS person, ts, seq, kind, keys, values, nulls FROM \
         (SELECT distinct_id, timestamp AS ts, seq, kind, keys, values, nulls, own_id FROM {db}.person_history AS ph \
          ANY LEFT JOIN (SELECT distinct_id, any(own_id) AS own_id FROM {db}.distinct_ids GROUP BY distinct_id) AS di \
          USING distinct_id WHERE kind IN (1, 2)) AS hd \
         ANY LEFT JOIN ({ov}) AS ov USING distinct_id",
        ov = overrides_sql(db),
    );
    // Per (person, key): whether a write at or before t exists, and its
    // value by the rule above (null flag `z`).
    let per_key = format!(
        "SELECT person, k, countIf(kind = 1 AND ts <= tt) AS ns, countIf(kind = 2 AND ts <= tt) AS no, \
         argMaxIf(v, (ts, seq), kind = 1 AND ts <= tt) AS vs, argMaxIf(z, (ts, seq), kind = 1 AND ts <= tt) AS zs, \
         argMinIf(v, (ts, seq), kind = 2 AND ts <= tt) AS vo, argMinIf(z, (ts, seq), kind = 2 AND ts <= tt) AS zo \
         FROM (SELECT person, ts, seq, kind, k, v, z FROM ({history}) ARRAY JOIN keys AS k, values AS v, nulls AS z) AS hk \
         ALL INNER JOIN (SELECT person, times[{t}] AS tt FROM ({pop})) AS pt USING person \
         GROUP BY person, k",
        t = from + 1,
    );
    let touched = format!(
        "SELECT person, groupArray(k) AS TK, groupArrayIf(k, ns + no > 0) AS PK, \
         groupArrayIf(if(ns > 0, vs, vo), ns + no > 0) AS PV, groupArrayIf(if(ns > 0, zs, zo), ns + no > 0) AS PZ \
         FROM ({per_key}) GROUP BY person"
    );
    // (18.16: the lambdas' captured `TK` is also read outside them, in
    // the WHERE of this very query: one level further down it is lost.)
    format!(
        "SELECT person, success, \
         arrayConcat(arrayFilter((k, x) -> NOT has(TK, k), K0, K0), PK) AS K, \
         arrayConcat(arrayFilter((v, k) -> NOT has(TK, k), V0, K0), PV) AS V, \
         arrayConcat(arrayFilter((z, k) -> NOT has(TK, k), Z0, K0), PZ) AS Z FROM \
         (SELECT person, success, K0, V0, Z0, TK, PK, PV, PZ FROM \
          (SELECT person, success, K AS K0, V AS V0, Z AS Z0 FROM ({current})) AS cur \
          ANY LEFT JOIN ({touched}) AS tp USING person) WHERE NOT ignore(TK, K0, V0, Z0)"
    )
}

fn list_sql(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_str(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs an events (or event-with-properties) correlation.
pub fn run(
    ch: &ClickHouse,
    q: &FunnelQuery,
    spec: &FunnelSpec,
) -> Result<CorrelationResult, QueryError> {
    let db = ch.database();
    let opts = q.correlation.clone().unwrap_or_default();
    let (from_step, to_step) = transition_for(q, spec.steps.len());
    let all = spans_sql(db, q, spec, &opts);
    let r = ch
        .select_json(&format!(
            "SELECT max(amb) AS amb, countIf(pop = 1 AND success = 1) AS s, \
             countIf(pop = 1 AND success = 0) AS f FROM ({all}) FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    refuse_amb(&r["data"][0]["amb"])?;
    let big_s = r["data"][0]["s"].as_u64().unwrap_or(0);
    let big_f = r["data"][0]["f"].as_u64().unwrap_or(0);
    if big_s == 0 || big_f == 0 {
        return Ok(empty_result(big_s, big_f, from_step, to_step));
    }
    let pop = format!("SELECT * FROM ({all}) WHERE pop = 1");
    let names = row_names_sql(db, q, spec, &opts, &pop);
    let r = ch
        .select_json(&format!(
            "SELECT name AS event, countIf(success = 1) AS s, countIf(success = 0) AS f FROM \
             (SELECT person, any(success) AS success, name FROM ({names}) GROUP BY person, name) \
             GROUP BY name FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    let named: Vec<(String, (u64, u64), ())> = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row["event"].as_str().unwrap_or_default().to_string(),
                (
                    row["s"].as_u64().unwrap_or(0),
                    row["f"].as_u64().unwrap_or(0),
                ),
                (),
            )
        })
        .collect();
    let mut rows: Vec<_> = tested_rows(named, big_s, big_f, &opts)
        .into_iter()
        .map(|(r, ())| r)
        .collect();
    let cand = adjust_candidates(
        &rows,
        opts.adjusted_top_k.unwrap_or(20),
        (big_s + big_f) as usize,
    );
    if !cand.is_empty() {
        let cand_names: Vec<String> = cand.iter().map(|&i| rows[i].event.clone()).collect();
        let list = list_sql(&cand_names);
        let r = ch
            .select_json(&format!(
                "SELECT mask, success, count() AS c FROM \
                 (SELECT person, success, mask FROM (SELECT person, success FROM ({pop})) AS pp \
                  ANY LEFT JOIN (SELECT person, groupBitOr(bitShiftLeft(toUInt64(1), toUInt64(indexOf([{list}], name) - 1))) AS mask \
                  FROM ({names}) WHERE name IN ({list}) GROUP BY person) AS pm USING person) \
                 GROUP BY mask, success FORMAT JSON"
            ))
            .map_err(QueryError::Backend)?;
        let patterns = r["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                (
                    (
                        row["mask"].as_u64().unwrap_or(0),
                        row["success"].as_u64().unwrap_or(0) == 1,
                    ),
                    row["c"].as_u64().unwrap_or(0) as f64,
                )
            })
            .collect();
        apply_adjusted(&mut rows, &cand, patterns);
    }
    if q.breakdown.is_some() {
        simpson(ch, q, spec, &pop, &names, &mut rows)?;
    }
    Ok(finish(rows, big_s, big_f, &opts, from_step, to_step))
}

/// The Simpson check: each actor's segment is its breakdown value in the
/// steps view (stage B with the breakdown), as the engine's: the first
/// (value, path) its attribution gives (`Plan::attributed`) — for
/// first/last touch the attributed value; for `all_events`, `step` N and
/// cohorts the first partition with a path in the engine's visiting order
/// (stage B's `pord_t`, `pord_s`), read over every event of the actor as
/// correlation reads them (that order and the partitions' paths depend on
/// the non-step events too); an actor with no such partition has a segment
/// of its own kind (the engine's empty segment; here `bd` = `[]`).
/// ClickHouse counts outcomes per segment and per (segment, row).
fn simpson(
    ch: &ClickHouse,
    q: &FunnelQuery,
    spec: &FunnelSpec,
    pop: &str,
    names: &str,
    rows: &mut [dropscope_core::result::CorrelationRow],
) -> Result<(), QueryError> {
    let base = ch.funnel_spec(&crate::dispatch::funnel_of(q, true))?;
    let bspec = FunnelSpec {
        from_ms: spec.from_ms,
        to_ms: spec.to_ms,
        keep_all: base.keep_all || base.data.part != Part::None,
        ..base
    };
    let segs = format!(
        "SELECT person, argMin(bd, (pord_t, pord_s)) AS bd FROM ({}) GROUP BY person",
        keyed_actors_sql(ch.database(), &bspec, actors_of(q))
    );
    let r = ch
        .select_json(&format!(
            "SELECT bd, countIf(success = 1) AS s, countIf(success = 0) AS f FROM \
             (SELECT person, success FROM ({pop})) AS pp ANY LEFT JOIN ({segs}) AS sg USING person \
             GROUP BY bd FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64;
    let seg_totals: BTreeMap<String, (f64, f64)> = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| (row["bd"].to_string(), (num(&row["s"]), num(&row["f"]))))
        .collect();
    if seg_totals.len() < 2 {
        return Ok(());
    }
    let index: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.event.as_str(), i))
        .collect();
    let r = ch
        .select_json(&format!(
            "SELECT bd, name, countIf(success = 1) AS s, countIf(success = 0) AS f FROM \
             (SELECT person, any(success) AS success, name FROM ({names}) GROUP BY person, name) AS pn \
             ANY LEFT JOIN ({segs}) AS sg USING person GROUP BY bd, name FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    let mut seg_rows: HashMap<(String, usize), (f64, f64)> = HashMap::new();
    for row in r["data"].as_array().into_iter().flatten() {
        if let Some(&i) = index.get(row["name"].as_str().unwrap_or_default()) {
            seg_rows.insert((row["bd"].to_string(), i), (num(&row["s"]), num(&row["f"])));
        }
    }
    simpson_from_counts(rows, &seg_totals, &seg_rows);
    Ok(())
}

/// The actors behind one event row: every stage-B actor (converted or not,
/// as `persons_for.converted` asks) with that event, passing
/// `persons_for.properties`, inside its span.
pub fn persons(
    ch: &ClickHouse,
    q: &FunnelQuery,
    spec: &FunnelSpec,
) -> Result<PersonsResult, QueryError> {
    let db = ch.database();
    let opts = q.correlation.clone().unwrap_or_default();
    let pf = q.persons_for.clone().unwrap_or_default();
    let outcome = match pf.converted {
        Some(true) => "success = 1",
        Some(false) => "success = 0",
        None => "1",
    };
    let all = spans_sql(db, q, spec, &opts);
    let Some(event) = &pf.event else {
        let Some(prop) = &pf.property else {
            return Err(QueryError::invalid(
                "persons_for",
                "correlation persons need `event` or `property`",
            ));
        };
        // The row's key (before the first `::`), its rows, the one named.
        let key = prop.split("::").next().unwrap_or("").to_string();
        let hits = person_rows_sql(db, q, &all, &[key], "");
        let rows = format!(
            "SELECT person, lvl, times, bits, amb, toUInt8({outcome} AND hit = 1) AS sel FROM ({all}) AS sp \
             ANY LEFT JOIN (SELECT person, toUInt8(1) AS hit FROM ({hits}) WHERE name = {p} GROUP BY person) AS h \
             USING person",
            p = quote_str(prop)
        );
        return page(ch, q, spec, &rows);
    };
    let mut cond = format!("event = {}", quote_str(event));
    if let Some(f) = crate::sql::filters(pf.properties.as_ref(), "persons_for.properties")? {
        cond.push_str(&format!(" AND ({f})"));
    }
    let hits = span_events_sql(db, spec, actors_of(q), &all, &cond);
    let rows = format!(
        "SELECT person, lvl, times, bits, amb, toUInt8({outcome} AND hit = 1) AS sel FROM ({all}) AS sp \
         ANY LEFT JOIN (SELECT person, toUInt8(1) AS hit FROM ({hits}) GROUP BY person) AS h USING person"
    );
    page(ch, q, spec, &rows)
}

/// One page of the actors behind a row (persons, or group keys).
fn page(
    ch: &ClickHouse,
    q: &FunnelQuery,
    spec: &FunnelSpec,
    rows: &str,
) -> Result<PersonsResult, QueryError> {
    crate::persons::page_of(ch, q, spec.steps.len(), rows, false, actors_of(q))
}
