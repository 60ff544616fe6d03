//! Appends seal the memtable into sorted runs every 64k events, and the
//! background thread flushes them once `flush_threshold` events wait; a
//! flush merges the chunks (k-way) into one segment. Whatever the path
//! (in memory, on disk with background flushes, reopened), a snapshot must
//! hold exactly the appended events, each person's in (time, ingest) order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dropscope_core::event::Event;
use dropscope_store::{EventColumns, Record, Store, StoreOptions};

const EVENTS: u64 = 150_000;

fn event(n: u64) -> Record {
    // Persons interleave across chunks; times go back and forth.
    let person = (n * 7919) % 3001;
    let ts = 1_700_000_000_000 + ((n * 104_729) % 50_000) as i64;
    Record::Event(Event {
        uuid: n as u128 + 1,
        event: format!("e{}", n % 5),
        distinct_id: format!("p{person}"),
        timestamp: ts,
        properties: Default::default(),
    })
}

/// distinct id -> (ts, uuid) of its events, in stored order.
fn contents(s: &Store) -> BTreeMap<String, Vec<(i64, u128)>> {
    let snap = s.snapshot().unwrap();
    let d = snap.dicts();
    let mut out: BTreeMap<String, Vec<(i64, u128)>> = BTreeMap::new();
    let mut scratch = EventColumns::new();
    for i in 0..snap.actor_count() {
        let v = snap.events_of(i, &mut scratch);
        for row in 0..v.len() {
            out.entry(d.distinct_ids.resolve(v.did[row]).to_string())
                .or_default()
                .push((v.ts[row], v.uuid[row]));
        }
    }
    out
}

fn expected() -> BTreeMap<String, Vec<(i64, u128)>> {
    let mut out: BTreeMap<String, Vec<(i64, u128)>> = BTreeMap::new();
    for n in 0..EVENTS {
        let Record::Event(e) = event(n) else {
            unreachable!()
        };
        out.entry(e.distinct_id)
            .or_default()
            .push((e.timestamp, e.uuid));
    }
    // Within a person: by time, then by ingest order (uuid grows with it).
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn append_all(s: &Store) {
    let all: Vec<Record> = (0..EVENTS).map(event).collect();
    for batch in all.chunks(1000) {
        s.append(batch).unwrap();
    }
}

#[test]
fn chunked_seals_keep_every_event_in_order_in_memory() {
    let s = Store::in_memory();
    append_all(&s);
    assert_eq!(contents(&s), expected());
}

#[test]
fn background_flushes_of_chunks_keep_every_event_in_order_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        flush_threshold: 100_000,
        fsync: false,
        background_compaction: true,
        ..Default::default()
    };
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    append_all(&s);
    // The flush happens in the background: wait for its segment.
    let t = Instant::now();
    while s.stats().unwrap().unflushed_events >= 100_000 {
        assert!(t.elapsed() < Duration::from_secs(60), "no background flush");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = s.stats().unwrap();
    assert!(
        stats.events - stats.unflushed_events >= 100_000,
        "{stats:?}"
    );
    assert_eq!(contents(&s), expected());
    s.close().unwrap();
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(contents(&s), expected());
}
