//! Paths on stage B: for every actor who reached step `k`, the events after
//! its step-`k` time within the window of its entry (every event of the
//! person in the date range, as the engine reads them), consecutive repeats
//! collapsed, the first `depth` names; for converters also the events
//! before step `k + 1`. ClickHouse returns the number of actors per
//! (converted, sequence, in-between sequence); the rankings are computed
//! from those counts.

use dropscope_core::query::{FunnelQuery, QueryKind};
use dropscope_core::result::{PathsResult, QueryResult};
use dropscope_core::QueryError;

use crate::dispatch::refuse_amb;
use crate::events::{joined_sql, ActorKind};
use crate::funnel::{actors_sql, FunnelSpec};
use crate::persons::Actors;
use crate::ClickHouse;

const END: &str = "(no further events)";

/// (converted, next events, events in between, actors).
type Group = (bool, Vec<String>, Vec<String>, u64);

/// Consecutive repeats collapsed, then the first `depth` names. (ClickHouse
/// 18.16 cannot resolve a subquery column that only a lambda captures: the
/// lambdas here capture nothing but their arguments.)
fn collapse(arr: &str, depth: usize) -> String {
    format!(
        "arraySlice(arrayFilter((e, i) -> i = 1 OR e != {arr}[i - 1], {arr}, arrayEnumerate({arr})), 1, {depth})"
    )
}

pub fn run(ch: &ClickHouse, q: &FunnelQuery, spec: &FunnelSpec) -> Result<PathsResult, QueryError> {
    let n = spec.steps.len();
    let (depth, top, after_step) = dropscope_engine::paths::options(q, n)?;
    let k = match after_step {
        Some(k) => k,
        None => largest_drop(ch, q)?,
    };
    let db = ch.database();
    // Non-person actors (`persons::actors_of`) by their key: their events
    // are those carrying it, in range (the engine's regrouped view).
    let who = crate::persons::actors_of(q);
    let actors = crate::persons::keyed(actors_sql(db, spec), who, "amb, times, bits");
    let r = ch
        .select_json(&format!(
            "SELECT max(amb) AS amb FROM ({actors}) FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    refuse_amb(&r["data"][0]["amb"])?;
    let pop = format!(
        "SELECT person, times[{k1}] AS tk, toUInt8(bitTest(bits, {k1})) AS conv, times[{k2}] AS tn, \
         times[1] + {w} AS te FROM ({actors}) WHERE bitTest(bits, {k})",
        k1 = k + 1,
        k2 = k + 2,
        w = spec.window_ms,
    );
    let (key, uses) = match &spec.data.actor {
        ActorKind::Expr(e) if who == Actors::Keys => ("actor", e.as_str()),
        _ => ("person", ""),
    };
    let events = format!(
        "SELECT person, arraySort(groupArray((ts, seq, event))) AS evs, \
         arrayMap(x -> x.3, evs) AS E, \
         arrayMap(x -> x.3, arraySort(groupArrayIf((ts, seq, event), ts < tn))) AS EB FROM \
         (SELECT {key} AS person, event, timestamp AS ts, seq FROM ({rows})) AS ev \
         ALL INNER JOIN ({pop}) AS pp USING person WHERE ts > tk AND ts <= te GROUP BY person",
        rows = joined_sql(db, spec, uses, true),
    );
    let sql = format!(
        "SELECT conv, nxt, btw, count() AS c FROM \
         (SELECT conv, {next} AS nxt, if(conv = 1, {between}, emptyArrayString()) AS btw FROM \
          (SELECT conv, E, EB FROM (SELECT person, conv FROM ({pop})) AS pp ANY LEFT JOIN \
           (SELECT person, E, EB FROM ({events})) AS pe USING person)) \
         GROUP BY conv, nxt, btw FORMAT JSON",
        next = collapse("E", depth),
        between = collapse("EB", depth),
    );
    let r = ch.select_json(&sql).map_err(QueryError::Backend)?;
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()
    };
    // (converted, next, between, actors)
    let groups: Vec<Group> = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row["conv"].as_u64().unwrap_or(0) == 1,
                strs(&row["nxt"]),
                strs(&row["btw"]),
                row["c"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let dropped: u64 = groups.iter().filter(|g| !g.0).map(|g| g.3).sum();
    let converted: u64 = groups.iter().filter(|g| g.0).map(|g| g.3).sum();
    let rank = |conv: bool, f: &dyn Fn(&Group) -> Vec<String>| {
        let total = if conv { converted } else { dropped };
        dropscope_engine::paths::ranked(
            groups.iter().filter(|g| g.0 == conv).map(|g| (f(g), g.3)),
            total,
            top,
        )
    };
    let first = |g: &Group| vec![g.1.first().cloned().unwrap_or_else(|| END.to_string())];
    let full = |g: &Group| {
        if g.1.is_empty() {
            vec![END.to_string()]
        } else {
            g.1.clone()
        }
    };
    Ok(PathsResult {
        after_step: k,
        dropped,
        converted,
        dropped_next: rank(false, &first),
        converted_next: rank(true, &first),
        dropped_sequences: rank(false, &full),
        converted_sequences: rank(true, &full),
        between_sequences: rank(true, &|g| g.2.clone()),
    })
}

/// The 0-based step after which the most actors drop (the first on ties),
/// from the steps view.
fn largest_drop(ch: &ClickHouse, q: &FunnelQuery) -> Result<usize, QueryError> {
    let fq = FunnelQuery {
        kind: QueryKind::Funnel,
        ..q.clone()
    };
    let QueryResult::Funnel(f) = ch.run(&fq)? else {
        return Err(QueryError::Backend(
            "the steps view answered another kind".into(),
        ));
    };
    let mut best = (0usize, 0u64);
    for s in 1..f.steps.len() {
        let drop = f.steps[s].dropped;
        if drop > best.1 {
            best = (s - 1, drop);
        }
    }
    Ok(best.0)
}
