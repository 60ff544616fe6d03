//! A query compiled against a snapshot: step matchers, filters, breakdown,
//! aggregation; and the per-actor preparation of matched events.

use std::collections::HashMap;

use chrono_tz::Tz;
use dropscope_core::query::{
    Attribution, BreakdownType, Counting, FunnelOrder, FunnelQuery, QueryKind, StepMath, Window,
    MAX_STEPS,
};
use dropscope_core::time::{resolve_range, DateRange};
use dropscope_core::QueryError;
use dropscope_store::columns::Run;
use dropscope_store::dict::{value_str, Interner};
use dropscope_store::{Dicts, EventColumns, EventsView, Snapshot};
use rayon::prelude::*;

use crate::filter::{cohort_members, group_key_of, EventCtx, Filter};
use crate::ordered::{self, Path, Shape, StepConstraint};
use crate::unordered;

/// A matched event of one actor.
#[derive(Debug, Clone, Copy)]
pub struct MEvent {
    pub ts: i64,
    /// Bit k: matches 0-based step k.
    pub steps: u64,
    /// Bit x: matches exclusion x.
    pub excl: u32,
    /// Row in the actor's view.
    pub row: u32,
    /// Breakdown value: index into the actor's value list.
    pub bd: u32,
}

/// One alternative of a step (an event, or one of an action's).
struct Alt {
    /// `None` = any event; `Some(u32::MAX)` = an event name never stored.
    event: Option<u32>,
    filter: Option<Filter>,
    elements: Option<Filter>,
}

/// A step or exclusion matcher.
pub struct Matcher {
    alts: Vec<Alt>,
    filter: Option<Filter>,
    pub math: Option<StepMath>,
    /// Event ids this matcher can match (`None` = any).
    pub event_ids: Option<Vec<u32>>,
}

/// How actors are formed.
#[derive(Debug, Clone)]
pub enum Aggregation {
    Person,
    Group(u8),
    EventProperty(String),
    DistinctId,
    PersonProperty(String),
}

/// A breakdown value key for one actor: global value ids per property
/// (`u32::MAX` = missing), or a cohort id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BdKey {
    None,
    Values(Vec<u32>),
    Str(String),
    Cohort(u64),
}

/// The breakdown of a kernel funnel (`Plan::kernel_breakdown`).
pub(crate) struct KernelBreakdown {
    /// The event property's key id (`None`: no event has it).
    pub key: Option<u32>,
    /// Last touch (else first).
    pub last: bool,
}

pub struct BreakdownPlan {
    pub kind: BreakdownType,
    pub keys: Vec<Option<u32>>,
    pub names: Vec<String>,
    pub attribution: Attribution,
    pub attribution_step: usize,
    pub group_index: u8,
    pub limit: Option<usize>,
    /// Cohort breakdown: (id, members; `None` = all users).
    pub cohorts: Vec<(u64, Option<std::collections::HashSet<u32>>)>,
    /// Single-property breakdowns are boxed as lists, group ones are not.
    pub boxed: bool,
}

pub struct Plan<'s> {
    pub snap: &'s Snapshot,
    pub dicts: &'s Dicts,
    pub q: &'s FunnelQuery,
    pub range: DateRange,
    pub tz: Tz,
    pub shape: Shape,
    pub steps: Vec<Matcher>,
    pub exclusions: Vec<Matcher>,
    pub global: Option<Filter>,
    pub breakdown: Option<BreakdownPlan>,
    pub agg: Aggregation,
    pub order: FunnelOrder,
    /// All events in range are kept (strict funnels, correlation, paths).
    pub keep_all: bool,
    /// Runs of events that can only start an attempt are cut to their
    /// first and last event (see `prepare`).
    collapse: bool,
    pub first_time: bool,
    group_keys: [Option<u32>; 5],
    /// Non-person aggregation: events regrouped by actor key, built once
    /// per query on first use.
    regrouped: std::sync::OnceLock<(Run, Vec<String>)>,
    /// By event id: the steps whose event (or any action alternative's
    /// event) is that event.
    ev_steps: Vec<u64>,
    /// Steps that match any event name.
    any_steps: u64,
    /// Steps decided by the event name alone (no filters, no math).
    simple_steps: u64,
    ev_excl: Vec<u32>,
    any_excl: u32,
}

/// Actors per parallel work item of `Plan::fold_actors`.
const FOLD_CHUNK: usize = 512;

/// Per-thread scratch buffers, reused across actors.
#[derive(Default)]
pub struct Scratch {
    pub merge: EventColumns,
    pub evs: Vec<MEvent>,
    pub sub: Vec<MEvent>,
    pub bd_values: Vec<BdKey>,
    pub paths: Vec<(BdKey, Path)>,
    /// The kernel's gathered step masks and timestamps of one actor.
    pub(crate) kernel: crate::kernel::Gathered,
    pub(crate) kernel_state: crate::kernel::State,
}

/// One person actor's event ids and timestamps (`Plan::fold_runs`).
pub(crate) struct ActorCols<'a> {
    pub event: &'a [u32],
    pub ts: &'a [i64],
    src: ColsSrc<'a>,
}

/// A block of a run's persons, whose rows are contiguous
/// (`Plan::fold_runs`).
pub(crate) struct PersonBlock<'a> {
    /// The run's `Snapshot::solo_bits`.
    solo: &'a [u64],
    pub run: &'a Run,
    /// Person indices in the run.
    pub persons: std::ops::Range<usize>,
}

impl<'a> PersonBlock<'a> {
    /// The block's rows in the run.
    pub fn rows(&self) -> std::ops::Range<usize> {
        let ps = &self.run.person_start;
        ps[self.persons.start] as usize..ps[self.persons.end] as usize
    }

    /// Whether person `pi`'s events are all in this run (otherwise the
    /// person is an actor of several slices, folded on its own).
    #[inline]
    pub fn is_solo(&self, pi: usize) -> bool {
        self.solo[pi / 64] & (1 << (pi % 64)) != 0
    }

    /// Person `pi`'s columns.
    #[inline]
    pub fn cols(&self, pi: usize) -> ActorCols<'a> {
        let (a, b) = (
            self.run.person_start[pi] as usize,
            self.run.person_start[pi + 1] as usize,
        );
        ActorCols {
            event: &self.run.cols.event[a..b],
            ts: &self.run.cols.ts[a..b],
            src: ColsSrc::Run(self.run, pi),
        }
    }

    /// Calls `f` with the columns of each of the block's solo persons.
    pub fn for_each(&self, mut f: impl FnMut(ActorCols<'a>)) {
        for pi in self.persons.clone() {
            if self.is_solo(pi) {
                f(self.cols(pi));
            }
        }
    }
}

enum ColsSrc<'a> {
    /// Person index in a run, the actor's only slice.
    Run(&'a Run, usize),
    /// The actor's canonical person and its merged view.
    View(u32, EventsView<'a>),
}

impl<'a> ActorCols<'a> {
    /// The actor with its whole view (for the paths that read more columns).
    pub fn actor(&self, snap: &Snapshot) -> Actor<'a> {
        match self.src {
            ColsSrc::Run(run, pi) => Actor {
                id: snap.identity().root(run.persons[pi]),
                is_person: true,
                view: run.person_view(pi),
            },
            ColsSrc::View(id, view) => Actor {
                id,
                is_person: true,
                view,
            },
        }
    }
}

/// One actor ready for the funnel algorithms.
pub struct Actor<'a> {
    /// Canonical person (person aggregation), or the actor's id in the
    /// regroup interner.
    pub id: u32,
    pub is_person: bool,
    pub view: EventsView<'a>,
}

impl<'s> Plan<'s> {
    pub fn new(snap: &'s Snapshot, q: &'s FunnelQuery) -> Result<Plan<'s>, QueryError> {
        validate(q)?;
        let dicts = snap.dicts();
        let range = resolve_range(q, snap.earliest())?;
        let tz = dropscope_core::time::parse_tz(q.timezone.as_deref())?;
        let n = q.steps.len();
        let mut steps = Vec::with_capacity(n);
        for (i, s) in q.steps.iter().enumerate() {
            let field = format!("steps[{i}]");
            steps.push(compile_matcher(
                s.event.as_deref(),
                s.action.as_ref(),
                s.properties.as_ref(),
                s.math,
                &field,
                snap,
                dicts,
            )?);
        }
        let mut exclusions = Vec::new();
        for (i, x) in q.exclusions.iter().enumerate() {
            let field = format!("exclusions[{i}]");
            exclusions.push(compile_matcher(
                x.event.as_deref(),
                x.action.as_ref(),
                x.properties.as_ref(),
                None,
                &field,
                snap,
                dicts,
            )?);
        }
        let global = Filter::compile(q.properties.as_ref(), "properties", snap, dicts)?;
        let shape = Shape {
            n,
            window: Window::effective_ms(q.window.as_ref()),
            strict: q.order == FunnelOrder::Strict,
            optional: q.steps.iter().map(|s| s.optional).collect(),
            within: q
                .steps
                .iter()
                .map(|s| s.within.as_ref().and_then(Window::ms))
                .collect(),
            min_gap: q
                .steps
                .iter()
                .map(|s| s.min_gap.as_ref().and_then(Window::ms))
                .collect(),
            exclusions: q
                .exclusions
                .iter()
                .map(|x| (x.from_step, x.to_step))
                .collect(),
        };
        let agg = parse_aggregation(q.aggregation.as_deref())?;
        let breakdown = compile_breakdown(q, snap, dicts)?;
        let mut group_keys = [None; 5];
        for (i, g) in group_keys.iter_mut().enumerate() {
            *g = dicts.keys.get(&format!("$group_{i}"));
        }
        let keep_all = q.order == FunnelOrder::Strict
            || matches!(
                q.kind,
                QueryKind::Correlation
                    | QueryKind::CorrelationPersons
                    | QueryKind::Paths
                    | QueryKind::Diagnosis
            );
        // Which kinds read only the best path of ordered funnels (funnel
        // trends bucket every start, `totals` counts every attempt,
        // correlation and paths read every event). Not strict funnels:
        // there a dropped middle event may be the only one of its run that
        // clears the attempts (rule 6), since the run's first and last
        // events clear nothing when they share an instant with events of
        // other steps (rule 5); the oracle proptest found such a log.
        let collapse = q.order == FunnelOrder::Ordered
            && q.counting != Counting::Totals
            && match q.kind {
                QueryKind::Funnel | QueryKind::TimeToConvert => true,
                QueryKind::FunnelPersons => q.entrance_period_start.is_none(),
                _ => false,
            };
        let first_time = q.steps.iter().any(|s| {
            matches!(
                s.math,
                Some(StepMath::FirstTimeForUser) | Some(StepMath::FirstTimeForUserWithFilters)
            )
        });
        let (ev_steps, any_steps) = event_table(&steps, dicts.events.len());
        let (ev_excl, any_excl) = event_table(&exclusions, dicts.events.len());
        let ev_excl: Vec<u32> = ev_excl.into_iter().map(|m| m as u32).collect();
        let simple_steps = steps
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_simple())
            .fold(0u64, |acc, (i, _)| acc | (1 << i));
        Ok(Plan {
            ev_steps,
            any_steps,
            simple_steps,
            ev_excl,
            any_excl: any_excl as u32,
            snap,
            dicts,
            q,
            range,
            tz,
            shape,
            steps,
            exclusions,
            global,
            breakdown,
            agg,
            order: q.order,
            keep_all,
            collapse,
            first_time,
            group_keys,
            regrouped: std::sync::OnceLock::new(),
        })
    }

    pub fn n(&self) -> usize {
        self.shape.n
    }

    /// The step mask of every event id, when this query is one the fast
    /// kernel (`crate::kernel`) computes exactly: a `funnel` (any order) of
    /// at most 8 steps that are plain event names, counted
    /// once per person, without exclusions, breakdown, global filter,
    /// first-time steps, optional steps or per-step gaps.
    pub(crate) fn kernel_table(&self) -> Option<&[u64]> {
        if self.q.kind != QueryKind::Funnel {
            return None;
        }
        let breakdown_fits = match &self.breakdown {
            None => true,
            Some(b) => {
                !self.shape.strict
                    && b.kind == BreakdownType::Event
                    && b.keys.len() == 1
                    && matches!(
                        b.attribution,
                        Attribution::FirstTouch | Attribution::LastTouch
                    )
            }
        };
        if !breakdown_fits {
            return None;
        }
        self.plain_table(true)
    }

    /// The breakdown the kernel computes, when `kernel_table` takes the
    /// query and it has one: one event property, attributed to the first or
    /// the last step event (in range) that has a non-empty value.
    pub(crate) fn kernel_breakdown(&self) -> Option<KernelBreakdown> {
        let b = self.breakdown.as_ref()?;
        Some(KernelBreakdown {
            key: b.keys.first().copied().flatten(),
            last: b.attribution == Attribution::LastTouch,
        })
    }

    /// [`Plan::kernel_table`] for any query kind, ordered or strict: the
    /// table when the kernel finds each actor's path
    /// (`crate::kernel::actor_path_into`) exactly, for kinds that read only
    /// that path (correlation).
    pub(crate) fn path_kernel_table(&self) -> Option<&[u64]> {
        if self.q.order == FunnelOrder::Unordered || self.breakdown.is_some() {
            return None;
        }
        self.plain_table(false)
    }

    /// The step mask of every event id when the funnel is plain (any order;
    /// a breakdown, if any, is checked by the caller).
    fn plain_table(&self, with_breakdown: bool) -> Option<&[u64]> {
        let q = self.q;
        let n = self.shape.n;
        let plain = q.counting != Counting::Totals
            && matches!(self.agg, Aggregation::Person)
            && n <= crate::kernel::MAX_KERNEL_STEPS
            && self.simple_steps == (1u64 << n) - 1
            && self.any_steps == 0
            && self.exclusions.is_empty()
            && (with_breakdown || self.breakdown.is_none())
            && self.global.is_none()
            && !self.first_time
            && !self.shape.optional.iter().any(|&o| o)
            && self.shape.within.iter().all(Option::is_none)
            && self.shape.min_gap.iter().all(Option::is_none);
        plain.then_some(self.ev_steps.as_slice())
    }

    /// The canonical person of row `row` of an actor.
    #[inline]
    pub fn person_of(&self, actor: &Actor<'_>, row: usize) -> u32 {
        if actor.is_person {
            actor.id
        } else {
            self.snap
                .identity()
                .person_of_did(actor.view.did[row])
                .unwrap_or(u32::MAX)
        }
    }

    fn matches(&self, m: &Matcher, actor: &Actor<'_>, row: usize, with_filters: bool) -> bool {
        let ev = actor.view.event[row];
        let ctx = EventCtx {
            view: &actor.view,
            row,
            person: self.person_of(actor, row),
        };
        let d = self.dicts;
        let alt_ok = m.alts.iter().any(|a| {
            a.event.is_none_or(|e| e == ev)
                && (!with_filters || a.filter.as_ref().is_none_or(|f| f.eval(&ctx, self.snap, d)))
                && a.elements
                    .as_ref()
                    .is_none_or(|f| f.eval(&ctx, self.snap, d))
        });
        alt_ok && (!with_filters || m.filter.as_ref().is_none_or(|f| f.eval(&ctx, self.snap, d)))
    }

    /// Matched events of one actor into `out` (and breakdown values into
    /// `bd_values`, one entry per distinct value; `MEvent::bd` indexes it).
    pub fn prepare(&self, actor: &Actor<'_>, out: &mut Vec<MEvent>, bd_values: &mut Vec<BdKey>) {
        out.clear();
        bd_values.clear();
        let v = &actor.view;
        let d = self.dicts;
        // First time for user: the row of the actor's first-ever event of
        // each such step (all time, before any range or filter).
        let mut first_rows = [u32::MAX; MAX_STEPS];
        if self.first_time {
            for (s, m) in self.steps.iter().enumerate() {
                let with_filters = match m.math {
                    Some(StepMath::FirstTimeForUser) => false,
                    Some(StepMath::FirstTimeForUserWithFilters) => true,
                    _ => continue,
                };
                for row in 0..v.len() {
                    if self.matches(m, actor, row, with_filters) {
                        first_rows[s] = row as u32;
                        break;
                    }
                }
            }
        }
        for row in 0..v.len() {
            // Candidate steps by event name alone: one table lookup, so
            // events no step can match are skipped before anything else.
            let ev = v.event[row] as usize;
            let cand = self.ev_steps.get(ev).copied().unwrap_or(0) | self.any_steps;
            let xcand = self.ev_excl.get(ev).copied().unwrap_or(0) | self.any_excl;
            if cand == 0 && xcand == 0 && !self.keep_all {
                continue;
            }
            let ts = v.ts[row];
            if !self.range.contains(ts) {
                continue;
            }
            if let Some(g) = &self.global {
                let ctx = EventCtx {
                    view: v,
                    row,
                    person: self.person_of(actor, row),
                };
                if !g.eval(&ctx, self.snap, d) {
                    continue;
                }
            }
            let mut steps = cand & self.simple_steps;
            let mut rest = cand & !self.simple_steps;
            while rest != 0 {
                let s = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                let m = &self.steps[s];
                let ok = match m.math {
                    Some(StepMath::FirstTimeForUser)
                    | Some(StepMath::FirstTimeForUserWithFilters) => {
                        first_rows[s] == row as u32 && self.matches(m, actor, row, true)
                    }
                    _ => self.matches(m, actor, row, true),
                };
                if ok {
                    steps |= 1 << s;
                }
            }
            let mut excl = 0u32;
            let mut xrest = xcand;
            while xrest != 0 {
                let x = xrest.trailing_zeros() as usize;
                xrest &= xrest - 1;
                if self.matches(&self.exclusions[x], actor, row, true) {
                    excl |= 1 << x;
                }
            }
            if steps == 0 && excl == 0 && !self.keep_all {
                continue;
            }
            let bd = match &self.breakdown {
                Some(b) if b.kind != BreakdownType::Cohort => {
                    let key = self.bd_key(b, actor, row);
                    match bd_values.iter().position(|k| *k == key) {
                        Some(p) => p as u32,
                        None => {
                            bd_values.push(key);
                            (bd_values.len() - 1) as u32
                        }
                    }
                }
                _ => 0,
            };
            let e = MEvent {
                ts,
                steps,
                excl,
                row: row as u32,
                bd,
            };
            // In an ordered funnel, an event that can only be step 1 and
            // no exclusion only sets the latest start; the next one like
            // it overwrites that. Of a run of such events with the same
            // breakdown value, only the first (it may be the actor's best
            // path, or clear slots) and the last (the start later steps
            // follow) can change the result: the middle ones are dropped.
            // On the demo data this removes most `$pageview`s before the
            // state machine sees them.
            if self.collapse && steps <= 1 && excl == 0 {
                if let [.., a, b] = out.as_mut_slice() {
                    let like = |x: &MEvent| x.steps == steps && x.excl == 0 && x.bd == bd;
                    if like(a) && like(b) {
                        *b = e;
                        continue;
                    }
                }
            }
            out.push(e);
        }
    }

    fn bd_key(&self, b: &BreakdownPlan, actor: &Actor<'_>, row: usize) -> BdKey {
        let v = &actor.view;
        let d = self.dicts;
        match b.kind {
            BreakdownType::Event | BreakdownType::EventMetadata => BdKey::Values(
                b.keys
                    .iter()
                    .map(|k| {
                        k.and_then(|k| v.prop(row, k))
                            .filter(|&id| !value_str(d.values.resolve(id)).is_empty())
                            .unwrap_or(u32::MAX)
                    })
                    .collect(),
            ),
            BreakdownType::Person => {
                let p = self.person_of(actor, row);
                let pd = (p != u32::MAX).then(|| self.snap.person(p));
                BdKey::Values(
                    b.keys
                        .iter()
                        .map(|k| {
                            k.and_then(|k| pd.and_then(|pd| pd.prop(k)))
                                .unwrap_or(u32::MAX)
                        })
                        .collect(),
                )
            }
            BreakdownType::Group => {
                let gkey = group_key_of(v, row, b.group_index, d);
                let val = gkey.and_then(|g| {
                    let props = self.snap.groups().props.get(&(b.group_index, g))?;
                    let k = b.keys.first().copied().flatten()?;
                    props
                        .binary_search_by_key(&k, |(a, _)| *a)
                        .ok()
                        .map(|i| props[i].1)
                });
                BdKey::Values(vec![val.unwrap_or(u32::MAX)])
            }
            BreakdownType::Cohort => BdKey::None,
        }
    }

    /// Whether a breakdown key is entirely empty.
    pub fn bd_is_empty(&self, k: &BdKey) -> bool {
        match k {
            BdKey::Values(vs) => vs
                .iter()
                .all(|&v| v == u32::MAX || value_str(self.dicts.values.resolve(v)).is_empty()),
            BdKey::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    /// The string forms of a breakdown key.
    pub fn bd_strings(&self, k: &BdKey) -> Vec<String> {
        match k {
            BdKey::Values(vs) => vs
                .iter()
                .map(|&v| {
                    if v == u32::MAX {
                        String::new()
                    } else {
                        value_str(self.dicts.values.resolve(v)).to_string()
                    }
                })
                .collect(),
            BdKey::Str(s) => vec![s.clone()],
            BdKey::Cohort(c) => vec![c.to_string()],
            BdKey::None => vec![],
        }
    }

    /// Runs the funnel algorithm over prepared events.
    pub fn run_funnel(&self, evs: &[MEvent], constraint: Option<StepConstraint>) -> Option<Path> {
        match self.order {
            FunnelOrder::Unordered => unordered::run(&self.shape, evs, constraint.map(|c| c.bd)),
            _ => ordered::run(&self.shape, evs, constraint),
        }
    }

    /// Every (breakdown key, path) of one prepared actor, following the
    /// breakdown attribution (SEMANTICS.md rule 12).
    pub fn actor_paths(
        &self,
        actor: &Actor<'_>,
        scratch: &mut Scratch,
        out: &mut Vec<(BdKey, Path)>,
    ) {
        self.attributed(actor, scratch, out, |evs, c| self.run_funnel(evs, c));
    }

    /// Runs `run` over a prepared actor once per breakdown value the
    /// attribution gives it (SEMANTICS.md rule 12), collecting
    /// (value, result):
    /// - no breakdown: once, under `BdKey::None`;
    /// - cohorts: once, under every cohort the actor belongs to;
    /// - `first_touch` / `last_touch`: once over all events, under the value
    ///   of the earliest / latest event the funnel reads that has one;
    /// - `all_events`: once per value, over the events carrying it;
    /// - `step` N: once per value of the actor's step-N events, with the
    ///   event used as step N constrained to carry it.
    pub fn attributed<T: Clone>(
        &self,
        actor: &Actor<'_>,
        scratch: &mut Scratch,
        out: &mut Vec<(BdKey, T)>,
        run: impl Fn(&[MEvent], Option<StepConstraint>) -> Option<T>,
    ) {
        out.clear();
        let Scratch {
            evs,
            sub,
            bd_values,
            ..
        } = scratch;
        let Some(b) = &self.breakdown else {
            if let Some(p) = run(evs, None) {
                out.push((BdKey::None, p));
            }
            return;
        };
        if b.kind == BreakdownType::Cohort {
            let Some(p) = run(evs, None) else {
                return;
            };
            let person = if actor.is_person {
                actor.id
            } else {
                evs.first()
                    .map_or(u32::MAX, |e| self.person_of(actor, e.row as usize))
            };
            for (id, members) in &b.cohorts {
                if members.as_ref().is_none_or(|m| m.contains(&person)) {
                    out.push((BdKey::Cohort(*id), p.clone()));
                }
            }
            return;
        }
        let relevant =
            |e: &MEvent| e.steps != 0 || (self.order == FunnelOrder::Strict) || e.excl != 0;
        match b.attribution {
            Attribution::FirstTouch | Attribution::LastTouch => {
                let pick =
                    |e: &&MEvent| relevant(e) && !self.bd_is_empty(&bd_values[e.bd as usize]);
                let chosen = if b.attribution == Attribution::FirstTouch {
                    evs.iter().find(pick)
                } else {
                    evs.iter().rev().find(pick)
                };
                let key = match chosen {
                    Some(e) => bd_values[e.bd as usize].clone(),
                    None => BdKey::Values(vec![u32::MAX; b.keys.len().max(1)]),
                };
                if let Some(p) = run(evs, None) {
                    out.push((key, p));
                }
            }
            Attribution::AllEvents => {
                for (vi, key) in bd_values.iter().enumerate() {
                    sub.clear();
                    sub.extend(evs.iter().filter(|e| e.bd == vi as u32));
                    if let Some(p) = run(sub, None) {
                        out.push((key.clone(), p));
                    }
                }
            }
            Attribution::Step => {
                let step = b.attribution_step;
                let mut seen: Vec<u32> = Vec::new();
                for e in evs.iter() {
                    if e.steps & (1 << step) != 0 && !seen.contains(&e.bd) {
                        seen.push(e.bd);
                    }
                }
                for bd in seen {
                    let c = StepConstraint { step, bd };
                    if let Some(p) = run(evs, Some(c)) {
                        out.push((bd_values[bd as usize].clone(), p));
                    }
                }
            }
        }
    }

    /// Folds over every person actor in parallel (the kernel, and
    /// `fold_actors` for the general path). The actors whose events
    /// are one slice of a run (every actor of a compacted store without
    /// later identity joins) come in blocks of a run's persons, whose rows
    /// are contiguous, to `block`: read straight from the run's columns,
    /// without assembling a view per actor (which cost as much as the
    /// kernel's own work), and in one pass over the block's rows if the
    /// kernel likes (`PersonBlock::for_each` goes actor by actor). The
    /// others (their events span several slices) go one by one to `f`
    /// (`ActorCols::actor` gives the whole view when more is needed).
    /// Returns the partial results (one per rayon fold), for the caller to
    /// merge at once rather than pairwise in a tree, so accumulators that
    /// hold per-actor values are copied once.
    ///
    /// Panics if the aggregation is not by person.
    ///
    /// With `release`, each block of a run's persons drops its mapped pages
    /// but event ids and times once done (`RunColumns::release_rows`): a
    /// scan that reads properties would otherwise keep every page of every
    /// column resident (9–11 GB at 100M events). The general path and the
    /// kernel with a breakdown release; the kernel without one reads only
    /// the columns that stay.
    pub(crate) fn fold_runs<A, I, B, F>(&self, init: I, block: B, f: F, release: bool) -> Vec<A>
    where
        A: Send,
        I: Fn() -> A + Sync + Send,
        B: Fn(&mut A, &mut Scratch, &PersonBlock<'_>) + Sync + Send,
        F: Fn(&mut A, &mut Scratch, &ActorCols<'_>) + Sync + Send,
    {
        assert!(matches!(self.agg, Aggregation::Person));
        let snap = self.snap;
        // Work items: blocks of a run's person indices, then chunks of the
        // actors that span several slices.
        let mut items: Vec<(u32, u32, u32)> = Vec::new();
        for (ri, run) in snap.runs().iter().enumerate() {
            let n = run.persons.len();
            for b in (0..n).step_by(FOLD_CHUNK * 4) {
                items.push((ri as u32, b as u32, n.min(b + FOLD_CHUNK * 4) as u32));
            }
        }
        let multi = snap.multi_slice_actors();
        for c in (0..multi.len()).step_by(FOLD_CHUNK) {
            items.push((u32::MAX, c as u32, multi.len().min(c + FOLD_CHUNK) as u32));
        }
        items
            .par_iter()
            .fold(
                || (init(), Scratch::default()),
                |(mut acc, mut scratch), &(ri, lo, hi)| {
                    if ri == u32::MAX {
                        let mut merge = std::mem::take(&mut scratch.merge);
                        for &ai in &multi[lo as usize..hi as usize] {
                            let view = snap.events_of(ai as usize, &mut merge);
                            let cols = ActorCols {
                                event: view.event,
                                ts: view.ts,
                                src: ColsSrc::View(snap.actor_person(ai as usize), view),
                            };
                            f(&mut acc, &mut scratch, &cols);
                        }
                        scratch.merge = merge;
                    } else {
                        let b = PersonBlock {
                            solo: snap.solo_bits(ri as usize),
                            run: &snap.runs()[ri as usize],
                            persons: lo as usize..hi as usize,
                        };
                        block(&mut acc, &mut scratch, &b);
                        if release {
                            b.run.cols.release_rows(b.rows());
                        }
                    }
                    (acc, scratch)
                },
            )
            .map(|(a, _)| a)
            .collect()
    }

    /// Folds over every actor in parallel.
    pub fn fold_actors<A, I, F, R>(&self, init: I, f: F, reduce: R) -> A
    where
        A: Send,
        I: Fn() -> A + Sync + Send,
        F: Fn(&mut A, &mut Scratch, &Actor<'_>) + Sync + Send,
        R: Fn(A, A) -> A + Sync + Send,
    {
        match &self.agg {
            Aggregation::Person => {
                // Run by run (pages are read in order and released behind),
                // merged in one pass at the end.
                let f = |acc: &mut A, scratch: &mut Scratch, cols: &ActorCols<'_>| {
                    f(acc, scratch, &cols.actor(self.snap))
                };
                let parts = self.fold_runs(
                    &init,
                    |acc, scratch, b| b.for_each(|c| f(acc, scratch, &c)),
                    f,
                    true,
                );
                parts.into_iter().reduce(&reduce).unwrap_or_else(&init)
            }
            _ => {
                let run = &self.regroup().0;
                let count = run.persons.len();
                (0..count.div_ceil(FOLD_CHUNK))
                    .into_par_iter()
                    .fold(
                        || (init(), Scratch::default()),
                        |(mut acc, mut scratch), c| {
                            for i in c * FOLD_CHUNK..count.min((c + 1) * FOLD_CHUNK) {
                                let actor = Actor {
                                    id: run.persons[i],
                                    is_person: false,
                                    view: run.person_view(i),
                                };
                                f(&mut acc, &mut scratch, &actor);
                            }
                            (acc, scratch)
                        },
                    )
                    .map(|(a, _)| a)
                    .reduce(&init, &reduce)
            }
        }
    }

    /// The label of an actor for output.
    pub fn actor_label(&self, actor_id: u32, is_person: bool) -> String {
        if is_person {
            self.snap
                .person(actor_id)
                .label(self.snap.dicts())
                .to_string()
        } else {
            self.regroup_names()
                .get(actor_id as usize)
                .cloned()
                .unwrap_or_default()
        }
    }

    /// Actor keys for non-person aggregation, in id order.
    pub fn regroup_names(&self) -> &[String] {
        &self.regroup().1
    }

    fn regroup(&self) -> &(Run, Vec<String>) {
        self.regrouped.get_or_init(|| self.build_regroup())
    }

    /// Events of every person regrouped under the aggregation key (only
    /// events in range; events without a key are dropped).
    fn build_regroup(&self) -> (Run, Vec<String>) {
        let names = Interner::default();
        let mut cols = EventColumns::new();
        let mut keys: Vec<u32> = Vec::new();
        let d = self.dicts;
        let mut scratch = EventColumns::new();
        let key_id = match &self.agg {
            Aggregation::EventProperty(k) | Aggregation::PersonProperty(k) => d.keys.get(k),
            _ => None,
        };
        for i in 0..self.snap.actor_count() {
            let person = self.snap.actor_person(i);
            let v = self.snap.events_of(i, &mut scratch);
            for row in 0..v.len() {
                if !self.range.contains(v.ts[row]) {
                    continue;
                }
                let key: Option<String> = match &self.agg {
                    Aggregation::Group(g) => self.group_keys[*g as usize]
                        .and_then(|k| v.prop(row, k))
                        .map(|val| value_str(d.values.resolve(val)).to_string()),
                    Aggregation::EventProperty(_) => key_id
                        .and_then(|k| v.prop(row, k))
                        .map(|val| value_str(d.values.resolve(val)).to_string()),
                    Aggregation::PersonProperty(_) => key_id
                        .and_then(|k| self.snap.person(person).prop(k))
                        .map(|val| value_str(d.values.resolve(val)).to_string()),
                    Aggregation::DistinctId => Some(d.distinct_ids.resolve(v.did[row]).to_string()),
                    Aggregation::Person => unreachable!("person aggregation does not regroup"),
                };
                let Some(key) = key.filter(|k| !k.is_empty()) else {
                    continue;
                };
                keys.push(names.intern(&key));
                cols.push_from(&v, row);
            }
        }
        let run = Run::build(&cols, |i| keys[i]);
        (run, names.iter().map(|(_, s)| s.to_string()).collect())
    }
}

/// Per event id, the bitmask of matchers that can match it by name; and the
/// mask of matchers that match any name.
fn event_table(ms: &[Matcher], events: usize) -> (Vec<u64>, u64) {
    let mut table = vec![0u64; events];
    let mut any = 0u64;
    for (i, m) in ms.iter().enumerate() {
        match &m.event_ids {
            None => any |= 1 << i,
            Some(ids) => {
                for &e in ids {
                    if let Some(t) = table.get_mut(e as usize) {
                        *t |= 1 << i;
                    }
                }
            }
        }
    }
    (table, any)
}

impl Matcher {
    /// Whether the event name alone decides a match.
    fn is_simple(&self) -> bool {
        self.filter.is_none()
            && self.math.is_none_or(|m| m == StepMath::Total)
            && self
                .alts
                .iter()
                .all(|a| a.filter.is_none() && a.elements.is_none() && a.event.is_some())
    }
}

fn parse_aggregation(a: Option<&str>) -> Result<Aggregation, QueryError> {
    let Some(a) = a.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(Aggregation::Person);
    };
    if a == "person" || a == "person_id" {
        return Ok(Aggregation::Person);
    }
    if a == "distinct_id" {
        return Ok(Aggregation::DistinctId);
    }
    if let Some(g) = a.strip_prefix("group:") {
        let g: u8 = g.parse().ok().filter(|g| *g < 5).ok_or_else(|| {
            QueryError::invalid(
                "aggregation",
                format!("group index must be 0..4, got {g:?}"),
            )
        })?;
        return Ok(Aggregation::Group(g));
    }
    if let Some(k) = a
        .strip_prefix("event_property:")
        .or_else(|| a.strip_prefix("properties."))
    {
        return Ok(Aggregation::EventProperty(k.to_string()));
    }
    if let Some(k) = a
        .strip_prefix("person_property:")
        .or_else(|| a.strip_prefix("person.properties."))
    {
        return Ok(Aggregation::PersonProperty(k.to_string()));
    }
    Err(QueryError::invalid(
        "aggregation",
        format!("unknown aggregation {a:?}: use person, group:N, event_property:<key>, distinct_id or person_property:<key>"),
    ))
}

#[allow(clippy::too_many_arguments)]
fn compile_matcher(
    event: Option<&str>,
    action: Option<&dropscope_core::query::Action>,
    props: Option<&dropscope_core::query::PropertyFilters>,
    math: Option<StepMath>,
    field: &str,
    snap: &Snapshot,
    d: &Dicts,
) -> Result<Matcher, QueryError> {
    let mut alts = Vec::new();
    match action {
        Some(a) => {
            if a.match_any.is_empty() {
                return Err(QueryError::invalid(
                    format!("{field}.action.match_any"),
                    "an action needs at least one alternative",
                ));
            }
            for (i, alt) in a.match_any.iter().enumerate() {
                let f = format!("{field}.action.match_any[{i}]");
                let elements = match &alt.elements {
                    Some(m) if !m.is_empty() => {
                        let items: Vec<serde_json::Value> = m
                            .iter()
                            .map(|(k, v)| serde_json::json!({"key": k, "value": v, "operator": "exact", "type": "element"}))
                            .collect();
                        let pf: dropscope_core::query::PropertyFilters = serde_json::from_value(
                            serde_json::Value::Array(items),
                        )
                        .map_err(|e| QueryError::invalid(format!("{f}.elements"), e.to_string()))?;
                        Filter::compile(Some(&pf), &format!("{f}.elements"), snap, d)?
                    }
                    _ => None,
                };
                alts.push(Alt {
                    event: alt
                        .event
                        .as_deref()
                        .map(|e| d.events.get(e).unwrap_or(u32::MAX)),
                    filter: Filter::compile(
                        alt.properties.as_ref(),
                        &format!("{f}.properties"),
                        snap,
                        d,
                    )?,
                    elements,
                });
            }
        }
        None => alts.push(Alt {
            event: event.map(|e| d.events.get(e).unwrap_or(u32::MAX)),
            filter: None,
            elements: None,
        }),
    }
    let event_ids = if alts.iter().any(|a| a.event.is_none()) {
        None
    } else {
        Some(alts.iter().filter_map(|a| a.event).collect())
    };
    Ok(Matcher {
        alts,
        filter: Filter::compile(props, &format!("{field}.properties"), snap, d)?,
        math,
        event_ids,
    })
}

/// A breakdown's shape, checked the same way for every backend: its
/// property names, attribution, step and group slot, and its cohort ids
/// (0 = "all users"). Whether a cohort exists is each backend's check.
#[derive(Debug, Clone)]
pub struct BreakdownShape {
    pub kind: BreakdownType,
    pub names: Vec<String>,
    pub attribution: Attribution,
    pub attribution_step: usize,
    pub group_index: u8,
    pub cohort_ids: Vec<u64>,
}

/// The checked shape of `q`'s breakdown (`None` without one); every error
/// names the field.
pub fn breakdown_shape(q: &FunnelQuery) -> Result<Option<BreakdownShape>, QueryError> {
    let Some(b) = &q.breakdown else {
        return Ok(None);
    };
    let kind = b.kind.unwrap_or_default();
    let names: Vec<String> = match (&b.properties, &b.property) {
        (Some(ps), _) if !ps.is_empty() => ps.clone(),
        (_, Some(p)) => vec![p.clone()],
        _ if kind == BreakdownType::Cohort => vec![],
        _ => {
            return Err(QueryError::invalid(
                "breakdown.property",
                "a breakdown needs `property` or `properties`",
            ))
        }
    };
    let attribution = b.attribution.unwrap_or_default();
    let attribution_step = match attribution {
        Attribution::Step => b.attribution_step.ok_or_else(|| {
            QueryError::invalid(
                "breakdown.attribution_step",
                "attribution `step` needs attribution_step",
            )
        })?,
        _ => 0,
    };
    if attribution == Attribution::Step && attribution_step >= q.steps.len() {
        return Err(QueryError::invalid(
            "breakdown.attribution_step",
            format!("step {attribution_step} does not exist"),
        ));
    }
    if attribution == Attribution::Step
        && q.order == FunnelOrder::Unordered
        && attribution_step != 0
    {
        return Err(QueryError::invalid(
            "breakdown.attribution_step",
            "unordered funnels only support step attribution on step 0",
        ));
    }
    if kind == BreakdownType::Group && b.group_type_index.is_none() {
        return Err(QueryError::invalid(
            "breakdown.group_type_index",
            "group breakdowns need group_type_index",
        ));
    }
    let mut cohort_ids = Vec::new();
    if kind == BreakdownType::Cohort {
        let ids = b.cohorts.clone().unwrap_or_default();
        if ids.is_empty() {
            return Err(QueryError::invalid(
                "breakdown.cohorts",
                "a cohort breakdown needs cohort ids or \"all\"",
            ));
        }
        for (i, c) in ids.iter().enumerate() {
            let id = if c.as_str() == Some("all") {
                0
            } else {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        QueryError::invalid(format!("breakdown.cohorts[{i}]"), "not a cohort id")
                    })?
            };
            cohort_ids.push(id);
        }
    }
    Ok(Some(BreakdownShape {
        kind,
        names,
        attribution,
        attribution_step,
        group_index: b.group_type_index.unwrap_or(0),
        cohort_ids,
    }))
}

fn compile_breakdown(
    q: &FunnelQuery,
    snap: &Snapshot,
    d: &Dicts,
) -> Result<Option<BreakdownPlan>, QueryError> {
    let Some(BreakdownShape {
        kind,
        names,
        attribution,
        attribution_step,
        group_index,
        cohort_ids,
    }) = breakdown_shape(q)?
    else {
        return Ok(None);
    };
    let limit = q.breakdown.as_ref().and_then(|b| b.limit);
    let mut cohorts = Vec::new();
    for (i, &id) in cohort_ids.iter().enumerate() {
        if id == 0 {
            cohorts.push((0, None));
            continue;
        }
        let members = cohort_members(id, snap, d).ok_or_else(|| {
            QueryError::invalid(
                format!("breakdown.cohorts[{i}]"),
                format!("unknown cohort {id}"),
            )
        })?;
        cohorts.push((id, Some(members)));
    }
    Ok(Some(BreakdownPlan {
        kind,
        keys: names.iter().map(|n| d.keys.get(n)).collect(),
        boxed: kind != BreakdownType::Group,
        names,
        attribution,
        attribution_step,
        group_index,
        limit,
        cohorts,
    }))
}

/// Checks the query's shape; every message names the field.
pub fn validate(q: &FunnelQuery) -> Result<(), QueryError> {
    let n = q.steps.len();
    let needs_two = !matches!(q.kind, QueryKind::FunnelPersons);
    if n == 0 || (needs_two && n < 2 && q.kind != QueryKind::Funnel) {
        return Err(QueryError::invalid(
            "steps",
            format!(
                "a funnel needs at least {} step(s), got {n}",
                if needs_two && q.kind != QueryKind::Funnel {
                    2
                } else {
                    1
                }
            ),
        ));
    }
    if n > MAX_STEPS {
        return Err(QueryError::invalid(
            "steps",
            format!("at most {MAX_STEPS} steps, got {n}"),
        ));
    }
    for (i, s) in q.steps.iter().enumerate() {
        if s.event.is_some() && s.action.is_some() {
            return Err(QueryError::invalid(
                format!("steps[{i}]"),
                "give `event` or `action`, not both",
            ));
        }
        if s.optional {
            if i == 0 {
                return Err(QueryError::invalid(
                    "steps[0].optional",
                    "the first step cannot be optional",
                ));
            }
            if q.order == FunnelOrder::Unordered {
                return Err(QueryError::invalid(
                    format!("steps[{i}].optional"),
                    "optional steps need an ordered or strict funnel",
                ));
            }
            if let Some(next) = q.steps.get(i + 1) {
                if !next.optional
                    && next.event == s.event
                    && next.action == s.action
                    && next.properties == s.properties
                {
                    return Err(QueryError::invalid(
                        format!("steps[{i}].optional"),
                        "an optional step identical to the following required step can never be told apart",
                    ));
                }
            }
        }
    }
    if let Some(w) = &q.window {
        if let Some(v) = w.value {
            let unit = w.unit.unwrap_or_default();
            if v.saturating_mul(unit.seconds()) > 10_000 * 366 * 86_400 {
                return Err(QueryError::invalid(
                    "window.value",
                    format!("window too large: {v} {unit:?}s is above 10,000 years"),
                ));
            }
        }
    }
    if let Some(a) = q.aggregation.as_deref().map(str::trim) {
        let prefixes = [
            "event_property:",
            "properties.",
            "person_property:",
            "person.properties.",
        ];
        if prefixes.contains(&a) {
            return Err(QueryError::invalid(
                "aggregation",
                format!("{a:?} names no property key"),
            ));
        }
    }
    if let Some(v) = &q.breakdown_value {
        let scalar = |v: &serde_json::Value| !(v.is_object() || v.is_array());
        let ok = match v {
            serde_json::Value::Array(xs) => xs.iter().all(scalar),
            other => scalar(other),
        };
        if !ok {
            return Err(QueryError::invalid(
                "breakdown_value",
                format!("expected a value or a list of values, got {v}"),
            ));
        }
    }
    for (i, x) in q.exclusions.iter().enumerate() {
        let f = format!("exclusions[{i}]");
        if x.from_step >= x.to_step {
            return Err(QueryError::invalid(
                format!("{f}.from_step"),
                format!(
                    "from_step ({}) must be less than to_step ({})",
                    x.from_step, x.to_step
                ),
            ));
        }
        if n > 0 && x.to_step > n - 1 {
            return Err(QueryError::invalid(
                format!("{f}.to_step"),
                format!(
                    "to_step ({}) must be at most the last step ({})",
                    x.to_step,
                    n - 1
                ),
            ));
        }
        if q.order == FunnelOrder::Unordered && (x.from_step != 0 || x.to_step != n - 1) {
            return Err(QueryError::invalid(
                f.clone(),
                "unordered funnels only allow exclusions over the whole funnel (0 .. last step)",
            ));
        }
        for s in x.from_step..=x.to_step.min(n.saturating_sub(1)) {
            let st = &q.steps[s];
            let same_event = match (&x.action, &st.action) {
                (None, None) => x.event == st.event,
                (Some(a), Some(b)) => a == b,
                _ => false,
            };
            // An exclusion equal to (or broader than) a step in its range
            // would exclude every attempt.
            let broader = match (&x.properties, &st.properties) {
                (None, _) => true,
                (Some(xp), Some(sp)) => xp == sp,
                (Some(_), None) => false,
            };
            if same_event && broader {
                return Err(QueryError::invalid(
                    f.clone(),
                    format!("exclusion is the same as step {s} of its range"),
                ));
            }
        }
    }
    if let (Some(a), Some(b)) = (q.from_step, q.to_step) {
        if a >= b {
            return Err(QueryError::invalid(
                "from_step",
                format!("from_step ({a}) must be less than to_step ({b})"),
            ));
        }
    }
    if let Some(b) = q.to_step {
        if b >= n {
            return Err(QueryError::invalid(
                "to_step",
                format!("to_step ({b}) must be a step index below {n}"),
            ));
        }
    }
    if let Some(a) = q.from_step {
        if a >= n {
            return Err(QueryError::invalid(
                "from_step",
                format!("from_step ({a}) must be a step index below {n}"),
            ));
        }
    }
    Ok(())
}

/// Groups actor results (one thread's) by breakdown key.
pub type ByKey<T> = HashMap<BdKey, T>;
