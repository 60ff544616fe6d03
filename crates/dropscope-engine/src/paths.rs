//! Paths: what people did after a step, split by whether they went on.
//!
//! For every actor who reached step `k` (0-based `after_step`), the events
//! after their step-`k` time, within the conversion window from their
//! entry, are read in order; consecutive repeats of one event name are
//! collapsed (`a a b` reads `a b`), and the first `depth` names form the
//! actor's sequence. People who did not reach step `k+1` are "dropped", the
//! others "converted". The default `after_step` is the step with the largest
//! drop. `between_sequences` lists, for converters, the events strictly
//! between step `k` and step `k+1`.

use std::collections::HashMap;

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{PathRow, PathsResult};
use dropscope_core::QueryError;

use crate::plan::Plan;

const END: &str = "(no further events)";

struct Seqs {
    next: Vec<String>,
    between: Vec<String>,
    converted: bool,
}

/// Runs a paths query.
/// The checked path options of `q` over `n` steps: `(depth, top,
/// after_step)` (`None`: the backend picks the largest drop). Both backends
/// read them here.
pub fn options(q: &FunnelQuery, n: usize) -> Result<(usize, usize, Option<usize>), QueryError> {
    if n < 2 {
        return Err(QueryError::invalid("steps", "paths need at least 2 steps"));
    }
    let opts = q.paths.clone().unwrap_or_default();
    let depth = opts.depth.unwrap_or(3).clamp(1, 10);
    let top = opts.top.unwrap_or(10).clamp(1, 1000);
    if opts.after_step.is_some_and(|k| k + 1 >= n) {
        return Err(QueryError::invalid(
            "paths.after_step",
            format!("must be below the last step ({})", n - 1),
        ));
    }
    Ok((depth, top, opts.after_step))
}

pub fn paths(plan: &Plan<'_>) -> Result<PathsResult, QueryError> {
    let n = plan.n();
    let (depth, top, after_step) = options(plan.q, n)?;
    let k = match after_step {
        Some(k) => k,
        None => largest_drop(plan)?,
    };
    let d = plan.dicts;
    let seqs: Vec<Seqs> = plan.fold_actors(
        Vec::new,
        |acc, scratch, actor| {
            plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
            let Some(p) = plan.run_funnel(&scratch.evs, None) else {
                return;
            };
            let a = &p.attempt;
            if a.bits & (1 << k) == 0 {
                return;
            }
            let tk = a.times[k];
            let converted = a.bits & (1 << (k + 1)) != 0;
            let end = a.start.saturating_add(plan.shape.window);
            let v = &actor.view;
            let mut next: Vec<String> = Vec::new();
            let mut between: Vec<String> = Vec::new();
            let mut last: Option<u32> = None;
            let mut last_between: Option<u32> = None;
            for row in 0..v.len() {
                let ts = v.ts[row];
                if ts <= tk || ts > end || !plan.range.contains(ts) {
                    continue;
                }
                let e = v.event[row];
                if next.len() < depth && last != Some(e) {
                    next.push(d.events.resolve(e).to_string());
                    last = Some(e);
                }
                if converted
                    && ts < a.times[k + 1]
                    && between.len() < depth
                    && last_between != Some(e)
                {
                    between.push(d.events.resolve(e).to_string());
                    last_between = Some(e);
                }
            }
            acc.push(Seqs {
                next,
                between,
                converted,
            });
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    let dropped = seqs.iter().filter(|s| !s.converted).count() as u64;
    let converted = seqs.len() as u64 - dropped;
    let rank = |group: &mut dyn Iterator<Item = Vec<String>>, total: u64| -> Vec<PathRow> {
        ranked(group.map(|p| (p, 1)), total, top)
    };
    let first = |s: &Seqs| vec![s.next.first().cloned().unwrap_or_else(|| END.to_string())];
    let full = |s: &Seqs| {
        if s.next.is_empty() {
            vec![END.to_string()]
        } else {
            s.next.clone()
        }
    };
    Ok(PathsResult {
        after_step: k,
        dropped,
        converted,
        dropped_next: rank(
            &mut seqs.iter().filter(|s| !s.converted).map(first),
            dropped,
        ),
        converted_next: rank(
            &mut seqs.iter().filter(|s| s.converted).map(first),
            converted,
        ),
        dropped_sequences: rank(&mut seqs.iter().filter(|s| !s.converted).map(full), dropped),
        converted_sequences: rank(
            &mut seqs.iter().filter(|s| s.converted).map(full),
            converted,
        ),
        between_sequences: rank(
            &mut seqs
                .iter()
                .filter(|s| s.converted)
                .map(|s| s.between.clone()),
            converted,
        ),
    })
}

/// The 0-based step after which the most actors drop (the first on ties).
pub fn largest_drop(plan: &Plan<'_>) -> Result<usize, QueryError> {
    let f = crate::funnel::funnel(plan)?;
    let mut best = (0usize, 0u64);
    for s in 1..f.steps.len() {
        let drop = f.steps[s].dropped;
        if drop > best.1 {
            best = (s - 1, drop);
        }
    }
    Ok(best.0)
}

/// Path rows from `(path, actors)` pairs (a path may repeat: its actors
/// add up): by actors descending, then path; at most `top`; `share` of
/// `total`. Both backends rank with this.
pub fn ranked(
    weighted: impl IntoIterator<Item = (Vec<String>, u64)>,
    total: u64,
    top: usize,
) -> Vec<PathRow> {
    let mut counts: HashMap<Vec<String>, u64> = HashMap::new();
    for (p, n) in weighted {
        *counts.entry(p).or_default() += n;
    }
    let mut rows: Vec<PathRow> = counts
        .into_iter()
        .map(|(path, actors)| PathRow {
            path,
            actors,
            share: if total == 0 {
                0.0
            } else {
                actors as f64 / total as f64
            },
        })
        .collect();
    rows.sort_by(|a, b| b.actors.cmp(&a.actors).then_with(|| a.path.cmp(&b.path)));
    rows.truncate(top);
    rows
}
