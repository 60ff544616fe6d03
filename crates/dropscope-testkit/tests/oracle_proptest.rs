//! Random logs and random queries through the engine and through the plain
//! oracle (`dropscope_testkit::oracle`); the answers must be equal.
//!
//! Cases per property: `PROPTEST_CASES` (default 256).

use std::collections::{BTreeMap, BTreeSet};

use dropscope_core::event::{Event, PersonRecord};
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_store::{Record, Store};
use dropscope_testkit::oracle::{
    self, Cond, OAttribution, OEvent, OExclusion, OLog, OOrder, OPerson, OQuery, OStep, OStepResult,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// 2021-05-01T00:00:00Z.
const BASE: i64 = 1_619_827_200_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const STEP_NAMES: [&str; 4] = ["a", "b", "c", "d"];
const BROWSERS: [Option<&str>; 4] = [Some("Chrome"), Some("Safari"), Some(""), None];
const PLANS: [Option<&str>; 3] = [Some("pro"), Some("free"), None];

#[derive(Debug, Clone)]
struct GenEvent {
    who: usize,
    name: usize,
    slot: i64,
    browser: usize,
    num: usize,
}

#[derive(Debug, Clone)]
struct GenPerson {
    alt: bool,
    plan: usize,
}

#[derive(Debug, Clone)]
struct GenJoin {
    anon: usize,
    person: usize,
    slot: i64,
    alias: bool,
}

#[derive(Debug, Clone)]
struct GenLog {
    /// Timestamps collide on purpose (hour slots) instead of being distinct.
    ties: bool,
    n_names: usize,
    persons: Vec<GenPerson>,
    events: Vec<GenEvent>,
    joins: Vec<GenJoin>,
    /// Appends the log in this many parts, with a snapshot after each, so
    /// the store holds several runs and persons span them (as a store does
    /// between compactions). The parts shrink (75%, 18%, 7%) because the
    /// store merges a new run into the one before when it is at least half
    /// its size.
    parts: usize,
}

#[derive(Debug, Clone)]
struct GenQuery {
    order: OOrder,
    steps: Vec<(usize, Option<usize>)>,
    window: (i64, &'static str),
    exclusion: Option<(usize, usize)>,
    filters: Vec<usize>,
    breakdown: Option<(usize, usize, usize)>,
    range: (usize, i64, i64),
    ttc: (usize, usize, Option<i64>),
}

fn gen_log(ties: bool) -> impl Strategy<Value = GenLog> {
    let slots = if ties { 8i64 } else { 216 };
    (
        2usize..=4,
        prop::collection::vec((any::<bool>(), 0usize..3), 1..=6),
        prop::collection::vec(
            (0usize..20, 0usize..6, 0..slots, 0usize..4, 0usize..3),
            1..=25,
        ),
        prop::collection::vec((0usize..3, 0usize..6, 0..slots, any::<bool>()), 0..=3),
        1usize..=3,
    )
        .prop_map(move |(n_names, persons, events, joins, parts)| GenLog {
            ties,
            parts,
            n_names,
            persons: persons
                .into_iter()
                .map(|(alt, plan)| GenPerson { alt, plan })
                .collect(),
            events: events
                .into_iter()
                .map(|(who, name, slot, browser, num)| GenEvent {
                    who,
                    name,
                    slot,
                    browser,
                    num,
                })
                .collect(),
            joins: joins
                .into_iter()
                .map(|(anon, person, slot, alias)| GenJoin {
                    anon,
                    person,
                    slot,
                    alias,
                })
                .collect(),
        })
}

const WINDOWS: [(i64, &str); 9] = [
    (30, "minute"),
    (90, "minute"),
    (2, "hour"),
    (6, "hour"),
    (1, "day"),
    (2, "day"),
    (14, "day"),
    (1, "week"),
    (0, "day"),
];

fn gen_query(orders: usize) -> impl Strategy<Value = GenQuery> {
    (
        0usize..orders,
        prop::collection::vec((0usize..4, prop::option::weighted(0.25, 0usize..3)), 2..=4),
        0usize..WINDOWS.len(),
        prop::option::weighted(0.4, (0usize..3, 1usize..4)),
        prop::collection::vec(0usize..6, 0..=2),
        prop::option::weighted(0.4, (0usize..2, 0usize..4, 0usize..4)),
        (0usize..3, 0i64..12, 0i64..12),
        (0usize..4, 0usize..4, prop::option::of(1i64..6)),
    )
        .prop_map(
            |(order, steps, w, exclusion, filters, breakdown, range, ttc)| GenQuery {
                order: [OOrder::Ordered, OOrder::Strict, OOrder::Unordered][order],
                steps,
                window: WINDOWS[w],
                exclusion,
                filters,
                breakdown,
                range,
                ttc,
            },
        )
}

/// The log as oracle data and as store records.
fn build_log(g: &GenLog) -> (OLog, Vec<Record>) {
    let step_ms = if g.ties { 6 * HOUR } else { 20 * 60_000 };
    let mut log = OLog::default();
    let mut pool: Vec<String> = Vec::new();
    for (i, p) in g.persons.iter().enumerate() {
        let mut dids = vec![format!("p{i}")];
        if p.alt {
            dids.push(format!("p{i}_alt"));
        }
        pool.extend(dids.iter().cloned());
        let mut props = Map::new();
        if let Some(plan) = PLANS[p.plan] {
            props.insert("plan".into(), json!(plan));
        }
        log.persons.push(OPerson {
            distinct_ids: dids,
            props,
        });
    }
    pool.extend(["a0", "a1", "a2"].map(String::from));
    let mut names: Vec<String> = STEP_NAMES[..g.n_names]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.push("x".into());
    names.push("u".into());
    // Each anonymous id is joined to at most one person (no conflicting
    // person properties).
    let mut joined: BTreeSet<usize> = BTreeSet::new();
    let mut joins: Vec<(usize, OEvent)> = Vec::new();
    for (k, j) in g.joins.iter().enumerate() {
        if !joined.insert(j.anon) {
            continue;
        }
        let person = j.person % g.persons.len();
        let mut props = Map::new();
        let name = if j.alias {
            props.insert("alias".into(), json!(format!("a{}", j.anon)));
            "$create_alias"
        } else {
            props.insert("$anon_distinct_id".into(), json!(format!("a{}", j.anon)));
            "$identify"
        };
        // Interleave: join k goes after event (k * 7) of the generated log.
        joins.push((
            k * 7,
            OEvent {
                distinct_id: format!("p{person}"),
                name: name.into(),
                ts: BASE + j.slot * step_ms + 7_000,
                props,
            },
        ));
    }
    for (i, e) in g.events.iter().enumerate() {
        for (_, je) in joins.iter().filter(|(at, _)| *at == i) {
            log.events.push(je.clone());
        }
        let name = names[e.name % names.len()].clone();
        let mut props = Map::new();
        if let Some(b) = BROWSERS[e.browser] {
            props.insert("$browser".into(), json!(b));
        }
        match e.num {
            0 => {
                props.insert("n".into(), json!(1));
            }
            1 => {
                props.insert("n".into(), json!(2));
            }
            _ => {}
        }
        // Distinct mode: index seconds keep every timestamp unique.
        let ts = if g.ties {
            BASE + e.slot * step_ms
        } else {
            BASE + e.slot * step_ms + i as i64 * 1000
        };
        log.events.push(OEvent {
            distinct_id: pool[e.who % pool.len()].clone(),
            name,
            ts,
            props,
        });
    }
    for (at, je) in &joins {
        if *at >= g.events.len() {
            log.events.push(je.clone());
        }
    }
    let mut recs: Vec<Record> = log
        .persons
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Record::Person(PersonRecord {
                id: format!("p{i}"),
                distinct_ids: p.distinct_ids.clone(),
                properties: p.props.clone(),
            })
        })
        .collect();
    for (i, e) in log.events.iter().enumerate() {
        recs.push(Record::Event(Event {
            uuid: i as u128 + 1,
            event: e.name.clone(),
            distinct_id: e.distinct_id.clone(),
            timestamp: e.ts,
            properties: e.props.clone(),
        }));
    }
    (log, recs)
}

fn cond_json(c: &Cond) -> Value {
    match c {
        Cond::Exact(k, v) => {
            let value = if v.len() == 1 { json!(v[0]) } else { json!(v) };
            json!({"key": k, "value": value, "operator": "exact", "type": "event"})
        }
        Cond::IsNot(k, v) => json!({"key": k, "value": v, "operator": "is_not", "type": "event"}),
        Cond::Icontains(k, v) => {
            json!({"key": k, "value": v, "operator": "icontains", "type": "event"})
        }
        Cond::PersonExact(k, v) => {
            json!({"key": k, "value": v, "operator": "exact", "type": "person"})
        }
    }
}

fn global_cond(i: usize) -> Cond {
    match i {
        0 => Cond::Exact("$browser".into(), vec!["Chrome".into()]),
        1 => Cond::Exact("$browser".into(), vec!["Chrome".into(), "Safari".into()]),
        2 => Cond::IsNot("$browser".into(), "Safari".into()),
        3 => Cond::Icontains("$browser".into(), "ch".into()),
        4 => Cond::PersonExact("plan".into(), "pro".into()),
        _ => Cond::Exact("n".into(), vec!["1".into()]),
    }
}

fn step_cond(i: usize) -> Cond {
    match i {
        0 => Cond::Exact("$browser".into(), vec!["Chrome".into()]),
        1 => Cond::IsNot("$browser".into(), "Chrome".into()),
        _ => Cond::Icontains("$browser".into(), "AF".into()),
    }
}

fn fmt_ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The query in both forms, or `None` when the generated shape is not one
/// the oracle covers.
fn build_query(g: &GenQuery, n_names: usize) -> (OQuery, Value) {
    let mut steps: Vec<OStep> = Vec::new();
    for (k, (name, cond)) in g.steps.iter().enumerate() {
        // Unordered: steps are distinct event names (no event matches two
        // steps, so the brute force is the rule).
        let name = if g.order == OOrder::Unordered {
            k % n_names
        } else {
            name % n_names
        };
        steps.push(OStep {
            event: STEP_NAMES[name].into(),
            filters: cond.map(step_cond).into_iter().collect(),
        });
    }
    if g.order == OOrder::Unordered {
        steps.truncate(n_names);
    }
    let n = steps.len();
    let exclusions: Vec<OExclusion> = match (g.order, g.exclusion) {
        (OOrder::Unordered, _) | (_, None) => Vec::new(),
        (_, Some((from, len))) => {
            let from = from.min(n - 2);
            let to = (from + len).min(n - 1);
            vec![OExclusion {
                event: "x".into(),
                from_step: from,
                to_step: to,
            }]
        }
    };
    let filters: Vec<Cond> = g.filters.iter().map(|&i| global_cond(i)).collect();
    let breakdown = g.breakdown.map(|(prop, attr, step)| {
        let prop = ["$browser", "n"][prop].to_string();
        let attr = match attr {
            0 => OAttribution::FirstTouch,
            1 => OAttribution::LastTouch,
            2 => OAttribution::AllEvents,
            _ if g.order == OOrder::Unordered => OAttribution::AllEvents,
            _ => OAttribution::Step(step % n),
        };
        (prop, attr)
    });
    let window_ms = if g.window.0 <= 0 {
        14 * DAY
    } else {
        g.window.0
            * match g.window.1 {
                "minute" => 60_000,
                "hour" => HOUR,
                "day" => DAY,
                "week" => 7 * DAY,
                _ => unreachable!(),
            }
    };
    // Range: 0 = whole days covering the data (date_to snapped to the end of
    // its day); 1 = explicit hours cutting the data; 2 = whole days, cut.
    let (kind, cut_from, cut_to) = g.range;
    let (date_from, date_to, df, dt, explicit) = match kind {
        0 => (
            BASE,
            BASE + 3 * DAY - 1,
            "2021-05-01".to_string(),
            "2021-05-03".to_string(),
            false,
        ),
        1 => {
            let f = BASE + cut_from * 2 * HOUR;
            let t = BASE + 3 * DAY - cut_to * 2 * HOUR;
            (f, t, fmt_ts(f), fmt_ts(t), true)
        }
        _ => {
            let f = BASE + (cut_from % 2) * DAY;
            let t = BASE + (2 + cut_to % 2) * DAY - 1;
            let dt = if cut_to % 2 == 0 {
                "2021-05-02"
            } else {
                "2021-05-03"
            };
            (f, t, fmt_ts(f)[..10].to_string(), dt.to_string(), false)
        }
    };
    let oq = OQuery {
        steps,
        order: g.order,
        window_ms,
        exclusions,
        filters,
        date_from,
        date_to,
        breakdown,
    };
    let mut q = json!({
        "timezone": "UTC",
        "date_from": df,
        "date_to": dt,
        "explicit_date": explicit,
        "order": match g.order { OOrder::Ordered => "ordered", OOrder::Strict => "strict", OOrder::Unordered => "unordered" },
        "window": {"value": g.window.0, "unit": g.window.1},
        "steps": oq.steps.iter().map(|s| {
            let mut v = json!({"event": s.event});
            if !s.filters.is_empty() {
                v["properties"] = Value::Array(s.filters.iter().map(cond_json).collect());
            }
            v
        }).collect::<Vec<_>>(),
        "exclusions": oq.exclusions.iter().map(|x| json!({"event": x.event, "from_step": x.from_step, "to_step": x.to_step})).collect::<Vec<_>>(),
    });
    if !oq.filters.is_empty() {
        q["properties"] = Value::Array(oq.filters.iter().map(cond_json).collect());
    }
    if let Some((prop, attr)) = &oq.breakdown {
        let mut b = json!({"type": "event", "property": prop});
        match attr {
            OAttribution::FirstTouch => b["attribution"] = json!("first_touch"),
            OAttribution::LastTouch => b["attribution"] = json!("last_touch"),
            OAttribution::AllEvents => b["attribution"] = json!("all_events"),
            OAttribution::Step(s) => {
                b["attribution"] = json!("step");
                b["attribution_step"] = json!(s);
            }
        }
        q["breakdown"] = b;
    }
    (oq, q)
}

fn run(snap: &dropscope_store::Snapshot, q: &Value) -> QueryResult {
    let fq = FunnelQuery::from_json(q.clone()).expect("query parses");
    dropscope_engine::run_query(snap, &fq).unwrap_or_else(|e| panic!("engine refused {q}: {e}"))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
        _ => false,
    }
}

fn same_steps(
    what: &str,
    want: &[OStepResult],
    got: &[dropscope_core::result::StepResult],
    times: bool,
) -> Result<(), String> {
    for (i, w) in want.iter().enumerate() {
        let (count, avg, med) = match got.get(i) {
            Some(g) => (g.count, g.average_conversion_time, g.median_conversion_time),
            None => (0, None, None),
        };
        if count != w.count {
            return Err(format!(
                "{what} step {i}: count oracle {} engine {count}",
                w.count
            ));
        }
        if times
            && (!close(w.average_conversion_time, avg) || !close(w.median_conversion_time, med))
        {
            return Err(format!(
                "{what} step {i}: times oracle {:?}/{:?} engine {avg:?}/{med:?}",
                w.average_conversion_time, w.median_conversion_time
            ));
        }
    }
    if got.len() > want.len() {
        return Err(format!("{what}: {} steps returned", got.len()));
    }
    Ok(())
}

/// The conversion curve (SEMANTICS.md, "What dropscope adds on top"),
/// written out plainly: a Kaplan–Meier estimate over every actor's time
/// from its first step to its last (converted), or to the end of its
/// window, or to the end of the range while still inside its window
/// (censored); `(seconds, share converted, at risk)` per distinct time.
fn curve(paths: &[oracle::ActorPath], q: &OQuery) -> Vec<(f64, f64, u64)> {
    let n = q.steps.len();
    let mut obs: Vec<(i64, bool)> = paths
        .iter()
        .map(|p| {
            let start = p.times[0];
            if p.furthest == n {
                (p.times[n - 1] - start, true)
            } else if start + q.window_ms >= q.date_to {
                ((q.date_to - start).max(0), false)
            } else {
                (q.window_ms, false)
            }
        })
        .collect();
    obs.sort();
    let mut at_risk = obs.len() as u64;
    let mut survival = 1.0;
    let mut out = Vec::new();
    for group in obs.chunk_by(|a, b| a.0 == b.0) {
        let events = group.iter().filter(|o| o.1).count() as u64;
        survival *= 1.0 - events as f64 / at_risk as f64;
        out.push((group[0].0 as f64 / 1000.0, 1.0 - survival, at_risk));
        at_risk -= group.len() as u64;
    }
    out
}

/// Runs one scenario through both; `Err` describes the first difference.
fn check(glog: &GenLog, gq: &GenQuery) -> Result<(), String> {
    let (log, recs) = build_log(glog);
    let (oq, q) = build_query(gq, glog.n_names);
    let store = Store::in_memory();
    let cuts = match glog.parts {
        1 => vec![0, recs.len()],
        2 => vec![0, recs.len() * 3 / 4, recs.len()],
        _ => vec![0, recs.len() * 3 / 4, recs.len() * 93 / 100, recs.len()],
    };
    for w in cuts.windows(2) {
        store.append(&recs[w[0]..w[1]]).unwrap();
        store.snapshot().unwrap();
    }
    let snap = store.snapshot().unwrap();
    let n = oq.steps.len();
    let ctx = |e: String| format!("{e}\nquery: {q}\nlog: {:?}", log.events);

    // Steps view (and breakdown rows).
    let (want, want_rows) = oracle::funnel(&log, &oq);
    let QueryResult::Funnel(got) = run(&snap, &q) else {
        panic!("not a funnel result")
    };
    same_steps("funnel", &want, &got.steps, true).map_err(ctx)?;
    if oq.breakdown.is_none() && oq.order != OOrder::Unordered {
        let want = curve(&oracle::actor_paths(&log, &oq), &oq);
        let got: Vec<(f64, f64, u64)> = got
            .conversion_curve
            .iter()
            .map(|p| (p.seconds, p.converted, p.at_risk))
            .collect();
        let same = want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(w, g)| w.0 == g.0 && w.2 == g.2 && (w.1 - g.1).abs() < 1e-12);
        if !same {
            return Err(ctx(format!(
                "conversion curve: oracle {want:?} engine {got:?}"
            )));
        }
    }
    if oq.breakdown.is_some() {
        let rows = got.breakdowns.clone().unwrap_or_default();
        let mut got_rows: BTreeMap<Vec<String>, &Vec<dropscope_core::result::StepResult>> =
            BTreeMap::new();
        for r in &rows {
            let key: Vec<String> = serde_json::from_value(r.breakdown_value.clone())
                .map_err(|e| ctx(format!("breakdown value {}: {e}", r.breakdown_value)))?;
            if got_rows.insert(key.clone(), &r.steps).is_some() {
                return Err(ctx(format!("breakdown value {key:?} twice")));
            }
        }
        let want_keys: BTreeSet<_> = want_rows.keys().collect();
        let got_keys: BTreeSet<_> = got_rows.keys().collect();
        if want_keys != got_keys {
            return Err(ctx(format!(
                "breakdown values: oracle {want_keys:?} engine {got_keys:?}"
            )));
        }
        for (k, w) in &want_rows {
            same_steps(&format!("breakdown {k:?}"), w, got_rows[k], true).map_err(ctx)?;
        }
        return Ok(());
    }

    // Funnel persons for every step and drop-off.
    let mut sel: Vec<i64> = (1..=n as i64).collect();
    sel.extend((2..=n as i64).map(|s| -s));
    for s in sel {
        let mut pq = q.clone();
        pq["kind"] = json!("funnel_persons");
        pq["persons_for"] = json!({"step": s});
        pq["limit"] = json!(10_000);
        let QueryResult::FunnelPersons(got) = run(&snap, &pq) else {
            panic!("not a persons result")
        };
        let got: BTreeSet<BTreeSet<String>> = got
            .persons
            .iter()
            .map(|p| p.distinct_ids.iter().cloned().collect())
            .collect();
        let want = oracle::persons(&log, &oq, s);
        if got != want {
            return Err(ctx(format!(
                "persons step {s}: oracle {want:?} engine {got:?}"
            )));
        }
    }

    // Time to convert (ordered and strict).
    if oq.order != OOrder::Unordered {
        let (a, b, bins) = gq.ttc;
        let (from, to) = (a % n, b % n);
        let (from, to) = if from < to {
            (from, to)
        } else if from > to {
            (to, from)
        } else {
            (0, n - 1)
        };
        let mut tq = q.clone();
        tq["kind"] = json!("time_to_convert");
        tq["from_step"] = json!(from);
        tq["to_step"] = json!(to);
        if let Some(b) = bins {
            tq["bin_count"] = json!(b);
        }
        let QueryResult::TimeToConvert(got) = run(&snap, &tq) else {
            panic!("not a time-to-convert result")
        };
        let (bins_w, avg_w) = oracle::time_to_convert(&log, &oq, from, to, bins);
        if got.bins != bins_w || !close(got.average_conversion_time, avg_w) {
            return Err(ctx(format!(
                "time to convert {from}->{to}: oracle {bins_w:?} {avg_w:?} engine {:?} {:?}",
                got.bins, got.average_conversion_time
            )));
        }
    }
    Ok(())
}

/// No known engine bug is open (bug 1, a missing value split from `""`
/// under all_events/step attribution, is fixed in `Plan::prepare`).
const KNOWN_BUGS_OPEN: bool = false;

/// Scenarios that hit an engine bug reported to the lead (see the ignored
/// tests below); set `ORACLE_KNOWN_BUGS=1` to run them anyway.
fn avoid_known_bugs(glog: &GenLog, gq: &mut GenQuery) {
    if std::env::var("ORACLE_KNOWN_BUGS").is_ok_and(|v| v == "1") || !KNOWN_BUGS_OPEN {
        return;
    }
    if hits_known_bug(glog, gq) {
        // Bug 1: fall back to first-touch attribution.
        if let Some(b) = gq.breakdown.as_mut() {
            b.1 = 0;
        }
    }
}

fn hits_known_bug(glog: &GenLog, gq: &GenQuery) -> bool {
    let (log, _) = build_log(glog);
    let (oq, _) = build_query(gq, glog.n_names);
    // Bug 1: all_events / step attribution split "" and a missing value.
    if let Some((prop, attr)) = &oq.breakdown {
        if matches!(attr, OAttribution::AllEvents | OAttribution::Step(_))
            && log
                .events
                .iter()
                .any(|e| e.props.get(prop) == Some(&json!("")))
        {
            return true;
        }
    }
    false
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Distinct timestamps: every order, window, exclusion, filter,
    /// breakdown and identity join.
    #[test]
    fn engine_matches_oracle_distinct_times(glog in gen_log(false), mut gq in gen_query(3)) {
        avoid_known_bugs(&glog, &mut gq);
        if let Err(e) = check(&glog, &gq) {
            prop_assert!(false, "{}", e);
        }
    }

    /// Many identical timestamps (rule 5), ordered and strict only.
    #[test]
    fn engine_matches_oracle_identical_times(glog in gen_log(true), mut gq in gen_query(2)) {
        avoid_known_bugs(&glog, &mut gq);
        if let Err(e) = check(&glog, &gq) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// Engine bug 1 (SEMANTICS.md rule 12, "Missing values become `""`"): with
/// `all_events` (and `step`) attribution the engine treats a missing
/// breakdown property and `""` as two values, runs the funnel twice and
/// counts the actor twice under `[""]`. Both events carry the value `""`, so
/// the actor converts once: counts [1, 1].
#[test]
fn all_events_missing_and_empty_value_are_one_value() {
    let ev = |uuid: u128, ts: i64, props: Value| {
        Record::Event(Event {
            uuid,
            event: "a".into(),
            distinct_id: "u1".into(),
            timestamp: ts,
            properties: props.as_object().cloned().unwrap_or_default(),
        })
    };
    let store = Store::in_memory();
    store
        .append(&[
            ev(1, BASE, json!({})),
            ev(2, BASE + 1000, json!({"$browser": ""})),
        ])
        .unwrap();
    let snap = store.snapshot().unwrap();
    for attribution in [
        json!({"attribution": "all_events"}),
        json!({"attribution": "step", "attribution_step": 0}),
    ] {
        let mut b = json!({"type": "event", "property": "$browser"});
        b.as_object_mut()
            .unwrap()
            .extend(attribution.as_object().unwrap().clone());
        let q = json!({
            "timezone": "UTC", "date_from": "2021-05-01", "date_to": "2021-05-03",
            "steps": [{"event": "a"}, {"event": "a"}],
            "window": {"value": 30, "unit": "minute"},
            "breakdown": b,
        });
        let QueryResult::Funnel(r) = run(&snap, &q) else {
            panic!()
        };
        let counts: Vec<u64> = r.steps.iter().map(|s| s.count).collect();
        assert_eq!(counts, vec![1, 1], "{q}");
        let rows = r.breakdowns.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].breakdown_value, json!([""]));
        let counts: Vec<u64> = rows[0].steps.iter().map(|s| s.count).collect();
        assert_eq!(counts, vec![1, 1], "{q}");
    }
}
