//! Correlation: which events and properties go with converting or dropping
//! (SEMANTICS.md rule 17), with exact p-values, BH q-values and intervals.

use std::collections::{HashMap, HashSet};

use dropscope_core::query::{CorrelationOptions, CorrelationType};
use dropscope_core::result::{CorrelationResult, CorrelationRow, PersonsResult};
use dropscope_core::QueryError;
use dropscope_store::dict::value_str;

use crate::filter::Filter;
use crate::ordered::Path;
use crate::plan::{Actor, Aggregation, Plan};

/// PostHog's minimum-support rule: a row needs
/// `s + f >= min(min_count, min_percentage · (S + F))`.
pub fn has_support(s: u64, f: u64, total: u64, min_percentage: f64, min_count: f64) -> bool {
    (s + f) as f64 >= min_count.min(min_percentage * total as f64)
}

/// One actor's outcome, the row keys it has, and its breakdown segment.
struct Outcome {
    success: bool,
    keys: Vec<String>,
    segment: Option<String>,
}

fn options(plan: &Plan<'_>) -> CorrelationOptions {
    plan.q.correlation.clone().unwrap_or_default()
}

/// The transition analysed: (population step, success step), 0-based.
pub fn transition(plan: &Plan<'_>) -> (usize, usize) {
    let from = plan.q.from_step.unwrap_or(0);
    let to = options(plan)
        .success_step
        .or(plan.q.to_step)
        .unwrap_or(plan.n() - 1);
    (from, to)
}

/// Whether a path belongs to the population (reached the `from` step).
fn entered(plan: &Plan<'_>, p: &Path) -> bool {
    p.attempt.bits & (1 << transition(plan).0) != 0
}

/// Whether a path converted (reached the success step).
fn converted(plan: &Plan<'_>, p: &Path) -> bool {
    p.attempt.bits & (1 << transition(plan).1) != 0
}

/// Event names a step or exclusion can match (excluded from event rows).
fn step_event_ids(plan: &Plan<'_>) -> HashSet<u32> {
    let mut out = HashSet::new();
    for m in plan.steps.iter() {
        if let Some(ids) = &m.event_ids {
            out.extend(ids.iter().copied());
        }
    }
    out
}

/// Rows `start < ts < end` inside the range: the span correlation observes.
fn span(plan: &Plan<'_>, p: &Path, success: bool) -> (i64, i64) {
    let a = &p.attempt;
    let t0 = a.times[0];
    let equal = options(plan).equal_window;
    let end = if success && !equal {
        let last = (0..plan.n())
            .rev()
            .find(|s| a.bits & (1 << s) != 0)
            .unwrap_or(0);
        a.times[last]
    } else {
        t0.saturating_add(plan.shape.window)
    };
    (t0, end)
}

/// The keys (rows) one actor has.
fn actor_keys(
    plan: &Plan<'_>,
    actor: &Actor<'_>,
    p: &Path,
    success: bool,
    opts: &CorrelationOptions,
    step_ids: &HashSet<u32>,
) -> Vec<String> {
    let d = &*plan.dicts;
    let v = &actor.view;
    let (t0, end) = span(plan, p, success);
    let mut keys: Vec<String> = Vec::new();
    match opts.kind {
        CorrelationType::Events => {
            let mut seen: HashSet<u32> = HashSet::new();
            for row in 0..v.len() {
                let ts = v.ts[row];
                if ts <= t0 || ts >= end || !plan.range.contains(ts) {
                    continue;
                }
                let e = v.event[row];
                if step_ids.contains(&e) || !seen.insert(e) {
                    continue;
                }
                keys.push(d.events.resolve(e).to_string());
            }
            if let Some(names) = &opts.with_person_properties {
                let mut o = opts.clone();
                o.kind = CorrelationType::Properties;
                o.names = Some(names.clone());
                o.with_person_properties = None;
                for k in actor_keys(plan, actor, p, success, &o, step_ids) {
                    keys.push(format!("{}{k}", dropscope_core::query::PERSON_ROW_PREFIX));
                }
            }
        }
        CorrelationType::EventWithProperties => {
            let names: HashSet<u32> = opts
                .event_names
                .iter()
                .flatten()
                .filter_map(|n| d.events.get(n))
                .collect();
            let skip: HashSet<&str> = opts
                .event_exclude_property_names
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            let mut seen: HashSet<String> = HashSet::new();
            for row in 0..v.len() {
                let ts = v.ts[row];
                if ts <= t0
                    || ts >= end
                    || !plan.range.contains(ts)
                    || !names.contains(&v.event[row])
                {
                    continue;
                }
                let ev = d.events.resolve(v.event[row]);
                for (k, val) in v.props(row) {
                    let key = d.keys.resolve(k);
                    if skip.contains(key) || key == dropscope_core::event::ELEMENTS_KEY {
                        continue;
                    }
                    let row_key = format!("{ev}::{key}::{}", value_str(d.values.resolve(val)));
                    if seen.insert(row_key.clone()) {
                        keys.push(row_key);
                    }
                }
            }
        }
        CorrelationType::Properties => {
            let props = if opts.properties_at_step && actor.is_person {
                props_at(plan, actor, p.attempt.times[transition(plan).0])
            } else {
                actor_props(plan, actor)
            };
            let names = opts.names.clone().unwrap_or_default();
            if names.iter().any(|n| n == "$all") {
                for (k, val) in &props {
                    keys.push(format!(
                        "{}::{}",
                        d.keys.resolve(*k),
                        value_str(d.values.resolve(*val))
                    ));
                }
            } else {
                for name in &names {
                    let val = d
                        .keys
                        .get(name)
                        .and_then(|k| props.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v));
                    let s = val
                        .map(|v| value_str(d.values.resolve(v)).to_string())
                        .unwrap_or_default();
                    keys.push(format!("{name}::{s}"));
                }
            }
        }
    }
    keys
}

/// A person's properties as of time `t`: `$set`/`$set_once` of the
/// person's events up to `t` applied in order; keys never set by an event
/// keep their current value.
fn props_at(plan: &Plan<'_>, actor: &Actor<'_>, t: i64) -> Vec<(u32, u32)> {
    let d = &*plan.dicts;
    let current = actor_props(plan, actor);
    let (Some(set_k), set_once_k) = (d.keys.get("$set"), d.keys.get("$set_once")) else {
        return current;
    };
    let mut touched: HashMap<u32, Option<u32>> = HashMap::new();
    let v = &actor.view;
    for row in 0..v.len() {
        let before = v.ts[row] <= t;
        for (k, once) in [(Some(set_k), false), (set_once_k, true)] {
            let Some(val) = k.and_then(|k| v.prop(row, k)) else {
                continue;
            };
            let obj = dropscope_store::dict::decode_value(d.values.resolve(val));
            let Some(obj) = obj.as_object() else { continue };
            for (key, value) in obj {
                let Some(kid) = d.keys.get(key) else { continue };
                let vid = d.values.get(&dropscope_store::dict::encode_value(value));
                let slot = touched.entry(kid).or_insert(None);
                if before && !(once && slot.is_some()) {
                    *slot = vid;
                }
            }
        }
    }
    let mut out: Vec<(u32, u32)> = current
        .into_iter()
        .filter(|(k, _)| !touched.contains_key(k))
        .collect();
    out.extend(touched.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    out.sort_unstable();
    out
}

/// The actor's properties: the person's, or the group's for group actors.
fn actor_props(plan: &Plan<'_>, actor: &Actor<'_>) -> Vec<(u32, u32)> {
    match &plan.agg {
        Aggregation::Person => plan.snap.person(actor.id).props.clone(),
        Aggregation::Group(g) => {
            let names = plan.regroup_names();
            let key = names.get(actor.id as usize).cloned().unwrap_or_default();
            plan.snap
                .groups()
                .props
                .get(&(*g, key))
                .cloned()
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

fn validate(plan: &Plan<'_>, opts: &CorrelationOptions) -> Result<(), QueryError> {
    if plan.n() < 2 {
        return Err(QueryError::invalid(
            "steps",
            "correlation needs at least 2 steps",
        ));
    }
    if opts.kind == CorrelationType::EventWithProperties
        && opts.event_names.as_ref().is_none_or(|n| n.is_empty())
    {
        return Err(QueryError::invalid(
            "correlation.event_names",
            "event_with_properties needs the event names to analyse",
        ));
    }
    if opts.kind == CorrelationType::Properties && opts.names.as_ref().is_none_or(|n| n.is_empty())
    {
        return Err(QueryError::invalid(
            "correlation.names",
            "properties correlation needs property names (or \"$all\")",
        ));
    }
    if let Some(s) = opts.success_step {
        if s == 0 || s >= plan.n() {
            return Err(QueryError::invalid(
                "correlation.success_step",
                format!("must be a step index in 1..{}", plan.n()),
            ));
        }
    }
    Ok(())
}

/// Runs a correlation query.
pub fn correlation(plan: &Plan<'_>) -> Result<CorrelationResult, QueryError> {
    let opts = options(plan);
    validate(plan, &opts)?;
    let step_ids = step_event_ids(plan);
    let outcomes: Vec<Outcome> = plan.fold_actors(
        Vec::new,
        |acc, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            let segment = if plan.breakdown.is_some() {
                let mut out = Vec::new();
                plan.actor_paths(actor, scratch, &mut out);
                out.first()
                    .map(|(k, _)| crate::funnel::bd_value(plan, k).to_string())
            } else {
                None
            };
            if let Some(p) = plan
                .run_funnel(&scratch.evs, None)
                .filter(|p| entered(plan, p))
            {
                let success = converted(plan, &p);
                acc.push(Outcome {
                    success,
                    keys: actor_keys(plan, actor, &p, success, &opts, &step_ids),
                    segment,
                });
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    let big_s = outcomes.iter().filter(|o| o.success).count() as u64;
    let big_f = outcomes.len() as u64 - big_s;
    let skewed_ratio = big_s == 0 || big_f == 0 || big_s > 10 * big_f || big_f > 10 * big_s;
    let (from_step, to_step) = transition(plan);
    if big_s == 0 || big_f == 0 {
        return Ok(CorrelationResult {
            skewed: true,
            success_total: big_s,
            failure_total: big_f,
            from_step,
            to_step,
            ..Default::default()
        });
    }
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    for o in &outcomes {
        for k in &o.keys {
            let c = counts.entry(k.clone()).or_default();
            if o.success {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    let excluded: HashSet<String> = opts.exclude_event_names.iter().flatten().cloned().collect();
    let excluded_props: HashSet<String> = opts.exclude_names.iter().flatten().cloned().collect();
    let mut keys: Vec<(String, (u64, u64))> = counts
        .into_iter()
        .filter(|(k, (s, f))| {
            let first = k.split("::").next().unwrap_or("");
            match opts.kind {
                CorrelationType::Events => {
                    let prop = k
                        .strip_prefix(dropscope_core::query::PERSON_ROW_PREFIX)
                        .map(|r| r.split("::").next().unwrap_or(""));
                    match prop {
                        Some(name) => !excluded_props.contains(name),
                        None => !excluded.contains(k),
                    }
                }
                CorrelationType::Properties => !excluded_props.contains(first),
                CorrelationType::EventWithProperties => s + f > 2,
            }
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let p_values: Vec<f64> = keys
        .iter()
        .map(|(_, (s, f))| dropscope_stats::fisher_exact_two_sided(*s, *f, big_s - s, big_f - f))
        .collect();
    let q_values =
        dropscope_stats::benjamini_hochberg(&p_values).unwrap_or_else(|_| p_values.clone());
    let pct = opts.min_person_percentage.unwrap_or(0.02);
    let min_count = opts.min_person_count.unwrap_or(25.0);
    let total = big_s + big_f;
    let mut rows: Vec<CorrelationRow> = keys
        .iter()
        .zip(p_values.iter().zip(&q_values))
        .map(|((k, (s, f)), (p, q))| {
            let odds = dropscope_stats::odds_ratio_prior(*s, *f, big_s, big_f).unwrap_or(f64::NAN);
            let ci = dropscope_stats::odds_ratio_interval_woolf(*s, *f, big_s - s, big_f - f, 0.95)
                .map(|c| [c.lower, c.upper])
                .unwrap_or([0.0, f64::INFINITY]);
            CorrelationRow {
                event: k.clone(),
                success_count: *s,
                failure_count: *f,
                success_total: big_s,
                failure_total: big_f,
                odds_ratio: odds,
                correlation_type: if odds > 1.0 { "success" } else { "failure" }.into(),
                p_value: *p,
                q_value: *q,
                odds_ratio_interval: ci,
                low_support: !has_support(*s, *f, total, pct, min_count),
                adjusted_odds_ratio: None,
                adjusted_odds_ratio_interval: None,
                simpson_warning: None,
            }
        })
        .collect();
    adjust(&mut rows, &outcomes, opts.adjusted_top_k.unwrap_or(20));
    if plan.breakdown.is_some() {
        simpson(&mut rows, &outcomes);
    }
    let rows_tested = rows.len();
    let low: Vec<CorrelationRow> = rows.iter().filter(|r| r.low_support).cloned().collect();
    rows.retain(|r| !r.low_support);
    let top = opts.top.unwrap_or(10);
    let mut succ: Vec<CorrelationRow> = rows
        .iter()
        .filter(|r| r.correlation_type == "success")
        .cloned()
        .collect();
    let mut fail: Vec<CorrelationRow> = rows
        .iter()
        .filter(|r| r.correlation_type == "failure")
        .cloned()
        .collect();
    succ.sort_by(|a, b| {
        b.odds_ratio
            .total_cmp(&a.odds_ratio)
            .then_with(|| a.event.cmp(&b.event))
    });
    fail.sort_by(|a, b| {
        a.odds_ratio
            .total_cmp(&b.odds_ratio)
            .then_with(|| a.event.cmp(&b.event))
    });
    succ.truncate(top);
    fail.truncate(top);
    succ.extend(fail);
    Ok(CorrelationResult {
        events: succ,
        low_support: low,
        skewed: skewed_ratio,
        success_total: big_s,
        failure_total: big_f,
        rows_tested,
        from_step,
        to_step,
    })
}

/// Adjusted odds ratios: an L2-regularised logistic regression of success
/// on the indicators of the `k` supported rows with the smallest p-values,
/// so that two confounded signals are told apart.
fn adjust(rows: &mut [CorrelationRow], outcomes: &[Outcome], k: usize) {
    if k == 0 || outcomes.len() < 10 {
        return;
    }
    let mut idx: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].low_support).collect();
    idx.sort_by(|&a, &b| rows[a].p_value.total_cmp(&rows[b].p_value));
    idx.truncate(k);
    if idx.is_empty() {
        return;
    }
    let col: HashMap<&str, usize> = idx
        .iter()
        .enumerate()
        .map(|(c, &i)| (rows[i].event.as_str(), c))
        .collect();
    let x: Vec<Vec<f64>> = outcomes
        .iter()
        .map(|o| {
            let mut r = vec![0.0; idx.len()];
            for key in &o.keys {
                if let Some(&c) = col.get(key.as_str()) {
                    r[c] = 1.0;
                }
            }
            r
        })
        .collect();
    let y: Vec<bool> = outcomes.iter().map(|o| o.success).collect();
    let Ok(fit) =
        dropscope_stats::fit_logistic_l2(&x, &y, 1.0, &dropscope_stats::LogisticOptions::default())
    else {
        return;
    };
    for (c, &i) in idx.iter().enumerate() {
        let coef = fit.coefficients[c + 1];
        if !coef.is_finite() || fit.standard_errors[c + 1].is_infinite() {
            continue;
        }
        rows[i].adjusted_odds_ratio = Some(coef.exp());
        rows[i].adjusted_odds_ratio_interval = fit
            .odds_ratio_interval(c, 0.95)
            .ok()
            .flatten()
            .map(|(lo, hi)| [lo, hi]);
    }
}

/// Simpson's paradox check: the Mantel–Haenszel odds ratio over the
/// breakdown's segments against the crude direction.
fn simpson(rows: &mut [CorrelationRow], outcomes: &[Outcome]) {
    // Per segment: (successes, failures) and, per key, (s, f).
    let mut seg_totals: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut seg_key: HashMap<(&str, &str), (f64, f64)> = HashMap::new();
    for o in outcomes {
        let seg = o.segment.as_deref().unwrap_or("");
        let t = seg_totals.entry(seg).or_default();
        if o.success {
            t.0 += 1.0
        } else {
            t.1 += 1.0
        }
        for k in &o.keys {
            let c = seg_key.entry((seg, k.as_str())).or_default();
            if o.success {
                c.0 += 1.0
            } else {
                c.1 += 1.0
            }
        }
    }
    if seg_totals.len() < 2 {
        return;
    }
    for r in rows.iter_mut() {
        let (mut num, mut den) = (0.0, 0.0);
        for (seg, &(big_s, big_f)) in &seg_totals {
            let (s, f) = seg_key
                .get(&(*seg, r.event.as_str()))
                .copied()
                .unwrap_or((0.0, 0.0));
            let n = big_s + big_f;
            if n == 0.0 {
                continue;
            }
            num += s * (big_f - f) / n;
            den += f * (big_s - s) / n;
        }
        if num == 0.0 || den == 0.0 {
            continue;
        }
        let mh = num / den;
        let crude_up = r.odds_ratio > 1.0;
        if crude_up != (mh > 1.0) {
            r.simpson_warning = Some(format!(
                "direction flips within the breakdown's segments: overall {} (odds {:.2}), {} after adjusting for the segment (Mantel–Haenszel odds {:.2})",
                r.correlation_type,
                r.odds_ratio,
                if mh > 1.0 { "success" } else { "failure" },
                mh
            ));
        }
    }
}

/// The actors behind one correlation row.
pub fn correlation_persons(plan: &Plan<'_>) -> Result<PersonsResult, QueryError> {
    let opts = options(plan);
    let pf = plan.q.persons_for.clone().unwrap_or_default();
    let d = &*plan.dicts;
    let step_ids = step_event_ids(plan);
    let event_id = match &pf.event {
        Some(e) => Some(d.events.get(e)),
        None => None,
    };
    if event_id.is_none() && pf.property.is_none() {
        return Err(QueryError::invalid(
            "persons_for",
            "correlation persons need `event` or `property`",
        ));
    }
    let filter = Filter::compile(
        pf.properties.as_ref(),
        "persons_for.properties",
        plan.snap,
        d,
    )?;
    let rows = plan.fold_actors(
        Vec::new,
        |acc, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            let Some(p) = plan.run_funnel(&scratch.evs, None) else {
                return;
            };
            let success = converted(plan, &p);
            if pf.converted.is_some_and(|c| c != success) {
                return;
            }
            let hit = match (event_id, &pf.property) {
                (Some(eid), _) => {
                    let Some(eid) = eid else { return };
                    let (t0, end) = span(plan, &p, success);
                    let v = &actor.view;
                    (0..v.len()).any(|row| {
                        let ts = v.ts[row];
                        ts > t0
                            && ts < end
                            && plan.range.contains(ts)
                            && v.event[row] == eid
                            && filter.as_ref().is_none_or(|f| {
                                let ctx = crate::filter::EventCtx {
                                    view: v,
                                    row,
                                    person: plan.person_of(actor, row),
                                };
                                f.eval(&ctx, plan.snap, d)
                            })
                    })
                }
                (None, Some(prop)) => {
                    let mut o = opts.clone();
                    o.kind = CorrelationType::Properties;
                    let name = prop.split("::").next().unwrap_or("").to_string();
                    o.names = Some(vec![name]);
                    actor_keys(plan, actor, &p, success, &o, &step_ids)
                        .iter()
                        .any(|k| k == prop)
                }
                _ => false,
            };
            if hit {
                acc.push((String::new(), vec![actor.id], actor.is_person, p));
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    Ok(crate::persons::page(plan, rows))
}
