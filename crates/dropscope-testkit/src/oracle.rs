//! A plain, slow reference implementation of the funnel rules
//! (`SEMANTICS.md` rules 2–10, 12, 16), written from the rules' text and not
//! from the engine: a `Vec` of events, a naive union-find over distinct ids,
//! and per actor a direct simulation of the ordered/strict rules or a brute
//! force over every window for unordered funnels.
//!
//! It covers a deliberately small query language ([`OQuery`]): event steps
//! (optionally with event-property filters), the three orders, one window,
//! exclusions by event name, global event/person filters (`exact`, `is_not`,
//! `icontains`), a one-property event breakdown with every attribution, and
//! the person join by `$identify` / `$create_alias`. The property tests in
//! `tests/oracle_proptest.rs` run random logs through both implementations.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One event of the log, in insertion order.
#[derive(Debug, Clone)]
pub struct OEvent {
    pub distinct_id: String,
    pub name: String,
    /// UTC milliseconds.
    pub ts: i64,
    pub props: Map<String, Value>,
}

/// A person record: distinct ids that are one person, with properties.
#[derive(Debug, Clone)]
pub struct OPerson {
    pub distinct_ids: Vec<String>,
    pub props: Map<String, Value>,
}

/// The data: person records and events.
#[derive(Debug, Clone, Default)]
pub struct OLog {
    pub persons: Vec<OPerson>,
    pub events: Vec<OEvent>,
}

/// A property condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Event property equals one of the values (string forms).
    Exact(String, Vec<String>),
    /// Event property is not the value (a missing property passes).
    IsNot(String, String),
    /// Event property contains the value, case-insensitively (missing fails).
    Icontains(String, String),
    /// The actor's person property equals the value (missing fails).
    PersonExact(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OOrder {
    Ordered,
    Strict,
    Unordered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAttribution {
    FirstTouch,
    LastTouch,
    AllEvents,
    /// 0-based step.
    Step(usize),
}

#[derive(Debug, Clone)]
pub struct OStep {
    pub event: String,
    pub filters: Vec<Cond>,
}

#[derive(Debug, Clone)]
pub struct OExclusion {
    pub event: String,
    pub from_step: usize,
    pub to_step: usize,
}

/// The query the oracle understands.
#[derive(Debug, Clone)]
pub struct OQuery {
    pub steps: Vec<OStep>,
    pub order: OOrder,
    pub window_ms: i64,
    pub exclusions: Vec<OExclusion>,
    pub filters: Vec<Cond>,
    /// Inclusive, UTC ms.
    pub date_from: i64,
    pub date_to: i64,
    /// (event property, attribution).
    pub breakdown: Option<(String, OAttribution)>,
}

/// One actor's answer (for one breakdown value when there is a breakdown).
#[derive(Debug, Clone, PartialEq)]
pub struct ActorPath {
    /// Every distinct id of the actor (its identity for comparisons).
    pub distinct_ids: BTreeSet<String>,
    /// Breakdown value (`[""]` when the value is missing), `None` without a
    /// breakdown.
    pub breakdown: Option<Vec<String>>,
    /// Furthest step reached, 1-based (>= 1).
    pub furthest: usize,
    /// Time of each step of the path, `times.len() == furthest`.
    pub times: Vec<i64>,
}

/// Per-step totals.
#[derive(Debug, Clone, PartialEq)]
pub struct OStepResult {
    pub count: u64,
    pub average_conversion_time: Option<f64>,
    pub median_conversion_time: Option<f64>,
}

/// String form of a JSON value (strings as is, numbers/bools as text, null as "").
pub fn string_form(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------- identity

/// The persons of a log: groups of distinct ids (naive union-find) and the
/// properties of each group.
pub struct People {
    /// distinct id -> index of its group.
    pub group_of: BTreeMap<String, usize>,
    pub groups: Vec<BTreeSet<String>>,
    pub props: Vec<Map<String, Value>>,
}

fn find(parent: &mut BTreeMap<String, String>, x: &str) -> String {
    let mut cur = x.to_string();
    loop {
        let p = parent
            .entry(cur.clone())
            .or_insert_with(|| cur.clone())
            .clone();
        if p == cur {
            return cur;
        }
        cur = p;
    }
}

fn union(parent: &mut BTreeMap<String, String>, a: &str, b: &str) {
    let ra = find(parent, a);
    let rb = find(parent, b);
    if ra != rb {
        parent.insert(rb, ra);
    }
}

/// Resolves persons: a person record's ids are one person; `$identify`
/// (`$anon_distinct_id`), `$create_alias` and `$merge_dangerously` (`alias`)
/// join two ids, whenever they happened. Properties come from the person
/// records (the tests never give two records of one merged person
/// conflicting properties).
pub fn people(log: &OLog) -> People {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    for p in &log.persons {
        for d in &p.distinct_ids {
            find(&mut parent, d);
            union(&mut parent, &p.distinct_ids[0], d);
        }
    }
    for e in &log.events {
        find(&mut parent, &e.distinct_id);
        let other = match e.name.as_str() {
            "$identify" => e.props.get("$anon_distinct_id"),
            "$create_alias" | "$merge_dangerously" => e.props.get("alias"),
            _ => None,
        };
        if let Some(Value::String(o)) = other {
            if !o.is_empty() {
                union(&mut parent, &e.distinct_id, o);
            }
        }
    }
    let ids: Vec<String> = parent.keys().cloned().collect();
    let mut root_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut group_of = BTreeMap::new();
    let mut groups: Vec<BTreeSet<String>> = Vec::new();
    for d in ids {
        let r = find(&mut parent, &d);
        let next = root_index.len();
        let gi = *root_index.entry(r).or_insert(next);
        if gi == groups.len() {
            groups.push(BTreeSet::new());
        }
        groups[gi].insert(d.clone());
        group_of.insert(d, gi);
    }
    let mut props = vec![Map::new(); groups.len()];
    for p in &log.persons {
        if let Some(d) = p.distinct_ids.first() {
            let g = group_of[d];
            for (k, v) in &p.props {
                props[g].insert(k.clone(), v.clone());
            }
        }
    }
    People {
        group_of,
        groups,
        props,
    }
}

// ---------------------------------------------------------------- filters

fn cond_holds(c: &Cond, e: &OEvent, person_props: &Map<String, Value>) -> bool {
    let ev = |k: &str| e.props.get(k).filter(|v| !v.is_null()).map(string_form);
    match c {
        Cond::Exact(k, vals) => ev(k).is_some_and(|s| vals.contains(&s)),
        Cond::IsNot(k, v) => ev(k).is_none_or(|s| &s != v),
        Cond::Icontains(k, v) => {
            ev(k).is_some_and(|s| s.to_lowercase().contains(&v.to_lowercase()))
        }
        Cond::PersonExact(k, v) => person_props
            .get(k)
            .filter(|x| !x.is_null())
            .is_some_and(|x| &string_form(x) == v),
    }
}

// ---------------------------------------------------------------- per actor

/// One event of an actor as the funnel sees it.
#[derive(Debug, Clone)]
struct Seen {
    /// Index in the log (unique id; also the tie order).
    id: usize,
    ts: i64,
    /// 0-based steps it matches.
    steps: Vec<usize>,
    /// Exclusions (indexes into the query's list) it matches.
    excl: Vec<usize>,
    /// Breakdown value, `""` when missing.
    bd: String,
}

/// A stored attempt (a value: every step slot holds its own copy).
#[derive(Debug, Clone)]
struct Attempt {
    start: i64,
    /// times[k] = time of 0-based step k.
    times: Vec<i64>,
    /// Events used by this attempt.
    used: Vec<usize>,
    excluded: bool,
}

/// The ordered / strict funnel of one actor, by the rules' text
/// (SEMANTICS.md 4–7). `must`: (step, value) — the event used as that step
/// must carry this breakdown value (attribution `step`). Returns the furthest
/// path, or `None` (never entered, or removed by an exclusion).
fn ordered_actor(
    q: &OQuery,
    evs: &[Seen],
    must: Option<(usize, &str)>,
) -> Option<(usize, Vec<i64>)> {
    let n = q.steps.len();
    let strict = q.order == OOrder::Strict;
    let w = q.window_ms;
    // slot[k]: the attempt stored at 0-based step k.
    let mut slot: Vec<Option<Attempt>> = vec![None; n];
    let mut best: Option<Attempt> = None;

    // Tries to move the event `e` into step `k` (one (event, step) pair).
    let try_step = |slot: &mut Vec<Option<Attempt>>,
                    best: &mut Option<Attempt>,
                    e: &Seen,
                    k: usize,
                    check_used: bool| {
        if let Some((ms, mv)) = must {
            if ms == k && e.bd != mv {
                return;
            }
        }
        let new = if k == 0 {
            // Every first-step event starts a new attempt, unless an
            // attempt started at this very instant already (same attempt).
            if slot[0].as_ref().is_some_and(|a| a.start == e.ts) {
                return;
            }
            Attempt {
                start: e.ts,
                times: vec![e.ts],
                used: vec![e.id],
                excluded: false,
            }
        } else {
            let Some(prev) = slot[k - 1].clone() else {
                return;
            };
            if prev.excluded || e.ts - prev.start > w {
                return;
            }
            // Already reached step k by this attempt: not re-entered.
            if slot[k].as_ref().is_some_and(|a| a.start == prev.start) {
                return;
            }
            if check_used && prev.used.contains(&e.id) {
                return;
            }
            let mut a = prev;
            a.times.push(e.ts);
            a.used.push(e.id);
            a
        };
        // The furthest record: a further step wins; at the same step the
        // first one stays, unless it was excluded.
        let better = match best.as_ref() {
            None => true,
            Some(b) => k + 1 > b.times.len() || (k + 1 == b.times.len() && b.excluded),
        };
        if better {
            *best = Some(new.clone());
        }
        slot[k] = Some(new);
    };

    let mut i = 0;
    while i < evs.len() {
        let mut j = i;
        while j < evs.len() && evs[j].ts == evs[i].ts {
            j += 1;
        }
        let group = &evs[i..j];
        let all_same = group
            .iter()
            .all(|e| e.steps == group[0].steps && e.excl == group[0].excl);
        if all_same {
            // One by one, as if they had different times.
            for e in group {
                // Steps from the last to the first: one event advances an
                // attempt by at most one step.
                for &k in e.steps.iter().rev() {
                    try_step(&mut slot, &mut best, e, k, false);
                }
                for &x in &e.excl {
                    let ex = &q.exclusions[x];
                    for s in (ex.from_step..ex.to_step).rev() {
                        let Some(a) = slot[s].as_ref() else { continue };
                        if a.excluded || e.ts - a.start > w {
                            continue;
                        }
                        // Moved on past step s: not sitting there any more.
                        if slot
                            .get(s + 1)
                            .and_then(|b| b.as_ref())
                            .is_some_and(|b| b.start == a.start)
                        {
                            continue;
                        }
                        slot[s].as_mut().unwrap().excluded = true;
                        if let Some(b) = best.as_mut() {
                            if b.times.len() == s + 1 && e.ts - b.start <= w {
                                b.excluded = true;
                            }
                        }
                    }
                }
                if strict {
                    for (k, sl) in slot.iter_mut().enumerate() {
                        if !e.steps.contains(&k) {
                            *sl = None;
                        }
                    }
                }
            }
        } else {
            // Different steps at one instant: (event, step) pairs by step,
            // each event once per attempt, no exclusions, no strictness.
            let mut pairs: Vec<(usize, &Seen)> = Vec::new();
            for k in 0..n {
                for e in group {
                    if e.steps.contains(&k) {
                        pairs.push((k, e));
                    }
                }
            }
            for (k, e) in pairs {
                try_step(&mut slot, &mut best, e, k, true);
            }
        }
        if best.as_ref().is_some_and(|b| b.times.len() == n) {
            break;
        }
        i = j;
    }
    let b = best?;
    if b.excluded {
        return None;
    }
    Some((b.times.len(), b.times))
}

/// Unordered funnel of one actor by brute force (no exclusions; steps must
/// not share events): the most distinct steps seen within one window
/// `[t, t + w]` starting at any step event; conversion times from the first
/// moment every step is within one window, using each step's earliest event
/// in that window.
fn unordered_actor(q: &OQuery, evs: &[Seen]) -> Option<(usize, Vec<i64>)> {
    let n = q.steps.len();
    let w = q.window_ms;
    let step_evs: Vec<&Seen> = evs.iter().filter(|e| !e.steps.is_empty()).collect();
    let mut best = 0;
    for s in &step_evs {
        let mut done = BTreeSet::new();
        for e in &step_evs {
            if e.ts >= s.ts && e.ts - s.ts <= w {
                done.extend(e.steps.iter().copied());
            }
        }
        best = best.max(done.len());
    }
    if best == 0 {
        return None;
    }
    // Time of each counted step: for a complete funnel, the first window end
    // T where all steps are within [T - w, T]; otherwise the first window
    // reaching `best` steps (times then are not compared beyond count).
    let mut times = Vec::new();
    for end in &step_evs {
        let mut first: BTreeMap<usize, i64> = BTreeMap::new();
        for e in &step_evs {
            if e.ts <= end.ts && end.ts - e.ts <= w {
                for &k in &e.steps {
                    let t = first.entry(k).or_insert(e.ts);
                    *t = (*t).min(e.ts);
                }
            }
        }
        if first.len() == best {
            times = first.values().copied().collect();
            times.sort();
            break;
        }
    }
    let _ = n;
    Some((best, times))
}

/// Every actor path of a query (one per actor, or one per actor and
/// breakdown value).
pub fn actor_paths(log: &OLog, q: &OQuery) -> Vec<ActorPath> {
    let ppl = people(log);
    let n = q.steps.len();
    let mut out = Vec::new();
    for (g, dids) in ppl.groups.iter().enumerate() {
        let pprops = &ppl.props[g];
        // The actor's events: all its ids, in range, passing global filters;
        // sorted by (time, insertion order).
        let mut seen: Vec<Seen> = Vec::new();
        for (id, e) in log.events.iter().enumerate() {
            if ppl.group_of[&e.distinct_id] != g {
                continue;
            }
            if e.ts < q.date_from || e.ts > q.date_to {
                continue;
            }
            if !q.filters.iter().all(|c| cond_holds(c, e, pprops)) {
                continue;
            }
            let steps: Vec<usize> = (0..n)
                .filter(|&k| {
                    q.steps[k].event == e.name
                        && q.steps[k].filters.iter().all(|c| cond_holds(c, e, pprops))
                })
                .collect();
            let excl: Vec<usize> = (0..q.exclusions.len())
                .filter(|&x| q.exclusions[x].event == e.name)
                .collect();
            // Ordered/unordered funnels read only step and exclusion
            // events; strict funnels read every event.
            if q.order != OOrder::Strict && steps.is_empty() && excl.is_empty() {
                continue;
            }
            let bd = match &q.breakdown {
                Some((prop, _)) => e.props.get(prop).map(string_form).unwrap_or_default(),
                None => String::new(),
            };
            seen.push(Seen {
                id,
                ts: e.ts,
                steps,
                excl,
                bd,
            });
        }
        seen.sort_by_key(|e| (e.ts, e.id));
        let run = |evs: &[Seen], must: Option<(usize, &str)>| match q.order {
            OOrder::Unordered => unordered_actor(q, evs),
            _ => ordered_actor(q, evs, must),
        };
        let mut push = |bd: Option<Vec<String>>, r: Option<(usize, Vec<i64>)>| {
            if let Some((furthest, times)) = r {
                out.push(ActorPath {
                    distinct_ids: dids.clone(),
                    breakdown: bd,
                    furthest,
                    times,
                });
            }
        };
        match &q.breakdown {
            None => push(None, run(&seen, None)),
            Some((_, attr)) => match attr {
                OAttribution::FirstTouch | OAttribution::LastTouch => {
                    let mut vals = seen.iter().map(|e| &e.bd).filter(|b| !b.is_empty());
                    let v = if *attr == OAttribution::FirstTouch {
                        vals.next()
                    } else {
                        vals.next_back()
                    };
                    let v = v.cloned().unwrap_or_default();
                    push(Some(vec![v]), run(&seen, None));
                }
                OAttribution::AllEvents => {
                    let vals: BTreeSet<String> = seen.iter().map(|e| e.bd.clone()).collect();
                    for v in vals {
                        let sub: Vec<Seen> = seen.iter().filter(|e| e.bd == v).cloned().collect();
                        push(Some(vec![v]), run(&sub, None));
                    }
                }
                OAttribution::Step(s) => {
                    let vals: BTreeSet<String> = seen
                        .iter()
                        .filter(|e| e.steps.contains(s))
                        .map(|e| e.bd.clone())
                        .collect();
                    for v in vals {
                        push(Some(vec![v.clone()]), run(&seen, Some((*s, &v))));
                    }
                }
            },
        }
    }
    out
}

/// Median with interpolation between the two middle values.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = s.len();
    Some(if m % 2 == 1 {
        s[m / 2]
    } else {
        (s[m / 2 - 1] + s[m / 2]) / 2.0
    })
}

/// Per-step counts and conversion times (rules 9, 10) over some paths.
pub fn step_results(n: usize, paths: &[&ActorPath]) -> Vec<OStepResult> {
    (0..n)
        .map(|i| {
            let reached: Vec<&&ActorPath> = paths.iter().filter(|p| p.furthest > i).collect();
            let gaps: Vec<f64> = if i == 0 {
                Vec::new()
            } else {
                reached
                    .iter()
                    .map(|p| (p.times[i] - p.times[i - 1]) as f64 / 1000.0)
                    .filter(|g| *g > 0.0)
                    .collect()
            };
            OStepResult {
                count: reached.len() as u64,
                average_conversion_time: (!gaps.is_empty())
                    .then(|| gaps.iter().sum::<f64>() / gaps.len() as f64),
                median_conversion_time: median(&gaps),
            }
        })
        .collect()
}

/// The funnel: overall steps (every path once) and, with a breakdown, the
/// steps per value.
pub fn funnel(
    log: &OLog,
    q: &OQuery,
) -> (Vec<OStepResult>, BTreeMap<Vec<String>, Vec<OStepResult>>) {
    let paths = actor_paths(log, q);
    let n = q.steps.len();
    let all: Vec<&ActorPath> = paths.iter().collect();
    let mut by: BTreeMap<Vec<String>, Vec<&ActorPath>> = BTreeMap::new();
    for p in &paths {
        if let Some(b) = &p.breakdown {
            by.entry(b.clone()).or_default().push(p);
        }
    }
    let rows = by
        .into_iter()
        .map(|(k, v)| (k, step_results(n, &v)))
        .collect();
    (step_results(n, &all), rows)
}

/// Funnel persons (no breakdown): `step` N > 0 = reached step N (1-based);
/// N < 0 = reached step |N|-1 but not |N|. Returns the actors' id sets.
pub fn persons(log: &OLog, q: &OQuery, step: i64) -> BTreeSet<BTreeSet<String>> {
    actor_paths(log, q)
        .into_iter()
        .filter(|p| {
            if step > 0 {
                p.furthest >= step as usize
            } else {
                p.furthest + 1 == step.unsigned_abs() as usize
            }
        })
        .map(|p| p.distinct_ids)
        .collect()
}

/// Time to convert (rule 16) between two 0-based steps: bins and average.
pub fn time_to_convert(
    log: &OLog,
    q: &OQuery,
    from: usize,
    to: usize,
    bin_count: Option<i64>,
) -> (Vec<(i64, u64)>, Option<f64>) {
    let times: Vec<f64> = actor_paths(log, q)
        .iter()
        .filter(|p| p.furthest > to)
        .map(|p| (p.times[to] - p.times[from]) as f64 / 1000.0)
        .collect();
    if times.is_empty() {
        return (Vec::new(), None);
    }
    let count: i64 = match bin_count {
        Some(b) => b.clamp(1, 90),
        None => ((times.len() as f64).cbrt().ceil() as i64).clamp(1, 60),
    };
    let min = times.iter().cloned().fold(f64::MAX, f64::min).floor();
    let max = times.iter().cloned().fold(f64::MIN, f64::max).ceil();
    let mut width = ((max - min) / count as f64).ceil();
    if width == 0.0 {
        width = 60.0;
    }
    let mut bins: Vec<(i64, u64)> = (0..=count)
        .map(|i| ((min + i as f64 * width).round() as i64, 0))
        .collect();
    for t in &times {
        let b = ((t - min) / width).floor() as usize;
        bins[b].1 += 1;
    }
    let avg = times.iter().sum::<f64>() / times.len() as f64;
    (bins, Some(avg))
}
