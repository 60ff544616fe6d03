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

use dropscope_core::query::FunnelOrder;

use crate::funnel::Tally;
use crate::ordered::Path;
use std::collections::HashMap;

use dropscope_store::dict::value_str;

use crate::plan::{ActorCols, BdKey, KernelBreakdown, PersonBlock, Plan, Scratch};

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
    /// An unordered funnel's queues (`walk_unordered`).
    queues: Queues,
}

/// Runs the funnel over every actor, by breakdown value (`BdKey::None`
/// without a breakdown); `None` when the query is not one the kernel takes.
pub fn funnel_tallies(plan: &Plan<'_>) -> Option<HashMap<BdKey, Tally>> {
    let table = plan.kernel_table()?;
    let n = plan.n();
    let breakdown = plan.kernel_breakdown();
    let one = |tallies: &mut Tallies, scratch: &mut Scratch, cols: &ActorCols<'_>| {
        if breakdown.is_some() {
            // Actors of several slices, with a breakdown: the general path
            // (the kernel finds the breakdown value in a block's bitmaps).
            return general(plan, scratch, &cols.actor(plan.snap), tallies);
        }
        let st = &mut scratch.kernel_state;
        match run_actor(plan, table, cols.event, cols.ts, &mut scratch.kernel, st) {
            Some(true) => add_best(plan, tallies.get(NO_VALUE), &st.best),
            Some(false) => {}
            None => general(plan, scratch, &cols.actor(plan.snap), tallies),
        }
    };
    // With a breakdown, the blocks read property pages: released behind.
    let parts = plan.fold_runs(
        || Tallies::new(n),
        |tallies, scratch, block| {
            if plan.shape.strict {
                // A strict funnel reads every event of an actor in range.
                block.for_each(|cols| one(tallies, scratch, &cols));
            } else {
                tally_block(plan, table, breakdown.as_ref(), tallies, scratch, block);
            }
        },
        one,
        breakdown.is_some(),
    );
    Some(Tallies::merge(plan, parts))
}

/// The value id of "no breakdown value" (and the one key without a
/// breakdown).
const NO_VALUE: u32 = u32::MAX;

/// One worker's tallies, by breakdown value id.
struct Tallies {
    n: usize,
    /// The tallies, and the value id of the last one asked for with its
    /// index (most runs of persons share one: without a breakdown, always).
    list: Vec<(u32, Tally)>,
    last: (u32, usize),
    index: HashMap<u32, usize>,
}

impl Tallies {
    fn new(n: usize) -> Tallies {
        Tallies {
            n,
            list: vec![(NO_VALUE, Tally::new(n))],
            last: (NO_VALUE, 0),
            index: HashMap::from([(NO_VALUE, 0)]),
        }
    }

    #[inline]
    fn get(&mut self, value: u32) -> &mut Tally {
        if self.last.0 != value {
            let next = self.list.len();
            let i = *self.index.entry(value).or_insert(next);
            if i == next {
                self.list.push((value, Tally::new(self.n)));
            }
            self.last = (value, i);
        }
        &mut self.list[self.last.1].1
    }

    /// All workers' tallies by breakdown key (lists copied once per key);
    /// without a breakdown, one tally under `BdKey::None`, absent if no
    /// actor entered (as the general path gives).
    fn merge(plan: &Plan<'_>, parts: Vec<Tallies>) -> HashMap<BdKey, Tally> {
        let n = plan.n();
        let mut by_value: HashMap<u32, Vec<Tally>> = HashMap::new();
        for t in parts {
            for (v, tally) in t.list {
                by_value.entry(v).or_default().push(tally);
            }
        }
        by_value
            .into_iter()
            .map(|(v, ts)| (v, Tally::merge_all(n, ts)))
            .filter(|(_, t)| t.counts.first().is_some_and(|&c| c > 0))
            .map(|(v, t)| {
                let key = match plan.breakdown {
                    None => BdKey::None,
                    Some(_) => BdKey::Values(vec![v]),
                };
                (key, t)
            })
            .collect()
    }
}

/// Adds an actor's path (`st.best` after `run_actor` said it entered).
#[inline]
fn add_best(plan: &Plan<'_>, tally: &mut Tally, b: &Best) {
    tally.add_parts(
        plan,
        (1u64 << b.furthest) - 1,
        &b.times,
        b.start,
        b.furthest,
    )
}

/// A non-strict funnel over a block of persons: the block's step events
/// are gathered in one pass over its rows (rather than actor by actor,
/// which left a scalar tail and a call per actor), with bitmaps of the
/// rows kept and of those past the first step. A person's kept events are
/// found by counting the bits before its first and past its last row (no
/// search, no branch per event); one whose events are all of the first
/// step alone (most persons of a typical funnel) is tallied at once, the
/// others go to the state machine.
fn tally_block(
    plan: &Plan<'_>,
    table: &[u64],
    breakdown: Option<&KernelBreakdown>,
    tallies: &mut Tallies,
    scratch: &mut Scratch,
    block: &PersonBlock<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has POPCNT.
        return unsafe { tally_block_popcnt(plan, table, breakdown, tallies, scratch, block) };
    }
    tally_block_inline(plan, table, breakdown, tallies, scratch, block)
}

/// `tally_block` with the POPCNT instruction for the bit counts of
/// `Gathered::kept_before` (the x86-64 baseline counts bits with a dozen
/// shifts and masks: a third of the loop over persons).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn tally_block_popcnt(
    plan: &Plan<'_>,
    table: &[u64],
    breakdown: Option<&KernelBreakdown>,
    tallies: &mut Tallies,
    scratch: &mut Scratch,
    block: &PersonBlock<'_>,
) {
    tally_block_inline(plan, table, breakdown, tallies, scratch, block)
}

#[inline(always)]
fn tally_block_inline(
    plan: &Plan<'_>,
    table: &[u64],
    breakdown: Option<&KernelBreakdown>,
    tallies: &mut Tallies,
    scratch: &mut Scratch,
    block: &PersonBlock<'_>,
) {
    let rows = block.rows();
    let (r0, run) = (rows.start, block.run);
    let keep = Keep {
        table,
        from: plan.range.from,
        to: plan.range.to,
    };
    // Taken out of the scratch for the loop: the general path needs the
    // rest of it.
    let mut buf = std::mem::take(&mut scratch.kernel);
    buf.gather::<true>(keep, &run.cols.event[rows.clone()], &run.cols.ts[rows]);
    let ps = &run.person_start;
    let values = match breakdown {
        Some(b) => breakdown_values(plan, b, &buf, block),
        None => Vec::new(),
    };
    let (n, unordered) = (plan.n(), plan.order == FunnelOrder::Unordered);
    let (mut first, mut first_later) = (0, 0);
    for pi in block.persons.clone() {
        let (end, end_later) = buf.kept_before(ps[pi + 1] as usize - r0);
        let (events, later) = (first..end, first_later != end_later);
        (first, first_later) = (end, end_later);
        if events.is_empty() || !block.is_solo(pi) {
            continue;
        }
        let value = values
            .get(pi - block.persons.start)
            .copied()
            .unwrap_or(NO_VALUE);
        let tally = tallies.get(value);
        if !later {
            // Only first-step events: the path is the first of them, as
            // `step` would find (unordered: one step done, at the first
            // event's time, as `walk_unordered` would find).
            tally.add_first_step(plan, buf.ts[events.start]);
            continue;
        }
        let st = &mut scratch.kernel_state;
        st.has = 0;
        st.best.furthest = 0;
        let (masks, tss) = (&buf.mask[events.clone()], &buf.ts[events]);
        let path = if unordered {
            Some(walk_unordered(n, plan.shape.window, masks, tss, st))
        } else {
            // The union of masks is only compared with 1 (and is not 1 here).
            walk(plan, masks, tss, u64::MAX, st)
        };
        match path {
            Some(true) => add_best(plan, tally, &st.best),
            Some(false) => {}
            None => general(plan, scratch, &block.cols(pi).actor(plan.snap), tallies),
        }
    }
    scratch.kernel = buf;
}

/// The breakdown value of each person of a block (`NO_VALUE` for those
/// without kept events): that of its first (last touch: last) kept event
/// with a non-empty value of the property, as `Plan::attributed` picks it;
/// `NO_VALUE` if none has one. The candidates' values are read in a pass of
/// their own, so that their cache misses (one per person, in the property
/// columns) overlap, instead of each stalling the state machine.
fn breakdown_values(
    plan: &Plan<'_>,
    b: &KernelBreakdown,
    buf: &Gathered,
    block: &PersonBlock<'_>,
) -> Vec<u32> {
    let (ps, view) = (&block.run.person_start, block.run.cols.view());
    let r0 = block.rows().start;
    let rows = |pi: usize| ps[pi] as usize - r0..ps[pi + 1] as usize - r0;
    let Some(key) = b.key else {
        return Vec::new();
    };
    // Each person's first (last) kept row.
    let candidate: Vec<Option<usize>> = block
        .persons
        .clone()
        .map(|pi| {
            let mut kept = buf.kept_rows(rows(pi));
            if b.last {
                kept.next_back()
            } else {
                kept.next()
            }
        })
        .collect();
    let mut values: Vec<u32> = candidate
        .iter()
        .map(|r| r.and_then(|r| view.prop(r0 + r, key)).unwrap_or(NO_VALUE))
        .collect();
    // Whether a value is empty, by value id (few distinct values per block).
    let mut cache = [(NO_VALUE, false); 64];
    let mut is_empty = |v: u32| {
        let slot = &mut cache[v as usize % 64];
        if slot.0 != v {
            *slot = (v, value_str(plan.dicts.values.resolve(v)).is_empty());
        }
        slot.1
    };
    for (i, pi) in block.persons.clone().enumerate() {
        if candidate[i].is_none() || (values[i] != NO_VALUE && !is_empty(values[i])) {
            continue;
        }
        // The candidate has no value: search the person's other kept rows.
        let mut value = |row: usize| view.prop(r0 + row, key).filter(|&v| !is_empty(v));
        let mut kept = buf.kept_rows(rows(pi));
        let found = if b.last {
            kept.rev().find_map(&mut value)
        } else {
            kept.find_map(&mut value)
        };
        values[i] = found.unwrap_or(NO_VALUE);
    }
    values
}

/// One actor's path, for kinds other than `funnel` that read only it
/// (`Plan::path_kernel_table` gives `table`), written into `out`:
/// `Some(true)` if the actor entered, `Some(false)` if not (`out` is then
/// left as it was), `None` if the general path must decide. The path's
/// steps and times are those `ordered::run` gives; its `rows`, and its
/// times past the steps done, are left as they were (nothing reads them).
pub(crate) fn actor_path_into(
    plan: &Plan<'_>,
    table: &[u64],
    v: &dropscope_store::EventsView<'_>,
    scratch: &mut Scratch,
    out: &mut Path,
) -> Option<bool> {
    let st = &mut scratch.kernel_state;
    if !run_actor(plan, table, v.event, v.ts, &mut scratch.kernel, st)? {
        return Some(false);
    }
    let b = &st.best;
    let f = b.furthest;
    let a = &mut out.attempt;
    a.start = b.start;
    a.excluded = false;
    // A fixed-size copy (see `step`).
    a.times[..MAX_KERNEL_STEPS].copy_from_slice(&b.times);
    a.bits = (1u64 << f) - 1;
    a.last = f - 1;
    out.furthest = f;
    Some(true)
}

/// The general path for one actor (the shapes the kernel hands back, and
/// actors of several slices with a breakdown).
fn general(
    plan: &Plan<'_>,
    scratch: &mut Scratch,
    actor: &crate::plan::Actor<'_>,
    tallies: &mut Tallies,
) {
    plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
    if scratch.evs.is_empty() {
        return;
    }
    let mut out = std::mem::take(&mut scratch.paths);
    plan.actor_paths(actor, scratch, &mut out);
    for (k, p) in out.drain(..) {
        let value = match k {
            // One property (`Plan::kernel_table`), its value id.
            BdKey::Values(v) => v.first().copied().unwrap_or(NO_VALUE),
            _ => NO_VALUE,
        };
        tallies.get(value).add(plan, &p);
    }
    scratch.paths = out;
}

/// One actor: `Some(true)` if it entered (its path is in `st.best`),
/// `Some(false)` if not, `None` if the general path must decide.
#[inline]
fn run_actor(
    plan: &Plan<'_>,
    table: &[u64],
    event: &[u32],
    ts: &[i64],
    buf: &mut Gathered,
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

/// An unordered funnel's queues of step times, one per step: `ts[s]` from
/// `head[s]` on are those still queued (popping moves the head). Reused
/// from actor to actor.
#[derive(Default)]
struct Queues {
    ts: [Vec<i64>; MAX_KERNEL_STEPS],
    head: [usize; MAX_KERNEL_STEPS],
}

impl Queues {
    #[inline]
    fn front(&self, s: usize) -> Option<i64> {
        self.ts[s].get(self.head[s]).copied()
    }

    #[inline]
    fn back(&self, s: usize) -> Option<i64> {
        (self.head[s] < self.ts[s].len()).then(|| self.ts[s][self.ts[s].len() - 1])
    }
}

/// `unordered::run` over one actor's gathered events (`masks`, `tss`; no
/// exclusions, no attribution), from a cleared `st.best`: a sliding window
/// keeps a queue of times per step; step N means N distinct steps done
/// within one window, recorded when the window slides past an event, when
/// every step is done, or after the last event. The path (the sorted times
/// of the recorded queues' fronts) is left in `st.best`; returns whether
/// the actor entered. Same ties as `unordered::run` (the oldest front with
/// the lowest step slides first; an event of several steps joins the one
/// whose last queued time is oldest, the lowest step on a tie).
#[inline]
fn walk_unordered(n: usize, window: i64, masks: &[u64], tss: &[i64], st: &mut State) -> bool {
    let (q, best) = (&mut st.queues, &mut st.best);
    for s in 0..n {
        q.ts[s].clear();
        q.head[s] = 0;
    }
    let record = |q: &Queues, best: &mut Best| {
        let mut firsts = [0i64; MAX_KERNEL_STEPS];
        let mut count = 0;
        for s in 0..n {
            if let Some(t) = q.front(s) {
                firsts[count] = t;
                count += 1;
            }
        }
        if count == 0 || best.furthest >= count {
            return;
        }
        firsts[..count].sort_unstable();
        best.furthest = count;
        best.start = firsts[0];
        best.times = firsts;
    };
    for (&mask, &ts) in masks.iter().zip(tss) {
        // Slide: drop queued times that fell out of the window.
        loop {
            let mut oldest: Option<(i64, usize)> = None;
            for s in 0..n {
                if let Some(t) = q.front(s) {
                    if oldest.is_none_or(|o| (t, s) < o) {
                        oldest = Some((t, s));
                    }
                }
            }
            match oldest {
                Some((t, s)) if ts - t > window => {
                    record(q, best);
                    q.head[s] += 1;
                }
                _ => break,
            }
        }
        // The matching step whose latest queued time is oldest.
        let mut target: Option<(i64, usize)> = None;
        for s in 0..n {
            if mask & (1 << s) != 0 {
                let last = q.back(s).unwrap_or(i64::MIN);
                if target.is_none_or(|(t, _)| last < t) {
                    target = Some((last, s));
                }
            }
        }
        if let Some((_, s)) = target {
            q.ts[s].push(ts);
        }
        if (0..n).all(|s| q.front(s).is_some()) {
            record(q, best);
            break;
        }
    }
    record(q, best);
    best.furthest > 0
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
    buf: &mut Gathered,
    st: &mut State,
) -> Option<bool> {
    let keep = Keep {
        table,
        from: plan.range.from,
        to: plan.range.to,
    };
    let (k, any) = buf.gather::<false>(keep, event, times);
    let (masks, tss) = (&buf.mask[..k], &buf.ts[..k]);
    if plan.order == FunnelOrder::Unordered {
        return Some(walk_unordered(plan.n(), plan.shape.window, masks, tss, st));
    }
    walk(plan, masks, tss, any, st)
}

/// The state machine over one actor's gathered events (`any` is the union
/// of their step masks), from a cleared state.
#[inline]
fn walk(plan: &Plan<'_>, masks: &[u64], tss: &[i64], any: u64, st: &mut State) -> Option<bool> {
    let n = plan.n();
    let window = plan.shape.window;
    let k = masks.len();
    if k == 0 {
        return Some(false);
    }
    if any == 1 {
        // Only first-step events (most actors of a typical funnel): the
        // path is the first of them, as `step` would find.
        let ts = tss[0];
        st.best.furthest = 1;
        st.best.start = ts;
        st.best.times[0] = ts;
        return Some(true);
    }
    let mask_at = |i: usize| masks[i];
    let (mut prev_ts, mut prev_mask) = (i64::MIN, u64::MAX);
    let mut i = 0;
    while i < k {
        let (mut mask, mut ts) = (mask_at(i), tss[i]);
        if ts == prev_ts && mask != prev_mask {
            return None;
        }
        if mask == 1 && st.best.furthest > 0 {
            // A run of first-step events: each only moves slot 1's start
            // to its own time, so the run's last one leaves the state as
            // all of them would (the run's events share one mask, so the
            // same-instant rule has nothing to check inside it).
            while i + 1 < k && mask_at(i + 1) == 1 {
                i += 1;
            }
            (mask, ts) = (mask_at(i), tss[i]);
        }
        (prev_ts, prev_mask) = (ts, mask);
        if mask & (mask - 1) != 0 {
            return None;
        }
        step(st, mask.trailing_zeros() as usize + 1, ts, window);
        if st.best.furthest == n {
            // Done, unless a later event at this instant matches another
            // step (rule 5 would order the instant's events by step).
            if (i + 1..k)
                .take_while(|&x| tss[x] == ts)
                .any(|x| mask_at(x) != mask)
            {
                return None;
            }
            break;
        }
        i += 1;
    }
    Some(st.best.furthest > 0)
}

/// Which events the gather keeps: those whose step mask (`table[event]`,
/// 0 for ids past the table) is not 0, with a time in `from..=to`.
#[derive(Clone, Copy)]
struct Keep<'a> {
    table: &'a [u64],
    from: i64,
    to: i64,
}

/// The step masks and timestamps of the kept events (those of a step, in
/// range) of one actor or one block of actors, in order; for a block, also
/// which rows were kept. Grown, never cleared: every slot up to the count
/// `gather` returns is written before it is read.
#[derive(Default)]
pub(crate) struct Gathered {
    mask: Vec<u64>,
    ts: Vec<i64>,
    /// With `gather::<true>`: bit `r % 64` of word `r / 64` is set if row
    /// `r` was kept ...
    kept: Vec<u64>,
    /// ... and if it was kept with a mask other than the first step's
    /// alone ...
    later: Vec<u64>,
    /// ... and the number of set bits of both before each word.
    before: Vec<(u32, u32)>,
}

impl Gathered {
    /// Keeps the events `keep` selects; returns how many, and the union
    /// of their masks. With `ROWS`, also fills the kept-row bitmap
    /// (`kept_before`).
    #[inline]
    fn gather<const ROWS: bool>(
        &mut self,
        keep: Keep<'_>,
        event: &[u32],
        times: &[i64],
    ) -> (usize, u64) {
        // Room for whole 8-lane stores past the last kept event.
        let room = event.len() + 8;
        if self.mask.len() < room {
            self.mask.resize(room, 0);
            self.ts.resize(room, 0);
        }
        if ROWS {
            // One word more: `kept_before` may ask for the row past the end.
            let words = event.len() / 64 + 1;
            self.kept.clear();
            self.kept.resize(words, 0);
            self.later.clear();
            self.later.resize(words, 0);
        }
        let out = match gather_path() {
            // SAFETY: the CPU has AVX-512F (checked by `gather_path`); the
            // buffers have `event.len() + 8` slots and `times` is as long
            // as `event`.
            #[cfg(target_arch = "x86_64")]
            GatherPath::Avx512 => unsafe { self.gather_avx512::<ROWS>(keep, event, times) },
            // SAFETY: as above, with AVX2.
            #[cfg(target_arch = "x86_64")]
            GatherPath::Avx2 => unsafe { self.gather_avx2::<ROWS>(keep, event, times) },
            _ => self.gather_scalar::<ROWS>(keep, event, times),
        };
        if ROWS {
            self.before.clear();
            let mut total = (0u32, 0u32);
            self.before
                .extend(self.kept.iter().zip(&self.later).map(|(k, l)| {
                    let b = total;
                    total.0 += k.count_ones();
                    total.1 += l.count_ones();
                    b
                }));
        }
        out
    }

    /// The kept rows among `rows` (after `gather::<true>`), in order.
    fn kept_rows(
        &self,
        rows: std::ops::Range<usize>,
    ) -> impl DoubleEndedIterator<Item = usize> + '_ {
        rows.filter(|&r| self.kept[r / 64] & (1 << (r % 64)) != 0)
    }

    /// How many rows before `row` were kept, and how many of those with a
    /// mask other than the first step's alone (after `gather::<true>`;
    /// `row` at most the number of rows gathered).
    #[inline]
    fn kept_before(&self, row: usize) -> (usize, usize) {
        let (w, below) = (row / 64, (1u64 << (row % 64)) - 1);
        let (k, l) = self.before[w];
        (
            k as usize + (self.kept[w] & below).count_ones() as usize,
            l as usize + (self.later[w] & below).count_ones() as usize,
        )
    }

    /// One event at a time (the reference the vector paths are tested
    /// against).
    #[inline]
    fn gather_scalar<const ROWS: bool>(
        &mut self,
        Keep { table, from, to }: Keep<'_>,
        event: &[u32],
        times: &[i64],
    ) -> (usize, u64) {
        let (mut k, mut any) = (0, 0);
        for (row, (&e, &ts)) in event.iter().zip(times).enumerate() {
            let mask = table.get(e as usize).copied().unwrap_or(0);
            self.mask[k] = mask;
            self.ts[k] = ts;
            let keep = (mask != 0) & (ts >= from) & (ts <= to);
            if ROWS {
                self.kept[row / 64] |= u64::from(keep) << (row % 64);
                self.later[row / 64] |= u64::from(keep & (mask != 1)) << (row % 64);
            }
            k += usize::from(keep);
            any |= mask & 0u64.wrapping_sub(u64::from(keep));
        }
        (k, any)
    }

    /// Eight events at a time: the masks come from one gather
    /// instruction, and the kept lanes are packed in a register and stored
    /// as a whole vector (on AMD Zen 4, a compressing store straight to
    /// memory is microcoded and far slower; the next store overwrites the
    /// lanes past the kept ones). The last, partial vector is read with
    /// masked loads (masked-off lanes read nothing), so there is no scalar
    /// tail. Hand-written because the compiler does not vectorise a stream
    /// compaction, and it is the kernel's widest loop: every event of
    /// every actor passes through it. Equal to `gather_scalar` (unit test
    /// below).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn gather_avx512<const ROWS: bool>(
        &mut self,
        keep: Keep<'_>,
        event: &[u32],
        times: &[i64],
    ) -> (usize, u64) {
        use std::arch::x86_64::*;
        let Keep { table, from, to } = keep;
        let n = event.len().min(times.len());
        let (vfrom, vto) = (_mm512_set1_epi64(from), _mm512_set1_epi64(to));
        let vlen = _mm512_set1_epi64(table.len() as i64);
        let one = _mm512_set1_epi64(1);
        let zero = _mm512_setzero_si512();
        let mut vany = zero;
        let mut k = 0usize;
        let mut i = 0usize;
        while i < n {
            let lanes: u8 = if n - i >= 8 {
                0xFF
            } else {
                (1u8 << (n - i)) - 1
            };
            // SAFETY: `i < n`, and the loads read only the `lanes` rows,
            // which are below `n`; lanes whose id is past the table or not
            // read are masked off the gather (they read nothing); the
            // stores write 8 slots from `k <= i`, within `n + 8`.
            unsafe {
                let ids = _mm512_maskz_loadu_epi32(u16::from(lanes), event.as_ptr().add(i).cast());
                let ids = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(ids));
                let inside = _mm512_cmplt_epi64_mask(ids, vlen) & lanes;
                let masks =
                    _mm512_mask_i64gather_epi64::<8>(zero, inside, ids, table.as_ptr().cast());
                let ts = _mm512_maskz_loadu_epi64(lanes, times.as_ptr().add(i).cast());
                // Lanes not read have a zero mask: never kept.
                let keep = _mm512_test_epi64_mask(masks, masks)
                    & _mm512_cmpge_epi64_mask(ts, vfrom)
                    & _mm512_cmple_epi64_mask(ts, vto);
                _mm512_storeu_si512(
                    self.mask.as_mut_ptr().add(k).cast(),
                    _mm512_maskz_compress_epi64(keep, masks),
                );
                _mm512_storeu_si512(
                    self.ts.as_mut_ptr().add(k).cast(),
                    _mm512_maskz_compress_epi64(keep, ts),
                );
                vany = _mm512_mask_or_epi64(vany, keep, vany, masks);
                k += keep.count_ones() as usize;
                if ROWS {
                    // `i` is a multiple of 8: the byte for rows `i..i + 8`.
                    let later = keep & _mm512_cmpneq_epi64_mask(masks, one);
                    self.kept[i / 64] |= u64::from(keep) << (i % 64);
                    self.later[i / 64] |= u64::from(later) << (i % 64);
                }
            }
            i += 8;
        }
        (k, _mm512_reduce_or_epi64(vany) as u64)
    }
}

/// `_mm256_permutevar8x32_epi32` indices that move the 64-bit lanes set in
/// a 4-bit keep mask to the front, in order (the rest of the vector is
/// don't-care: the next store overwrites it).
#[cfg(target_arch = "x86_64")]
const COMPRESS4: [[i32; 8]; 16] = {
    let mut t = [[0i32; 8]; 16];
    let mut m = 0;
    while m < 16 {
        let mut out = 0;
        let mut lane: i32 = 0;
        while lane < 4 {
            if m & (1 << lane) != 0 {
                t[m][2 * out] = 2 * lane;
                t[m][2 * out + 1] = 2 * lane + 1;
                out += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
};

impl Gathered {
    /// Four events at a time with AVX2 (no compress instruction: the kept
    /// lanes are moved to the front by a permutation from a 16-entry
    /// table). The same contract as `gather_avx512`, for CPUs without
    /// AVX-512 (AMD Zen 2 and 3, most Intel client parts); the partial
    /// last vector is read with masked loads too. Equal to `gather_scalar`
    /// (unit test below).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn gather_avx2<const ROWS: bool>(
        &mut self,
        keep: Keep<'_>,
        event: &[u32],
        times: &[i64],
    ) -> (usize, u64) {
        use std::arch::x86_64::*;
        let Keep { table, from, to } = keep;
        if table.is_empty() || table.len() > i32::MAX as usize {
            return self.gather_scalar::<ROWS>(keep, event, times);
        }
        let n = event.len().min(times.len());
        // ts >= from is !(from > ts); ts <= to is !(ts > to).
        let (vfrom, vto) = (_mm256_set1_epi64x(from), _mm256_set1_epi64x(to));
        let last = _mm_set1_epi32((table.len() - 1) as i32);
        let zero = _mm256_setzero_si256();
        let one = _mm256_set1_epi64x(1);
        let lane32 = _mm_set_epi32(3, 2, 1, 0);
        let mut vany = zero;
        let mut k = 0usize;
        let mut i = 0usize;
        while i < n {
            // All ones in the lanes below `n`.
            let left = _mm_set1_epi32((n - i).min(4) as i32);
            let read32 = _mm_cmpgt_epi32(left, lane32);
            let read64 = _mm256_cvtepi32_epi64(read32);
            // SAFETY: `i < n`, and the masked loads read only the rows below
            // `n`; lanes whose id is past the table or not read are masked
            // off the gather (they read nothing); the stores write 4 slots
            // from `k <= i`, within `n + 8`.
            unsafe {
                let ids = _mm_maskload_epi32(event.as_ptr().add(i).cast(), read32);
                // id <= len - 1, unsigned: min(id, last) == id.
                let inside = _mm_and_si128(_mm_cmpeq_epi32(_mm_min_epu32(ids, last), ids), read32);
                let masks = _mm256_mask_i32gather_epi64::<8>(
                    zero,
                    table.as_ptr().cast(),
                    ids,
                    _mm256_cvtepi32_epi64(inside),
                );
                let ts = _mm256_maskload_epi64(times.as_ptr().add(i).cast(), read64);
                // Lanes not read have a zero mask: dropped.
                let drop = _mm256_or_si256(
                    _mm256_cmpeq_epi64(masks, zero),
                    _mm256_or_si256(_mm256_cmpgt_epi64(vfrom, ts), _mm256_cmpgt_epi64(ts, vto)),
                );
                let bits = !_mm256_movemask_pd(_mm256_castsi256_pd(drop)) & 0xF;
                let perm = _mm256_loadu_si256(COMPRESS4[bits as usize].as_ptr().cast());
                _mm256_storeu_si256(
                    self.mask.as_mut_ptr().add(k).cast(),
                    _mm256_permutevar8x32_epi32(masks, perm),
                );
                _mm256_storeu_si256(
                    self.ts.as_mut_ptr().add(k).cast(),
                    _mm256_permutevar8x32_epi32(ts, perm),
                );
                vany = _mm256_or_si256(vany, _mm256_andnot_si256(drop, masks));
                k += bits.count_ones() as usize;
                if ROWS {
                    // `i` is a multiple of 4: the nibble for rows `i..i + 4`.
                    let first =
                        _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(masks, one)));
                    self.kept[i / 64] |= (bits as u64) << (i % 64);
                    self.later[i / 64] |= ((bits & !first) as u64) << (i % 64);
                }
            }
            i += 4;
        }
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` holds 4 u64, the vector's width.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), vany) };
        let any = lanes.iter().fold(0, |a, l| a | l);
        (k, any)
    }
}

/// Which gather the kernel runs.
/// Ordered from narrowest to widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GatherPath {
    /// One event at a time (every CPU).
    Scalar,
    /// Four at a time (x86-64 with AVX2).
    Avx2,
    /// Eight at a time (x86-64 with AVX-512F).
    Avx512,
}

/// The widest gather this CPU runs, unless the environment variable
/// `DROPSCOPE_GATHER` (`scalar`, `avx2` or `avx512`) asks for a narrower
/// one (to measure one against the other; a path the CPU lacks is never
/// taken). Decided once per process.
pub fn gather_path() -> GatherPath {
    static PATH: std::sync::OnceLock<GatherPath> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let best = if has_avx512() {
            GatherPath::Avx512
        } else if has_avx2() {
            GatherPath::Avx2
        } else {
            GatherPath::Scalar
        };
        #[cfg(not(target_arch = "x86_64"))]
        let best = GatherPath::Scalar;
        let asked = match std::env::var("DROPSCOPE_GATHER").as_deref() {
            Ok("scalar") => GatherPath::Scalar,
            Ok("avx2") => GatherPath::Avx2,
            _ => GatherPath::Avx512,
        };
        asked.min(best)
    })
}

/// Whether this CPU has AVX2 (checked once; `std` caches it).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU has AVX-512F (checked once; `std` caches it).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
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
    // Whole fixed-size rows are copied (entries past a slot's steps are
    // never read): a copy of a runtime length was a `memmove` call per
    // step, 6% of a funnel's profile.
    let (lo, hi) = st.times.split_at_mut(s);
    let next = &mut hi[0];
    *next = lo[k];
    next[k] = ts;
    st.start[s] = start;
    st.has |= 1 << s;
    if s > st.best.furthest {
        st.best.furthest = s;
        st.best.start = start;
        st.best.times = *next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Both gathers keep the same events in the same order, with the
        /// same union of masks, including ids past the table and times at
        /// the range's ends (the AVX-512 and AVX2 paths run where the CPU
        /// has them; `says_which_gather_runs` prints which).
        #[test]
        fn vector_gather_equals_scalar_gather(
            rows in prop::collection::vec(
                (prop_oneof![8 => 0u32..12, 1 => Just(u32::MAX), 1 => Just(1u32 << 31)], 0i64..20),
                0..200,
            ),
            table in prop::collection::vec(prop::sample::select(vec![0u64, 0, 1, 2, 4, 6]), 0..10),
            (from, to) in (0i64..12, 8i64..21),
        ) {
            let event: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let mut a = Gathered::default();
            let keep = Keep { table: &table, from, to };
            let (ka, anya) = a.gather::<true>(keep, &event, &times);
            // (row, mask, time) of the kept events.
            let want: Vec<(usize, u64, i64)> = rows
                .iter()
                .enumerate()
                .map(|(r, &(e, t))| (r, table.get(e as usize).copied().unwrap_or(0), t))
                .filter(|&(_, m, t)| m != 0 && t >= from && t <= to)
                .collect();
            let any = want.iter().fold(0, |a, w| a | w.1);
            prop_assert_eq!((ka, anya), (want.len(), any));
            let got: Vec<(u64, i64)> = a.mask[..ka].iter().copied().zip(a.ts[..ka].iter().copied()).collect();
            prop_assert_eq!(got, want.iter().map(|w| (w.1, w.2)).collect::<Vec<_>>());
            for row in 0..=rows.len() {
                let before = want.iter().filter(|w| w.0 < row);
                let later = before.clone().filter(|w| w.1 != 1).count();
                prop_assert_eq!(a.kept_before(row), (before.count(), later), "row {}", row);
            }
            // Every path where the CPU has it, with and without the rows,
            // even where it would take a wider one.
            let mut paths: Vec<(&str, (usize, u64), Gathered)> = Vec::new();
            for rows_too in [false, true] {
                let mut g = Gathered::default();
                g.mask.resize(rows.len() + 8, 0);
                g.ts.resize(rows.len() + 8, 0);
                g.kept.resize(rows.len() / 64 + 1, 0);
                g.later.resize(rows.len() / 64 + 1, 0);
                let out = if rows_too {
                    g.gather_scalar::<true>(keep, &event, &times)
                } else {
                    g.gather_scalar::<false>(keep, &event, &times)
                };
                paths.push(("scalar", out, g));
                #[cfg(target_arch = "x86_64")]
                if has_avx2() {
                    let mut g = Gathered::default();
                    g.mask.resize(rows.len() + 8, 0);
                    g.ts.resize(rows.len() + 8, 0);
                    g.kept.resize(rows.len() / 64 + 1, 0);
                    g.later.resize(rows.len() / 64 + 1, 0);
                    // SAFETY: AVX2 checked; buffers of `len + 8` slots.
                    let out = unsafe {
                        if rows_too {
                            g.gather_avx2::<true>(keep, &event, &times)
                        } else {
                            g.gather_avx2::<false>(keep, &event, &times)
                        }
                    };
                    paths.push(("avx2", out, g));
                }
            }
            for (name, out, g) in &paths {
                prop_assert_eq!(*out, (ka, anya), "{}", name);
                prop_assert_eq!(&g.mask[..ka], &a.mask[..ka], "{}", name);
                prop_assert_eq!(&g.ts[..ka], &a.ts[..ka], "{}", name);
            }
            // The bitmaps of the runs with rows.
            for (name, _, g) in paths.iter().skip(paths.len() / 2) {
                prop_assert_eq!((&g.kept, &g.later), (&a.kept, &a.later), "{}", name);
            }
        }
    }

    #[test]
    fn says_which_gather_runs() {
        #[cfg(target_arch = "x86_64")]
        eprintln!(
            "AVX-512F: {}, AVX2: {}, gather: {:?}",
            has_avx512(),
            has_avx2(),
            gather_path()
        );
    }
}
