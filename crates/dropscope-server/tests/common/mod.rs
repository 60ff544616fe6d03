//! Shared by the reliability tests: a server in its own process (this test
//! binary re-executed, see [`serve_child`]), a plain blocking HTTP client,
//! a seeded RNG, and the events the tests send and read back.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const PT: &str = "phc_reliability_token";
pub const SK: &str = "dss_reliability_secret";

const CHILD_DIR: &str = "DROPSCOPE_TEST_SERVE_DIR";
const CHILD_ADDR: &str = "DROPSCOPE_TEST_SERVE_ADDR";
const CHILD_FLUSH: &str = "DROPSCOPE_TEST_SERVE_FLUSH";

/// How the child server opens its store.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Exactly what `dropscope serve --data DIR` runs
    /// (`dropscope_server::run` with default store options).
    Serve,
    /// The same server over a store that flushes every `flush` events and
    /// compacts past 3 segments, so that kills land in flushes and
    /// compactions too.
    SmallFlush(usize),
}

/// The body of the child process: does nothing unless the parent set
/// [`CHILD_DIR`]; then serves until killed. Each test file calls it from a
/// `#[test] fn serve_child()`.
pub fn serve_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let addr: SocketAddr = std::env::var(CHILD_ADDR)
        .expect("child address")
        .parse()
        .expect("child address parses");
    let flush: Option<usize> = std::env::var(CHILD_FLUSH).ok().map(|f| f.parse().unwrap());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let res: anyhow::Result<()> = rt.block_on(async move {
        match flush {
            None => {
                let cfg = dropscope_server::ServeConfig {
                    data: Some(PathBuf::from(&dir)),
                    addr: Some(addr),
                    project_token: Some(PT.into()),
                    secret_key: Some(SK.into()),
                    ..Default::default()
                };
                dropscope_server::run(cfg, std::future::pending()).await
            }
            Some(flush) => {
                let opts = dropscope_store::StoreOptions {
                    flush_threshold: flush,
                    compaction_threshold: 3,
                    partitions: 2,
                    ..Default::default()
                };
                let d = PathBuf::from(&dir);
                let store =
                    tokio::task::spawn_blocking(move || dropscope_store::Store::open(&d, opts))
                        .await?
                        .map_err(anyhow::Error::from)
                        .map_err(|e| e.context("opening the store"))?;
                let mut s = dropscope_server::Settings::for_tests(PT, SK);
                s.addr = addr;
                s.data = Some(PathBuf::from(&dir));
                dropscope_server::serve(s, Arc::new(store), std::future::pending()).await
            }
        }
    });
    if let Err(e) = res {
        eprintln!("SERVER ERROR: {e:#}");
        std::process::exit(3);
    }
    std::process::exit(0);
}

/// A free loopback port (bound, read, released).
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// A server process on a data directory.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: PathBuf,
}

/// Why a server did not come up.
#[derive(Debug)]
pub struct StartError {
    pub status: Option<std::process::ExitStatus>,
    pub stderr: String,
}

impl Server {
    /// Starts a server on `dir` and waits until `/healthz` answers; if the
    /// process exits first, returns its exit status and stderr.
    pub fn try_start(dir: &Path, mode: Mode, test: &str) -> Result<Server, StartError> {
        let s = Server::spawn(dir, mode, test);
        s.wait_ready(Duration::from_secs(120))
    }

    /// [`Server::try_start`], panicking if the server does not come up.
    pub fn start(dir: &Path, mode: Mode, test: &str) -> Server {
        match Server::try_start(dir, mode, test) {
            Ok(s) => s,
            Err(e) => panic!(
                "the server on {} did not start ({:?}):\n{}",
                dir.display(),
                e.status,
                e.stderr
            ),
        }
    }

    /// Spawns the server process without waiting.
    pub fn spawn(dir: &Path, mode: Mode, test: &str) -> Server {
        let addr = free_addr();
        // Not beside `dir`: on a full disk (the disk-full test) the server's
        // own message would be lost with it.
        let stderr = std::env::temp_dir().join(format!(
            "dropscope-{test}-{}-{}.stderr",
            std::process::id(),
            addr.port()
        ));
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .env(CHILD_ADDR, addr.to_string())
            .env_remove(CHILD_FLUSH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        if let Mode::SmallFlush(n) = mode {
            cmd.env(CHILD_FLUSH, n.to_string());
        }
        let child = cmd.spawn().expect("spawn the server process");
        Server {
            child,
            addr,
            stderr,
        }
    }

    /// Waits until `/healthz` answers 200, or the process exits.
    pub fn wait_ready(mut self, limit: Duration) -> Result<Server, StartError> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(StartError {
                    status: Some(status),
                    stderr: self.stderr_text(),
                });
            }
            if let Ok(r) = get(self.addr, "/healthz", None) {
                if r.status == 200 {
                    return Ok(self);
                }
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(StartError {
                    status: None,
                    stderr: format!("not ready after {limit:?}\n{}", self.stderr_text()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with
/// timeouts. An `Err` means no complete response was read.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut len = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let nl = rest[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("chunk size cut"))?;
            let size = std::str::from_utf8(&rest[pos..pos + nl])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .ok_or_else(|| bad("bad chunk size"))?;
            pos += nl + 2;
            if size == 0 {
                break;
            }
            if rest.len() < pos + size {
                return Err(bad("chunk cut"));
            }
            out.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
        out
    } else {
        match len {
            Some(n) if rest.len() >= n => rest[..n].to_vec(),
            Some(_) => return Err(bad("body cut short")),
            None => rest.to_vec(),
        }
    };
    Ok(Resp { status, body })
}

pub fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> std::io::Result<Resp> {
    let a = auth.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = a.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(addr, "GET", path, &headers, b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> std::io::Result<Resp> {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

pub fn query(addr: SocketAddr, q: &Value) -> std::io::Result<Resp> {
    let auth = format!("Bearer {SK}");
    http(
        addr,
        "POST",
        "/api/query",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        json!({ "query": q }).to_string().as_bytes(),
    )
}

/// SplitMix64: small, seeded, good enough to pick kill points.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// The seed from `var` or the clock; printed so a failure can be replayed.
pub fn seed_from(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (replay with {var}={seed})");
    seed
}

/// Funnel steps of the model.
pub const STEPS: [&str; 3] = ["a", "b", "c"];
/// 2024-03-01T00:00:00Z in ms.
pub const BASE_MS: i64 = 1_709_251_200_000;

/// One event a test sent: `eid` (a property) and `uuid` are unique.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub eid: String,
    pub uuid: String,
    pub name: String,
    pub did: String,
    pub ts_ms: i64,
    /// Extra bytes in a `pad` property, unique per event (fills a disk
    /// faster: segments cannot share them through their dictionaries).
    pub pad: usize,
}

pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("timestamp")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl Ev {
    pub fn json(&self) -> Value {
        let mut props = json!({"eid": self.eid});
        if self.pad > 0 {
            let mut pad = String::with_capacity(self.pad + self.eid.len());
            while pad.len() < self.pad {
                pad.push_str(&self.eid);
                pad.push('.');
            }
            props["pad"] = json!(pad);
        }
        json!({
            "event": self.name,
            "distinct_id": self.did,
            "timestamp": rfc3339_ms(self.ts_ms),
            "uuid": self.uuid,
            "properties": props,
        })
    }
}

/// The `/batch/` body of `evs`.
pub fn batch_body(evs: &[Ev]) -> Value {
    json!({"api_key": PT, "batch": evs.iter().map(Ev::json).collect::<Vec<_>>()})
}

/// An event the server holds, as its person timeline shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub name: String,
    pub did: String,
    pub timestamp: String,
}

/// Every stored event of the distinct ids `dids`, by `eid`, with how many
/// times each `eid` is stored (read through `/api/person_events`, paged).
pub fn stored_events(
    addr: SocketAddr,
    dids: &[String],
) -> Result<HashMap<String, (Stored, usize)>, String> {
    let mut out: HashMap<String, (Stored, usize)> = HashMap::new();
    for did in dids {
        let mut offset = 0u64;
        loop {
            let path = format!("/api/person_events?id={did}&limit=10000&offset={offset}");
            let r = get(addr, &path, Some(SK)).map_err(|e| format!("GET {path}: {e}"))?;
            if r.status == 404 && offset == 0 {
                break;
            }
            if r.status != 200 {
                return Err(format!("GET {path}: {} {}", r.status, r.text()));
            }
            let j = r.json();
            let evs = j["events"].as_array().cloned().unwrap_or_default();
            for e in &evs {
                let eid = e["properties"]["eid"]
                    .as_str()
                    .ok_or_else(|| format!("an event of {did} without eid: {e}"))?
                    .to_string();
                let s = Stored {
                    name: e["event"].as_str().unwrap_or_default().to_string(),
                    did: e["distinct_id"].as_str().unwrap_or_default().to_string(),
                    timestamp: e["timestamp"].as_str().unwrap_or_default().to_string(),
                };
                out.entry(eid).or_insert((s, 0)).1 += 1;
            }
            offset += evs.len() as u64;
            let total = j["total"].as_u64().unwrap_or(0);
            if evs.is_empty() || offset >= total {
                break;
            }
        }
    }
    Ok(out)
}

/// The funnel query the tests compare with [`model_funnel`].
pub fn funnel_query() -> Value {
    json!({
        "kind": "funnel",
        "steps": STEPS.iter().map(|s| json!({"event": s})).collect::<Vec<_>>(),
        "window": {"value": 60, "unit": "day"},
        "date_from": "2024-02-01", "date_to": "2024-05-31"
    })
}

/// Step counts of the funnel a → b → c (ordered, unique persons, a window
/// far wider than the data, all timestamps distinct) over `events`.
pub fn model_funnel<'a>(events: impl IntoIterator<Item = &'a Ev>) -> Vec<u64> {
    let mut by_did: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for e in events {
        by_did
            .entry(e.did.as_str())
            .or_default()
            .push((e.ts_ms, e.name.as_str()));
    }
    let mut counts = vec![0u64; STEPS.len()];
    for evs in by_did.values_mut() {
        evs.sort();
        let mut k = 0;
        for (_, name) in evs.iter() {
            if k < STEPS.len() && *name == STEPS[k] {
                k += 1;
            }
        }
        for c in counts.iter_mut().take(k) {
            *c += 1;
        }
    }
    counts
}

/// The step counts of a funnel response.
pub fn funnel_counts(r: &Resp) -> Result<Vec<u64>, String> {
    if r.status != 200 {
        return Err(format!("funnel query: {} {}", r.status, r.text()));
    }
    Ok(r.json()["steps"]
        .as_array()
        .ok_or_else(|| format!("no steps in {}", r.text()))?
        .iter()
        .map(|s| s["count"].as_u64().unwrap_or(u64::MAX))
        .collect())
}

/// Checks the server's events against what was sent: every acknowledged
/// event stored exactly once, nothing stored twice, nothing stored that
/// was never sent, each as it was sent; and the funnel agrees with the
/// model over the stored events. Reads the timeline of every distinct id
/// that was sent. Returns how many events are stored.
pub fn check_store(
    addr: SocketAddr,
    sent: &HashMap<String, Ev>,
    acked: &HashMap<String, Ev>,
) -> Result<usize, String> {
    let mut dids: Vec<String> = sent.values().map(|e| e.did.clone()).collect();
    dids.sort();
    dids.dedup();
    let stored = stored_events(addr, &dids)?;
    let mut errors = Vec::new();
    for (eid, (s, n)) in &stored {
        let Some(e) = sent.get(eid) else {
            errors.push(format!("{eid} is stored but was never sent"));
            continue;
        };
        if *n != 1 {
            errors.push(format!(
                "{eid} is stored {n} times (acknowledged: {})",
                acked.contains_key(eid)
            ));
        }
        let want = Stored {
            name: e.name.clone(),
            did: e.did.clone(),
            timestamp: rfc3339_ms(e.ts_ms),
        };
        if *s != want {
            errors.push(format!("{eid} stored as {s:?}, sent as {want:?}"));
        }
    }
    let missing: Vec<&String> = acked.keys().filter(|k| !stored.contains_key(*k)).collect();
    if !missing.is_empty() {
        let mut m: Vec<_> = missing.iter().take(10).collect();
        m.sort();
        errors.push(format!(
            "{} acknowledged events are missing, e.g. {m:?}",
            missing.len()
        ));
    }
    let present: Vec<&Ev> = stored.keys().filter_map(|k| sent.get(k)).collect();
    let want = model_funnel(present.iter().copied());
    let got = funnel_counts(&query(addr, &funnel_query()).map_err(|e| e.to_string())?)?;
    if got != want {
        errors.push(format!(
            "funnel {got:?}, model over the stored events {want:?}"
        ));
    }
    if errors.is_empty() {
        Ok(stored.len())
    } else {
        errors.truncate(20);
        Err(errors.join("\n"))
    }
}
