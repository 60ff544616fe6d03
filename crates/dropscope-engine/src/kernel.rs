//! The fast path for the most common funnel: ordered or strict, steps that
//! are plain event names, counted per person, no exclusions, breakdown,
//! global filter, optional steps or per-step gaps (`Plan::kernel_table`
//! decides). It gives exactly what `prepare` + `ordered::run` give, reading
//! two columns (event id, timestamp) once and keeping the state machine in
//! a few fixed arrays: no per-event records, no attempt copies for events
//! that only start an attempt. Correlation takes each actor's path from
//! it too (`actor_path`, `Plan::path_kernel_table`; `tests/correlation.rs`
//! checks it against the general path).
//!
//! Two shapes it does not reduce to a sequential pass, and hands back to
//! the general path for that actor: an event that matches several steps,
//! and events at the same instant that match different things (rule 5's
//! pairing by step number).

use crate::funnel::Tally;
use crate::ordered::{Attempt, Path};
use crate::plan::{Plan, Scratch};

/// Funnels up to this many steps take the fast path.
pub const MAX_KERNEL_STEPS: usize = 8;

/// One actor's furthest step and the times of the attempt that got there.
#[derive(Default)]
struct Best {
    furthest: usize,
    start: i64,
    times: [i64; MAX_KERNEL_STEPS],
}

/// The state of one actor: slot `s` (1-based) holds the attempt that has
/// reached step `s` (its start and step times), `has` the filled slots.
/// One per worker, reused from actor to actor: a slot is read only while
/// its bit in `has` is set, so starting an actor clears two words, not
/// the ~650 bytes of arrays (which cost more than the state machine).
#[derive(Default)]
pub(crate) struct State {
    has: u32,
    start: [i64; MAX_KERNEL_STEPS + 1],
    times: [[i64; MAX_KERNEL_STEPS]; MAX_KERNEL_STEPS + 1],
    best: Best,
}

/// Runs the funnel over every actor; `None` when the query is not one the
/// kernel takes.
pub fn funnel_tally(plan: &Plan<'_>) -> Option<Tally> {
    let table = plan.kernel_table()?;
    let n = plan.n();
    let parts = plan.fold_person_columns(
        || Tally::new(n),
        |tally, scratch, cols| {
            let st = &mut scratch.kernel_state;
            match run_actor(plan, table, cols.event, cols.ts, &mut scratch.kernel, st) {
                Some(true) => {
                    let b = &st.best;
                    tally.add_parts(
                        plan,
                        (1u64 << b.furthest) - 1,
                        &b.times,
                        b.start,
                        b.furthest,
                    )
                }
                Some(false) => {}
                None => general(plan, scratch, &cols.actor(plan.snap), tally),
            }
        },
    );
    Some(Tally::merge_all(n, parts))
}

/// One actor's path, for kinds other than `funnel` that read only it
/// (`Plan::path_kernel_table` gives `table`): `Some(Some(path))` if the
/// actor entered, `Some(None)` if not, `None` if the general path must
/// decide. The path's steps and times are those `ordered::run` gives; its
/// `rows` are not filled in.
pub(crate) fn actor_path(
    plan: &Plan<'_>,
    table: &[u64],
    v: &dropscope_store::EventsView<'_>,
    scratch: &mut Scratch,
) -> Option<Option<Path>> {
    let st = &mut scratch.kernel_state;
    if !run_actor(plan, table, v.event, v.ts, &mut scratch.kernel, st)? {
        return Some(None);
    }
    let b = &st.best;
    let mut attempt = Attempt::start_at(b.start);
    attempt.bits = (1u64 << b.furthest) - 1;
    attempt.times[..b.furthest].copy_from_slice(&b.times[..b.furthest]);
    attempt.last = b.furthest - 1;
    Some(Some(Path {
        furthest: b.furthest,
        attempt,
    }))
}

/// The general path for one actor (the shapes the kernel hands back).
fn general(
    plan: &Plan<'_>,
    scratch: &mut Scratch,
    actor: &crate::plan::Actor<'_>,
    tally: &mut Tally,
) {
    plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
    if scratch.evs.is_empty() {
        return;
    }
    let p: Option<Path> = plan.run_funnel(&scratch.evs, None);
    if let Some(p) = p {
        tally.add(plan, &p);
    }
}

/// One actor: `Some(true)` if it entered (its path is in `st.best`),
/// `Some(false)` if not, `None` if the general path must decide.
#[inline]
fn run_actor(
    plan: &Plan<'_>,
    table: &[u64],
    event: &[u32],
    ts: &[i64],
    buf: &mut Vec<(u64, i64)>,
    st: &mut State,
) -> Option<bool> {
    st.has = 0;
    st.best.furthest = 0;
    if plan.shape.strict {
        run_strict(plan, table, event, ts, st)
    } else {
        run_gathered(plan, table, event, ts, buf, st)
    }
}

/// A strict funnel sees every event in range: one that matches no step
/// breaks every attempt (rule 6).
#[inline]
fn run_strict(
    plan: &Plan<'_>,
    table: &[u64],
    event: &[u32],
    times: &[i64],
    st: &mut State,
) -> Option<bool> {
    let n = plan.n();
    let window = plan.shape.window;
    let (from, to) = (plan.range.from, plan.range.to);
    // The previous event in range, for the same-instant rule.
    let (mut prev_ts, mut prev_mask) = (i64::MIN, u64::MAX);
    for (row, (&e, &ts)) in event.iter().zip(times).enumerate() {
        if ts < from || ts > to {
            continue;
        }
        let mask = table.get(e as usize).copied().unwrap_or(0);
        if ts == prev_ts && mask != prev_mask {
            return None;
        }
        (prev_ts, prev_mask) = (ts, mask);
        if mask == 0 {
            st.has = 0;
            continue;
        }
        if mask & (mask - 1) != 0 {
            return None;
        }
        let s = mask.trailing_zeros() as usize + 1;
        step(st, s, ts, window);
        st.has &= 1 << s;
        if st.best.furthest == n {
            // Done, unless a later event at this instant matches something
            // else (rule 5 would order the instant's events by step).
            let same_instant = times[row + 1..].iter().take_while(|&&t| t == ts).count();
            if event[row + 1..row + 1 + same_instant]
                .iter()
                .any(|&e| table.get(e as usize).copied().unwrap_or(0) != mask)
            {
                return None;
            }
            break;
        }
    }
    Some(st.best.furthest > 0)
}

/// A non-strict funnel: only events of a step, in range, matter. They are
/// gathered first without a branch per event (whether an event is kept is
/// unpredictable: on the demo data, 4 in 10 events are `$pageview`s), then
/// the state machine runs over them alone.
#[inline]
fn run_gathered(
    plan: &Plan<'_>,
    table: &[u64],
    event: &[u32],
    times: &[i64],
    buf: &mut Vec<(u64, i64)>,
    st: &mut State,
) -> Option<bool> {
    let n = plan.n();
    let window = plan.shape.window;
    let (from, to) = (plan.range.from, plan.range.to);
    let len = event.len();
    // Grown, never cleared: every slot up to `k` is written before it is read.
    if buf.len() <= len {
        buf.resize(len + 1, (0, 0));
    }
    let mut k = 0;
    for (&e, &ts) in event.iter().zip(times) {
        let mask = table.get(e as usize).copied().unwrap_or(0);
        buf[k] = (mask, ts);
        k += usize::from((mask != 0) & (ts >= from) & (ts <= to));
    }
    let kept = &buf[..k];
    let (mut prev_ts, mut prev_mask) = (i64::MIN, u64::MAX);
    for (i, &(mask, ts)) in kept.iter().enumerate() {
        if ts == prev_ts && mask != prev_mask {
            return None;
        }
        (prev_ts, prev_mask) = (ts, mask);
        if mask & (mask - 1) != 0 {
            return None;
        }
        step(st, mask.trailing_zeros() as usize + 1, ts, window);
        if st.best.furthest == n {
            // Done, unless a later event at this instant matches another
            // step (rule 5 would order the instant's events by step).
            if kept[i + 1..]
                .iter()
                .take_while(|&&(_, t)| t == ts)
                .any(|&(m, _)| m != mask)
            {
                return None;
            }
            break;
        }
    }
    Some(st.best.furthest > 0)
}

/// One event doing (1-based) step `s` at `ts`: `ordered::process` for an
/// event of one step, with no exclusions, optional steps or gaps.
#[inline]
fn step(st: &mut State, s: usize, ts: i64, window: i64) {
    if s == 1 {
        if st.has & 2 != 0 && st.start[1] == ts {
            return;
        }
        st.has |= 2;
        st.start[1] = ts;
        st.times[1][0] = ts;
        if st.best.furthest == 0 {
            st.best.furthest = 1;
            st.best.start = ts;
            st.best.times[0] = ts;
        }
        return;
    }
    let k = s - 1;
    if st.has & (1 << k) == 0 {
        return;
    }
    let start = st.start[k];
    if ts - start > window {
        return;
    }
    if st.has & (1 << s) != 0 && st.start[s] == start {
        return;
    }
    let (lo, hi) = st.times.split_at_mut(s);
    let (prev, next) = (&lo[k], &mut hi[0]);
    next[..k].copy_from_slice(&prev[..k]);
    next[k] = ts;
    st.start[s] = start;
    st.has |= 1 << s;
    if s > st.best.furthest {
        st.best.furthest = s;
        st.best.start = start;
        st.best.times[..s].copy_from_slice(&next[..s]);
    }
}
