//! `counting: totals`: every conversion attempt of an actor counts, with
//! re-entry after an attempt completes or its window expires (as Amplitude
//! and Mixpanel count "totals").
//!
//! An attempt starts at a first-step event when none is open, advances one
//! step per matching event (greedily, in time order), and closes when it
//! completes, when its window expires, when an exclusion active at its
//! position happens (the attempt is discarded), or, in strict funnels, when
//! any other event interrupts it. Optional steps and per-step gaps are
//! honoured as in the unique mode.

use crate::ordered::{Attempt, Path};
use crate::plan::{MEvent, Plan};

/// Every attempt of one actor, in start order.
pub fn attempts(plan: &Plan<'_>, evs: &[MEvent]) -> Vec<Path> {
    let shape = &plan.shape;
    let n = shape.n;
    let mut out = Vec::new();
    let mut open: Option<Attempt> = None;
    let close = |a: Attempt, out: &mut Vec<Path>| {
        let furthest = (0..n)
            .rev()
            .find(|s| a.bits & (1 << s) != 0)
            .map_or(0, |s| s + 1);
        out.push(Path {
            furthest,
            attempt: a,
        });
    };
    for (row, e) in evs.iter().enumerate() {
        if let Some(a) = open {
            if e.ts - a.start > shape.window {
                close(a, &mut out);
                open = None;
            }
        }
        if let Some(mut a) = open {
            let at = a.last;
            let excluded = shape
                .exclusions
                .iter()
                .enumerate()
                .any(|(x, &(from, to))| e.excl & (1 << x) != 0 && from <= at && at < to);
            if excluded {
                open = None;
                continue;
            }
            // The next required step, or an optional one before it.
            let mut advanced = false;
            let mut s = at + 1;
            while s < n {
                if e.steps & (1 << s) != 0 {
                    let gap = e.ts - a.times[a.last];
                    let ok = shape.within[s].is_none_or(|w| gap <= w)
                        && shape.min_gap[s].is_none_or(|g| gap >= g);
                    if ok {
                        a.times[s] = e.ts;
                        a.rows[s] = row as u32;
                        a.bits |= 1 << s;
                        a.last = s;
                        advanced = true;
                    }
                    break;
                }
                if !shape.optional[s] {
                    break;
                }
                s += 1;
            }
            if advanced {
                if a.last == n - 1 {
                    close(a, &mut out);
                    open = None;
                } else {
                    open = Some(a);
                }
                continue;
            }
            if shape.strict {
                close(a, &mut out);
                open = None;
            } else {
                open = Some(a);
                continue;
            }
        }
        if open.is_none() && e.steps & 1 != 0 {
            let mut a = Attempt {
                start: e.ts,
                excluded: false,
                times: [0; dropscope_core::query::MAX_STEPS],
                rows: [u32::MAX; dropscope_core::query::MAX_STEPS],
                bits: 1,
                last: 0,
            };
            a.times[0] = e.ts;
            a.rows[0] = row as u32;
            if n == 1 {
                close(a, &mut out);
            } else {
                open = Some(a);
            }
        }
    }
    if let Some(a) = open {
        close(a, &mut out);
    }
    out
}
