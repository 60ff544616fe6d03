//! Funnel persons (SEMANTICS rule 9) on stage B: the counted actors whose
//! furthest step is selected, filtered by breakdown value, ordered by label
//! and paged with LIMIT/OFFSET inside ClickHouse; then the page's distinct
//! ids. A person's label is its person record's `id`, else its first-seen
//! distinct id (the one whose own id is the canonical person id).

use dropscope_core::query::{BreakdownType, FunnelQuery};
use dropscope_core::result::{ActorRow, PersonsResult};
use dropscope_core::time::format_ts;
use dropscope_core::QueryError;
use dropscope_engine::persons::{selector_for, DEFAULT_LIMIT, MAX_LIMIT};
use serde_json::Value;

use crate::dispatch::refuse_amb;
use crate::events::{overrides_sql, Part};
use crate::funnel::{actors_sql, FunnelSpec};
use crate::sql::quote_str;
use crate::ClickHouse;

pub fn run(
    ch: &ClickHouse,
    q: &FunnelQuery,
    spec: &FunnelSpec,
) -> Result<PersonsResult, QueryError> {
    let n = spec.steps.len();
    let sel = selector_for(q, n)?;
    let list: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
    let pf = q.persons_for.clone().unwrap_or_default();
    let step = pf.step.unwrap_or(1);
    // The engine's rule: with optional steps, "reached step N" is bit N−1.
    let mut cond = if pf.custom_steps.is_none() && q.steps.iter().any(|s| s.optional) && step > 0 {
        format!("bitTest(bits, {})", step - 1)
    } else {
        format!("lvl IN ({})", list.join(", "))
    };
    if let (Some(w), Some(_)) = (&q.breakdown_value, &spec.breakdown) {
        cond.push_str(&format!(" AND {}", bd_match_sql(q, w)));
    }
    let who = actors_of(q);
    let actors = keyed(
        actors_sql(ch.database(), spec),
        who,
        "lvl, times, bits, amb, bd, pord_t, pord_s",
    );
    let rows = if spec.data.part == Part::None {
        format!("SELECT person, lvl, times, bits, amb, ({cond}) AS sel FROM ({actors})")
    } else {
        // One row per partition: the engine shows the path of the first
        // partition (in its visiting order) that is selected.
        format!(
            "SELECT person, argMin(lvl, k) AS lvl, argMin(times, k) AS times, argMin(bits, k) AS bits, \
             max(amb) AS amb, max(sel) AS sel FROM \
             (SELECT person, lvl, times, bits, amb, toUInt8({cond}) AS sel, \
             tuple(1 - sel, pord_t, pord_s) AS k FROM ({actors})) GROUP BY person"
        )
    };
    page_of(ch, q, n, &rows, false, who)
}

/// Who a query's actors are: persons, or keys of another aggregation
/// (`group:N`, `distinct_id`, `event_property:`, `person_property:`),
/// which the engine lists by their key.
pub(crate) fn actors_of(q: &FunnelQuery) -> Actors {
    match q.aggregation.as_deref().map(str::trim) {
        None | Some("") | Some("person") | Some("person_id") => Actors::Persons,
        Some(_) => Actors::Keys,
    }
}

/// Stage rows with `person` replaced by the actor key for key actors
/// (`cols`: the other columns to keep).
pub(crate) fn keyed(rows: String, who: Actors, cols: &str) -> String {
    match who {
        Actors::Persons => rows,
        Actors::Keys => {
            format!("SELECT actor AS person, {cols} FROM (SELECT actor, {cols} FROM ({rows}))")
        }
    }
}

/// SQL for "the actor's breakdown value `bd` is `want`" (the engine's
/// `bd_matches`). Event, person and group values are lists of strings in
/// `bd` (a bare string matches a one-element list); cohort values are
/// numbers (`bd` holds the id as a string), matched by numeric value.
pub(crate) fn bd_match_sql(q: &FunnelQuery, want: &Value) -> String {
    let cohort = q
        .breakdown
        .as_ref()
        .is_some_and(|b| b.kind == Some(BreakdownType::Cohort));
    if cohort {
        let id = match want {
            Value::Number(x) => x.as_f64(),
            Value::String(s) => s.parse::<f64>().ok(),
            _ => None,
        };
        return match id.filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < 1e18) {
            Some(x) => format!("bd = [{}]", quote_str(&format!("{}", x as u64))),
            None => "0".into(),
        };
    }
    let strings: Option<Vec<String>> = match want {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
        _ => None,
    };
    match strings {
        Some(v) if !v.is_empty() => format!(
            "bd = [{}]",
            v.iter()
                .map(|x| quote_str(x))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(_) => "length(bd) = 0".into(),
        None => "0".into(),
    }
}

/// Canonical person id → label: its person record's `id`, else its own
/// distinct id (the one whose own id is the canonical id).
pub(crate) fn labels_sql(db: &str) -> String {
    format!(
        "SELECT person, if(hl = 1, l, dl) AS label FROM \
         (SELECT own_id AS person, any(distinct_id) AS dl FROM {db}.distinct_ids GROUP BY own_id) AS d \
         ANY LEFT JOIN (SELECT person_id AS person, argMax(label, version) AS l, \
         argMax(has_label, version) AS hl FROM {db}.person_props GROUP BY person_id) AS p USING person"
    )
}

/// Who the rows of [`page`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actors {
    /// `person` is a canonical person id (`UInt64`): labelled by its
    /// person record, listed with its distinct ids.
    Persons,
    /// `person` is the actor's key (`String`, e.g. a group key): its own
    /// label and only distinct id (the engine's non-person actors).
    Keys,
}

/// One page of actors (persons or keys, see [`Actors`]). `rows` has columns `person` (see [`Actors`]),
/// `lvl UInt32`, `bits UInt64` (steps of the path),
/// `times Array(Int64)`, `amb UInt8` and `sel UInt8` (selected); one row
/// per actor. Refuses when any actor is `amb`.
pub(crate) fn page_of(
    ch: &ClickHouse,
    q: &FunnelQuery,
    n: usize,
    rows: &str,
    unordered_trends: bool,
    actors: Actors,
) -> Result<PersonsResult, QueryError> {
    let db = ch.database();
    let r = ch
        .select_json(&format!(
            "SELECT countIf(sel) AS total, max(amb) AS amb FROM ({rows}) FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    if unordered_trends && r["data"][0]["amb"].as_u64().unwrap_or(0) != 0 {
        return Err(QueryError::Unsupported(
            "unordered funnel trends where one event matches several steps are not supported \
             by the ClickHouse backend yet"
                .into(),
        ));
    }
    refuse_amb(&r["data"][0]["amb"])?;
    let total = r["data"][0]["total"].as_u64().unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let offset = q.offset.unwrap_or(0);
    let selected = format!("SELECT person, lvl, times, bits FROM ({rows}) WHERE sel");
    let r = ch
        .select_json(&match actors {
            Actors::Persons => format!(
                "SELECT person, lvl, times, bits, label FROM ({selected}) AS sr \
                 ANY LEFT JOIN ({labels}) AS lb USING person ORDER BY label, person LIMIT {limit} OFFSET {offset} FORMAT JSON",
                labels = labels_sql(db)
            ),
            Actors::Keys => format!(
                "SELECT 0 AS person, lvl, times, bits, label FROM \
                 (SELECT person AS label, lvl, times, bits FROM ({selected})) \
                 ORDER BY label LIMIT {limit} OFFSET {offset} FORMAT JSON"
            ),
        })
        .map_err(QueryError::Backend)?;
    let data = r["data"].as_array().cloned().unwrap_or_default();
    let ids: Vec<String> = data
        .iter()
        .map(|row| row["person"].as_u64().unwrap_or(0).to_string())
        .collect();
    let mut dids: std::collections::HashMap<u64, Vec<String>> = Default::default();
    if actors == Actors::Persons && !ids.is_empty() {
        let r = ch
            .select_json(&format!(
                "SELECT person, arrayMap(x -> x.2, arraySort(groupArray((own_id, distinct_id)))) AS dids FROM \
                 (SELECT if(ov_pid != 0, ov_pid, own_id) AS person, own_id, distinct_id FROM \
                 (SELECT distinct_id, any(own_id) AS own_id FROM {db}.distinct_ids GROUP BY distinct_id) AS di \
                 ANY LEFT JOIN ({ov}) AS ov USING distinct_id) WHERE person IN ({list}) GROUP BY person FORMAT JSON",
                ov = overrides_sql(db),
                list = ids.join(", ")
            ))
            .map_err(QueryError::Backend)?;
        for row in r["data"].as_array().into_iter().flatten() {
            let p = row["person"].as_u64().unwrap_or(0);
            let v = row["dids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            dids.insert(p, v);
        }
    }
    let persons: Vec<ActorRow> = data
        .iter()
        .map(|row| {
            let p = row["person"].as_u64().unwrap_or(0);
            let lvl = row["lvl"].as_u64().unwrap_or(0) as usize;
            let bits = row["bits"].as_u64().unwrap_or(0);
            let times: Vec<i64> = row["times"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t.as_i64().unwrap_or(0))
                .collect();
            let label = row["label"].as_str().unwrap_or_default().to_string();
            ActorRow {
                distinct_ids: match actors {
                    Actors::Persons => dids.remove(&p).unwrap_or_default(),
                    Actors::Keys => vec![label.clone()],
                },
                id: label,
                furthest_step: Some(lvl),
                matched_times: (0..n)
                    .map(|s| {
                        (bits & (1 << s) != 0)
                            .then(|| format_ts(times.get(s).copied().unwrap_or(0)))
                    })
                    .collect(),
            }
        })
        .collect();
    let next = offset + persons.len();
    Ok(PersonsResult {
        persons,
        total,
        offset,
        next_offset: ((next as u64) < total).then_some(next),
    })
}
