//! Append throughput with group commit, bytes per event on disk, open time.
//!
//! ```text
//! cargo run --release -p dropscope-store --example append_bench -- [DIR] [EVENTS_PER_THREAD] [THREADS...]
//! ```
//!
//! Each thread appends one event per `append` call (the worst case for a
//! WAL: every call waits for an fsync, shared with whoever else is waiting).

use std::path::PathBuf;
use std::time::Instant;

use dropscope_core::event::Event;
use dropscope_store::{Record, Store, StoreOptions};
use serde_json::{json, Map};

fn event(t: u64, n: u64) -> Record {
    let mut props = Map::new();
    props.insert(
        "$browser".into(),
        json!(["Chrome", "Firefox", "Safari"][(n % 3) as usize]),
    );
    props.insert(
        "$current_url".into(),
        json!(format!("https://example.com/p/{}", n % 50)),
    );
    props.insert(
        "$os".into(),
        json!(["Mac OS X", "Windows", "Linux"][(n % 3) as usize]),
    );
    props.insert("amount".into(), json!((n % 1000) as f64 / 10.0));
    props.insert("step".into(), json!(n % 5));
    Record::Event(Event {
        uuid: ((t as u128) << 64) | n as u128,
        event: ["$pageview", "signup", "checkout", "purchase"][(n % 4) as usize].into(),
        distinct_id: format!("user-{}", (t * 1_000_003 + n) % 20_000),
        timestamp: 1_700_000_000_000 + (n as i64) * 1_000,
        properties: props,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or("/tmp/dropscope-bench".into()),
    );
    let per_thread: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let threads: Vec<u64> = if args.len() > 3 {
        args[3..].iter().map(|s| s.parse().unwrap()).collect()
    } else {
        vec![1, 4, 16, 64]
    };
    for &n in &threads {
        let dir = base.join(format!("t{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, StoreOptions::default()).unwrap();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..n {
                let store = &store;
                s.spawn(move || {
                    for i in 0..per_thread {
                        store.append(&[event(t, i)]).unwrap();
                    }
                });
            }
        });
        let dt = t0.elapsed();
        let st = store.stats().unwrap();
        let wal = st.wal.unwrap();
        let total = n * per_thread;
        println!(
            "threads {n:3}: {total} appends in {dt:.2?} = {:.0} events/s, {} fsyncs ({:.1} appends/fsync), wal {:.0} bytes/event",
            total as f64 / dt.as_secs_f64(),
            wal.syncs,
            wal.appends as f64 / wal.syncs.max(1) as f64,
            wal.bytes as f64 / total as f64
        );
        drop(store);
    }

    // Bytes per event on disk and open time, with a bigger store.
    let dir = base.join("size");
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    let total = 1_000_000u64;
    let t0 = Instant::now();
    for chunk in 0..(total / 10_000) {
        let recs: Vec<Record> = (0..10_000)
            .map(|i| event(chunk % 8, chunk * 10_000 + i))
            .collect();
        store.append(&recs).unwrap();
    }
    println!(
        "bulk append of {total} events (batches of 10k): {:.2?}",
        t0.elapsed()
    );
    let st = store.stats().unwrap();
    println!(
        "before flush: wal ~{} bytes = {:.1} bytes/event",
        st.wal.unwrap().bytes,
        st.wal.unwrap().bytes as f64 / total as f64
    );
    let t1 = Instant::now();
    store.flush().unwrap();
    println!("flush: {:.2?}", t1.elapsed());
    let st = store.stats().unwrap();
    println!(
        "segments: {} bytes = {:.1} bytes/event; dir total {} bytes; memory ~{} bytes = {:.1} bytes/event",
        st.segment_bytes,
        st.segment_bytes as f64 / total as f64,
        st.bytes_on_disk,
        st.bytes_in_memory,
        st.bytes_in_memory as f64 / total as f64
    );
    drop(store);
    let t2 = Instant::now();
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    println!(
        "open (1 segment, {} events): {:.2?}",
        store.open_report().unwrap().events_loaded,
        t2.elapsed()
    );
    let t3 = Instant::now();
    store.compact().unwrap();
    println!("compact: {:.2?}", t3.elapsed());
    drop(store);
    let t4 = Instant::now();
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    println!(
        "open (compacted, {} segments): {:.2?}",
        store.open_report().unwrap().segments_loaded,
        t4.elapsed()
    );
    let _ = std::fs::remove_dir_all(&base);
}
