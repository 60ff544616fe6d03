//! Funnel trends: conversion by interval of entry (SEMANTICS.md rule 15).
//!
//! Per actor, each bucket (of the first step's timestamp) holds its own
//! attempt. A first-step event opens its bucket's attempt, or replaces it
//! while the bucket has not converted. One result per actor per bucket:
//! entered (reached `from_step`) or converted (reached `to_step` within the
//! window). An exclusion inside an attempt's window marks it; a later step
//! on a marked attempt is a full exclusion and drops every unconverted
//! bucket of the actor.

use std::collections::{BTreeMap, HashMap};

use dropscope_core::query::{FunnelOrder, Interval, MAX_STEPS};
use dropscope_core::result::{PersonsResult, TrendRow, TrendSeries, TrendsResult};
use dropscope_core::time::{bucket_start, buckets, format_bucket, parse_instant};
use dropscope_core::QueryError;
use serde_json::Value;

use crate::funnel::{bd_matches, bd_value};
use crate::ordered::{Attempt, Path};
use crate::plan::{BdKey, MEvent, Plan};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Entered,
    Converted,
}

#[derive(Clone, Copy)]
struct Entry {
    start: i64,
    excluded: bool,
}

/// Results of one actor: bucket start -> outcome.
fn actor_buckets(
    plan: &Plan<'_>,
    evs: &[MEvent],
    constraint: Option<(usize, u32)>,
) -> BTreeMap<i64, Outcome> {
    let interval = plan.q.interval.unwrap_or_default();
    let from = plan.q.from_step.unwrap_or(0);
    let to = plan.q.to_step.unwrap_or(plan.n() - 1);
    if plan.order == FunnelOrder::Unordered {
        return unordered_buckets(plan, evs, from, to, interval);
    }
    let n = to + 1;
    let window = plan.shape.window;
    let mut results: BTreeMap<i64, Outcome> = BTreeMap::new();
    // Per open bucket: entered[s] for 1-based s (index 0 unused).
    let mut open: BTreeMap<i64, [Option<Entry>; MAX_STEPS + 1]> = BTreeMap::new();
    for e in evs {
        for s in (1..=n).rev() {
            let idx = s - 1;
            // Exclusions for an attempt sitting at 0-based step s-2.
            if s >= 2 && e.excl != 0 && excl_active(plan, e.excl, s - 2) {
                for entered in open.values_mut() {
                    let next_start = entered[s].map(|a| a.start);
                    if let Some(prev) = entered[s - 1].as_mut() {
                        let in_window = e.ts - prev.start <= window;
                        let already = next_start == Some(prev.start);
                        if in_window && !already && !prev.excluded {
                            prev.excluded = true;
                        }
                    }
                }
            }
            if e.steps & (1 << idx) == 0 {
                continue;
            }
            if let Some((cs, bd)) = constraint {
                if cs == idx && e.bd != bd {
                    continue;
                }
            }
            if s == 1 {
                let b = bucket_start(e.ts, interval, plan.tz);
                if results.get(&b) == Some(&Outcome::Converted) {
                    continue;
                }
                let entered = open.entry(b).or_insert([None; MAX_STEPS + 1]);
                entered[1] = Some(Entry {
                    start: e.ts,
                    excluded: false,
                });
                if from == 0 {
                    results.entry(b).or_insert(Outcome::Entered);
                }
                if n == 1 {
                    results.insert(b, Outcome::Converted);
                    open.remove(&b);
                }
                continue;
            }
            let mut full_exclusion = false;
            let mut converted: Vec<i64> = Vec::new();
            for (&b, entered) in open.iter_mut() {
                let Some(prev) = entered[s - 1] else { continue };
                let in_window = e.ts - prev.start <= window;
                let already = entered[s].is_some_and(|a| a.start == prev.start);
                if !in_window || already {
                    continue;
                }
                if prev.excluded {
                    full_exclusion = true;
                    continue;
                }
                entered[s] = Some(Entry {
                    start: prev.start,
                    excluded: false,
                });
                if idx == from {
                    results.entry(b).or_insert(Outcome::Entered);
                }
                if idx == to {
                    converted.push(b);
                }
            }
            for b in converted {
                results.insert(b, Outcome::Converted);
                open.remove(&b);
            }
            if full_exclusion {
                results.retain(|_, o| *o == Outcome::Converted);
                open.clear();
            }
        }
    }
    results
}

fn excl_active(plan: &Plan<'_>, excl: u32, at: usize) -> bool {
    plan.shape
        .exclusions
        .iter()
        .enumerate()
        .any(|(x, &(from, to))| excl & (1 << x) != 0 && from <= at && at < to)
}

/// Unordered trends: every event of a step is a possible entry in its
/// bucket; the unordered algorithm runs from it over its window (so an
/// exclusion clears progress not yet recorded); the bucket keeps the best
/// outcome of its entries.
fn unordered_buckets(
    plan: &Plan<'_>,
    evs: &[MEvent],
    from: usize,
    to: usize,
    interval: Interval,
) -> BTreeMap<i64, Outcome> {
    let window = plan.shape.window;
    let mut results: BTreeMap<i64, Outcome> = BTreeMap::new();
    for (i, e) in evs.iter().enumerate() {
        if e.steps == 0 {
            continue;
        }
        let b = bucket_start(e.ts, interval, plan.tz);
        if results.get(&b) == Some(&Outcome::Converted) {
            continue;
        }
        let end = evs[i..]
            .iter()
            .position(|f| f.ts - e.ts > window)
            .map_or(evs.len(), |p| i + p);
        let Some(p) = crate::unordered::run(&plan.shape, &evs[i..end], None) else {
            continue;
        };
        if p.furthest > to {
            results.insert(b, Outcome::Converted);
        } else if p.furthest > from {
            results.entry(b).or_insert(Outcome::Entered);
        }
    }
    results
}

/// Per-actor bucket results under each breakdown key (the attribution of
/// the steps view, with the bucket walk in place of the funnel walk).
fn actor_results(
    plan: &Plan<'_>,
    actor: &crate::plan::Actor<'_>,
    scratch: &mut crate::plan::Scratch,
) -> Vec<(BdKey, BTreeMap<i64, Outcome>)> {
    let mut out = Vec::new();
    plan.attributed(actor, scratch, &mut out, |evs, c| {
        Some(actor_buckets(plan, evs, c.map(|c| (c.step, c.bd))))
    });
    out
}

/// Bucket start -> (entered, converted).
pub type Buckets = BTreeMap<i64, (u64, u64)>;
type Counts = HashMap<BdKey, Buckets>;

/// Runs a funnel trends query.
pub fn trends(plan: &Plan<'_>) -> Result<TrendsResult, QueryError> {
    validate(plan)?;
    let interval = plan.q.interval.unwrap_or_default();
    let counts: Counts = plan.fold_actors(
        HashMap::new,
        |acc: &mut Counts, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            if scratch.evs.is_empty() {
                return;
            }
            let res = actor_results(plan, actor, scratch);
            for (k, r) in res {
                let m = acc.entry(k).or_default();
                for (b, o) in r {
                    let c = m.entry(b).or_default();
                    c.0 += 1;
                    if o == Outcome::Converted {
                        c.1 += 1;
                    }
                }
            }
        },
        |mut a, b| {
            for (k, m) in b {
                let t = a.entry(k).or_default();
                for (b, (x, y)) in m {
                    let c = t.entry(b).or_default();
                    c.0 += x;
                    c.1 += y;
                }
            }
            a
        },
    );
    let all = buckets(plan.range, interval, plan.tz);
    if plan.breakdown.is_none() {
        return Ok(TrendsResult {
            rows: trend_rows(&all, counts.get(&BdKey::None), interval, plan.tz),
            series: None,
        });
    }
    // Merge keys by output value.
    let mut merged: Vec<(Value, Buckets)> = Vec::new();
    for (k, m) in counts {
        let v = bd_value(plan, &k);
        if let Some((_, t)) = merged.iter_mut().find(|(x, _)| *x == v) {
            for (b, (x, y)) in m {
                let c = t.entry(b).or_default();
                c.0 += x;
                c.1 += y;
            }
        } else {
            merged.push((v, m));
        }
    }
    let limit = plan.breakdown.as_ref().and_then(|b| b.limit);
    Ok(series_result(merged, limit, &all, interval, plan.tz))
}

/// Every bucket of `all`, zero-filled, from (entered, converted) counts by
/// bucket start.
pub fn trend_rows(
    all: &[i64],
    m: Option<&Buckets>,
    interval: Interval,
    tz: chrono_tz::Tz,
) -> Vec<TrendRow> {
    all.iter()
        .map(|&b| {
            let (from, to) = m.and_then(|m| m.get(&b)).copied().unwrap_or((0, 0));
            TrendRow {
                timestamp: format_bucket(b, interval, tz),
                timestamp_ms: b,
                reached_from_step_count: from,
                reached_to_step_count: to,
                conversion_rate: if from == 0 {
                    0.0
                } else {
                    (to as f64 / from as f64 * 10000.0).round() / 100.0
                },
            }
        })
        .collect()
}

/// The breakdown answer from the counts of each distinct output value:
/// ordered by total entered desc (then value), `limit` truncates.
pub fn series_result(
    mut merged: Vec<(Value, Buckets)>,
    limit: Option<usize>,
    all: &[i64],
    interval: Interval,
    tz: chrono_tz::Tz,
) -> TrendsResult {
    merged.sort_by(|a, b| {
        let ta: u64 = a.1.values().map(|c| c.0).sum();
        let tb: u64 = b.1.values().map(|c| c.0).sum();
        tb.cmp(&ta)
            .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
    });
    if let Some(l) = limit.filter(|l| *l > 0) {
        merged.truncate(l);
    }
    let series = merged
        .iter()
        .map(|(v, m)| TrendSeries {
            breakdown_value: v.clone(),
            rows: trend_rows(all, Some(m), interval, tz),
        })
        .collect();
    TrendsResult {
        rows: Vec::new(),
        series: Some(series),
    }
}

/// Refuses ranges with too many buckets (shared with other backends).
pub fn check_buckets(
    range: dropscope_core::time::DateRange,
    interval: Interval,
    tz: chrono_tz::Tz,
) -> Result<(), QueryError> {
    if range.from == i64::MIN {
        return Ok(());
    }
    let count = buckets(range, interval, tz).len();
    if count > 5000 {
        return Err(QueryError::invalid(
            "interval",
            format!("{count} buckets is too many: widen the interval"),
        ));
    }
    Ok(())
}

fn validate(plan: &Plan<'_>) -> Result<(), QueryError> {
    check_buckets(plan.range, plan.q.interval.unwrap_or_default(), plan.tz)
}

/// Persons who entered in one bucket and converted (or dropped).
pub fn trend_persons(plan: &Plan<'_>) -> Result<PersonsResult, QueryError> {
    let interval = plan.q.interval.unwrap_or_default();
    let s = plan.q.entrance_period_start.as_deref().unwrap_or("");
    let (t, _) = parse_instant(s, plan.tz).ok_or_else(|| {
        QueryError::invalid("entrance_period_start", format!("not a date: {s:?}"))
    })?;
    let bucket = bucket_start(t.timestamp_millis(), interval, plan.tz);
    let dropped = plan.q.drop_off.unwrap_or(false);
    let want_bd = plan.q.breakdown_value.clone();
    let rows = plan.fold_actors(
        Vec::new,
        |acc, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            if scratch.evs.is_empty() {
                return;
            }
            for (k, r) in actor_results(plan, actor, scratch) {
                if let Some(w) = &want_bd {
                    if !bd_matches(w, &bd_value(plan, &k)) {
                        continue;
                    }
                }
                let hit = match r.get(&bucket) {
                    Some(Outcome::Converted) => !dropped,
                    Some(Outcome::Entered) => dropped,
                    None => false,
                };
                if hit {
                    let p = Path {
                        furthest: 0,
                        attempt: Attempt {
                            start: bucket,
                            excluded: false,
                            times: [0; MAX_STEPS],
                            rows: [u32::MAX; MAX_STEPS],
                            bits: 0,
                            last: 0,
                        },
                    };
                    acc.push((actor.id, actor.is_person, p));
                    break;
                }
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    Ok(crate::persons::page(plan, rows))
}
