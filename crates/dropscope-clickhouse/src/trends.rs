//! Funnel trends (SEMANTICS rule 15), its own stage on top of stage A.
//!
//! Per actor, events sorted by (time, ingest order); for each first-step
//! event (an entry) the greedy chain of later events (strictly after the
//! previous step's event, each step once, within the window of the entry)
//! up to `to_step`. A bucket's outcome is the best chain among the entries
//! in that bucket: converted when one reaches `to_step`, entered when one
//! reaches `from_step` — what the engine's per-bucket state machine keeps
//! (one attempt per bucket, latest entry at each level). Buckets are the
//! engine's own (`dropscope_core::time::buckets`, project timezone), sent
//! as an array: an entry's bucket is the number of bucket starts ≤ its
//! time. ClickHouse returns (breakdown value, bucket, entered, converted)
//! and, for trend persons, one page of actors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{PersonsResult, TrendsResult};
use dropscope_core::time::{bucket_start, buckets, parse_instant, parse_tz, DateRange};
use dropscope_core::QueryError;
use dropscope_engine::trends::{check_buckets, series_result, trend_rows, Buckets};
use serde_json::Value;

use crate::dispatch::spec_of;
use crate::events::events_sql;
use crate::funnel::FunnelSpec;
use crate::ClickHouse;

/// Per actor (and partition): sorted events `T`, `M`, `B`, the attributed
/// breakdown value `bdv`, `amb`.
fn actors_events_sql(db: &str, s: &FunnelSpec, unordered: bool) -> String {
    let events = events_sql(db, s);
    // The actor's value: attributed (first/last touch) or its partition's.
    let attributed = match crate::funnel::shown_bd_sql(s) {
        "bdv" => crate::funnel::attributed_sql(s),
        part => part.to_string(),
    };
    let persons = format!(
        "SELECT actor, any(person) AS person, part, arraySort(groupArray((ts, seq, mask, bd))) AS evs, \
         arrayMap(x -> x.1, evs) AS T, arrayMap(x -> x.3, evs) AS M, arrayMap(x -> x.4, evs) AS B, \
         {attributed} AS bdv, \
         toUInt8({amb}) AS amb FROM ({events}) GROUP BY actor, part",
        amb = if unordered {
            "arrayExists(m -> bitAnd(m, m - 1) != 0, M)"
        } else {
            "0"
        }
    );
    persons
}

/// One row per (actor, bucket with an entry): `actor`, `person`, `bd`,
/// `bucket` (1-based index into `starts`), `lvl` (best chain, 1-based,
/// capped at `to + 1`; unordered: most distinct steps), `amb` (unordered: an
/// event matching several steps).
fn buckets_sql(db: &str, s: &FunnelSpec, to: usize, starts: &[i64], unordered: bool) -> String {
    let w = s.window_ms;
    let persons = actors_events_sql(db, s, unordered);
    let starts_lit: Vec<String> = starts.iter().map(|b| format!("toInt64({b})")).collect();
    let starts_lit = starts_lit.join(", ");
    if unordered {
        // Every step event is an entry; its result is the number of
        // distinct steps among the events from it (in (time, ingest)
        // order) within its window: the engine's queues never slide
        // there. An event matching several steps (the queue choice) is
        // flagged `amb` and refused.
        let popcount: Vec<String> = (0..s.steps.len())
            .map(|k| format!("(bitAnd(orm, toUInt64({})) != 0)", 1u64 << k))
            .collect();
        let entries = format!(
            "SELECT actor, person, part, bdv, amb, i0, \
             arrayReduce('groupBitOr', arrayFilter((m, t, j) -> j >= i0 AND t - T[i0] <= {w}, M, T, arrayEnumerate(M))) AS orm, \
             toUInt32({pop}) AS lvl, arrayCount(b -> b <= T[i0], [{starts_lit}]) AS bucket \
             FROM ({persons}) ARRAY JOIN arrayFilter(i -> M[i] != 0, arrayEnumerate(M)) AS i0",
            pop = popcount.join(" + ")
        );
        return format!(
            "SELECT actor, any(person) AS person, any(bdv) AS bd, bucket, max(lvl) AS lvl, max(amb) AS amb \
             FROM ({entries}) GROUP BY actor, part, bucket"
        );
    }
    let mut chain = String::from("i0");
    let mut level = String::from("1");
    for k in 1..=to {
        let prev = format!("i{}", k - 1);
        let _ = write!(
            chain,
            ", if({prev} = 0, 0, arrayFirstIndex((t, m, j) -> bitAnd(m, toUInt64({bit})) != 0 AND j > {prev} AND t - T[i0] <= {w}, T, M, arrayEnumerate(T))) AS i{k}",
            bit = 1u64 << k,
        );
        let _ = write!(level, " + (i{k} != 0)");
    }
    let entries = format!(
        "SELECT actor, person, part, bdv, amb, {chain}, toUInt32({level}) AS lvl, \
         arrayCount(b -> b <= T[i0], [{starts}]) AS bucket \
         FROM ({persons}) ARRAY JOIN arrayFilter(i -> bitAnd(M[i], toUInt64(1)) != 0, arrayEnumerate(M)) AS i0",
        starts = starts_lit
    );
    format!(
        "SELECT actor, any(person) AS person, any(bdv) AS bd, bucket, max(lvl) AS lvl, max(amb) AS amb \
         FROM ({entries}) GROUP BY actor, part, bucket"
    )
}

struct Ctx {
    spec: FunnelSpec,
    unordered: bool,
    from: usize,
    to: usize,
    starts: Vec<i64>,
    interval: dropscope_core::query::Interval,
    tz: chrono_tz::Tz,
}

fn ctx(ch: &ClickHouse, q: &FunnelQuery, range: DateRange) -> Result<Ctx, QueryError> {
    let spec = spec_of(ch, q, range, true)?;
    let n = spec.steps.len();
    let interval = q.interval.unwrap_or_default();
    let tz = parse_tz(q.timezone.as_deref())?;
    check_buckets(range, interval, tz)?;
    Ok(Ctx {
        unordered: q.order == dropscope_core::query::FunnelOrder::Unordered,
        from: q.from_step.unwrap_or(0),
        to: q.to_step.unwrap_or(n - 1),
        starts: buckets(range, interval, tz),
        spec,
        interval,
        tz,
    })
}

/// Runs a funnel trends query.
pub fn run(ch: &ClickHouse, q: &FunnelQuery, range: DateRange) -> Result<TrendsResult, QueryError> {
    let c = ctx(ch, q, range)?;
    if c.starts.is_empty() {
        return Ok(if c.spec.breakdown.is_some() {
            series_result(Vec::new(), None, &[], c.interval, c.tz)
        } else {
            TrendsResult::default()
        });
    }
    let r = ch
        .select_json(&format!(
            "SELECT bd, bucket, countIf(lvl >= {f}) AS entered, countIf(lvl >= {t}) AS conv, max(amb) AS amb \
             FROM ({b}) GROUP BY bd, bucket FORMAT JSON",
            f = c.from + 1,
            t = c.to + 1,
            b = buckets_sql(ch.database(), &c.spec, c.to, &c.starts, c.unordered)
        ))
        .map_err(QueryError::Backend)?;
    let mut by_value: Vec<(Value, Buckets)> = Vec::new();
    if c.spec.breakdown.is_some() {
        // Every actor the funnel reads has a series, entries or not (as
        // the engine).
        let r = ch
            .select_json(&format!(
                "SELECT DISTINCT bdv FROM ({}) FORMAT JSON",
                actors_events_sql(ch.database(), &c.spec, c.unordered)
            ))
            .map_err(QueryError::Backend)?;
        for row in r["data"].as_array().into_iter().flatten() {
            by_value.push((crate::bd_output(q, &row["bdv"]), BTreeMap::new()));
        }
    }
    for row in r["data"].as_array().into_iter().flatten() {
        refuse_amb(c.unordered, &row["amb"])?;
        let entered = row["entered"].as_u64().unwrap_or(0);
        if entered == 0 {
            continue;
        }
        let i = row["bucket"].as_u64().unwrap_or(0) as usize;
        let Some(&b) = c.starts.get(i.wrapping_sub(1)) else {
            continue;
        };
        let v = crate::bd_output(q, &row["bd"]);
        let conv = row["conv"].as_u64().unwrap_or(0);
        match by_value.iter_mut().find(|(x, _)| *x == v) {
            Some((_, m)) => {
                m.insert(b, (entered, conv));
            }
            None => by_value.push((v, BTreeMap::from([(b, (entered, conv))]))),
        }
    }
    if c.spec.breakdown.is_none() {
        let m = by_value.into_iter().next().map(|(_, m)| m);
        return Ok(TrendsResult {
            rows: trend_rows(&c.starts, m.as_ref(), c.interval, c.tz),
            series: None,
        });
    }
    let limit = q.breakdown.as_ref().and_then(|b| b.limit);
    Ok(series_result(by_value, limit, &c.starts, c.interval, c.tz))
}

/// Refuses an answer with an actor flagged `amb`.
fn refuse_amb(unordered: bool, amb: &Value) -> Result<(), QueryError> {
    if unordered && amb.as_u64().unwrap_or(0) != 0 {
        return Err(QueryError::Unsupported(
            "unordered funnel trends where one event matches several steps are not supported \
             by the ClickHouse backend yet"
                .into(),
        ));
    }
    crate::dispatch::refuse_amb(amb)
}

/// Persons who entered in one bucket and converted (or dropped, with
/// `drop_off: true`).
pub fn persons(
    ch: &ClickHouse,
    q: &FunnelQuery,
    range: DateRange,
) -> Result<PersonsResult, QueryError> {
    let c = ctx(ch, q, range)?;
    let s = q.entrance_period_start.as_deref().unwrap_or("");
    let (t, _) = parse_instant(s, c.tz).ok_or_else(|| {
        QueryError::invalid("entrance_period_start", format!("not a date: {s:?}"))
    })?;
    let bucket = bucket_start(t.timestamp_millis(), c.interval, c.tz);
    let n = c.spec.steps.len();
    let idx = c
        .starts
        .iter()
        .position(|b| *b == bucket)
        .map_or(0, |i| i + 1);
    let outcome = if q.drop_off.unwrap_or(false) {
        format!("lvl >= {} AND lvl < {}", c.from + 1, c.to + 1)
    } else {
        format!("lvl >= {}", c.to + 1)
    };
    let mut cond = format!("bucket = {idx} AND {outcome}");
    if let (Some(w), Some(_)) = (&q.breakdown_value, &c.spec.breakdown) {
        cond.push_str(&format!(" AND {}", crate::persons::bd_match_sql(q, w)));
    }
    if c.starts.is_empty() {
        cond = "0".into();
    }
    let rows = if c.starts.is_empty() {
        "SELECT toUInt64(0) AS person, toUInt32(0) AS lvl, emptyArrayInt64() AS times, toUInt64(0) AS bits, toUInt8(0) AS amb, toUInt8(0) AS sel WHERE 0".to_string()
    } else {
        format!(
            "SELECT person, toUInt32(0) AS lvl, emptyArrayInt64() AS times, toUInt64(0) AS bits, amb, hit AS sel FROM \
             (SELECT person, max(amb) AS amb, max(toUInt8({cond})) AS hit FROM ({b}) GROUP BY person)",
            b = buckets_sql(ch.database(), &c.spec, c.to, &c.starts, c.unordered)
        )
    };
    crate::persons::page(ch, q, n, &rows, c.unordered)
}
