//! The query spec parser, and the engine behind it: any bytes as the body
//! of `POST /api/query` must give a 4xx error or an answer; a spec that
//! parses is run on a small store, where it must answer or be refused with
//! a query error; never a panic.
#![no_main]

use std::sync::OnceLock;

use dropscope_core::event::Event;
use dropscope_server::parse_query_body;
use dropscope_store::{Record, Snapshot, Store};
use libfuzzer_sys::fuzz_target;

const PLANS: [&str; 2] = ["free", "pro"];

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<(Store, Snapshot)> = OnceLock::new();
    &SNAP
        .get_or_init(|| {
            let store = Store::in_memory();
            let names = ["a", "b", "c", "$pageview"];
            let recs: Vec<Record> = (0..60u32)
                .map(|i| {
                    let props = serde_json::json!({"plan": PLANS[i as usize % 2], "n": i % 7, "$browser": "Chrome"});
                    Record::Event(Event {
                        uuid: i as u128 + 1,
                        event: names[(i * 7 % 4) as usize].into(),
                        distinct_id: format!("u{}", i % 9),
                        timestamp: 1_620_000_000_000 + (i as i64) * 3_600_000,
                        properties: props.as_object().cloned().unwrap_or_default(),
                    })
                })
                .collect();
            store.append(&recs).expect("append");
            let snap = store.snapshot().expect("snapshot");
            (store, snap)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    match parse_query_body(data) {
        Err(e) => assert!(e.status().is_client_error(), "status {} for {e}", e.status()),
        Ok(mut q) => {
            // Bound the work a random spec can ask for.
            if q.steps.len() > 6 {
                return;
            }
            q.limit = q.limit.map(|l| l.min(100));
            let _ = dropscope_engine::run_query(snapshot(), &q);
        }
    }
});
