//! The funnel in ClickHouse SQL, in three stages with fixed column contracts
//! so every query kind can build on them:
//!
//! * **Stage A — [`events_sql`]**: one row per event the funnel reads (date
//!   range, global filters, identity overrides applied), columns
//!   `actor String` (aggregation target; a person's canonical id in decimal),
//!   `person UInt64` (canonical person id), `part Array(String)` (partition:
//!   the breakdown value for attributions that run the funnel once per value
//!   — empty otherwise), `ts Int64` (ms), `seq UInt64` (ingest order),
//!   `mask UInt64` (bit k: matches step k), `xmask UInt64` (bit j: matches
//!   exclusion j), `bd Array(String)` (the event's own breakdown values, for
//!   first/last-touch attribution; empty without breakdown).
//! * **Stage B — [`actors_sql`]**: one row per counted unit (actor and
//!   partition), columns `actor`, `person`, `bd Array(String)` (the final
//!   breakdown value), `amb UInt8` (see [`refuse`](crate)), `lvl UInt32`
//!   (furthest step, 1-based), `times Array(Int64)` (length n: timestamp of
//!   each step of the counted path, 0 where not reached), `start Int64`
//!   (= `times[1]`). Actors removed by exclusions do not appear.
//! * **Stage C — [`steps_sql`]**: the steps view aggregated per breakdown
//!   value.

use std::fmt::Write as _;

use crate::events::events_sql;
use crate::sql::quote_str;

/// Breakdown attribution supported here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    First,
    Last,
}

/// Everything the funnel SQL needs, already validated.
#[derive(Debug, Clone)]
pub struct FunnelSpec {
    /// Boolean SQL per step.
    pub steps: Vec<String>,
    /// Boolean SQL over every event (global filters), if any.
    pub global: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub window_ms: i64,
    /// Event-property breakdown keys and attribution.
    pub breakdown: Option<(Vec<String>, Touch)>,
    /// Breakdown limit applied: these values keep their row, every other
    /// value is counted under `["Other"]`.
    pub keep: Option<Vec<Vec<String>>>,
}

/// Stage B: one row per counted actor (see the module docs).
///
/// Ordered funnels: per actor, events sorted by (time, ingest order); for
/// each first-step event the greedy chain from that start. Step k is the
/// first event matching step k within the window of the start, not already
/// used by the chain, and after step k-1's event in (time, ingest) order —
/// or at the same instant with a different step mask (rule 5: a
/// same-instant group matching different steps is applied step by step,
/// whatever the ingest order). The actor's result is the furthest level;
/// among starts reaching it, the one that got there first (ties: the
/// latest start) gives the times — the attempt SEMANTICS rule 4 keeps.
/// `amb` = 1 when the actor has events sharing a timestamp that match
/// different steps with one of them matching several steps (rule 5's
/// expansion can then differ from the greedy chains).
pub fn actors_sql(db: &str, s: &FunnelSpec) -> String {
    let n = s.steps.len();
    let w = s.window_ms;
    let events = events_sql(db, s);
    // The attributed breakdown value (first/last event the funnel reads
    // with a value); actors without any value get the all-empty tuple.
    let attributed = match &s.breakdown {
        Some((_, Touch::First)) => "arrayFirst(b -> arrayExists(x -> x != '', b), B)",
        Some((_, Touch::Last)) => "arrayFirst(b -> arrayExists(x -> x != '', b), arrayReverse(B))",
        None => "emptyArrayString()",
    };
    let empty_bd = match &s.breakdown {
        Some((keys, _)) => format!("[{}]", vec!["''"; keys.len()].join(", ")),
        None => "emptyArrayString()".into(),
    };
    let attributed = format!("if(length({attributed} AS bd_raw) = 0, {empty_bd}, bd_raw)");
    let persons = format!(
        "SELECT actor, any(person) AS person, part, arraySort(groupArray((ts, seq, mask, bd))) AS evs, \
         arrayMap(x -> x.1, evs) AS T, arrayMap(x -> x.3, evs) AS M, arrayMap(x -> x.4, evs) AS B, \
         {attributed} AS bdv, \
         arrayExists((t, m) -> bitAnd(m, m - 1) != 0 AND arrayExists((t2, m2) -> t2 = t AND m2 != m, T, M), T, M) AS amb \
         FROM ({events}) GROUP BY actor, part"
    );
    let mut chain = String::from("i0");
    let mut level = String::from("1");
    let mut last = String::from("i0");
    for k in 1..n {
        let prev = format!("i{}", k - 1);
        let unused: String = (0..k).map(|j| format!(" AND j != i{j}")).collect();
        let _ = write!(
            chain,
            ", if({prev} = 0, 0, arrayFirstIndex((t, m, j) -> bitAnd(m, toUInt64({bit})) != 0 AND (j > {prev} OR (t = T[{prev}] AND m != M[{prev}])) AND t - T[i0] <= {w}{unused}, T, M, arrayEnumerate(T))) AS i{k}",
            bit = 1u64 << k,
        );
        let _ = write!(level, " + (i{k} != 0)");
        last = format!("if(i{k} != 0, i{k}, {last})");
    }
    let times: Vec<String> = (0..n)
        .map(|k| format!("if(i{k} != 0, T[i{k}], toInt64(0))"))
        .collect();
    let starts = format!(
        "SELECT actor, person, part, bdv, amb, {chain}, toUInt32({level}) AS lvl, ({last}) AS li, \
         tuple(-toInt64(lvl), T[li], toInt64(li), -toInt64(i0)) AS key, [{times}] AS path \
         FROM ({persons}) ARRAY JOIN arrayFilter(i -> bitAnd(M[i], toUInt64(1)) != 0, arrayEnumerate(M)) AS i0",
        times = times.join(", ")
    );
    let bd = if s.breakdown.is_some() {
        "any(bdv)"
    } else {
        "any(part)"
    };
    format!(
        "SELECT actor, any(person) AS person, {bd} AS bd, max(amb) AS amb, max(lvl) AS lvl, \
         argMin(path, key) AS times, times[1] AS start \
         FROM ({starts}) GROUP BY actor, part"
    )
}

/// Stage C, the steps view. Output columns per row (one row per breakdown
/// value, plus `totals` with a breakdown): `bd`, then per 0-based step `k`:
/// `c{k}` (actors), and for k ≥ 1 `n{k}` (positive gaps), `avg{k}`, `med{k}`
/// (seconds), `ip{k}` (in progress); and `amb` (max over actors).
pub fn steps_sql(db: &str, s: &FunnelSpec) -> String {
    let n = s.steps.len();
    let w = s.window_ms;
    let actors = actors_sql(db, s);
    let mut cols = match &s.keep {
        Some(keep) => {
            let list: Vec<String> = keep
                .iter()
                .map(|v| {
                    format!(
                        "[{}]",
                        v.iter()
                            .map(|x| quote_str(x))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            format!("if(has([{}], b0), b0, ['Other']) AS bd", list.join(", "))
        }
        None => String::from("b0 AS bd"),
    };
    cols.push_str(", max(amb) AS amb");
    for k in 0..n {
        let _ = write!(cols, ", countIf(lvl >= {r}) AS c{k}", r = k + 1);
        if k == 0 {
            continue;
        }
        let g = format!("(times[{r}] - times[{k}])", r = k + 1);
        let cond = format!("lvl >= {r} AND {g} > 0", r = k + 1);
        let _ = write!(
            cols,
            ", countIf({cond}) AS n{k}, avgIf({g} / 1000, {cond}) AS avg{k}, \
             if(length(arraySort(groupArrayIf({g}, {cond})) AS s{k}) = 0, 0, \
             if(length(s{k}) % 2 = 1, toFloat64(s{k}[intDiv(length(s{k}) + 1, 2)]), \
             (s{k}[intDiv(length(s{k}), 2)] + s{k}[intDiv(length(s{k}), 2) + 1]) / 2) / 1000) AS med{k}, \
             countIf(lvl = {k} AND start + {w} >= {to}) AS ip{k}",
            to = s.to_ms
        );
    }
    let group = if s.breakdown.is_some() {
        " GROUP BY bd WITH TOTALS"
    } else {
        " GROUP BY bd"
    };
    format!(
        "SELECT {cols} FROM (SELECT bd AS b0, amb, lvl, times, start FROM ({actors})){group} FORMAT JSON"
    )
}
