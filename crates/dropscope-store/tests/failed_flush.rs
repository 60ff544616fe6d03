//! A flush that fails after its cut gives the cut back: the next flush
//! writes its events and their identity effects (new distinct ids go to the
//! meta log), and a reopen sees everything. The failure is made real on the
//! file system: a directory stands where the next WAL generation goes (on a
//! full disk, creating it fails with ENOSPC the same way).

use std::collections::BTreeMap;

use dropscope_core::event::Event;
use dropscope_store::{EventColumns, Record, Store, StoreOptions};

fn ev(n: u64, did: &str) -> Record {
    Record::Event(Event {
        uuid: n as u128,
        event: "e".into(),
        distinct_id: did.into(),
        timestamp: 1_700_000_000_000 + n as i64,
        properties: Default::default(),
    })
}

/// distinct id -> number of events, over every person of the store, and
/// the number of persons.
fn view(s: &Store) -> (BTreeMap<String, usize>, usize) {
    let snap = s.snapshot().unwrap();
    let mut out = BTreeMap::new();
    let mut scratch = EventColumns::new();
    for i in 0..snap.actor_count() {
        let v = snap.events_of(i, &mut scratch);
        let d = snap.dicts();
        for row in 0..v.len() {
            *out.entry(d.distinct_ids.resolve(v.did[row]).to_string())
                .or_default() += 1;
        }
    }
    (out, snap.actor_count())
}

#[test]
fn a_flush_that_cannot_start_the_next_wal_generation_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        flush_threshold: usize::MAX,
        fsync: false,
        background_compaction: false,
        ..Default::default()
    };
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    s.append(&[ev(1, "a"), ev(2, "b")]).unwrap();
    s.flush().unwrap();
    // New distinct ids: their identity effects wait in memory for the meta
    // log of the next flush.
    s.append(&[ev(3, "c"), ev(4, "d")]).unwrap();
    let gen = s.stats().unwrap().wal.unwrap().generation;
    let blocker = dir.path().join(format!("wal-{:016x}.log", gen + 1));
    std::fs::create_dir(&blocker).unwrap();
    let err = s.flush().unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("wal-{:016x}.log", gen + 1)),
        "{err}"
    );
    assert_eq!(
        s.stats().unwrap().unflushed_events,
        2,
        "the cut is given back"
    );
    std::fs::remove_dir(&blocker).unwrap();
    s.append(&[ev(5, "e")]).unwrap();
    s.flush().unwrap();
    let want: BTreeMap<String, usize> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|d| (d.to_string(), 1))
        .collect();
    assert_eq!(view(&s), (want.clone(), 5));
    drop(s);
    // Only the segments and the meta log are left (the WAL generations the
    // flush covered are gone): they must hold everything.
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.open_report().unwrap().wal_records_replayed, 0);
    assert_eq!(view(&s), (want, 5));
}
