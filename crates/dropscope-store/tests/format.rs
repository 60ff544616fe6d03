//! The segment format and the dictionary log across versions and damage:
//! a store whose segments are version 1 (own dictionaries, read into
//! memory) opens with the same events, deduplicates against them, and is
//! rewritten as version 2 (global ids, mapped) by compaction; a damaged
//! committed `dicts.log` fails `open` naming the file, while a tail past
//! the manifest's `dict_len` (a flush that crashed before its switch) is
//! ignored and overwritten.

mod common;

use std::path::{Path, PathBuf};

use common::opts;
use dropscope_core::event::Event;
use dropscope_store::dictlog::replay_dicts;
use dropscope_store::meta::{replay_meta, Manifest};
use dropscope_store::segment::{encode_segment_v1, open_segment, Opened};
use dropscope_store::state::State;
use dropscope_store::{Record, Store, StoreError};
use serde_json::json;

fn ev(u: u128) -> Record {
    let mut props = serde_json::Map::new();
    props.insert("i".into(), json!(u as u64 % 7));
    props.insert(format!("k{}", u % 5), json!(format!("value-{u}")));
    Record::Event(Event {
        uuid: u,
        event: format!("e{}", u % 4),
        distinct_id: format!("d{}", u % 9),
        timestamp: 1000 + (u as i64 * 7919) % 500,
        properties: props,
    })
}

/// One event: uuid, name, distinct id, ts, properties as strings.
type Row = (u128, String, String, i64, Vec<(String, String)>);

/// Every event, sorted.
fn events(store: &Store) -> Vec<Row> {
    let snap = store.snapshot().unwrap();
    let d = snap.dicts();
    let mut out = Vec::new();
    let mut scratch = Default::default();
    for a in 0..snap.actor_count() {
        let v = snap.events_of(a, &mut scratch);
        for i in 0..v.len() {
            let mut props: Vec<(String, String)> = v
                .props(i)
                .map(|(k, x)| {
                    (
                        d.keys.resolve(k).to_string(),
                        d.values.resolve(x).to_string(),
                    )
                })
                .collect();
            props.sort();
            out.push((
                v.uuid[i],
                d.events.resolve(v.event[i]).to_string(),
                d.distinct_ids.resolve(v.did[i]).to_string(),
                v.ts[i],
                props,
            ));
        }
    }
    out.sort();
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dss"))
        .collect();
    v.sort();
    v
}

fn version(seg: &Path) -> u32 {
    let b = std::fs::read(seg).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

/// Rewrites every segment of a closed store as version 1 and removes the
/// dictionary log, as a store written before it would be.
fn downgrade(dir: &Path) {
    let mut m = Manifest::load(dir).unwrap().unwrap();
    let mut st = State::new();
    replay_dicts(
        dir,
        m.dict_len,
        std::sync::Arc::get_mut(&mut st.dicts).unwrap(),
    )
    .unwrap();
    replay_meta(dir, m.meta_len, |r| st.apply_meta(&r)).unwrap();
    let mut creator = vec![u32::MAX; st.identity.person_ids()];
    for did in 0..st.dicts.distinct_ids.len() as u32 {
        if let Some(p) = st.identity.original_person(did) {
            creator[p as usize] = did;
        }
    }
    for seg in segments(dir) {
        let Opened::Mapped(ms) = open_segment(&seg, &st.dicts, &st.identity).unwrap() else {
            panic!("written as version 2");
        };
        let img = encode_segment_v1(&ms.run, &st.dicts, |p| creator[p as usize]);
        drop(ms);
        std::fs::write(&seg, img).unwrap();
        assert_eq!(version(&seg), 1);
    }
    std::fs::remove_file(dir.join("dicts.log")).unwrap();
    m.dict_len = 0;
    m.save(dir, false).unwrap();
}

#[test]
fn version_1_segments_are_read_deduplicated_against_and_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    let first: Vec<Record> = (1..=300).map(ev).collect();
    store.append(&first[..150]).unwrap();
    store.flush().unwrap();
    store.append(&first[150..]).unwrap();
    store.flush().unwrap();
    let want = events(&store);
    store.close().unwrap();
    downgrade(dir);

    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(events(&store), want, "version 1 segments read back");
    // Every uuid is known: re-sending them stores nothing.
    let stats = store.append(&first).unwrap();
    assert_eq!((stats.stored, stats.duplicates), (0, 300));
    let more: Vec<Record> = (301..=400).map(ev).collect();
    store.append(&more).unwrap();
    store.flush().unwrap();
    let want = events(&store);
    assert_eq!(want.len(), 400);
    store.compact().unwrap();
    assert!(segments(dir).iter().all(|s| version(s) == 2));
    assert_eq!(events(&store), want, "after compaction");
    store.close().unwrap();

    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(events(&store), want, "reopened from version 2 segments");
    let stats = store.append(&more).unwrap();
    assert_eq!((stats.stored, stats.duplicates), (0, 100));
}

#[test]
fn dictionary_log_damage_fails_open_and_an_uncommitted_tail_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    store
        .append(&(1..=100).map(ev).collect::<Vec<_>>())
        .unwrap();
    store.flush().unwrap();
    let want = events(&store);
    store.close().unwrap();
    let log = dir.join("dicts.log");
    let good = std::fs::read(&log).unwrap();

    // A tail past the committed length is ignored, and overwritten by the
    // next flush.
    let mut longer = good.clone();
    longer.extend_from_slice(b"\x05\x00\x00\x00garbage");
    std::fs::write(&log, &longer).unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(events(&store), want);
    store
        .append(&(101..=150).map(ev).collect::<Vec<_>>())
        .unwrap();
    store.flush().unwrap();
    let want = events(&store);
    store.close().unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(events(&store), want);
    store.close().unwrap();

    // Any flipped byte of the committed log is corruption of that file.
    let good = std::fs::read(&log).unwrap();
    for i in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        std::fs::write(&log, &bad).unwrap();
        match Store::open(dir, opts()) {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, log, "flip at {i}"),
            other => panic!("flip at {i}: expected corruption, got {other:?}"),
        }
    }
    // A log shorter than the manifest says.
    std::fs::write(&log, &good[..good.len() - 1]).unwrap();
    assert!(matches!(
        Store::open(dir, opts()),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::write(&log, &good).unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(events(&store), want);
}

#[test]
fn dictionaries_read_in_place_keep_every_id() {
    // Enough strings that the in-place index grows many times; ids must
    // come back the same after a reopen, and new strings continue them.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    let recs: Vec<Record> = (1..=30_000u128)
        .map(|u| {
            let mut props = serde_json::Map::new();
            props.insert("v".into(), json!(format!("distinct value {u}")));
            props.insert("n".into(), json!(u as u64));
            // Values with an empty body: the empty string and null.
            props.insert("e".into(), json!(""));
            props.insert("z".into(), serde_json::Value::Null);
            Record::Event(Event {
                uuid: u,
                event: format!("e{}", u % 13),
                distinct_id: format!("person-{}", u % 4000),
                timestamp: 1000 + u as i64,
                properties: props,
            })
        })
        .collect();
    store.append(&recs).unwrap();
    store.flush().unwrap();
    let ids = |s: &Store| -> Vec<(u32, String)> {
        let snap = s.snapshot().unwrap();
        let d = snap.dicts();
        let mut out = Vec::new();
        for dict in [&d.events, &d.distinct_ids, &d.keys, &d.values] {
            for (id, st) in dict.iter() {
                assert_eq!(dict.get(st), Some(id), "{st:?}");
                assert_eq!(dict.resolve(id), st);
                // The head kept beside the mapped string is the string's.
                let head = dict.head(id);
                assert_eq!(head.tag(), st.as_bytes()[0], "{st:?}");
                assert_eq!(head.alone(), st.len() == 1, "{st:?}");
                out.push((id, st.to_string()));
            }
        }
        out
    };
    let before = ids(&store);
    assert!(before.len() > 60_000);
    let want = events(&store);
    store.close().unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(ids(&store), before);
    assert_eq!(events(&store), want);
    // A new string gets the next id; a known one its old id.
    let snap = store.snapshot().unwrap();
    let next = snap.dicts().values.len() as u32;
    assert_eq!(snap.dicts().values.intern("sa brand new value"), next);
    assert_eq!(
        snap.dicts().values.get("sdistinct value 7"),
        before
            .iter()
            .find(|(_, s)| s == "sdistinct value 7")
            .map(|(id, _)| *id)
    );
}

#[test]
fn opening_without_appending_leaves_no_empty_logs_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    store.append(&(1..=20).map(ev).collect::<Vec<_>>()).unwrap();
    let want = events(&store);
    store.close().unwrap();
    for _ in 0..5 {
        let store = Store::open(dir, opts()).unwrap();
        assert_eq!(events(&store), want);
        store.close().unwrap();
    }
    let wals = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("wal-")
        })
        .count();
    // The generation holding the 20 events, and the one the last open made.
    assert!(wals <= 2, "{wals} WAL files after 5 opens");
}
