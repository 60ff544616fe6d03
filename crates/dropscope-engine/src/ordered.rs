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
    pub(crate) fn start_at(ts: i64) -> Attempt {
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

impl Default for Path {
    /// Never entered.
    fn default() -> Self {
        Path {
            furthest: 0,
            attempt: Attempt::start_at(0),
        }
    }
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
    // Attempts are copied as steps advance; a size fitted to the funnel
    // keeps those copies small for the common short funnels.
    // The slot array (`S` = `N` + 1) is initialised for every actor, so it
    // is sized to the funnel too.
    if shape.n <= 4 {
        run_n::<4, 5>(shape, evs, constraint)
    } else if shape.n <= 8 {
        run_n::<8, 9>(shape, evs, constraint)
    } else {
        run_n::<MAX_STEPS, { MAX_STEPS + 1 }>(shape, evs, constraint)
    }
}

/// An attempt sized for funnels of up to `N` steps (internal).
#[derive(Debug, Clone, Copy)]
struct Att<const N: usize> {
    start: i64,
    excluded: bool,
    last: u8,
    bits: u64,
    times: [i64; N],
    rows: [u32; N],
}

impl<const N: usize> Att<N> {
    fn start_at(ts: i64) -> Self {
        Att {
            start: ts,
            excluded: false,
            last: u8::MAX,
            bits: 0,
            times: [0; N],
            rows: [u32::MAX; N],
        }
    }

    fn widen(&self) -> Attempt {
        let mut a = Attempt::start_at(self.start);
        a.excluded = self.excluded;
        a.bits = self.bits;
        a.last = if self.last == u8::MAX {
            usize::MAX
        } else {
            self.last as usize
        };
        a.times[..N].copy_from_slice(&self.times);
        a.rows[..N].copy_from_slice(&self.rows);
        a
    }
}

fn run_n<const N: usize, const S: usize>(
    shape: &Shape,
    evs: &[MEvent],
    constraint: Option<StepConstraint>,
) -> Option<Path> {
    let n = shape.n;
    let mut entered: [Option<Att<N>>; S] = [None; S];
    let entered = &mut entered[..=n];
    let mut best: Option<(usize, Att<N>)> = None;
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
    Some(Path {
        furthest,
        attempt: attempt.widen(),
    })
}

#[allow(clippy::too_many_arguments)]
fn process<const N: usize>(
    shape: &Shape,
    entered: &mut [Option<Att<N>>],
    best: &mut Option<(usize, Att<N>)>,
    e: &MEvent,
    row: u32,
    steps: u64,
    single: bool,
    constraint: Option<StepConstraint>,
) {
    let n = shape.n;
    // Steps from last to first, so one event advances an attempt one step.
    for s in (1..=n).rev() {
        // Exclusions active for the attempt stored at entered[s-1] (sitting
        // at 0-based step s-2).
        if single && s >= 2 && e.excl != 0 && excl_active(shape, e.excl, s - 2) {
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
        let prev_idx = if s == 1 {
            None
        } else {
            let mut k = s - 1;
            while entered[k].is_none() && k >= 2 && shape.optional[k - 1] {
                k -= 1;
            }
            match entered[k] {
                Some(_) => Some(k),
                None => continue,
            }
        };
        let prev = match prev_idx {
            None => Att::<N>::start_at(e.ts),
            Some(k) => entered[k].expect("checked above"),
        };
        if e.ts - prev.start > shape.window || prev.excluded {
            continue;
        }
        if entered[s].is_some_and(|a| a.start == prev.start) {
            continue;
        }
        if !single && prev.rows[..n.min(N)].contains(&row) {
            continue;
        }
        if s > 1 && prev.last != u8::MAX {
            let gap = e.ts - prev.times[prev.last as usize];
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
        next.last = idx as u8;
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
        for (s, slot) in entered.iter_mut().enumerate().skip(1) {
            if steps & (1 << (s - 1)) == 0 {
                *slot = None;
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
