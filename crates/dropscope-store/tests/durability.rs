//! Crash durability: a child process (this test binary, re-executed with
//! `DROPSCOPE_KILL_CHILD_DIR` set) appends events from several threads and
//! prints each uuid once `append` has returned; the parent SIGKILLs it at a
//! random moment, reopens the store and checks that every acknowledged event
//! is there exactly once. Repeated `DROPSCOPE_KILL_ITERS` times (default 20)
//! on the same directory, so recovery of recovered stores is covered too.
//! Flushes and background compactions run in the child all the time, so
//! kills land in the middle of them as well.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dropscope_core::event::Event;
use dropscope_store::{Record, Store, StoreOptions};
use serde_json::{json, Map, Value};

const CHILD_DIR: &str = "DROPSCOPE_KILL_CHILD_DIR";
const CHILD_ITER: &str = "DROPSCOPE_KILL_CHILD_ITER";

fn uuid(iter: u64, thread: u64, n: u64) -> u128 {
    ((iter as u128) << 64) | ((thread as u128) << 32) | n as u128
}

fn event(uuid: u128, n: u64) -> Event {
    let mut props = Map::new();
    props.insert("n".into(), json!(n));
    props.insert("f".into(), json!(n as f64 / 7.0));
    let mut name = "$pageview".to_string();
    if n.is_multiple_of(13) {
        name = "$identify".into();
        props.insert("$anon_distinct_id".into(), json!(format!("anon{}", n % 71)));
        props.insert("$set".into(), json!({"plan": format!("p{}", n % 3)}));
    }
    Event {
        uuid,
        event: name,
        distinct_id: format!("u{}", (uuid as u64 >> 32) * 1000 + n % 37),
        timestamp: 1_600_000_000_000 + (n as i64 % 1000) * 1000,
        properties: props,
    }
}

/// The child: runs only when re-executed by `kill_and_recover`.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let iter: u64 = std::env::var(CHILD_ITER).unwrap().parse().unwrap();
    let opts = StoreOptions {
        flush_threshold: 400,
        fsync: true,
        background_compaction: true,
        compaction_threshold: 3,
        partitions: 2,
    };
    let store = Store::open(Path::new(&dir), opts).unwrap();
    println!("OPENED");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                let mut n = 0u64;
                loop {
                    let k = 1 + (n % 7);
                    let mut recs = Vec::new();
                    for _ in 0..k {
                        recs.push(Record::Event(event(uuid(iter, t, n), n)));
                        // Re-send what the previous run may have written.
                        if iter > 0 && n.is_multiple_of(3) {
                            recs.push(Record::Event(event(uuid(iter - 1, t, n), n)));
                        }
                        n += 1;
                    }
                    store.append(&recs).unwrap();
                    let mut out = std::io::stdout().lock();
                    for r in &recs {
                        let Record::Event(e) = r else { unreachable!() };
                        writeln!(out, "ACK {:x}", e.uuid).unwrap();
                    }
                    out.flush().unwrap();
                    drop(out);
                    if t == 0 && n % 500 < k {
                        store.flush().unwrap();
                    }
                }
            });
        }
    });
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_and_recover() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let iters: u64 = std::env::var("DROPSCOPE_KILL_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill test seed {seed}");
    let mut rng = Rng(seed);
    let mut acked: HashSet<u128> = HashSet::new();
    let mut truncations = 0;
    for it in 0..iters {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_ITER, it.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<Option<u128>>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "OPENED" {
                    let _ = tx.send(None);
                } else if let Some(h) = line.strip_prefix("ACK ") {
                    let _ = tx.send(Some(u128::from_str_radix(h, 16).unwrap()));
                }
            }
        });
        // Wait until the child writes, then kill it at a random moment.
        let start = Instant::now();
        let mut got_ack = false;
        while !got_ack && start.elapsed() < Duration::from_secs(60) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(u)) => {
                    acked.insert(u);
                    got_ack = true;
                }
                Ok(None) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        assert!(got_ack, "child wrote nothing in iteration {it}");
        std::thread::sleep(Duration::from_millis(rng.next() % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter().flatten());

        let store = Store::open(
            &dir,
            StoreOptions {
                background_compaction: false,
                ..Default::default()
            },
        )
        .unwrap();
        let report = store.open_report().unwrap().clone();
        if report.truncated_wal_bytes > 0 {
            truncations += 1;
        }
        let snap = store.snapshot().unwrap();
        let mut count: HashMap<u128, u32> = HashMap::new();
        let mut scratch = Default::default();
        for a in 0..snap.actor_count() {
            let v = snap.events_of(a, &mut scratch);
            for &u in v.uuid {
                *count.entry(u).or_default() += 1;
            }
        }
        let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            dups.is_empty(),
            "iteration {it}: duplicated events {dups:?}"
        );
        let missing: Vec<_> = acked.iter().filter(|u| !count.contains_key(u)).collect();
        assert!(
            missing.is_empty(),
            "iteration {it}: {} acknowledged events lost, e.g. {:x}; report {report:?}",
            missing.len(),
            missing[0]
        );
        let stats = store.stats().unwrap();
        eprintln!(
            "iteration {it}: {} acked, {} stored, {} segments, report: replayed {} wal records from {} files, truncated {} bytes, {:?}",
            acked.len(),
            count.len(),
            stats.segments,
            report.wal_records_replayed,
            report.wal_files_replayed,
            report.truncated_wal_bytes,
            report.elapsed
        );
        // Identity state survived: the $set person property is readable.
        let plan = snap.dicts().keys.get("plan");
        assert!(plan.is_some() || acked.len() < 13);
        drop(snap);
        drop(store);
    }
    eprintln!("{truncations} of {iters} reopenings truncated a torn WAL tail");
    let _ = Value::Null;
}
