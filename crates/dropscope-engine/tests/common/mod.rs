//! Helpers shared by the engine's fast-path-versus-general-path tests
//! (`kernel.rs`, `correlation.rs`): random logs of `(person, name index,
//! minute)` stored in memory, a funnel over name indexes, and the
//! exclusion that forces the general path without changing any answer.

#![allow(dead_code)] // each test file uses its own subset

use dropscope_core::event::Event;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_store::{Record, Store};
use serde_json::{json, Map, Value};

pub const T0: i64 = 1_620_000_000_000;

/// Random cases per property test: `PROPTEST_CASES`, else 256.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// One event per log entry: person `p{person}`, event `names[name]`, at
/// `T0` plus `minute` minutes; uuids in log order.
pub fn events(log: &[(u8, u8, i64)], names: &[&str]) -> Vec<Record> {
    log.iter()
        .enumerate()
        .map(|(i, &(person, name, minutes))| {
            Record::Event(Event {
                uuid: i as u128 + 1,
                event: names[name as usize].into(),
                distinct_id: format!("p{person}"),
                timestamp: T0 + minutes * 60_000,
                properties: Map::new(),
            })
        })
        .collect()
}

pub fn store_of(recs: &[Record]) -> Store {
    let s = Store::in_memory();
    s.append(recs).expect("append");
    s
}

pub fn run(s: &Store, q: &Value) -> QueryResult {
    let q: FunnelQuery = serde_json::from_value(q.clone()).expect("query");
    dropscope_engine::run_query(&s.snapshot().expect("snapshot"), &q).expect("run")
}

/// A funnel over `steps` (indexes into `names`), a window in minutes, and
/// a date range in minutes after `T0` (all data when `None`).
pub fn funnel(
    steps: &[u8],
    names: &[&str],
    strict: bool,
    window_min: i64,
    range: Option<(i64, i64)>,
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
    json!({
        "steps": steps.iter().map(|&s| json!({"event": names[s as usize]})).collect::<Vec<_>>(),
        "order": if strict { "strict" } else { "ordered" },
        "window": {"value": window_min, "unit": "minute"},
        "date_from": from,
        "date_to": to,
        "explicit_date": true,
        "now": fmt(60),
    })
}

/// `q` with an exclusion on an event name no log has: the kernel refuses
/// such a funnel, and the exclusion cannot change any answer.
pub fn force_general_path(q: &mut Value, steps: usize) {
    q["exclusions"] = json!([{"event": "never-stored", "from_step": 0, "to_step": steps - 1}]);
}
