//! The fast kernel (`dropscope_engine::kernel`) against the general path.
//!
//! The same funnel is asked twice: as is (the kernel takes it) and with an
//! exclusion on an event name that never occurs (the kernel refuses it,
//! and such an exclusion cannot change any answer). Logs are random with
//! few persons, few event names and many identical timestamps, so runs of
//! step-1 events, events of several steps and rule 5's pairing all occur;
//! both orders the kernel takes (ordered, strict) and date ranges that cut
//! attempts are drawn. Every field of the result must be equal.

use dropscope_core::event::Event;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_store::{Record, Store};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const T0: i64 = 1_620_000_000_000;
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn store(log: &[(u8, u8, i64)]) -> Store {
    let s = Store::in_memory();
    let recs: Vec<Record> = log
        .iter()
        .enumerate()
        .map(|(i, &(person, name, minutes))| {
            Record::Event(Event {
                uuid: i as u128 + 1,
                event: NAMES[name as usize].into(),
                distinct_id: format!("p{person}"),
                timestamp: T0 + minutes * 60_000,
                properties: Map::new(),
            })
        })
        .collect();
    s.append(&recs).expect("append");
    s
}

fn run(s: &Store, q: &Value) -> QueryResult {
    let q: FunnelQuery = serde_json::from_value(q.clone()).expect("query");
    dropscope_engine::run_query(&s.snapshot().expect("snapshot"), &q).expect("run")
}

fn query(steps: &[u8], order: &str, window_min: i64, range: Option<(i64, i64)>) -> Value {
    let fmt = |m: i64| {
        chrono::DateTime::from_timestamp_millis(T0 + m * 60_000)
            .expect("ts")
            .to_rfc3339()
    };
    let (from, to) = match range {
        Some((a, b)) => (json!(fmt(a)), json!(fmt(b))),
        None => (json!("all"), Value::Null),
    };
    json!({
        "steps": steps.iter().map(|&s| json!({"event": NAMES[s as usize]})).collect::<Vec<_>>(),
        "order": order,
        "window": {"value": window_min, "unit": "minute"},
        "date_from": from,
        "date_to": to,
        "explicit_date": true,
        "now": fmt(60),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn kernel_equals_general_path(
        log in prop::collection::vec((0u8..6, 0u8..4, 0i64..40), 0..120),
        steps in prop::collection::vec(0u8..4, 2..6),
        strict in any::<bool>(),
        window in 1i64..30,
        range in prop::option::of((0i64..20, 20i64..45)),
    ) {
        let s = store(&log);
        let order = if strict { "strict" } else { "ordered" };
        let fast = query(&steps, order, window, range);
        let mut general = fast.clone();
        general["exclusions"] = json!([{"event": "never-stored", "from_step": 0, "to_step": steps.len() - 1}]);
        let (a, b) = (run(&s, &fast), run(&s, &general));
        prop_assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::to_value(&b).expect("json")
        );
    }
}
