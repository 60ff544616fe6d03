//! Ordered and strict funnels for one actor (SEMANTICS.md rules 4–7, 11).
//!
//! One pass over the actor's matched events. `entered[s]` holds the attempt
//! that has reached 1-based step `s` (the latest qualifying start wins);
//! `best` is the furthest record, which decides the actor's result.

use dropscope_core::query::MAX_STEPS;

use crate::plan::MEvent;

/// An attempt: when it started and when it did each step.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub start: i64,
    pub excluded: bool,
    /// Timestamp of each 0-based step done (valid where `bits` is set).
    pub times: [i64; MAX_STEPS],
    /// Row (index in the actor's matched events) used for each step.
    pub rows: [u32; MAX_STEPS],
    /// Steps done.
    pub bits: u64,
    /// Last step done (0-based), for per-step windows and gaps.
    pub last: usize,
}

impl Attempt {
    fn start_at(ts: i64) -> Attempt {
        Attempt {
            start: ts,
            excluded: false,
            times: [0; MAX_STEPS],
            rows: [u32::MAX; MAX_STEPS],
            bits: 0,
            last: usize::MAX,
        }
    }
}

/// The actor's result: the furthest step reached and the path that got there.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    /// Furthest step reached, 1-based (0 = never entered).
    pub furthest: usize,
    pub attempt: Attempt,
}

/// The funnel's shape, as the per-actor algorithms need it.
#[derive(Debug, Clone)]
pub struct Shape {
    pub n: usize,
    pub window: i64,
    pub strict: bool,
    /// Per 0-based step.
    pub optional: Vec<bool>,
    /// Per 0-based step: max gap from the previous done step (ms).
    pub within: Vec<Option<i64>>,
    /// Per 0-based step: min gap from the previous done step (ms).
    pub min_gap: Vec<Option<i64>>,
    /// Per exclusion: (from_step, to_step), 0-based.
    pub exclusions: Vec<(usize, usize)>,
}

/// Constrains which event may serve as one step (breakdown attribution `step`).
#[derive(Debug, Clone, Copy)]
pub struct StepConstraint {
    pub step: usize,
    pub bd: u32,
}

/// Runs the ordered (or strict) funnel over `evs` (sorted by time, then
/// ingest order). Returns `None` when the actor never entered or was
/// excluded.
pub fn run(shape: &Shape, evs: &[MEvent], constraint: Option<StepConstraint>) -> Option<Path> {
    // `entered` lives in a per-thread buffer: a fresh array of 31 attempts
    // per actor would cost more than the walk itself.
    ENTERED.with(|cell| {
        let mut entered = cell.borrow_mut();
        entered.clear();
        entered.resize(shape.n + 1, None);
        run_with(shape, evs, constraint, &mut entered)
    })
}

thread_local! {
    static ENTERED: std::cell::RefCell<Vec<Option<Attempt>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn run_with(
    shape: &Shape,
    evs: &[MEvent],
    constraint: Option<StepConstraint>,
    entered: &mut [Option<Attempt>],
) -> Option<Path> {
    let n = shape.n;
    let mut best: Option<(usize, Attempt)> = None;
    let mut i = 0;
    while i < evs.len() {
        let ts = evs[i].ts;
        let mut j = i + 1;
        while j < evs.len() && evs[j].ts == ts {
            j += 1;
        }
        let group = &evs[i..j];
        let same = group
            .iter()
            .all(|e| e.steps == group[0].steps && e.excl == group[0].excl);
        if same {
            for (k, e) in group.iter().enumerate() {
                process(
                    shape,
                    entered,
                    &mut best,
                    e,
                    (i + k) as u32,
                    e.steps,
                    true,
                    constraint,
                );
                if best.is_some_and(|b| b.0 == n) {
                    break;
                }
            }
        } else {
            // Different steps at one instant: (event, step) pairs by step
            // number; exclusions ignored; no strict clearing.
            for s in 0..n {
                for (k, e) in group.iter().enumerate() {
                    if e.steps & (1 << s) != 0 {
                        process(
                            shape,
                            entered,
                            &mut best,
                            e,
                            (i + k) as u32,
                            1 << s,
                            false,
                            constraint,
                        );
                    }
                }
            }
        }
        if best.is_some_and(|b| b.0 == n) {
            break;
        }
        i = j;
    }
    let (furthest, attempt) = best?;
    if attempt.excluded {
        return None;
    }
    Some(Path { furthest, attempt })
}

#[allow(clippy::too_many_arguments)]
fn process(
    shape: &Shape,
    entered: &mut [Option<Attempt>],
    best: &mut Option<(usize, Attempt)>,
    e: &MEvent,
    row: u32,
    steps: u64,
    single: bool,
    constraint: Option<StepConstraint>,
) {
    let n = shape.n;
    // Steps from last to first, so one event advances an attempt one step.
    for s in (1..=n).rev() {
        // Exclusions active at position s-1 (attempt sitting at 0-based
        // step s-2... expressed as: attempt stored at entered[s-1]).
        if single && s >= 2 && s - 1 <= n && excl_active(shape, e.excl, s - 2) {
            let next_start = entered[s].map(|a| a.start);
            if let Some(prev) = entered[s - 1].as_mut() {
                let in_window = e.ts - prev.start <= shape.window;
                let already = next_start == Some(prev.start);
                if in_window && !already && !prev.excluded {
                    prev.excluded = true;
                    if let Some((bs, b)) = best.as_mut() {
                        if *bs == s - 1 && e.ts - b.start <= shape.window {
                            b.excluded = true;
                        }
                    }
                }
            }
        }
        let idx = s - 1;
        if steps & (1 << idx) == 0 {
            continue;
        }
        if let Some(c) = constraint {
            if c.step == idx && e.bd != c.bd {
                continue;
            }
        }
        // The attempt this event would advance: step 1 starts a new one; a
        // later step follows the previous step, or skips optional steps.
        let prev = if s == 1 {
            Some(Attempt::start_at(e.ts))
        } else {
            let mut k = s - 1;
            let mut found = entered[k];
            while found.is_none() && k >= 2 && shape.optional[k - 1] {
                k -= 1;
                found = entered[k];
            }
            found
        };
        let Some(prev) = prev else { continue };
        if e.ts - prev.start > shape.window || prev.excluded {
            continue;
        }
        if entered[s].is_some_and(|a| a.start == prev.start && (s == 1 || a.bits & (1 << idx) != 0))
        {
            continue;
        }
        if !single && prev.rows[..n].contains(&row) {
            continue;
        }
        if s > 1 && prev.last != usize::MAX {
            let gap = e.ts - prev.times[prev.last];
            if shape.within[idx].is_some_and(|w| gap > w)
                || shape.min_gap[idx].is_some_and(|g| gap < g)
            {
                continue;
            }
        }
        let mut next = prev;
        next.times[idx] = e.ts;
        next.rows[idx] = row;
        next.bits |= 1 << idx;
        next.last = idx;
        entered[s] = Some(next);
        let replace = match best {
            None => true,
            Some((bs, b)) => s > *bs || (s == *bs && b.excluded),
        };
        if replace {
            *best = Some((s, next));
        }
    }
    if single && shape.strict {
        for s in 1..=n {
            if steps & (1 << (s - 1)) == 0 {
                entered[s] = None;
            }
        }
    }
}

/// Whether some exclusion covers an attempt sitting at 0-based step `at`.
fn excl_active(shape: &Shape, excl: u32, at: usize) -> bool {
    if excl == 0 {
        return false;
    }
    shape
        .exclusions
        .iter()
        .enumerate()
        .any(|(x, &(from, to))| excl & (1 << x) != 0 && from <= at && at < to)
}
