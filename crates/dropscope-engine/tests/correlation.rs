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
//! Logs are random with few persons, few event names and many identical
//! timestamps, so runs of step-1 events, events of several steps and
//! rule 5's pairing all occur.

use dropscope_core::event::{Event, PersonRecord};
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_store::{Record, Store};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const T0: i64 = 1_620_000_000_000;
const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
const PLANS: [&str; 3] = ["free", "pro", ""];

fn store(log: &[(u8, u8, i64)], plans: &[u8]) -> Store {
    let s = Store::in_memory();
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
    recs.extend(log.iter().enumerate().map(|(i, &(person, name, minutes))| {
        Record::Event(Event {
            uuid: i as u128 + 1,
            event: NAMES[name as usize].into(),
            distinct_id: format!("p{person}"),
            timestamp: T0 + minutes * 60_000,
            properties: Map::new(),
        })
    }));
    s.append(&recs).expect("append");
    s
}

fn run(s: &Store, q: &Value) -> QueryResult {
    let q: FunnelQuery = serde_json::from_value(q.clone()).expect("query");
    dropscope_engine::run_query(&s.snapshot().expect("snapshot"), &q).expect("run")
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
    let fmt = |m: i64| {
        chrono::DateTime::from_timestamp_millis(T0 + m * 60_000)
            .expect("ts")
            .to_rfc3339()
    };
    let (from, to) = match range {
        Some((a, b)) => (json!(fmt(a)), json!(fmt(b))),
        None => (json!("all"), Value::Null),
    };
    let mut corr = json!({"min_person_count": 0, "min_person_percentage": 0, "top": 100});
    for (k, v) in correlation.as_object().expect("object") {
        corr[k] = v.clone();
    }
    json!({
        "kind": "correlation",
        "steps": steps.iter().map(|&s| json!({"event": NAMES[s as usize]})).collect::<Vec<_>>(),
        "order": if strict { "strict" } else { "ordered" },
        "window": {"value": window_min, "unit": "minute"},
        "date_from": from,
        "date_to": to,
        "explicit_date": true,
        "now": fmt(60),
        "correlation": corr,
    })
}

fn kinds() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "events"})),
        Just(json!({"type": "events", "with_person_properties": ["plan"]})),
        Just(json!({"type": "properties", "names": ["plan", "$all"]})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

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
        general["exclusions"] = json!([{"event": "never-stored", "from_step": 0, "to_step": steps.len() - 1}]);
        let (a, b) = (run(&s, &fast), run(&s, &general));
        prop_assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::to_value(&b).expect("json")
        );
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
            q["exclusions"] = json!([{"event": "never-stored", "from_step": 0, "to_step": steps.len() - 1}]);
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
}
