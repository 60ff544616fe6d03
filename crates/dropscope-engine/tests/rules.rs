//! One test per rule of ../shared/SEMANTICS.md, on the smallest log that
//! shows it, plus the extensions (totals, in_progress, per-step windows,
//! optional steps, 30 steps) and query validation.

use dropscope_core::event::{Event, PersonRecord};
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{FunnelResult, QueryResult};
use dropscope_store::{Record, Store};
use serde_json::{json, Value};

const T0: i64 = 1_620_000_000_000; // 2021-05-03T00:00:00Z

/// (distinct_id, event, seconds after T0, properties)
type Ev<'a> = (&'a str, &'a str, i64, Value);

fn store(evs: &[Ev<'_>]) -> Store {
    let s = Store::in_memory();
    let recs: Vec<Record> = evs
        .iter()
        .enumerate()
        .map(|(i, (d, e, t, p))| {
            Record::Event(Event {
                uuid: i as u128 + 1,
                event: e.to_string(),
                distinct_id: d.to_string(),
                timestamp: T0 + t * 1000,
                properties: p.as_object().cloned().unwrap_or_default(),
            })
        })
        .collect();
    s.append(&recs).unwrap();
    s
}

fn query(s: &Store, q: Value) -> Result<QueryResult, dropscope_core::QueryError> {
    let mut q = q;
    let o = q.as_object_mut().unwrap();
    o.entry("date_from").or_insert(json!("2021-05-01"));
    o.entry("date_to").or_insert(json!("2021-06-30"));
    let q = FunnelQuery::from_json(q)?;
    dropscope_engine::run_query(&s.snapshot().unwrap(), &q)
}

fn funnel(s: &Store, q: Value) -> FunnelResult {
    match query(s, q).unwrap() {
        QueryResult::Funnel(f) => f,
        other => panic!("not a funnel: {other:?}"),
    }
}

fn counts(f: &FunnelResult) -> Vec<u64> {
    f.steps.iter().map(|s| s.count).collect()
}

fn steps(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({"event": n})).collect())
}

#[test]
fn window_bound_is_inclusive() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "b", 300, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 301, json!({})),
    ]);
    let f = funnel(
        &s,
        json!({"steps": steps(&["a", "b"]), "window": {"value": 5, "unit": "minute"}}),
    );
    assert_eq!(counts(&f), vec![2, 1]);
}

#[test]
fn window_zero_or_negative_falls_back_to_14_days() {
    let s = store(&[("u", "a", 0, json!({})), ("u", "b", 13 * 86400, json!({}))]);
    for v in [0, -1] {
        let f = funnel(
            &s,
            json!({"steps": steps(&["a", "b"]), "window": {"value": v}}),
        );
        assert_eq!(counts(&f), vec![1, 1], "window {v}");
    }
}

#[test]
fn latest_start_is_kept_and_first_completion_gives_times() {
    // a at 0, a at 100, b at 150: the later start has more window left;
    // with a 2-minute window only it converts, in 50 s.
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "a", 100, json!({})),
        ("u", "b", 150, json!({})),
    ]);
    let f = funnel(
        &s,
        json!({"steps": steps(&["a", "b"]), "window": {"value": 2, "unit": "minute"}}),
    );
    assert_eq!(counts(&f), vec![1, 1]);
    assert_eq!(f.steps[1].average_conversion_time, Some(50.0));
}

#[test]
fn repeated_steps_need_a_later_event_but_ties_fill_both() {
    let s = store(&[("u", "a", 0, json!({}))]);
    assert_eq!(
        counts(&funnel(&s, json!({"steps": steps(&["a", "a"])}))),
        vec![1, 0]
    );
    let s = store(&[("u", "a", 0, json!({})), ("u", "a", 0, json!({}))]);
    assert_eq!(
        counts(&funnel(&s, json!({"steps": steps(&["a", "a"])}))),
        vec![1, 1]
    );
}

#[test]
fn different_steps_at_one_instant_convert_with_time_zero_and_ignore_exclusions() {
    let s = store(&[
        ("u", "b", 0, json!({})),
        ("u", "x", 0, json!({})),
        ("u", "a", 0, json!({})),
    ]);
    let f = funnel(
        &s,
        json!({"steps": steps(&["a", "b"]), "exclusions": [{"event": "x", "from_step": 0, "to_step": 1}]}),
    );
    assert_eq!(counts(&f), vec![1, 1]);
    assert_eq!(
        f.steps[1].average_conversion_time, None,
        "zero gaps are left out of the average"
    );
}

#[test]
fn strict_order_is_broken_by_any_other_event() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "noise", 10, json!({})),
        ("u", "b", 20, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 20, json!({})),
    ]);
    assert_eq!(
        counts(&funnel(
            &s,
            json!({"steps": steps(&["a", "b"]), "order": "strict"})
        )),
        vec![2, 1]
    );
    assert_eq!(
        counts(&funnel(&s, json!({"steps": steps(&["a", "b"])}))),
        vec![2, 2]
    );
}

#[test]
fn exclusion_inside_the_window_removes_the_actor_from_every_step() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "x", 10, json!({})),
        ("u", "b", 20, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 20, json!({})),
    ]);
    let q = json!({"steps": steps(&["a", "b"]), "exclusions": [{"event": "x", "from_step": 0, "to_step": 1}]});
    assert_eq!(counts(&funnel(&s, q)), vec![1, 1]);
}

#[test]
fn exclusion_after_the_window_is_ignored() {
    let s = store(&[("u", "a", 0, json!({})), ("u", "x", 120, json!({}))]);
    let q = json!({"steps": steps(&["a", "b"]), "window": {"value": 1, "unit": "minute"},
        "exclusions": [{"event": "x", "from_step": 0, "to_step": 1}]});
    assert_eq!(counts(&funnel(&s, q)), vec![1, 0]);
}

#[test]
fn unordered_excluded_actor_keeps_recorded_progress() {
    let s = store(&[("u", "b", 0, json!({})), ("u", "a", 10, json!({}))]);
    let f = funnel(
        &s,
        json!({"steps": steps(&["a", "b"]), "order": "unordered"}),
    );
    assert_eq!(counts(&f), vec![1, 1]);
    assert_eq!(f.steps[1].name, "Completed 2 steps");
}

#[test]
fn global_filters_apply_to_every_step() {
    let s = store(&[
        ("u", "a", 0, json!({"ok": true})),
        ("u", "b", 10, json!({})),
    ]);
    let q = json!({"steps": steps(&["a", "b"]), "properties": [{"key": "ok", "value": "true", "type": "event"}]});
    assert_eq!(counts(&funnel(&s, q)), vec![1, 0]);
}

#[test]
fn date_range_cuts_late_conversions() {
    let s = store(&[("u", "a", 0, json!({})), ("u", "b", 3 * 86400, json!({}))]);
    let q =
        json!({"steps": steps(&["a", "b"]), "date_from": "2021-05-03", "date_to": "2021-05-04"});
    assert_eq!(counts(&funnel(&s, q)), vec![1, 0]);
}

#[test]
fn median_interpolates() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "b", 3600, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 7200, json!({})),
    ]);
    let f = funnel(&s, json!({"steps": steps(&["a", "b"])}));
    assert_eq!(f.steps[1].median_conversion_time, Some(5400.0));
    assert_eq!(f.steps[0].median_conversion_time, None);
}

fn breakdown_log() -> Store {
    store(&[
        ("u", "a", 0, json!({})),
        ("u", "a", 10, json!({"b": "Chrome"})),
        ("u", "b", 20, json!({"b": "Safari"})),
        ("v", "a", 0, json!({"b": "Firefox"})),
    ])
}

fn rows(f: &FunnelResult) -> Vec<(Value, Vec<u64>)> {
    let mut r: Vec<_> = f
        .breakdowns
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.breakdown_value.clone(),
                r.steps.iter().map(|s| s.count).collect(),
            )
        })
        .collect();
    r.sort_by_key(|(v, _)| v.to_string());
    r
}

#[test]
fn attribution_first_touch_last_touch_all_events_step() {
    let s = breakdown_log();
    let q = |attr: Value| {
        let mut b = json!({"type": "event", "property": "b"});
        for (k, v) in attr.as_object().unwrap() {
            b[k] = v.clone();
        }
        json!({"steps": steps(&["a", "b"]), "breakdown": b})
    };
    assert_eq!(
        rows(&funnel(&s, q(json!({"attribution": "first_touch"})))),
        vec![
            (json!(["Chrome"]), vec![1, 1]),
            (json!(["Firefox"]), vec![1, 0])
        ]
    );
    assert_eq!(
        rows(&funnel(&s, q(json!({"attribution": "last_touch"})))),
        vec![
            (json!(["Firefox"]), vec![1, 0]),
            (json!(["Safari"]), vec![1, 1])
        ]
    );
    // all_events: each value runs over its own events only.
    assert_eq!(
        rows(&funnel(&s, q(json!({"attribution": "all_events"})))),
        vec![
            (json!([""]), vec![1, 0]),
            (json!(["Chrome"]), vec![1, 0]),
            (json!(["Firefox"]), vec![1, 0])
        ]
    );
    // step 1: the value of the event used as step 1; v never does step 1.
    assert_eq!(
        rows(&funnel(
            &s,
            q(json!({"attribution": "step", "attribution_step": 1}))
        )),
        vec![(json!(["Safari"]), vec![1, 1])]
    );
}

#[test]
fn limit_merges_the_tail_into_other() {
    let mut evs = Vec::new();
    let names = ["p0", "p1", "p2", "p3", "p4"];
    for (i, n) in names.iter().enumerate() {
        for k in 0..=i {
            evs.push((*n, "a", k as i64, json!({"b": format!("v{i}")})));
        }
    }
    let owned: Vec<(String, &str, i64, Value)> = evs
        .iter()
        .enumerate()
        .map(|(j, (_, e, t, p))| (format!("x{j}"), *e, *t, p.clone()))
        .collect();
    let s = store(
        &owned
            .iter()
            .map(|(d, e, t, p)| (d.as_str(), *e, *t, p.clone()))
            .collect::<Vec<_>>(),
    );
    let f = funnel(
        &s,
        json!({"steps": steps(&["a"]), "breakdown": {"property": "b", "limit": 2}}),
    );
    let r = f.breakdowns.unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].breakdown_value, json!(["v4"]));
    assert_eq!(r[1].breakdown_value, json!(["v3"]));
    assert_eq!(r[2].breakdown_value, json!(["Other"]));
    assert_eq!(r[2].steps[0].count, 6);
}

#[test]
fn identify_joins_earlier_events() {
    let s = store(&[
        ("anon", "a", 0, json!({})),
        ("bob", "$identify", 5, json!({"$anon_distinct_id": "anon"})),
        ("bob", "b", 10, json!({})),
    ]);
    assert_eq!(
        counts(&funnel(&s, json!({"steps": steps(&["a", "b"])}))),
        vec![1, 1]
    );
}

#[test]
fn person_property_filter_uses_current_value() {
    let s = Store::in_memory();
    s.append(&[Record::Person(PersonRecord {
        id: "p".into(),
        distinct_ids: vec!["u".into()],
        properties: json!({"plan": "pro"}).as_object().cloned().unwrap(),
    })])
    .unwrap();
    s.append(&[Record::Event(Event {
        uuid: 9,
        event: "a".into(),
        distinct_id: "u".into(),
        timestamp: T0,
        properties: Default::default(),
    })])
    .unwrap();
    let f = funnel(
        &s,
        json!({"steps": [{"event": "a", "properties": [{"key": "plan", "value": "pro", "type": "person"}]}]}),
    );
    assert_eq!(counts(&f), vec![1]);
}

#[test]
fn totals_count_every_attempt_with_reentry() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "b", 10, json!({})),
        ("u", "a", 20, json!({})),
        ("u", "a", 30, json!({})),
    ]);
    let f = funnel(
        &s,
        json!({"steps": steps(&["a", "b"]), "counting": "totals"}),
    );
    // Attempt 1 completes (a, b); attempt 2 starts at 20 and never converts
    // (the a at 30 is inside it).
    assert_eq!(counts(&f), vec![2, 1]);
}

#[test]
fn in_progress_is_reported_beside_dropped() {
    // Entered one hour before the end of the range with a 14-day window.
    let s = store(&[
        ("u", "a", 86400 - 3600, json!({})),
        ("v", "a", 0, json!({})),
    ]);
    let f = funnel(
        &s,
        json!({"steps": steps(&["a", "b"]), "date_from": "2021-05-03", "date_to": "2021-05-03", "window": {"value": 1, "unit": "hour"}}),
    );
    assert_eq!(f.steps[1].dropped, 2);
    assert_eq!(f.steps[1].in_progress, 1);
}

#[test]
fn per_step_window_and_min_gap() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "b", 100, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 5, json!({})),
    ]);
    let q = json!({"steps": [{"event": "a"}, {"event": "b", "within": {"value": 60, "unit": "second"}}]});
    assert_eq!(counts(&funnel(&s, q)), vec![2, 1]);
    let q = json!({"steps": [{"event": "a"}, {"event": "b", "min_gap": {"value": 60, "unit": "second"}}]});
    assert_eq!(counts(&funnel(&s, q)), vec![2, 1]);
}

#[test]
fn optional_step_may_be_skipped() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "c", 10, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 5, json!({})),
        ("v", "c", 10, json!({})),
    ]);
    let f = funnel(
        &s,
        json!({"steps": [{"event": "a"}, {"event": "b", "optional": true}, {"event": "c"}]}),
    );
    assert_eq!(counts(&f), vec![2, 1, 2]);
}

#[test]
fn thirty_steps() {
    let names: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
    let evs: Vec<(&str, &str, i64, Value)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| ("u", n.as_str(), i as i64, json!({})))
        .collect();
    let s = store(&evs);
    let st: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = funnel(&s, json!({"steps": steps(&st)}));
    assert_eq!(counts(&f), vec![1; 30]);
}

#[test]
fn unknown_event_is_an_empty_step_not_an_error() {
    let s = store(&[("u", "a", 0, json!({}))]);
    assert_eq!(
        counts(&funnel(&s, json!({"steps": steps(&["a", "never_seen"])}))),
        vec![1, 0]
    );
}

#[test]
fn invalid_queries_name_the_field() {
    let s = store(&[("u", "a", 0, json!({}))]);
    let cases = [
        (json!({"steps": []}), "steps"),
        (json!({"steps": steps(&["a", "b"]), "bogus": 1}), "bogus"),
        (
            json!({"steps": steps(&["a", "b"]), "exclusions": [{"event": "x", "from_step": 1, "to_step": 1}]}),
            "from_step",
        ),
        (
            json!({"steps": steps(&["a", "b"]), "kind": "funnel_trends", "from_step": 1, "to_step": 0}),
            "from_step",
        ),
        (
            json!({"steps": steps(&["a", "b"]), "order": "sideways"}),
            "order",
        ),
        (
            json!({"steps": steps(&["a", "b"]), "date_from": "someday"}),
            "date_from",
        ),
        (
            json!({"steps": (0..31).map(|i| json!({"event": format!("e{i}")})).collect::<Vec<_>>()}),
            "steps",
        ),
    ];
    for (q, field) in cases {
        let e = query(&s, q.clone()).expect_err(&q.to_string());
        assert!(e.to_string().contains(field), "{e} should name {field}");
        assert!(e.is_user_error());
    }
}

#[test]
fn trends_bucket_by_entry_and_fill_zeros() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "b", 10, json!({})),
        ("v", "a", 86400, json!({})),
    ]);
    let r = query(&s, json!({"kind": "funnel_trends", "steps": steps(&["a", "b"]), "date_from": "2021-05-03", "date_to": "2021-05-05"})).unwrap();
    let QueryResult::FunnelTrends(t) = r else {
        panic!()
    };
    let got: Vec<(String, u64, u64)> = t
        .rows
        .iter()
        .map(|r| {
            (
                r.timestamp.clone(),
                r.reached_from_step_count,
                r.reached_to_step_count,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("2021-05-03".into(), 1, 1),
            ("2021-05-04".into(), 1, 0),
            ("2021-05-05".into(), 0, 0)
        ]
    );
}

#[test]
fn paths_after_a_drop() {
    let s = store(&[
        ("u", "a", 0, json!({})),
        ("u", "help", 10, json!({})),
        ("u", "help", 11, json!({})),
        ("u", "quit", 12, json!({})),
        ("v", "a", 0, json!({})),
        ("v", "b", 5, json!({})),
    ]);
    let QueryResult::Paths(p) =
        query(&s, json!({"kind": "paths", "steps": steps(&["a", "b"])})).unwrap()
    else {
        panic!()
    };
    assert_eq!(p.after_step, 0);
    assert_eq!((p.dropped, p.converted), (1, 1));
    assert_eq!(
        p.dropped_sequences[0].path,
        vec!["help", "quit"],
        "repeats collapse"
    );
    assert_eq!(p.converted_next[0].path, vec!["b"]);
}

/// Rules 5 and 6 together (found by the oracle proptest): `a` shares the
/// instant of step 1 and `u` the instant of step 2, so neither clears the
/// attempt (strictness is not enforced inside a same-instant group), but
/// `x` between them stands alone and breaks it. The engine once dropped
/// `x` as the middle of a run of non-step events, and counted a conversion.
#[test]
fn strict_event_between_two_mixed_instants_breaks_the_attempt() {
    let no = || json!({});
    let log = [
        ("p", "c", 0, no()),
        ("p", "a", 0, no()),
        ("p", "x", 7, no()),
        ("p", "u", 3600, no()),
        ("p", "d", 3600, no()),
    ];
    let s = store(&log);
    let q = |order: &str| json!({"steps": steps(&["c", "d"]), "order": order});
    assert_eq!(counts(&funnel(&s, q("strict"))), [1, 0]);
    assert_eq!(counts(&funnel(&s, q("ordered"))), [1, 1]);
    // Without the lone event, the two mixed instants convert.
    let s = store(&[
        log[0].clone(),
        log[1].clone(),
        log[3].clone(),
        log[4].clone(),
    ]);
    assert_eq!(counts(&funnel(&s, q("strict"))), [1, 1]);
}
