//! A query resolves names through the dictionaries for as long as it runs;
//! capture must not wait for it. Here a reader holds the dictionaries (as a
//! running query's plan does) while another thread appends events whose
//! names, distinct ids, keys and values are all new. The append has to
//! finish while the reader still holds them, and the reader must keep
//! resolving the ids it knew, unchanged, while new ones are interned.

use std::sync::mpsc;
use std::time::Duration;

use dropscope_core::event::Event;
use dropscope_store::{Record, Store, StoreOptions};

fn ev(n: u64, name: &str, did: &str) -> Record {
    let mut properties = serde_json::Map::new();
    properties.insert(format!("key_{n}"), serde_json::json!(format!("value_{n}")));
    Record::Event(Event {
        uuid: n as u128,
        event: name.into(),
        distinct_id: did.into(),
        timestamp: 1_700_000_000_000 + n as i64,
        properties,
    })
}

#[test]
fn ingest_does_not_wait_for_a_reader_holding_the_dictionaries() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        fsync: false,
        background_compaction: false,
        ..Default::default()
    };
    let store = std::sync::Arc::new(Store::open(dir.path(), opts).unwrap());
    store.append(&[ev(0, "first", "p0")]).unwrap();

    let snap = store.snapshot().unwrap();
    let dicts = snap.dicts();
    let first = dicts.events.get("first").unwrap();
    let before = dicts.events.len();

    let (tx, rx) = mpsc::channel();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let batch: Vec<Record> = (1..=2000)
                .map(|n| ev(n, &format!("name_{n}"), &format!("p{n}")))
                .collect();
            let r = store.append(&batch).map(|_| ());
            tx.send(r).unwrap();
        })
    };
    // While the writer interns 2000 new names, this reader keeps resolving.
    let mut appended = None;
    for _ in 0..1000 {
        assert_eq!(dicts.events.resolve(first), "first");
        if let Ok(r) = rx.try_recv() {
            appended = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let appended = appended.expect("the append finished while a reader held the dictionaries");
    appended.unwrap();
    writer.join().unwrap();

    // The held dictionaries see the new strings with dense, stable ids.
    assert_eq!(dicts.events.len(), before + 2000);
    assert_eq!(dicts.events.resolve(first), "first");
    for n in [1u64, 777, 2000] {
        let id = dicts.events.get(&format!("name_{n}")).unwrap();
        assert_eq!(dicts.events.resolve(id), format!("name_{n}"));
        assert!(dicts.keys.get(&format!("key_{n}")).is_some());
        assert!(dicts.distinct_ids.get(&format!("p{n}")).is_some());
    }
    let ids: std::collections::BTreeSet<u32> = dicts.events.iter().map(|(i, _)| i).collect();
    assert_eq!(ids.len(), dicts.events.len());
    assert_eq!(
        ids.iter().copied().max(),
        Some(dicts.events.len() as u32 - 1)
    );
}
