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

/// The paths of one group of actors, as event ids, with their actors.
type Counted = HashMap<Vec<u32>, u64>;

/// What a worker gathers: per group (dropped next, converted next, dropped
/// sequences, converted sequences, between sequences) each distinct path
/// with its actors. Paths are counted as ids while folding and named once
/// at the end: an actor costs no allocation unless its path is new.
#[derive(Default)]
struct Groups {
    dropped: u64,
    converted: u64,
    paths: [Counted; 5],
}

impl Groups {
    fn add(&mut self, group: usize, path: &[u32]) {
        match self.paths[group].get_mut(path) {
            Some(c) => *c += 1,
            None => {
                self.paths[group].insert(path.to_vec(), 1);
            }
        }
    }

    fn merge(mut self, other: Groups) -> Groups {
        self.dropped += other.dropped;
        self.converted += other.converted;
        for (mine, theirs) in self.paths.iter_mut().zip(other.paths) {
            for (p, n) in theirs {
                *mine.entry(p).or_default() += n;
            }
        }
        self
    }
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
    let g: Groups = plan.fold_actors(
        Groups::default,
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
            // At most `depth` (<= 10) ids each: no allocation per actor.
            let (mut next, mut between) = ([0u32; 10], [0u32; 10]);
            let (mut n_next, mut n_between) = (0usize, 0usize);
            for row in 0..v.len() {
                let ts = v.ts[row];
                if ts <= tk || ts > end || !plan.range.contains(ts) {
                    continue;
                }
                let e = v.event[row];
                if n_next < depth && (n_next == 0 || next[n_next - 1] != e) {
                    next[n_next] = e;
                    n_next += 1;
                }
                if converted
                    && ts < a.times[k + 1]
                    && n_between < depth
                    && (n_between == 0 || between[n_between - 1] != e)
                {
                    between[n_between] = e;
                    n_between += 1;
                }
            }
            let (first, full) = (&next[..n_next.min(1)], &next[..n_next]);
            if converted {
                acc.converted += 1;
                acc.add(1, first);
                acc.add(3, full);
                acc.add(4, &between[..n_between]);
            } else {
                acc.dropped += 1;
                acc.add(0, first);
                acc.add(2, full);
            }
        },
        Groups::merge,
    );
    // An empty next path reads END; an empty between path stays empty.
    let named = |ids: Vec<u32>, end_if_empty: bool| -> Vec<String> {
        if ids.is_empty() && end_if_empty {
            vec![END.to_string()]
        } else {
            ids.iter()
                .map(|&e| d.events.resolve(e).to_string())
                .collect()
        }
    };
    let [dn, cn, ds, cs, bs] = g.paths;
    let rank = |group: Counted, total: u64, end_if_empty: bool| -> Vec<PathRow> {
        ranked(
            group.into_iter().map(|(p, n)| (named(p, end_if_empty), n)),
            total,
            top,
        )
    };
    Ok(PathsResult {
        after_step: k,
        dropped: g.dropped,
        converted: g.converted,
        dropped_next: rank(dn, g.dropped, true),
        converted_next: rank(cn, g.converted, true),
        dropped_sequences: rank(ds, g.dropped, true),
        converted_sequences: rank(cs, g.converted, true),
        between_sequences: rank(bs, g.converted, false),
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
