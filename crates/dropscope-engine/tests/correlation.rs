//! Correlation's fast paths against simple ones.
//!
//! 1. The kernel (`dropscope_engine::kernel`) decides each actor's path
//!    for plain ordered/strict funnels; the same query with an exclusion
//!    on an event name that never occurs goes through the general path
//!    (which such an exclusion cannot change). Every field of the answer
//!    must be equal, for event, event + person property and property
//!    correlation.
//! 2. Each event row's counts (found per actor with a time-sorted slice
//!    and a reusable stamp array, counted per worker) must equal the
//!    number of converted and dropped actors that `correlation_persons`
//!    lists for that row, which scans every event of each actor.
//!
//! 3. Property and event-property rows count distinct actors even where
//!    several stored values or keys share a row name (`1` and `"1"`; key
//!    `a::b` = `c` and key `a` = `b::c`) and where `names` repeats a
//!    name: each row's counts equal the actors `correlation_persons`
//!    lists for it, and never exceed the totals (a fuzz-found panic).
//!
//! Logs are random with few persons, few event names and many identical
//! timestamps, so runs of step-1 events, events of several steps and
//! rule 5's pairing all occur.

mod common;

use common::{events, force_general_path, funnel, run, store_of};
use dropscope_core::event::{Event, PersonRecord};
use dropscope_core::result::QueryResult;
use dropscope_store::{Record, Store};
use proptest::prelude::*;
use serde_json::{json, Value};

const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
const PLANS: [&str; 3] = ["free", "pro", ""];

/// Persons `p{i}` with a `plan` property (none for `""`), then the log.
fn store(log: &[(u8, u8, i64)], plans: &[u8]) -> Store {
    let mut recs: Vec<Record> = plans
        .iter()
        .enumerate()
        .filter(|(_, &p)| !PLANS[p as usize].is_empty())
        .map(|(i, &p)| {
            Record::Person(PersonRecord {
                id: format!("p{i}"),
                distinct_ids: vec![format!("p{i}")],
                properties: json!({"plan": PLANS[p as usize]})
                    .as_object()
                    .cloned()
                    .expect("object"),
            })
        })
        .collect();
    recs.extend(events(log, &NAMES));
    store_of(&recs)
}

/// A correlation query over `steps` (name indexes) with every row shown
/// and supported, so that the adjusted analysis runs too.
fn query(
    steps: &[u8],
    strict: bool,
    window_min: i64,
    range: Option<(i64, i64)>,
    correlation: Value,
) -> Value {
    let mut corr = json!({"min_person_count": 0, "min_person_percentage": 0, "top": 100});
    for (k, v) in correlation.as_object().expect("object") {
        corr[k] = v.clone();
    }
    let mut q = funnel(steps, &NAMES, strict, window_min, range);
    q["kind"] = json!("correlation");
    q["correlation"] = corr;
    q
}

/// Values whose string forms meet: `1` and `"1"`, `true` and `"true"`,
/// and `b::c` that makes key `a` = `b::c` read like key `a::b` = `c`.
fn shared_value(i: u8) -> Value {
    [
        json!(1),
        json!("1"),
        json!(true),
        json!("true"),
        json!("b::c"),
        json!("c"),
    ][i as usize]
        .clone()
}

/// Persons with properties under keys `a`, `a::b` and `n`, and events
/// with a property `x`, all of [`shared_value`]s.
fn store_with_shared_names(log: &[(u8, u8, i64, u8)], persons: &[(u8, u8, u8)]) -> Store {
    let mut recs: Vec<Record> = persons
        .iter()
        .enumerate()
        .map(|(i, &(a, ab, n))| {
            let mut props = serde_json::Map::new();
            props.insert("a".into(), shared_value(a));
            if ab < 6 {
                props.insert("a::b".into(), shared_value(ab));
            }
            props.insert("n".into(), shared_value(n % 4));
            Record::Person(PersonRecord {
                id: format!("p{i}"),
                distinct_ids: vec![format!("p{i}")],
                properties: props,
            })
        })
        .collect();
    recs.extend(
        log.iter()
            .enumerate()
            .map(|(i, &(person, name, minutes, x))| {
                let mut props = serde_json::Map::new();
                props.insert("x".into(), shared_value(x));
                Record::Event(Event {
                    uuid: i as u128 + 1,
                    event: NAMES[name as usize].into(),
                    distinct_id: format!("p{person}"),
                    timestamp: common::T0 + minutes * 60_000,
                    properties: props,
                })
            }),
    );
    store_of(&recs)
}

/// The diagnosis's correlation (`correlation_supported`) of query `qv`,
/// and the full correlation with its low-support list emptied, as JSON.
fn supported_and_full_without_low(s: &Store, qv: Value) -> (Value, Value) {
    let q: dropscope_core::query::FunnelQuery = serde_json::from_value(qv).expect("query");
    let snap = s.snapshot().expect("snapshot");
    let plan = dropscope_engine::Plan::new(&snap, &q).expect("plan");
    let mut want = dropscope_engine::correlation::correlation(&plan).expect("full");
    want.low_support.clear();
    let got = dropscope_engine::correlation::correlation_supported(&plan).expect("supported");
    (
        serde_json::to_value(&got).expect("json"),
        serde_json::to_value(&want).expect("json"),
    )
}

fn kinds() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "events"})),
        Just(json!({"type": "events", "with_person_properties": ["plan"]})),
        Just(json!({"type": "properties", "names": ["plan", "$all"]})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases()))]

    #[test]
    fn kernel_path_equals_general_path(
        log in prop::collection::vec((0u8..14, 0u8..7, 0i64..40), 0..160),
        plans in prop::collection::vec(0u8..3, 14),
        steps in prop::collection::vec(0u8..4, 2..6),
        strict in any::<bool>(),
        window in 1i64..30,
        range in prop::option::of((0i64..20, 20i64..45)),
        kind in kinds(),
        success_step in prop::option::of(1usize..5),
        equal_window in any::<bool>(),
    ) {
        let s = store(&log, &plans);
        let mut corr = kind;
        corr["equal_window"] = json!(equal_window);
        if let Some(st) = success_step.filter(|&st| st < steps.len()) {
            corr["success_step"] = json!(st);
        }
        let fast = query(&steps, strict, window, range, corr);
        let mut general = fast.clone();
        force_general_path(&mut general, steps.len());
        let (a, b) = (run(&s, &fast), run(&s, &general));
        prop_assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::to_value(&b).expect("json")
        );
    }

    /// The diagnosis's correlation (`correlation_supported`) is the full
    /// answer without its low-support rows: the same shown rows (counts,
    /// p- and q-values, adjusted odds ratios), the same number of rows
    /// tested, and no low-support list.
    #[test]
    fn supported_only_answer_is_the_full_answer_without_low_support_rows(
        log in prop::collection::vec((0u8..14, 0u8..7, 0i64..40), 0..160),
        plans in prop::collection::vec(0u8..3, 14),
        steps in prop::collection::vec(0u8..4, 2..6),
        window in 1i64..30,
        kind in kinds(),
        min_count in 0u8..6,
    ) {
        let s = store(&log, &plans);
        let mut corr = kind;
        corr["min_person_count"] = json!(min_count);
        corr["min_person_percentage"] = json!(0.5);
        let qv = query(&steps, false, window, None, corr);
        let (got, want) = supported_and_full_without_low(&s, qv);
        prop_assert_eq!(got, want);
    }

    /// The same where row names meet (`1` and `"1"`; key `a` = `b::c`
    /// and key `a::b` = `c`), with excluded property names and every kind
    /// of property row: low-support rows the diagnosis tests without
    /// naming them (`take_unnamed`) must still count once in the family
    /// and leave every shown number as it was.
    #[test]
    fn supported_only_answer_is_the_full_answer_where_names_meet(
        log in prop::collection::vec((0u8..8, 0u8..5, 0i64..40, 0u8..6), 0..120),
        persons in prop::collection::vec((0u8..6, 0u8..8, 0u8..6), 8),
        steps in prop::collection::vec(0u8..3, 2..4),
        names in prop::collection::vec(
            prop::sample::select(vec!["a", "a::b", "n", "missing", "$all"]), 1..8),
        excluded in prop::collection::vec(prop::sample::select(vec!["a", "a::b", "n"]), 0..2),
        kind in 0u8..3,
        min_count in 0u8..6,
        with_ab in any::<bool>(),
    ) {
        // Without key `a::b`, no key name has `::`, and low-support rows
        // go unnamed.
        let persons: Vec<(u8, u8, u8)> =
            persons.iter().map(|&(a, ab, n)| (a, if with_ab { ab } else { 6 }, n)).collect();
        let s = store_with_shared_names(&log, &persons);
        let mut corr = match kind {
            0 => json!({"type": "event_with_properties", "event_names": NAMES}),
            1 => json!({"type": "properties", "names": names}),
            _ => json!({"type": "events", "with_person_properties": names}),
        };
        corr["exclude_names"] = json!(excluded);
        let mut qv = query(&steps, false, 30, None, corr);
        qv["correlation"]["min_person_count"] = json!(min_count);
        qv["correlation"]["min_person_percentage"] = json!(0.5);
        let (got, want) = supported_and_full_without_low(&s, qv);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn event_row_counts_equal_the_persons_behind_them(
        log in prop::collection::vec((0u8..14, 0u8..7, 0i64..40), 0..160),
        steps in prop::collection::vec(0u8..4, 2..6),
        strict in any::<bool>(),
        window in 1i64..30,
        range in prop::option::of((0i64..20, 20i64..45)),
        general in any::<bool>(),
    ) {
        let s = store(&log, &[]);
        let mut q = query(&steps, strict, window, range, json!({"type": "events"}));
        if general {
            force_general_path(&mut q, steps.len());
        }
        let QueryResult::Correlation(res) = run(&s, &q) else {
            panic!("not a correlation result");
        };
        prop_assert_eq!(res.events.len() + res.low_support.len(), res.rows_tested);
        for row in res.events.iter().chain(&res.low_support) {
            for (converted, count) in [(true, row.success_count), (false, row.failure_count)] {
                let mut pq = q.clone();
                pq["kind"] = json!("correlation_persons");
                pq["persons_for"] = json!({"event": row.event, "converted": converted});
                pq["limit"] = json!(1000);
                let QueryResult::CorrelationPersons(p) = run(&s, &pq) else {
                    panic!("not a persons result");
                };
                prop_assert_eq!(p.total, count, "row {} converted {}", row.event, converted);
            }
        }
    }

    #[test]
    fn rows_sharing_a_name_count_distinct_actors(
        log in prop::collection::vec((0u8..8, 0u8..5, 0i64..40, 0u8..6), 0..120),
        persons in prop::collection::vec((0u8..6, 0u8..8, 0u8..6), 8),
        steps in prop::collection::vec(0u8..3, 2..4),
        names in prop::collection::vec(
            prop::sample::select(vec!["a", "a::b", "n", "missing", "$all"]), 1..8),
        event_props in any::<bool>(),
    ) {
        let s = store_with_shared_names(&log, &persons);
        let corr = if event_props {
            json!({"type": "event_with_properties", "event_names": NAMES})
        } else {
            json!({"type": "properties", "names": names})
        };
        let q = query(&steps, false, 30, None, corr);
        let QueryResult::Correlation(res) = run(&s, &q) else {
            panic!("not a correlation result");
        };
        let mut seen = std::collections::HashSet::new();
        for row in res.events.iter().chain(&res.low_support) {
            prop_assert!(seen.insert(row.event.clone()), "row {} twice", row.event);
            prop_assert!(row.success_count <= res.success_total, "row {}", row.event);
            prop_assert!(row.failure_count <= res.failure_total, "row {}", row.event);
            for (converted, count) in [(true, row.success_count), (false, row.failure_count)] {
                let mut pq = q.clone();
                pq["kind"] = json!("correlation_persons");
                pq["limit"] = json!(1000);
                pq["persons_for"] = if event_props {
                    // `event::x::value`: the event's rows with that `x`.
                    let (event, value) = row.event.split_once("::x::").expect("event row");
                    json!({"event": event, "converted": converted, "properties": [
                        {"key": "x", "value": value, "operator": "exact", "type": "event"}]})
                } else {
                    json!({"property": row.event, "converted": converted})
                };
                let QueryResult::CorrelationPersons(p) = run(&s, &pq) else {
                    panic!("not a persons result");
                };
                prop_assert_eq!(p.total, count, "row {} converted {}", row.event, converted);
            }
        }
    }
}
