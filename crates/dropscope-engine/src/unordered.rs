//! Unordered funnels for one actor (SEMANTICS.md rule 8).
//!
//! A sliding window keeps, per step, a queue of matching events. Step N of
//! the result means N distinct steps done within one window. The best count
//! is recorded when the window slides past an event, when every step is
//! done, or after the last event; an exclusion clears every queue.

use std::collections::VecDeque;

use dropscope_core::query::MAX_STEPS;

use crate::ordered::{Attempt, Path, Shape};
use crate::plan::MEvent;

/// Runs the unordered funnel. The returned path's `times` are the sorted
/// timestamps of the steps' first queued events (in "completed N steps"
/// order); `bits` has the first N bits set.
pub fn run(shape: &Shape, evs: &[MEvent], attribution_step0: Option<u32>) -> Option<Path> {
    let n = shape.n;
    let mut queues: Vec<VecDeque<(i64, u32)>> = vec![VecDeque::new(); n];
    let mut best: Option<(usize, [i64; MAX_STEPS], [u32; MAX_STEPS])> = None;

    let record = |queues: &Vec<VecDeque<(i64, u32)>>,
                  best: &mut Option<(usize, [i64; MAX_STEPS], [u32; MAX_STEPS])>| {
        let mut firsts: Vec<(i64, u32)> =
            queues.iter().filter_map(|q| q.front().copied()).collect();
        let count = firsts.len();
        if count == 0 || best.is_some_and(|b| b.0 >= count) {
            return;
        }
        firsts.sort();
        let mut times = [0i64; MAX_STEPS];
        let mut rows = [u32::MAX; MAX_STEPS];
        for (k, (t, r)) in firsts.iter().enumerate() {
            times[k] = *t;
            rows[k] = *r;
        }
        *best = Some((count, times, rows));
    };

    for (row, e) in evs.iter().enumerate() {
        // Slide: drop queued events that fell out of the window.
        loop {
            let oldest = queues
                .iter()
                .enumerate()
                .filter_map(|(s, q)| q.front().map(|f| (f.0, s)))
                .min();
            match oldest {
                Some((t, s)) if e.ts - t > shape.window => {
                    record(&queues, &mut best);
                    queues[s].pop_front();
                }
                _ => break,
            }
        }
        if e.excl != 0 {
            for q in queues.iter_mut() {
                q.clear();
            }
            continue;
        }
        if e.steps == 0 {
            continue;
        }
        if let Some(bd) = attribution_step0 {
            // Step attribution (only step 0 is allowed): every event must
            // carry the value... events matching only step 0 with another
            // value are skipped.
            if e.steps & 1 != 0 && e.bd != bd && e.steps == 1 {
                continue;
            }
        }
        // The matching step whose latest queued event is oldest.
        let mut target: Option<(i64, usize)> = None;
        for (s, q) in queues.iter().enumerate() {
            if e.steps & (1 << s) != 0 {
                let last = q.back().map_or(i64::MIN, |b| b.0);
                if target.is_none_or(|(t, _)| last < t) {
                    target = Some((last, s));
                }
            }
        }
        if let Some((_, s)) = target {
            queues[s].push_back((e.ts, row as u32));
        }
        if queues.iter().all(|q| !q.is_empty()) {
            record(&queues, &mut best);
            break;
        }
    }
    record(&queues, &mut best);

    let (count, times, rows) = best?;
    let mut a = Attempt {
        start: times[0],
        excluded: false,
        times,
        rows,
        bits: if count >= 64 {
            u64::MAX
        } else {
            (1u64 << count) - 1
        },
        last: count - 1,
    };
    a.times[count..].fill(0);
    Some(Path {
        furthest: count,
        attempt: a,
    })
}
