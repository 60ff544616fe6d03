//! Correlation: which events and properties go with converting or dropping
//! (SEMANTICS.md rule 17), with exact p-values, BH q-values and intervals.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use dropscope_core::query::{CorrelationOptions, CorrelationType, FunnelQuery};
use dropscope_core::result::{CorrelationResult, CorrelationRow, PersonsResult};
use dropscope_core::QueryError;
use dropscope_store::dict::value_str;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::filter::Filter;
use crate::ordered::Path;
use crate::plan::{Actor, Aggregation, Plan};

/// PostHog's minimum-support rule: a row needs
/// `s + f >= min(min_count, min_percentage · (S + F))`.
pub fn has_support(s: u64, f: u64, total: u64, min_percentage: f64, min_count: f64) -> bool {
    (s + f) as f64 >= min_count.min(min_percentage * total as f64)
}

/// [`has_support`] with the query's thresholds (PostHog's defaults: 2%,
/// 25 actors).
fn supported(opts: &CorrelationOptions, (s, f): (u64, u64), total: u64) -> bool {
    has_support(
        s,
        f,
        total,
        opts.min_person_percentage.unwrap_or(0.02),
        opts.min_person_count.unwrap_or(25.0),
    )
}

/// Which rows are tested: the excluded names (event rows by event name,
/// property rows by property name) are not, nor event-with-properties rows
/// held by two actors or fewer.
struct RowFilter {
    kind: CorrelationType,
    events: HashSet<String>,
    props: HashSet<String>,
}

impl RowFilter {
    fn new(opts: &CorrelationOptions) -> RowFilter {
        RowFilter {
            kind: opts.kind,
            events: opts.exclude_event_names.iter().flatten().cloned().collect(),
            props: opts.exclude_names.iter().flatten().cloned().collect(),
        }
    }

    /// Whether a row of this name passes the name exclusions. A property
    /// row is judged by the text before its first `::` (after the person
    /// prefix), so `[$person::]key` alone is judged as `[$person::]key::value`.
    fn by_name(&self, name: &str) -> bool {
        fn first(r: &str) -> &str {
            r.split("::").next().unwrap_or("")
        }
        match self.kind {
            CorrelationType::Events => {
                match name.strip_prefix(dropscope_core::query::PERSON_ROW_PREFIX) {
                    Some(r) => !self.props.contains(first(r)),
                    None => !self.events.contains(name),
                }
            }
            CorrelationType::Properties => !self.props.contains(first(name)),
            CorrelationType::EventWithProperties => true,
        }
    }

    /// Whether a row held by `s` successful and `f` failed actors is tested.
    fn by_counts(&self, (s, f): (u64, u64)) -> bool {
        self.kind != CorrelationType::EventWithProperties || s + f > 2
    }
}

/// One actor's outcome: whether it converted, and where its row keys end
/// in its part's lists (they start where the previous actor's end).
struct Outcome {
    success: bool,
    events_end: u32,
    others_end: u32,
}

/// What one worker of the fold gathers: its actors' outcomes and row keys
/// (event rows as event ids, every other row as a [`Key`]), the number of
/// successful and failed actors having each row, and the scratch state
/// that finds an actor's distinct event rows without a set per actor.
struct Part {
    outcomes: Vec<Outcome>,
    /// Per outcome, its breakdown segment (only with a breakdown).
    segments: Vec<Option<String>>,
    events: Vec<u32>,
    others: Vec<Key>,
    /// By event id: (successful, failed) actors having that event row.
    event_counts: Vec<(u64, u64)>,
    other_counts: FxHashMap<Key, (u64, u64)>,
    /// How an actor's repeated events are told apart.
    distinct: Distinct,
    /// Where the kernel writes the current actor's path.
    path: Option<Box<Path>>,
}

/// How one actor's distinct events are found.
enum Distinct {
    /// The actor's events as a bitmap, all zero between actors (set
    /// branch-free, then read and cleared a word at a time).
    Bitmap(Vec<u64>),
    /// By event id, the number of the last actor that had it (`actor`: the
    /// current one), for large vocabularies: an actor costs its events,
    /// not the vocabulary.
    Stamps { seen: Vec<u32>, actor: u32 },
}

/// The largest event vocabulary whose event rows are gathered in a
/// bitmap per actor (16 words to read and clear per actor).
const BITMAP_EVENTS: usize = 1024;

impl Part {
    fn new(events: usize) -> Part {
        Part {
            outcomes: Vec::new(),
            segments: Vec::new(),
            events: Vec::new(),
            others: Vec::new(),
            event_counts: vec![(0, 0); events],
            other_counts: FxHashMap::default(),
            distinct: if events <= BITMAP_EVENTS {
                Distinct::Bitmap(vec![0; events.div_ceil(64)])
            } else {
                Distinct::Stamps {
                    seen: vec![0; events],
                    actor: 0,
                }
            },
            path: None,
        }
    }

    /// Each actor's outcome with its event rows and other row keys.
    fn actors(&self) -> impl Iterator<Item = (&Outcome, &[u32], &[Key])> {
        let mut prev = (0, 0);
        self.outcomes.iter().map(move |o| {
            let (e, k) = prev;
            let end = (o.events_end as usize, o.others_end as usize);
            prev = end;
            (o, &self.events[e..end.0], &self.others[k..end.1])
        })
    }

    /// Appends and counts the event rows of one actor: the distinct events
    /// of `events` that no step matches (`step_bits`).
    fn add_event_rows(&mut self, events: &[u32], success: bool, step_bits: &[u64]) {
        let (out, counts) = (&mut self.events, &mut self.event_counts);
        let mut add = |e: u32| {
            let i = e as usize;
            if i >= counts.len() {
                counts.resize(i + 1, (0, 0));
            }
            out.push(e);
            counts[i] = count(counts[i], success);
        };
        match &mut self.distinct {
            Distinct::Bitmap(bits) => distinct_by_bitmap(events, step_bits, bits, &mut add),
            Distinct::Stamps { seen, actor } => {
                *actor += 1;
                distinct_by_stamps(events, step_bits, seen, *actor, &mut add);
            }
        }
    }

    /// Records one actor whose event rows (counted already) and other
    /// keys were appended.
    fn finish_actor(&mut self, success: bool, others_start: usize, segment: Option<String>) {
        for k in &self.others[others_start..] {
            let c = self.other_counts.entry(*k).or_default();
            *c = count(*c, success);
        }
        let end = |len: usize| u32::try_from(len).expect("fewer than 2^32 row keys per worker");
        self.outcomes.push(Outcome {
            success,
            events_end: end(self.events.len()),
            others_end: end(self.others.len()),
        });
        if segment.is_some() {
            self.segments.resize(self.outcomes.len() - 1, None);
            self.segments.push(segment);
        }
    }
}

/// `(s, f)` with one more successful or failed actor.
fn count((s, f): (u64, u64), success: bool) -> (u64, u64) {
    (s + u64::from(success), f + u64::from(!success))
}

fn options(plan: &Plan<'_>) -> CorrelationOptions {
    plan.q.correlation.clone().unwrap_or_default()
}

/// The transition analysed: (population step, success step), 0-based.
pub fn transition(plan: &Plan<'_>) -> (usize, usize) {
    transition_for(plan.q, plan.n())
}

/// [`transition`] for a query of `n` steps (shared with other backends).
pub fn transition_for(q: &FunnelQuery, n: usize) -> (usize, usize) {
    let from = q.from_step.unwrap_or(0);
    let to = q
        .correlation
        .as_ref()
        .and_then(|c| c.success_step)
        .or(q.to_step)
        .unwrap_or(n - 1);
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

/// A bitmap by event id: whether a step can match it (such events are no
/// rows).
fn step_event_bits(plan: &Plan<'_>) -> Vec<u64> {
    let mut out = vec![0u64; plan.dicts.events.len().div_ceil(64)];
    for m in plan.steps.iter() {
        for &e in m.event_ids.iter().flatten() {
            if let Some(w) = out.get_mut(e as usize >> 6) {
                *w |= 1 << (e & 63);
            }
        }
    }
    out
}

/// Whether bit `i` of a bitmap is set (bits past its end are not).
fn has_bit(bits: &[u64], i: usize) -> bool {
    bits.get(i >> 6).is_some_and(|w| w >> (i & 63) & 1 == 1)
}

/// Rows `start < ts < end` inside the range: the span correlation observes.
fn span(plan: &Plan<'_>, p: &Path, success: bool) -> (i64, i64) {
    let a = &p.attempt;
    let t0 = a.times[0];
    let equal = plan.q.correlation.as_ref().is_some_and(|c| c.equal_window);
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

/// A row key as integers: the kind in the top byte, then ids. Strings are
/// built only for the distinct rows at the end, never per actor.
type Key = u128;
const K_EVENT: u128 = 0;
const K_PROP: u128 = 1;
const K_EVENT_PROP: u128 = 2;
const K_PERSON_PROP: u128 = 3;
/// Value id standing for a missing (or empty) value.
const MISSING: u32 = u32::MAX;

fn key(kind: u128, a: u32, b: u32, c: u32) -> Key {
    (kind << 120) | ((a as u128) << 64) | ((b as u128) << 32) | c as u128
}

/// What a correlation query looks at, resolved to ids once.
pub(crate) struct KeyCtx {
    /// By event id, a bitmap: whether a step can match it (such events are
    /// no rows).
    step_bits: Vec<u64>,
    /// event_with_properties: the analysed event ids.
    event_names: HashSet<u32>,
    /// event_with_properties: property key ids skipped.
    skip_keys: HashSet<u32>,
    elements_key: Option<u32>,
    /// Properties: `$all`, or the named keys (a key never stored gets a
    /// synthetic id from the top of the range, indexing `missing_names`).
    all_props: bool,
    named: Vec<u32>,
    missing_names: Vec<String>,
    /// Combined events + person properties.
    person: Option<Box<KeyCtx>>,
}

impl KeyCtx {
    fn new(plan: &Plan<'_>, opts: &CorrelationOptions) -> KeyCtx {
        let d = plan.dicts;
        let names = match (opts.kind, &opts.with_person_properties) {
            (CorrelationType::Properties, _) => opts.names.clone().unwrap_or_default(),
            (CorrelationType::Events, Some(n)) => n.clone(),
            _ => Vec::new(),
        };
        // Each name once: a repeated name is one row, not two rows with the
        // same name whose counts would be summed (and then exceed the
        // number of actors).
        let mut seen: HashSet<&str> = HashSet::new();
        let mut missing_names: Vec<String> = Vec::new();
        let mut named: Vec<u32> = Vec::new();
        for n in names.iter().filter(|n| n.as_str() != "$all") {
            if !seen.insert(n.as_str()) {
                continue;
            }
            named.push(d.keys.get(n).unwrap_or_else(|| {
                missing_names.push(n.clone());
                u32::MAX - missing_names.len() as u32
            }));
        }
        let props = KeyCtx {
            step_bits: step_event_bits(plan),
            event_names: opts
                .event_names
                .iter()
                .flatten()
                .filter_map(|n| d.events.get(n))
                .collect(),
            skip_keys: opts
                .event_exclude_property_names
                .iter()
                .flatten()
                .filter_map(|n| d.keys.get(n))
                .collect(),
            elements_key: d.keys.get(dropscope_core::event::ELEMENTS_KEY),
            all_props: names.iter().any(|n| n == "$all"),
            named,
            missing_names,
            person: None,
        };
        if opts.kind == CorrelationType::Events && opts.with_person_properties.is_some() {
            let mut events = KeyCtx::new(
                plan,
                &CorrelationOptions {
                    with_person_properties: None,
                    ..opts.clone()
                },
            );
            events.person = Some(Box::new(props));
            events
        } else {
            props
        }
    }

    /// The name of property key `id` (a key never stored: the name the
    /// query gave).
    fn key_name(&self, plan: &Plan<'_>, id: u32) -> String {
        let d = plan.dicts;
        if (id as usize) < d.keys.len() {
            d.keys.resolve(id).to_string()
        } else {
            let i = (u32::MAX - id) as usize;
            self.missing_names
                .get(i.wrapping_sub(1))
                .cloned()
                .unwrap_or_default()
        }
    }

    /// The row name of a key (PostHog's format).
    fn name(&self, plan: &Plan<'_>, k: Key) -> String {
        let d = plan.dicts;
        let kind = k >> 120;
        let a = ((k >> 64) & 0xffff_ffff) as u32;
        let b = ((k >> 32) & 0xffff_ffff) as u32;
        let c = (k & 0xffff_ffff) as u32;
        let val = |v: u32| {
            if v == MISSING {
                ""
            } else {
                value_str(d.values.resolve(v))
            }
        };
        match kind {
            K_EVENT => d.events.resolve(c).to_string(),
            K_PROP => format!("{}::{}", self.key_name(plan, b), val(c)),
            K_EVENT_PROP => format!("{}::{}::{}", d.events.resolve(a), d.keys.resolve(b), val(c)),
            _ => {
                let ctx = self.person.as_deref().unwrap_or(self);
                format!(
                    "{}{}::{}",
                    dropscope_core::query::PERSON_ROW_PREFIX,
                    ctx.key_name(plan, b),
                    val(c)
                )
            }
        }
    }
}

/// The id that stands for a value's string form in row keys: MISSING when
/// the form is empty, else the id of the string with that form when one is
/// stored (`1` and `"1"` are one row, so they must be one key: an actor
/// with both is still one actor of that row), else the value's own id.
///
/// A string value is decided from its [`Head`](dropscope_store::dict::Head)
/// alone, without reading the string: a person property of unique values
/// (an e-mail) would otherwise page in the whole values dictionary (~1 GB
/// of mapped log at 100M events).
fn canonical_value(plan: &Plan<'_>, v: u32) -> u32 {
    let head = plan.dicts.values.head(v);
    if head.tag() == b'z' || head.alone() {
        return MISSING;
    }
    if head.tag() == b's' {
        return v;
    }
    let form = value_str(plan.dicts.values.resolve(v));
    if form.is_empty() {
        MISSING
    } else {
        plan.dicts.values.get_string_value(form).unwrap_or(v)
    }
}

/// The event rows of one actor (`events` correlation): the ids of the
/// events in its span (and in range) that no step matches, each once,
/// appended to `part.events`.
fn event_rows(
    plan: &Plan<'_>,
    actor: &Actor<'_>,
    p: &Path,
    success: bool,
    ctx: &KeyCtx,
    part: &mut Part,
) {
    let v = &actor.view;
    let (t0, end) = span(plan, p, success);
    // The view is sorted by time: the rows `t0 < ts < end` in range are
    // one slice of it.
    let lo = v.ts.partition_point(|&ts| ts <= t0 || ts < plan.range.from);
    let hi = v.ts.partition_point(|&ts| ts < end && ts <= plan.range.to);
    part.add_event_rows(
        v.event.get(lo..hi).unwrap_or_default(),
        success,
        &ctx.step_bits,
    );
}

/// Calls `add` once for each distinct event of `events` that no step
/// matches (`step_bits`), by event id, through `bits` (all zero before and
/// after).
fn distinct_by_bitmap(
    events: &[u32],
    step_bits: &[u64],
    bits: &mut Vec<u64>,
    add: &mut impl FnMut(u32),
) {
    for &e in events {
        let w = (e >> 6) as usize;
        if w >= bits.len() {
            bits.resize(w + 1, 0);
        }
        bits[w] |= 1 << (e & 63);
    }
    for (w, word) in bits.iter_mut().enumerate() {
        let mut x = *word & !step_bits.get(w).copied().unwrap_or(0);
        *word = 0;
        while x != 0 {
            add((w as u32) << 6 | x.trailing_zeros());
            x &= x - 1;
        }
    }
}

/// [`distinct_by_bitmap`] through a stamp per event id (`seen`, `stamp`
/// being this actor's), in order of first event.
fn distinct_by_stamps(
    events: &[u32],
    step_bits: &[u64],
    seen: &mut Vec<u32>,
    stamp: u32,
    add: &mut impl FnMut(u32),
) {
    for &e in events {
        let i = e as usize;
        if has_bit(step_bits, i) {
            continue;
        }
        if i >= seen.len() {
            seen.resize(i + 1, 0);
        }
        if seen[i] != stamp {
            seen[i] = stamp;
            add(e);
        }
    }
}

/// The keys of one actor's rows other than event rows (properties, events
/// with properties, person properties), sorted and distinct, appended to
/// `keys`.
fn other_keys(
    plan: &Plan<'_>,
    actor: &Actor<'_>,
    p: &Path,
    success: bool,
    opts: &CorrelationOptions,
    ctx: &KeyCtx,
    keys: &mut Vec<Key>,
) {
    let v = &actor.view;
    let start = keys.len();
    match opts.kind {
        CorrelationType::Events => {
            if let Some(pctx) = &ctx.person {
                property_keys(plan, actor, p, opts, pctx, K_PERSON_PROP, keys);
            }
        }
        CorrelationType::EventWithProperties => {
            let (t0, end) = span(plan, p, success);
            for row in 0..v.len() {
                let ts = v.ts[row];
                let e = v.event[row];
                if ts <= t0
                    || ts >= end
                    || !plan.range.contains(ts)
                    || !ctx.event_names.contains(&e)
                {
                    continue;
                }
                for (k, val) in v.props(row) {
                    if ctx.skip_keys.contains(&k) || Some(k) == ctx.elements_key {
                        continue;
                    }
                    keys.push(key(K_EVENT_PROP, e, k, canonical_value(plan, val)));
                }
            }
        }
        CorrelationType::Properties => property_keys(plan, actor, p, opts, ctx, K_PROP, keys),
    }
    let tail = &mut keys[start..];
    tail.sort_unstable();
    let mut w = start;
    for r in start..keys.len() {
        if r == start || keys[r] != keys[w - 1] {
            keys[w] = keys[r];
            w += 1;
        }
    }
    keys.truncate(w);
}

fn property_keys(
    plan: &Plan<'_>,
    actor: &Actor<'_>,
    p: &Path,
    opts: &CorrelationOptions,
    ctx: &KeyCtx,
    kind: u128,
    keys: &mut Vec<Key>,
) {
    let props = if opts.properties_at_step && actor.is_person {
        Cow::Owned(props_at(plan, actor, p.attempt.times[transition(plan).0]))
    } else {
        Cow::Borrowed(actor_props(plan, actor))
    };
    if ctx.all_props {
        for (k, val) in props.iter() {
            keys.push(key(kind, 0, *k, canonical_value(plan, *val)));
        }
    }
    for &k in &ctx.named {
        let val = props
            .iter()
            .find(|(pk, _)| *pk == k)
            .map_or(MISSING, |(_, v)| canonical_value(plan, *v));
        keys.push(key(kind, 0, k, val));
    }
}

/// A person's properties as of time `t`: `$set`/`$set_once` of the
/// person's events up to `t` applied in order; keys never set by an event
/// keep their current value.
fn props_at(plan: &Plan<'_>, actor: &Actor<'_>, t: i64) -> Vec<(u32, u32)> {
    let d = plan.dicts;
    let current = actor_props(plan, actor);
    let (Some(set_k), set_once_k) = (d.keys.get("$set"), d.keys.get("$set_once")) else {
        return current.to_vec();
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
        .iter()
        .copied()
        .filter(|(k, _)| !touched.contains_key(k))
        .collect();
    out.extend(touched.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    out.sort_unstable();
    out
}

/// The actor's properties: the person's, or the group's for group actors.
fn actor_props<'s>(plan: &Plan<'s>, actor: &Actor<'_>) -> &'s [(u32, u32)] {
    match &plan.agg {
        Aggregation::Person => plan.snap.person(actor.id).props(),
        Aggregation::Group(g) => {
            let key = plan.actor_label(actor.id, false);
            plan.snap
                .groups()
                .props
                .get(&(*g, key))
                .map_or(&[], Vec::as_slice)
        }
        _ => &[],
    }
}

fn validate(plan: &Plan<'_>, opts: &CorrelationOptions) -> Result<(), QueryError> {
    validate_options(plan.n(), opts)
}

/// Checks correlation options for a funnel of `n` steps (shared with other
/// backends).
pub fn validate_options(n: usize, opts: &CorrelationOptions) -> Result<(), QueryError> {
    if n < 2 {
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
        if s == 0 || s >= n {
            return Err(QueryError::invalid(
                "correlation.success_step",
                format!("must be a step index in 1..{n}"),
            ));
        }
    }
    Ok(())
}

/// Runs a correlation query.
pub fn correlation(plan: &Plan<'_>) -> Result<CorrelationResult, QueryError> {
    correlation_rows(plan, true)
}

/// [`correlation`] without its low-support rows (`low_support` comes back
/// empty; every other number is the same): the diagnosis report does not
/// show them, and with a property of unique values (an e-mail) they are one
/// row per person, which the report would otherwise hold through the
/// adjusted analysis.
pub fn correlation_supported(plan: &Plan<'_>) -> Result<CorrelationResult, QueryError> {
    correlation_rows(plan, false)
}

fn correlation_rows(plan: &Plan<'_>, keep_low: bool) -> Result<CorrelationResult, QueryError> {
    let opts = options(plan);
    validate(plan, &opts)?;
    let ctx = KeyCtx::new(plan, &opts);
    let kernel = plan.path_kernel_table();
    let n_events = plan.dicts.events.len();
    let parts: Vec<Part> = plan.fold_actors(
        || vec![Part::new(n_events)],
        |parts, scratch, actor| {
            let part = parts.last_mut().expect("one part per worker");
            // The kernel writes the path into the part's slot: a path is a
            // few hundred bytes, and moving one per actor showed in profiles.
            let mut slot = part
                .path
                .take()
                .unwrap_or_else(|| Box::new(Path::default()));
            let general;
            let kernel_path = kernel.and_then(|t| {
                crate::kernel::actor_path_into(plan, t, &actor.view, scratch, &mut slot)
            });
            let (path, segment) = match kernel_path {
                Some(entered) => (entered.then_some(&*slot), None),
                None => {
                    plan.prepare(actor, &mut scratch.evs, &mut scratch.bd_values);
                    let segment = if plan.breakdown.is_some() {
                        let mut out = Vec::new();
                        plan.actor_paths(actor, scratch, &mut out);
                        out.first()
                            .map(|(k, _)| crate::funnel::bd_value(plan, k).to_string())
                    } else {
                        None
                    };
                    general = plan.run_funnel(&scratch.evs, None);
                    (general.as_ref(), segment)
                }
            };
            if let Some(p) = path.filter(|p| entered(plan, p)) {
                let success = converted(plan, p);
                let others_start = part.others.len();
                if opts.kind == CorrelationType::Events {
                    event_rows(plan, actor, p, success, &ctx, part);
                }
                other_keys(plan, actor, p, success, &opts, &ctx, &mut part.others);
                part.finish_actor(success, others_start, segment);
            }
            part.path = Some(slot);
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    let actors: usize = parts.iter().map(|p| p.outcomes.len()).sum();
    let big_s = parts
        .iter()
        .flat_map(|p| &p.outcomes)
        .filter(|o| o.success)
        .count() as u64;
    let big_f = actors as u64 - big_s;
    let (from_step, to_step) = transition(plan);
    if big_s == 0 || big_f == 0 {
        return Ok(empty_result(big_s, big_f, from_step, to_step));
    }
    let mut counts: FxHashMap<Key, (u64, u64)> = FxHashMap::default();
    let mut event_counts: Vec<(u64, u64)> = Vec::new();
    for part in &parts {
        if event_counts.len() < part.event_counts.len() {
            event_counts.resize(part.event_counts.len(), (0, 0));
        }
        for (c, pc) in event_counts.iter_mut().zip(&part.event_counts) {
            c.0 += pc.0;
            c.1 += pc.1;
        }
        for (k, pc) in &part.other_counts {
            let c = counts.entry(*k).or_default();
            c.0 += pc.0;
            c.1 += pc.1;
        }
    }
    for (e, &c) in event_counts.iter().enumerate() {
        if c != (0, 0) {
            counts.insert(key(K_EVENT, 0, 0, e as u32), c);
        }
    }
    // Without low-support rows in the answer, the low-support keys that no
    // other key can share a name with are tested without being named.
    let unnamed = if keep_low {
        Vec::new()
    } else {
        take_unnamed(plan, &ctx, &opts, &mut counts, big_s + big_f)
    };
    // Name the distinct rows; ids with one string form (`1` and `"1"`) are
    // one row.
    let mut named: HashMap<String, ((u64, u64), Vec<Key>)> = HashMap::new();
    for (k, (s, f)) in counts {
        let e = named.entry(ctx.name(plan, k)).or_default();
        e.0 .0 += s;
        e.0 .1 += f;
        e.1.push(k);
    }
    let mut named: Vec<(String, (u64, u64), Vec<Key>)> = named
        .into_iter()
        .map(|(name, (c, ks))| (name, c, ks))
        .collect();
    recount_shared_names(&mut named, &parts);
    let tested = tested_rows_with(named, &unnamed, big_s, big_f, &opts);
    let rows_tested = tested.len() + unnamed.len();
    let (mut rows, row_keys): (Vec<CorrelationRow>, Vec<Vec<Key>>) = tested
        .into_iter()
        .filter(|(row, _)| keep_low || !row.low_support)
        .unzip();
    let cand = adjust_candidates(&rows, opts.adjusted_top_k.unwrap_or(20), actors);
    if !cand.is_empty() {
        let patterns = actor_patterns(&cand, &row_keys, &parts);
        apply_adjusted(&mut rows, &cand, patterns);
    }
    if plan.breakdown.is_some() {
        simpson(&mut rows, &row_keys, &parts);
    }
    Ok(CorrelationResult {
        rows_tested,
        ..finish(rows, big_s, big_f, &opts, from_step, to_step)
    })
}

/// Removes from `counts` the keys of low-support rows that can be tested
/// without a name, and returns their counts (those an exclusion would drop
/// are dropped). Naming a row costs a string, and reading its value from
/// the mapped dictionary: with a person property of unique values (an
/// e-mail) that is a row per person, ~6M rows and ~1 GB of dictionary
/// pages at 100M events, none of which a report without low-support rows
/// shows. A row needs no name when no other key can have its name, which
/// holds when no event name and no property key name has `::` (a name is
/// then `[$person::]key::value` or `event::key::value`, and the key and
/// event are the text before the first `::`s) for a key with a string
/// value or none (two string values with one text are one id, and
/// `canonical_value` maps any other value with that text to it). Other
/// keys are named as before.
fn take_unnamed(
    plan: &Plan<'_>,
    ctx: &KeyCtx,
    opts: &CorrelationOptions,
    counts: &mut FxHashMap<Key, (u64, u64)>,
    total: u64,
) -> Vec<(u64, u64)> {
    let d = plan.dicts;
    let plain = |s: &str| !s.contains("::");
    let missing = ctx
        .missing_names
        .iter()
        .chain(ctx.person.iter().flat_map(|p| &p.missing_names));
    if !(d.events.iter().all(|(_, e)| plain(e))
        && d.keys.iter().all(|(_, k)| plain(k))
        && missing.into_iter().all(|k| plain(k)))
    {
        return Vec::new();
    }
    let filter = RowFilter::new(opts);
    // By (kind, key id): whether the name exclusions keep its rows (the
    // key's name stands for theirs, see `RowFilter::by_name`), asked once.
    let mut key_kept: FxHashMap<(u128, u32), bool> = FxHashMap::default();
    let mut out = Vec::new();
    counts.retain(|&k, &mut c| {
        let kind = k >> 120;
        if kind == K_EVENT || supported(opts, c, total) {
            return true;
        }
        let b = ((k >> 32) & 0xffff_ffff) as u32;
        let v = (k & 0xffff_ffff) as u32;
        if v != MISSING && d.values.head(v).tag() != b's' {
            return true;
        }
        let kept = *key_kept.entry((kind, b)).or_insert_with(|| {
            let name = if kind == K_PERSON_PROP {
                let pctx = ctx.person.as_deref().unwrap_or(ctx);
                format!(
                    "{}{}",
                    dropscope_core::query::PERSON_ROW_PREFIX,
                    pctx.key_name(plan, b)
                )
            } else {
                ctx.key_name(plan, b)
            };
            filter.by_name(&name)
        });
        if kept && filter.by_counts(c) {
            out.push(c);
        }
        // Excluded rows are dropped here, as `tested_rows` would.
        false
    });
    out
}

/// The counts of the rows that several keys share a name with (`1` and
/// `"1"` are canonicalised earlier, but names can still meet, as key
/// `a::b` with value `c` and key `a` with value `b::c`): summing their
/// keys' counts would count an actor having two of them twice, so these
/// rows are recounted as the number of distinct actors having any of
/// their keys. Rare, so it costs nothing when no names are shared.
fn recount_shared_names(named: &mut [(String, (u64, u64), Vec<Key>)], parts: &[Part]) {
    let mut group: FxHashMap<Key, usize> = FxHashMap::default();
    for (i, (_, _, keys)) in named.iter().enumerate() {
        if keys.len() > 1 {
            group.extend(keys.iter().map(|&k| (k, i)));
        }
    }
    if group.is_empty() {
        return;
    }
    let mut counts: FxHashMap<usize, (u64, u64)> = FxHashMap::default();
    let mut hit: Vec<usize> = Vec::new();
    for part in parts {
        for (o, events, others) in part.actors() {
            hit.clear();
            let event_keys = events.iter().map(|&e| key(K_EVENT, 0, 0, e));
            for k in event_keys.chain(others.iter().copied()) {
                if let Some(&i) = group.get(&k) {
                    hit.push(i);
                }
            }
            hit.sort_unstable();
            hit.dedup();
            for &i in &hit {
                let c = counts.entry(i).or_default();
                *c = count(*c, o.success);
            }
        }
    }
    for (i, c) in counts {
        named[i].1 = c;
    }
}

/// The answer when one side is empty: no rows, `skewed`.
pub fn empty_result(big_s: u64, big_f: u64, from_step: usize, to_step: usize) -> CorrelationResult {
    CorrelationResult {
        skewed: true,
        success_total: big_s,
        failure_total: big_f,
        from_step,
        to_step,
        ..Default::default()
    }
}

/// The rows tested, from the counts of every distinct row name (`(s, f)` =
/// successful / failed actors having it; `big_s`, `big_f` the totals, both
/// positive): excluded names are removed, then every row gets its odds
/// ratio (PostHog's +1 prior), Fisher p-value, BH q-value over all rows,
/// Woolf interval and support flag. Ordered by name; `T` rides along.
/// Both backends call this with their own counts.
pub fn tested_rows<T>(
    named: Vec<(String, (u64, u64), T)>,
    big_s: u64,
    big_f: u64,
    opts: &CorrelationOptions,
) -> Vec<(CorrelationRow, T)> {
    tested_rows_with(named, &[], big_s, big_f, opts)
}

/// [`tested_rows`] with more rows tested that get no row of their own:
/// `unnamed` holds their counts (already past the exclusions); their
/// p-values join the Benjamini–Hochberg family, so every q-value is what
/// it would be with them named.
pub fn tested_rows_with<T>(
    named: Vec<(String, (u64, u64), T)>,
    unnamed: &[(u64, u64)],
    big_s: u64,
    big_f: u64,
    opts: &CorrelationOptions,
) -> Vec<(CorrelationRow, T)> {
    let filter = RowFilter::new(opts);
    let mut keys: Vec<(String, (u64, u64), T)> = named
        .into_iter()
        .filter(|(k, c, _)| filter.by_name(k) && filter.by_counts(*c))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let fisher =
        |&(s, f): &(u64, u64)| dropscope_stats::fisher_exact_two_sided(s, f, big_s - s, big_f - f);
    let p_values: Vec<f64> = keys
        .iter()
        .map(|(_, c, _)| c)
        .chain(unnamed)
        .map(fisher)
        .collect();
    let q_values =
        dropscope_stats::benjamini_hochberg(&p_values).unwrap_or_else(|_| p_values.clone());
    let total = big_s + big_f;
    keys.into_iter()
        .zip(p_values.iter().zip(&q_values))
        .map(|((k, (s, f), t), (p, q))| {
            let odds = dropscope_stats::odds_ratio_prior(s, f, big_s, big_f).unwrap_or(f64::NAN);
            let ci = dropscope_stats::odds_ratio_interval_woolf(s, f, big_s - s, big_f - f, 0.95)
                .map(|c| [c.lower, c.upper])
                .unwrap_or([0.0, f64::INFINITY]);
            let row = CorrelationRow {
                event: k,
                success_count: s,
                failure_count: f,
                success_total: big_s,
                failure_total: big_f,
                odds_ratio: odds,
                correlation_type: if odds > 1.0 { "success" } else { "failure" }.into(),
                p_value: *p,
                q_value: *q,
                odds_ratio_interval: ci,
                low_support: !supported(opts, (s, f), total),
                adjusted_odds_ratio: None,
                adjusted_odds_ratio_interval: None,
                simpson_warning: None,
            };
            (row, t)
        })
        .collect()
}

/// The rows the adjusted analysis uses (indexes into `rows`, at most
/// `min(k, 64)` supported rows with the smallest p-values); empty when it
/// does not run (`k` = 0 or fewer than 10 actors).
pub fn adjust_candidates(rows: &[CorrelationRow], k: usize, actors: usize) -> Vec<usize> {
    if k == 0 || actors < 10 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].low_support).collect();
    idx.sort_by(|&a, &b| rows[a].p_value.total_cmp(&rows[b].p_value));
    idx.truncate(k.min(64));
    idx
}

/// Adjusted odds ratios: an L2-regularised logistic regression of success
/// on the indicators of the candidate rows ([`adjust_candidates`]), so that
/// two confounded signals are told apart. `patterns` = for every distinct
/// (bitmask over the candidates in order, success), the number of actors
/// with it: the fit costs the number of distinct bitmasks (one grouped
/// row each, with its successes and failures), not the number of actors.
pub fn apply_adjusted(
    rows: &mut [CorrelationRow],
    cand: &[usize],
    patterns: Vec<((u64, bool), f64)>,
) {
    if cand.is_empty() {
        return;
    }
    // A row per distinct pattern (the candidates' indicators as its bits)
    // with its successful and failed actors.
    let mut sorted = patterns;
    sorted.sort_by_key(|((m, s), _)| (*m, *s));
    let mut masks: Vec<u64> = Vec::with_capacity(sorted.len());
    let mut succ: Vec<f64> = Vec::with_capacity(sorted.len());
    let mut fail: Vec<f64> = Vec::with_capacity(sorted.len());
    for ((mask, success), count) in sorted {
        if masks.last() != Some(&mask) {
            masks.push(mask);
            succ.push(0.0);
            fail.push(0.0);
        }
        let slot = if success { &mut succ } else { &mut fail };
        *slot.last_mut().expect("a row was pushed") += count;
    }
    let Ok(fit) = dropscope_stats::fit_logistic_l2_indicators(
        &masks,
        cand.len(),
        &succ,
        &fail,
        1.0,
        &dropscope_stats::LogisticOptions::default(),
    ) else {
        return;
    };
    for (c, &i) in cand.iter().enumerate() {
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

/// The result from the tested rows: low-support rows set apart, then the
/// `top` strongest success rows by odds desc and failure rows by odds asc.
pub fn finish(
    rows: Vec<CorrelationRow>,
    big_s: u64,
    big_f: u64,
    opts: &CorrelationOptions,
    from_step: usize,
    to_step: usize,
) -> CorrelationResult {
    let skewed_ratio = big_s == 0 || big_f == 0 || big_s > 10 * big_f || big_f > 10 * big_s;
    let rows_tested = rows.len();
    let (low, rows): (Vec<CorrelationRow>, Vec<CorrelationRow>) =
        rows.into_iter().partition(|r| r.low_support);
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
    CorrelationResult {
        events: succ,
        low_support: low,
        skewed: skewed_ratio,
        success_total: big_s,
        failure_total: big_f,
        rows_tested,
        from_step,
        to_step,
    }
}

/// The (candidate bitmask, success) patterns of the actors, counted part
/// by part in parallel.
fn actor_patterns(
    cand: &[usize],
    row_keys: &[Vec<Key>],
    parts: &[Part],
) -> Vec<((u64, bool), f64)> {
    // The candidate columns of each row key: by event id for event rows.
    let mut event_col: Vec<u64> = Vec::new();
    let mut other_col: FxHashMap<Key, u64> = FxHashMap::default();
    for (c, &i) in cand.iter().enumerate() {
        for &k in &row_keys[i] {
            if k >> 32 == 0 {
                let e = k as usize;
                if event_col.len() <= e {
                    event_col.resize(e + 1, 0);
                }
                event_col[e] |= 1 << c;
            } else {
                *other_col.entry(k).or_default() |= 1 << c;
            }
        }
    }
    let per_part = |part: &Part| {
        let mut patterns: FxHashMap<(u64, bool), u64> = FxHashMap::default();
        for (o, events, others) in part.actors() {
            let mut mask = 0u64;
            for &e in events {
                mask |= event_col.get(e as usize).copied().unwrap_or(0);
            }
            for k in others {
                mask |= other_col.get(k).copied().unwrap_or(0);
            }
            *patterns.entry((mask, o.success)).or_default() += 1;
        }
        patterns
    };
    let patterns = parts
        .par_iter()
        .map(per_part)
        .reduce(FxHashMap::default, |mut a, b| {
            for (k, n) in b {
                *a.entry(k).or_default() += n;
            }
            a
        });
    patterns.into_iter().map(|(k, n)| (k, n as f64)).collect()
}

/// Simpson's paradox check: the Mantel–Haenszel odds ratio over the
/// breakdown's segments against the crude direction.
fn simpson(rows: &mut [CorrelationRow], row_keys: &[Vec<Key>], parts: &[Part]) {
    let key_row: HashMap<Key, usize> = row_keys
        .iter()
        .enumerate()
        .flat_map(|(r, ks)| ks.iter().map(move |k| (*k, r)))
        .collect();
    // Per segment: (successes, failures) and, per row, (s, f).
    let mut seg_totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut seg_rows: HashMap<(String, usize), (f64, f64)> = HashMap::new();
    let actors = parts.iter().flat_map(|p| {
        let segments = p.segments.iter().chain(std::iter::repeat(&None));
        p.actors().zip(segments)
    });
    for ((o, events, others), segment) in actors {
        let seg = segment.clone().unwrap_or_default();
        let t = seg_totals.entry(seg.clone()).or_default();
        if o.success {
            t.0 += 1.0
        } else {
            t.1 += 1.0
        }
        let event_keys = events.iter().map(|&e| key(K_EVENT, 0, 0, e));
        for k in event_keys.chain(others.iter().copied()) {
            let Some(&r) = key_row.get(&k) else { continue };
            let c = seg_rows.entry((seg.clone(), r)).or_default();
            if o.success {
                c.0 += 1.0
            } else {
                c.1 += 1.0
            }
        }
    }
    simpson_from_counts(rows, &seg_totals, &seg_rows);
}

/// Simpson's paradox check from counts (shared with other backends): per
/// breakdown segment its (successes, failures), and per (segment, row
/// index) the row's (s, f) there. A row whose Mantel–Haenszel odds ratio
/// over the segments lies on the other side of 1 than its crude odds ratio
/// gets a warning. Needs at least 2 segments.
pub fn simpson_from_counts(
    rows: &mut [CorrelationRow],
    seg_totals: &BTreeMap<String, (f64, f64)>,
    seg_rows: &HashMap<(String, usize), (f64, f64)>,
) {
    if seg_totals.len() < 2 {
        return;
    }
    for (i, r) in rows.iter_mut().enumerate() {
        let (mut num, mut den) = (0.0, 0.0);
        for (seg, &(big_s, big_f)) in seg_totals {
            let (s, f) = seg_rows
                .get(&(seg.clone(), i))
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
    let d = plan.dicts;
    let prop_ctx = pf.property.as_ref().map(|prop| {
        let mut o = opts.clone();
        o.kind = CorrelationType::Properties;
        // The row's key is a prefix of `key::value` ending before a `::`;
        // keys can hold `::` themselves, so every such prefix the query
        // looks at is a name.
        let asked = match (opts.kind, &opts.with_person_properties) {
            (CorrelationType::Events, Some(n)) => Some(n.clone()),
            _ => opts.names.clone(),
        };
        let looked_at = |k: &str| {
            asked
                .as_ref()
                .is_none_or(|n| n.iter().any(|x| x == "$all" || x == k))
        };
        o.names = Some(
            prop.match_indices("::")
                .map(|(i, _)| prop[..i].to_string())
                .filter(|k| looked_at(k))
                .collect(),
        );
        o.with_person_properties = None;
        let ctx = KeyCtx::new(plan, &o);
        (o, ctx)
    });
    let event_id = pf.event.as_ref().map(|e| d.events.get(e));
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
                    let (o, ctx) = prop_ctx.as_ref().expect("built for property rows");
                    let mut keys = Vec::new();
                    other_keys(plan, actor, &p, success, o, ctx, &mut keys);
                    keys.iter().any(|k| ctx.name(plan, *k) == *prop)
                }
                _ => false,
            };
            if hit {
                acc.push((actor.id, actor.is_person, p));
            }
        },
        |mut a, b| {
            a.extend(b);
            a
        },
    );
    Ok(crate::persons::page(plan, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The bitmap and the stamps give every actor the same distinct
        /// non-step events and the same counts, ids past the vocabulary
        /// the parts were made for included.
        #[test]
        fn bitmap_and_stamped_event_rows_agree(
            actors in proptest::collection::vec(
                (proptest::collection::vec(0u32..300, 0..40), any::<bool>()), 1..30),
            steps in proptest::collection::vec(0usize..300, 0..6),
            vocabulary in 1usize..200,
        ) {
            let mut step_bits = vec![0u64; 300usize.div_ceil(64)];
            for &s in &steps {
                step_bits[s >> 6] |= 1 << (s & 63);
            }
            let mut bitmap = Part::new(vocabulary);
            let mut stamped = Part::new(vocabulary);
            stamped.distinct = Distinct::Stamps { seen: Vec::new(), actor: 0 };
            prop_assert!(matches!(bitmap.distinct, Distinct::Bitmap(_)));
            for (events, success) in &actors {
                for part in [&mut bitmap, &mut stamped] {
                    part.add_event_rows(events, *success, &step_bits);
                    let start = part.outcomes.last().map_or(0, |o| o.others_end as usize);
                    part.finish_actor(*success, start, None);
                }
            }
            let Distinct::Bitmap(bits) = &bitmap.distinct else { unreachable!() };
            prop_assert!(bits.iter().all(|&w| w == 0), "cleared between actors");
            let pairs = bitmap.actors().zip(stamped.actors()).zip(&actors);
            for (((o, a, _), (p, b, _)), (events, success)) in pairs {
                prop_assert_eq!((o.success, p.success), (*success, *success));
                let mut want: Vec<u32> = events.iter().copied().filter(|&e| !steps.contains(&(e as usize))).collect();
                want.sort_unstable();
                want.dedup();
                prop_assert_eq!(a, &want[..]);
                let mut b = b.to_vec();
                b.sort_unstable();
                prop_assert_eq!(&b, &want);
            }
            let used = |c: &[(u64, u64)]| c.iter().rposition(|&c| c != (0, 0)).map_or(0, |i| i + 1);
            prop_assert_eq!(
                &bitmap.event_counts[..used(&bitmap.event_counts)],
                &stamped.event_counts[..used(&stamped.event_counts)]
            );
        }
    }
}
