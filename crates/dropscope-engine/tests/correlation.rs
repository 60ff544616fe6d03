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

mod common;

use common::{events, force_general_path, funnel, run, store_of};
use dropscope_core::event::PersonRecord;
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
}
