//! Reliability of the server as a process, end to end over HTTP:
//!
//! - `crash_*`: concurrent clients capture batches while the server process
//!   is SIGKILLed at random moments (also while it is still recovering),
//!   many times over; after each restart every acknowledged event is stored
//!   exactly once, nothing is stored twice (clients resend unacknowledged
//!   batches with the same uuids), and the funnel agrees with a model.
//!   `DROPSCOPE_CRASH_ROUNDS` (default 20) sets the number of kills,
//!   `DROPSCOPE_CRASH_SEED` replays a run (the seed is printed).
//! - `disk_full_*`: the data directory on a 16 MiB tmpfs (mounted by the
//!   test; needs root, and fails when it cannot mount): capture until the
//!   disk is full, which must be refused with 507 `disk_full` and never
//!   acknowledged; the server stays up, stored events stay correct, capture
//!   works again once space is freed, and a copy of the directory opens.
//! - `corrupt_*`: a sealed segment with one byte flipped, or truncated: the
//!   server refuses to start and names the file.
//!
//! The server is this test binary re-executed (`serve_child`), running
//! `dropscope_server::run` exactly as `dropscope serve` does, or the same
//! server over a store with a small flush threshold (so that kills land in
//! flushes and compactions too).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Not a test: the server process of the other tests (a no-op unless
/// re-executed by them).
#[test]
fn serve_child() {
    common::serve_child();
}

fn tmp_root() -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// What the clients sent and what was acknowledged, by eid.
#[derive(Default)]
struct Ledger {
    sent: HashMap<String, Ev>,
    acked: HashMap<String, Ev>,
    /// Batches sent again after a failure.
    resent: u64,
    /// Non-200 answers that are not a lost connection (must stay empty).
    unexpected: Vec<String>,
}

/// Builds batches of unique events, mostly over a fixed pool of distinct
/// ids.
struct Gen {
    client: usize,
    n: u64,
    rng: Rng,
    clock: Arc<AtomicI64>,
    dids: Vec<String>,
    /// Share of events from a new distinct id (each one a new person,
    /// hence identity records in the meta log).
    fresh: f64,
    pad: usize,
}

impl Gen {
    fn batch(&mut self, size: usize) -> Vec<Ev> {
        (0..size)
            .map(|_| {
                self.n += 1;
                let ts = self.clock.fetch_add(1, Ordering::Relaxed);
                let u = ((self.client as u128) << 96) | (self.n as u128) | (0xC0DE << 64);
                Ev {
                    eid: format!("c{}-{}", self.client, self.n),
                    uuid: uuid::Uuid::from_u128(u).to_string(),
                    name: STEPS[self.rng.range(0, 3) as usize].to_string(),
                    did: if self.rng.chance(self.fresh) {
                        format!("fresh-{}-{}", self.client, self.n)
                    } else {
                        self.dids[self.rng.range(0, self.dids.len() as u64) as usize].clone()
                    },
                    ts_ms: BASE_MS + ts,
                    pad: self.pad,
                }
            })
            .collect()
    }
}

fn dids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i:03}")).collect()
}

/// Runs one client until `stop`: sends new batches (or resends a failed
/// one), records what a 200 acknowledged. Failed batches are kept in
/// `retry` for the next server.
fn client_loop(
    addr: SocketAddr,
    g: &mut Gen,
    retry: &mut Vec<Vec<Ev>>,
    ledger: &Mutex<Ledger>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let (batch, resend) = match retry.pop() {
            Some(b) => (b, true),
            None => {
                let size = g.rng.range(1, 41) as usize;
                (g.batch(size), false)
            }
        };
        {
            let mut l = ledger.lock().unwrap();
            for e in &batch {
                l.sent.insert(e.eid.clone(), e.clone());
            }
            if resend {
                l.resent += 1;
            }
        }
        match post_json(addr, "/batch/", &batch_body(&batch)) {
            Ok(r) if r.status == 200 => {
                let mut l = ledger.lock().unwrap();
                for e in batch {
                    l.acked.insert(e.eid.clone(), e);
                }
            }
            Ok(r) => {
                ledger
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("{} {}", r.status, r.text()));
                return;
            }
            Err(_) => {
                // The server is gone (killed): not acknowledged. Most
                // batches are sent again to the next server (same uuids).
                if g.rng.chance(0.7) {
                    retry.push(batch);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[test]
fn crash_acknowledged_events_survive_sigkill_exactly_once() {
    let rounds: usize = std::env::var("DROPSCOPE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = seed_from("DROPSCOPE_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir_in(tmp_root()).unwrap();
    let data = dir.path().join("data");
    let pool = dids(30);
    let clock = Arc::new(AtomicI64::new(0));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    const CLIENTS: usize = 4;
    let mut gens: Vec<(Gen, Vec<Vec<Ev>>)> = (0..CLIENTS)
        .map(|c| {
            (
                Gen {
                    client: c,
                    n: 0,
                    rng: Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x1234_5678_9ABC)),
                    clock: clock.clone(),
                    dids: pool.clone(),
                    fresh: 0.01,
                    pad: 0,
                },
                Vec::new(),
            )
        })
        .collect();
    let mode = Mode::SmallFlush(300);
    let test = "serve_child";
    let mut startup_kills = 0;
    for round in 0..rounds {
        // Sometimes kill the server while it is still opening (recovery,
        // WAL truncation, garbage removal).
        if rng.chance(0.2) {
            let s = Server::spawn(&data, mode, test);
            std::thread::sleep(Duration::from_millis(rng.range(0, 60)));
            s.kill();
            startup_kills += 1;
        }
        let server = Server::start(&data, mode, test);
        let addr = server.addr;
        {
            let l = ledger.lock().unwrap();
            match check_store(addr, &l.sent, &l.acked) {
                Ok(n) => println!(
                    "round {round}: {} sent, {} acknowledged, {n} stored",
                    l.sent.len(),
                    l.acked.len()
                ),
                Err(e) => panic!(
                    "after restart {round} (seed {seed}):\n{e}\nserver stderr:\n{}",
                    server.stderr_text()
                ),
            }
        }
        // Load, then SIGKILL at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = gens
            .drain(..)
            .map(|(mut g, mut retry)| {
                let (ledger, stop) = (ledger.clone(), stop.clone());
                std::thread::spawn(move || {
                    client_loop(addr, &mut g, &mut retry, &ledger, &stop);
                    (g, retry)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(20, 700)));
        server.kill();
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        gens = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let l = ledger.lock().unwrap();
        assert!(
            l.unexpected.is_empty(),
            "unexpected answers to capture (seed {seed}): {:?}",
            &l.unexpected[..l.unexpected.len().min(5)]
        );
    }
    // A last restart and check.
    let server = Server::start(&data, mode, test);
    let l = ledger.lock().unwrap();
    let stored = check_store(server.addr, &l.sent, &l.acked)
        .unwrap_or_else(|e| panic!("after the last restart (seed {seed}):\n{e}"));
    println!(
        "{rounds} kills ({startup_kills} more during startup): {} events sent, {} acknowledged, \
         {stored} stored, {} batches resent",
        l.sent.len(),
        l.acked.len(),
        l.resent
    );
    // The test only means something if the clients got work done.
    assert!(
        l.acked.len() >= rounds * 20,
        "only {} events acknowledged in {rounds} rounds",
        l.acked.len()
    );
    server.kill();
}

// ---------------------------------------------------------------- disk full

/// A tmpfs of `size` mounted at a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tmp_root().join(format!("tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the disk-full test needs a small file system: `mount -t tmpfs -o size={size} tmpfs {}` \
             failed (run the tests as root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Captures from two threads until `target` refusals; returns the
/// refusals' (status, body).
fn capture_until_refused(
    addr: SocketAddr,
    gens: &mut [Gen],
    ledger: &Mutex<Ledger>,
    target: usize,
) -> Vec<(u16, serde_json::Value)> {
    let refusals = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for g in gens.iter_mut() {
            let refusals = &refusals;
            s.spawn(move || loop {
                if refusals.lock().unwrap().len() >= target {
                    return;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(300),
                    "the disk did not fill in 5 minutes"
                );
                let batch = g.batch(100);
                {
                    let mut l = ledger.lock().unwrap();
                    for e in &batch {
                        l.sent.insert(e.eid.clone(), e.clone());
                    }
                }
                let r = post_json(addr, "/batch/", &batch_body(&batch))
                    .unwrap_or_else(|e| panic!("capture on a full disk: no answer ({e})"));
                if r.status == 200 {
                    let mut l = ledger.lock().unwrap();
                    for e in batch {
                        l.acked.insert(e.eid.clone(), e);
                    }
                } else {
                    refusals.lock().unwrap().push((r.status, r.json()));
                }
            });
        }
    });
    refusals.into_inner().unwrap()
}

#[test]
fn disk_full_capture_is_refused_and_nothing_acknowledged_is_lost() {
    let fs = Tmpfs::mount("16m");
    let data = fs.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Ballast, deleted later to free space.
    let ballast = fs.dir.join("ballast");
    std::fs::write(&ballast, vec![7u8; 3 << 20]).unwrap();
    let pool = dids(20);
    let clock = Arc::new(AtomicI64::new(0));
    let seed = 42;
    let mut gens: Vec<Gen> = (0..2)
        .map(|c| Gen {
            client: c,
            n: 0,
            rng: Rng::new(seed + c as u64),
            clock: clock.clone(),
            dids: pool.clone(),
            fresh: 0.03,
            pad: 200,
        })
        .collect();
    let ledger = Mutex::new(Ledger::default());
    let mut server = Server::start(&data, Mode::SmallFlush(4000), "serve_child");
    let addr = server.addr;

    // 1. Fill the disk.
    let refusals = capture_until_refused(addr, &mut gens, &ledger, 20);
    for (status, body) in &refusals {
        assert_eq!(*status, 507, "refusal on a full disk: {body}");
        assert_eq!(body["code"], "disk_full", "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("disk full") && detail.contains("wal-"),
            "the message names the full disk and the file: {detail}"
        );
    }
    assert!(server.alive(), "the server died on a full disk");
    let (sent, acked) = {
        let l = ledger.lock().unwrap();
        (l.sent.clone(), l.acked.clone())
    };
    println!(
        "disk full after {} acknowledged events ({} sent); refused with {} {}",
        acked.len(),
        sent.len(),
        refusals[0].0,
        refusals[0].1
    );
    assert!(acked.len() > 10_000, "the disk filled too early");
    // Stored events stay queryable and correct, and refused ones are not
    // there (their group commit was cut back).
    let stored =
        check_store(addr, &sent, &acked).unwrap_or_else(|e| panic!("on a full disk:\n{e}"));
    assert_eq!(stored, acked.len(), "refused events were stored");
    // Still full: still refused, still up. A refused group commit is cut
    // back, and it may have held several clients' batches, so the bytes it
    // had taken are free again and one lone batch may still fit: a few may
    // be acknowledged before the refusal, never an unbounded number.
    let mut refused = None;
    for _ in 0..50 {
        let more = gens[0].batch(100);
        let r = post_json(addr, "/batch/", &batch_body(&more)).unwrap();
        let mut l = ledger.lock().unwrap();
        for e in more {
            l.sent.insert(e.eid.clone(), e.clone());
            if r.status == 200 {
                l.acked.insert(e.eid.clone(), e);
            }
        }
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a full disk kept acknowledging 50 more batches");
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(server.alive(), "the server died on a full disk");

    // 2. Free space: capture works again, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    for _ in 0..5 {
        let batch = gens[1].batch(100);
        let r = post_json(addr, "/batch/", &batch_body(&batch)).unwrap();
        assert_eq!(r.status, 200, "after freeing space: {}", r.text());
        let mut l = ledger.lock().unwrap();
        for e in batch {
            l.sent.insert(e.eid.clone(), e.clone());
            l.acked.insert(e.eid.clone(), e);
        }
    }
    {
        let l = ledger.lock().unwrap();
        check_store(addr, &l.sent, &l.acked)
            .unwrap_or_else(|e| panic!("after freeing space:\n{e}"));
    }

    // 3. Fill it again, SIGKILL, and open a copy on a roomy disk.
    let refusals = capture_until_refused(addr, &mut gens, &ledger, 5);
    assert!(refusals.iter().all(|(s, _)| *s == 507), "{refusals:?}");
    assert!(server.alive(), "the server died on a full disk");
    server.kill();
    let copy = tempfile::tempdir_in(tmp_root()).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let (sent, acked) = {
        let l = ledger.lock().unwrap();
        (l.sent.clone(), l.acked.clone())
    };
    let server = Server::start(&copy.path().join("data"), Mode::Serve, "serve_child");
    check_store(server.addr, &sent, &acked)
        .unwrap_or_else(|e| panic!("the copy of a full data directory:\n{e}"));
    server.kill();

    // 4. Restarting on the full disk itself either works or says the disk
    //    is full; after freeing space it works and nothing is lost.
    match Server::try_start(&data, Mode::Serve, "serve_child") {
        Ok(s) => {
            println!("restart on the full disk: serves");
            check_store(s.addr, &sent, &acked)
                .unwrap_or_else(|e| panic!("restart on the full disk:\n{e}"));
            s.kill();
        }
        Err(e) => {
            println!("restart on the full disk: {}", e.stderr.trim());
            assert!(
                e.stderr.contains("disk full") || e.stderr.contains("No space left on device"),
                "a start on a full disk fails with a clear message: {}",
                e.stderr
            )
        }
    }
    // Free space the way an operator would: grow the file system.
    let ok = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&fs.dir)
        .status()
        .unwrap();
    assert!(ok.success(), "remount the tmpfs bigger");
    let server = Server::start(&data, Mode::Serve, "serve_child");
    check_store(server.addr, &sent, &acked)
        .unwrap_or_else(|e| panic!("after growing the file system:\n{e}"));
    server.kill();
}

// ------------------------------------------------------------- corruption

/// A data directory with sealed segments, written by a server.
fn data_with_segments(root: &Path) -> (PathBuf, HashMap<String, Ev>) {
    let data = root.join("data");
    let pool = dids(10);
    let mut g = Gen {
        client: 0,
        n: 0,
        rng: Rng::new(7),
        clock: Arc::new(AtomicI64::new(0)),
        dids: pool.clone(),
        fresh: 0.1,
        pad: 0,
    };
    let server = Server::start(&data, Mode::SmallFlush(100), "serve_child");
    let mut acked = HashMap::new();
    for _ in 0..7 {
        let batch = g.batch(50);
        let r = post_json(server.addr, "/batch/", &batch_body(&batch)).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        acked.extend(batch.into_iter().map(|e| (e.eid.clone(), e)));
    }
    check_store(server.addr, &acked, &acked).unwrap();
    server.kill();
    (data, acked)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dss"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The server on a damaged copy must not answer: it fails to start naming
/// `file`, or (if it starts) every query fails naming it.
fn assert_refused(dir: &Path, file: &str, what: &str) {
    match Server::try_start(dir, Mode::Serve, "serve_child") {
        Err(e) => {
            println!("{what}: {}", e.stderr.trim());
            assert_eq!(
                e.status.and_then(|s| s.code()),
                Some(3),
                "{what}: the server should exit with an error: {}",
                e.stderr
            );
            assert!(
                e.stderr.contains(file) && e.stderr.contains("corrupt"),
                "{what}: the startup error should name {file} as corrupt: {}",
                e.stderr
            );
        }
        Ok(s) => {
            let r = query(s.addr, &funnel_query()).unwrap();
            assert!(
                r.status >= 500 && r.text().contains(file),
                "{what}: the server started and answered {} {}",
                r.status,
                r.text()
            );
            s.kill();
        }
    }
}

#[test]
fn corrupt_segment_is_reported_by_name_never_served() {
    let root = tempfile::tempdir_in(tmp_root()).unwrap();
    let (data, acked) = data_with_segments(root.path());
    let segs = segments(&data);
    assert!(segs.len() >= 2, "expected sealed segments, got {segs:?}");
    // The intact directory serves the right answer through `run`.
    let s = Server::start(&data, Mode::Serve, "serve_child");
    check_store(s.addr, &acked, &acked).unwrap();
    s.kill();

    let mut rng = Rng::new(11);
    let seg = &segs[segs.len() / 2];
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let len = std::fs::metadata(seg).unwrap().len();
    // One flipped byte: first, last, middle, and a few random offsets.
    let mut offsets = vec![0, len - 1, len / 2];
    offsets.extend((0..5).map(|_| rng.range(0, len)));
    for (i, off) in offsets.into_iter().enumerate() {
        let copy = root.path().join(format!("flip-{i}"));
        copy_dir(&data, &copy);
        let p = copy.join(&name);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[off as usize] ^= 0x20;
        std::fs::write(&p, bytes).unwrap();
        assert_refused(&copy, &name, &format!("byte {off} of {len} flipped"));
    }
    // Truncated: by one byte, to half, to nothing.
    for (i, keep) in [len - 1, len / 2, 0].into_iter().enumerate() {
        let copy = root.path().join(format!("cut-{i}"));
        copy_dir(&data, &copy);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.join(&name))
            .unwrap();
        f.set_len(keep).unwrap();
        drop(f);
        assert_refused(&copy, &name, &format!("truncated to {keep} of {len} bytes"));
    }
    // Missing altogether.
    let copy = root.path().join("missing");
    copy_dir(&data, &copy);
    std::fs::remove_file(copy.join(&name)).unwrap();
    assert_refused(&copy, &name, "deleted");
}
