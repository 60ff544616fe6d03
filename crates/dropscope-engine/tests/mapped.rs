//! Queries over a store on disk, whose segments are memory-mapped and whose
//! pages the general path releases behind its scan (`RunColumns::release_rows`),
//! give the answers of the same events held in memory, and the same answers
//! again when asked a second time (the released pages are read back).
//! Logs are appended in two flushed parts (persons span two segments), and
//! compacted or not, so both the run-by-run walk and the actors that span
//! several runs are read from mapped columns.

mod common;

use common::T0;
use dropscope_core::event::Event;
use dropscope_store::{Record, Store, StoreOptions};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const CITIES: [&str; 3] = ["Oslo", "Lima", "Pune"];

fn records(log: &[(u8, u8, i64, u8)]) -> Vec<Record> {
    log.iter()
        .enumerate()
        .map(|(i, &(person, name, minutes, city))| {
            let mut props = Map::new();
            props.insert("city".into(), json!(CITIES[city as usize]));
            Record::Event(Event {
                uuid: i as u128 + 1,
                event: NAMES[name as usize].into(),
                distinct_id: format!("p{person}"),
                timestamp: T0 + minutes * 60_000,
                properties: props,
            })
        })
        .collect()
}

fn queries(steps: &[u8]) -> Vec<Value> {
    let base = common::funnel(steps, &NAMES, false, 20, None);
    let mut by_city = base.clone();
    by_city["breakdown"] = json!({"type": "event", "property": "city"});
    let mut general = base.clone();
    common::force_general_path(&mut general, steps.len());
    let mut correlation = base.clone();
    correlation["kind"] = json!("correlation");
    correlation["correlation"] = json!({
        "type": "event_with_properties", "event_names": ["a", "b"],
        "min_person_count": 0, "min_person_percentage": 0, "top": 100,
    });
    vec![base, by_city, general, correlation]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn disk_store_answers_like_memory(
        log in prop::collection::vec((0u8..40, 0u8..4, 0i64..60, 0u8..3), 1..400),
        steps in prop::collection::vec(0u8..4, 2..5),
        compact in any::<bool>(),
    ) {
        let recs = records(&log);
        let mem = Store::in_memory();
        mem.append(&recs).expect("append");
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let half = recs.len() / 2;
        for part in [&recs[..half], &recs[half..]] {
            disk.append(part).expect("append");
            disk.flush().expect("flush");
        }
        if compact {
            disk.compact().expect("compact");
        }
        for q in queries(&steps) {
            let want = serde_json::to_value(common::run(&mem, &q)).expect("json");
            for round in 0..2 {
                let got = serde_json::to_value(common::run(&disk, &q)).expect("json");
                prop_assert_eq!(&got, &want, "query {} round {}", q, round);
            }
        }
    }
}
