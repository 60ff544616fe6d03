//! Damaged files: a torn or corrupt WAL is truncated and reported; a
//! damaged segment (or manifest) makes `open` fail naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::opts;
use dropscope_core::event::Event;
use dropscope_store::{Record, Store, StoreError};
use serde_json::json;

fn ev(u: u128) -> Record {
    let mut props = serde_json::Map::new();
    props.insert("i".into(), json!(u as u64));
    props.insert("s".into(), json!(format!("value-{u}")));
    Record::Event(Event {
        uuid: u,
        event: "e".into(),
        distinct_id: format!("d{}", u % 3),
        timestamp: 1000 + u as i64,
        properties: props,
    })
}

fn uuids(store: &Store) -> Vec<u128> {
    let snap = store.snapshot().unwrap();
    let mut out = Vec::new();
    let mut scratch = Default::default();
    for a in 0..snap.actor_count() {
        out.extend_from_slice(snap.events_of(a, &mut scratch).uuid);
    }
    out.sort_unstable();
    out
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// The WAL file holding records (the largest), and its frame offsets.
fn wal_frames(dir: &Path) -> (PathBuf, Vec<usize>) {
    let wal = files(dir, "wal-")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&wal).unwrap();
    let mut offs = Vec::new();
    let mut pos = 16;
    while pos < bytes.len() {
        offs.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    (wal, offs)
}

fn write_ten(dir: &Path) {
    let store = Store::open(dir, opts()).unwrap();
    for u in 1..=10 {
        store.append(&[ev(u)]).unwrap();
    }
    store.close().unwrap();
}

#[test]
fn torn_wal_tail_is_truncated_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_ten(dir);
    let (wal, offs) = wal_frames(dir);
    assert_eq!(offs.len(), 10);
    let len = std::fs::metadata(&wal).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);

    let store = Store::open(dir, opts()).unwrap();
    let r = store.open_report().unwrap().clone();
    assert_eq!(r.wal_records_replayed, 9);
    assert_eq!(r.truncated_wal_bytes, len - 5 - offs[9] as u64);
    assert_eq!(r.truncated_wal_file.as_deref(), Some(wal.as_path()));
    assert!(r.truncation_reason.unwrap().contains("cut short"));
    assert_eq!(uuids(&store), (1..=9).collect::<Vec<_>>());
    // Writing on and reopening again is clean.
    store.append(&[ev(10)]).unwrap();
    drop(store);
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(store.open_report().unwrap().truncated_wal_bytes, 0);
    assert_eq!(uuids(&store), (1..=10).collect::<Vec<_>>());
}

#[test]
fn corrupt_wal_middle_keeps_records_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_ten(dir);
    let (wal, offs) = wal_frames(dir);
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[offs[4] + 12] ^= 0x01; // inside the payload of the 5th record
    std::fs::write(&wal, &bytes).unwrap();

    let store = Store::open(dir, opts()).unwrap();
    let r = store.open_report().unwrap().clone();
    assert_eq!(r.wal_records_replayed, 4);
    assert_eq!(r.truncated_wal_bytes, (bytes.len() - offs[4]) as u64);
    assert!(r.truncation_reason.unwrap().contains("checksum"));
    assert_eq!(uuids(&store), vec![1, 2, 3, 4]);
}

#[test]
fn corrupt_segment_fails_open_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    for u in 1..=50 {
        store.append(&[ev(u)]).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().segments, 1);
    store.close().unwrap();
    let seg = files(dir, "seg-").pop().unwrap();
    // Reopens fine before the damage.
    drop(Store::open(dir, opts()).unwrap());

    for at in [0.1, 0.5, 0.99] {
        let good = std::fs::read(&seg).unwrap();
        let mut bad = good.clone();
        let i = (bad.len() as f64 * at) as usize;
        bad[i] ^= 0x10;
        std::fs::write(&seg, &bad).unwrap();
        match Store::open(dir, opts()) {
            Err(StoreError::Corrupt { path, reason }) => {
                assert_eq!(path, seg, "{reason}");
            }
            other => panic!("expected corruption error, got {other:?}"),
        }
        std::fs::write(&seg, &good).unwrap();
    }
    // Truncated segment.
    let good = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &good[..good.len() / 2]).unwrap();
    let err = Store::open(dir, opts()).unwrap_err();
    assert!(err.to_string().contains("seg-"), "{err}");
    std::fs::write(&seg, &good).unwrap();
    let store = Store::open(dir, opts()).unwrap();
    assert_eq!(uuids(&store), (1..=50).collect::<Vec<_>>());
}

#[test]
fn corrupt_manifest_fails_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_ten(dir);
    let path = dir.join("MANIFEST");
    let mut b = std::fs::read(&path).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x02;
    std::fs::write(&path, &b).unwrap();
    match Store::open(dir, opts()) {
        Err(StoreError::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected corruption error, got {other:?}"),
    }
}

#[test]
fn second_open_of_same_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path(), opts()).unwrap();
    assert!(matches!(
        Store::open(tmp.path(), opts()),
        Err(StoreError::Locked { .. })
    ));
    drop(a);
    Store::open(tmp.path(), opts()).unwrap();
}
