//! The bad-input corpus: every file under `tests/corpus/<area>/<name>.toml`
//! is one malformed or hostile HTTP request with the refusal it must get
//! (format: `tests/corpus/README.md`). The corpus is replayed against a
//! real `dropscope serve` process started here, once on the embedded store
//! and once on `--backend clickhouse` (a real ClickHouse 18.16 from the
//! testkit), and for every request:
//! - the answer is the expected 4xx, with a JSON error body whose `code` is
//!   the expected one and whose `detail` names what was wrong;
//! - the server still answers `GET /healthz` and its process is alive;
//! - in the end, the stored data is unchanged: a fingerprint of query,
//!   picker and person answers over a known dataset is the same before and
//!   after the replay, and the server's log shows no panic.
//!
//! The known dataset is full of hostile but valid values (quotes,
//! backslashes, SQL, unicode, from `tests/corpus/hostile_values.json`) used
//! as event names, property keys and values and person properties. Before
//! the replay the test checks that they round-trip verbatim: pickers,
//! breakdown values, exact-match filters and the person timeline return
//! exactly what was captured.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dropscope_server::http1::{Conn, Response};
use serde::Deserialize;
use serde_json::{json, Value};

const TOKEN: &str = "phc_corpus_token";
const SECRET: &str = "dss_corpus_secret";
/// The limits the corpus is written against (passed as flags).
const LIMIT_FLAGS: [&str; 8] = [
    "--max-body-bytes",
    "262144",
    "--max-event-bytes",
    "16384",
    "--max-property-depth",
    "8",
    "--max-events-per-batch",
    "100",
];

fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir() -> PathBuf {
    server_dir().join("tests/corpus")
}

// ---------------------------------------------------------------------------
// The `dropscope` binary and a `dropscope serve` process.

/// The `dropscope` binary of this build, built first (`cargo build -p
/// dropscope-cli --bin dropscope`, a no-op when it is up to date) into the
/// target folder this test runs from.
pub fn dropscope_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // <target>/<profile>/deps/corpus-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_path_buf();
        let target = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "dropscope-cli", "--bin", "dropscope"])
            .current_dir(server_dir().join("../.."))
            .env("CARGO_TARGET_DIR", &target);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("running cargo build");
        assert!(
            out.status.success(),
            "building the dropscope binary failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("dropscope");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A `dropscope serve` child process; killed on drop.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

impl Serve {
    /// Starts `dropscope serve --addr 127.0.0.1:0 <args>` with the corpus
    /// keys and a fresh data folder, and waits until it listens (its log
    /// names the bound address).
    pub fn start(args: &[&str]) -> Serve {
        let data = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(dropscope_bin())
            .arg("serve")
            .arg("--data")
            .arg(data.path())
            .args(["--addr", "127.0.0.1:0", "--project-token", TOKEN])
            .args(["--secret-key", SECRET])
            .args(args)
            .env("DROPSCOPE_LOG", "warn,dropscope_server=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting dropscope serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(a) = listening_addr(&line) {
                        let _ = tx.send(a);
                        sent = true;
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "dropscope serve did not start listening:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Serve {
            child,
            addr,
            log,
            _data: data,
        }
    }

    /// Panics when the process has exited.
    pub fn assert_alive(&mut self, after: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "dropscope serve exited ({status}) after {after}:\n{}",
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `... dropscope server listening addr=127.0.0.1:PORT ...` → the address.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + 5..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------
// Requests.

/// Sends one request on a fresh connection. The body is written even if
/// the server answers (and closes) before reading it all.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let mut c = Conn::connect(addr).await?;
    // A refusal may come before the body is read; the write can then fail.
    let _ = c.write(&bytes).await;
    tokio::time::timeout(Duration::from_secs(120), c.response())
        .await
        .map_err(|_| std::io::Error::other("no answer within 120 s"))?
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    let h = vec![("Authorization".to_string(), format!("Bearer {SECRET}"))];
    send(addr, "GET", path, &h, b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn query(addr: SocketAddr, q: &Value) -> Response {
    let h = vec![
        ("Authorization".to_string(), format!("Bearer {SECRET}")),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let body = json!({ "query": q }).to_string();
    send(addr, "POST", "/api/query", &h, body.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("query {q}: {e}"))
}

async fn capture(addr: SocketAddr, batch: Vec<Value>) {
    let h = vec![("Content-Type".to_string(), "application/json".to_string())];
    let body = json!({"api_key": TOKEN, "batch": batch}).to_string();
    let r = send(addr, "POST", "/batch/", &h, body.as_bytes())
        .await
        .expect("capture");
    assert_eq!(r.status, 200, "capture: {}", r.text());
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The corpus files.

/// One corpus file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What is wrong with the request, in a sentence.
    description: String,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The body, with the `{{...}}` expansions of the README.
    #[serde(default)]
    body: String,
    /// Gzip the expanded body (for bombs: a small request that inflates
    /// past the limit).
    #[serde(default)]
    gzip: bool,
    status: u16,
    code: String,
    /// Substrings the error's `detail` must contain.
    detail: Vec<String>,
    /// Backends to replay on (default both).
    #[serde(default)]
    backends: Option<Vec<String>>,
}

fn default_method() -> String {
    "POST".into()
}

fn load_corpus() -> Vec<(String, Case)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    let root = corpus_dir();
    let mut files = vec![];
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let case: Case =
                toml::from_str(&text).unwrap_or_else(|e| panic!("corpus file {name}: {e}"));
            assert!(
                (400..500).contains(&case.status),
                "{name}: the expected status must be a 4xx"
            );
            assert!(!case.detail.is_empty(), "{name}: `detail` names nothing");
            assert!(
                !case.description.trim().is_empty(),
                "{name}: no description"
            );
            (name, case)
        })
        .collect()
}

/// Expands `{{token}}`, `{{secret}}`, `{{byte:HH}}` and
/// `{{repeat N}}TEXT{{/repeat}}` (see the README).
fn expand(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let after = &rest[i + 2..];
        let j = after.find("}}").expect("unclosed {{");
        let tag = &after[..j];
        rest = &after[j + 2..];
        if tag == "token" {
            out.extend_from_slice(TOKEN.as_bytes());
        } else if tag == "secret" {
            out.extend_from_slice(SECRET.as_bytes());
        } else if let Some(h) = tag.strip_prefix("byte:") {
            out.push(u8::from_str_radix(h, 16).expect("{{byte:HH}}"));
        } else if let Some(n) = tag.strip_prefix("repeat ") {
            let n: usize = n.trim().parse().expect("{{repeat N}}");
            let k = rest
                .find("{{/repeat}}")
                .expect("{{repeat}} without {{/repeat}}");
            let inner = expand(&rest[..k]);
            rest = &rest[k + "{{/repeat}}".len()..];
            for _ in 0..n {
                out.extend_from_slice(&inner);
            }
        } else {
            panic!("unknown expansion {{{{{tag}}}}}");
        }
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).expect("headers and paths expand to text")
}

/// Replays the corpus; returns one line per broken expectation.
async fn replay(srv: &mut Serve, backend: &str) -> (usize, Vec<String>) {
    let mut failures = vec![];
    let mut replayed = 0;
    for (name, case) in load_corpus() {
        if let Some(b) = &case.backends {
            if !b.iter().any(|b| b == backend) {
                continue;
            }
        }
        replayed += 1;
        let path = text(expand(&case.path));
        let headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), text(expand(v))))
            .collect();
        let mut body = expand(&case.body);
        if case.gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&body).unwrap();
            body = e.finish().unwrap();
        }
        let r = match send(srv.addr, &case.method, &path, &headers, &body).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: no answer: {e}"));
                srv.assert_alive(&name);
                continue;
            }
        };
        let b = r.json();
        let detail = b["detail"].as_str().unwrap_or("");
        let mut wrong = vec![];
        if r.status != case.status {
            wrong.push(format!("status {} (want {})", r.status, case.status));
        }
        if !r
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
        {
            wrong.push("not a JSON answer".into());
        }
        if b["code"] != case.code.as_str() {
            wrong.push(format!("code {} (want {})", b["code"], case.code));
        }
        if !b["type"].is_string() {
            wrong.push("no `type`".into());
        }
        for want in &case.detail {
            if !detail.contains(want.as_str()) {
                wrong.push(format!("detail lacks {want:?}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{name}: {} — got {} {}",
                wrong.join("; "),
                r.status,
                r.text().chars().take(400).collect::<String>()
            ));
        }
        srv.assert_alive(&name);
        let h = send(srv.addr, "GET", "/healthz", &[], b"").await;
        match h {
            Ok(h) if h.status == 200 && h.json()["status"] == "ok" => {}
            Ok(h) => failures.push(format!("{name}: /healthz then answered {}", h.text())),
            Err(e) => failures.push(format!("{name}: /healthz then failed: {e}")),
        }
    }
    (replayed, failures)
}

// ---------------------------------------------------------------------------
// The known dataset and its fingerprint.

fn hostile_values() -> Vec<String> {
    let p = corpus_dir().join("hostile_values.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).expect("hostile_values.json")
}

/// Captures the known dataset: per hostile value `v` (index `i`), person
/// `hostile-<i>` does `$pageview` (property `h` = v, property named v = v,
/// `$set` person property `hp` = v), then an event named v, then `signup`;
/// plus a few plain people so funnels have drop-offs.
async fn seed(addr: SocketAddr, values: &[String]) {
    let mut batch = vec![];
    for (i, v) in values.iter().enumerate() {
        let did = format!("hostile-{i}");
        let ts = |m: usize| format!("2024-03-01T10:{:02}:{:02}Z", i % 60, m);
        let mut props = serde_json::Map::new();
        props.insert("h".into(), json!(v));
        props.insert(v.clone(), json!(v));
        props.insert("i".into(), json!(i));
        batch.push(
            json!({"event": "$pageview", "distinct_id": did, "timestamp": ts(0),
                          "properties": props, "$set": {"hp": v}}),
        );
        batch.push(json!({"event": v, "distinct_id": did, "timestamp": ts(1),
                          "properties": {"h": v}}));
        batch.push(json!({"event": "signup", "distinct_id": did, "timestamp": ts(2)}));
    }
    for i in 0..5 {
        batch.push(
            json!({"event": "$pageview", "distinct_id": format!("plain-{i}"),
                          "timestamp": format!("2024-03-02T09:00:0{i}Z"),
                          "properties": {"h": "plain"}}),
        );
    }
    capture(addr, batch).await;
}

fn funnel(steps: Value) -> Value {
    json!({"kind": "funnel", "steps": steps, "date_from": "2024-02-01", "date_to": "2024-04-01"})
}

/// Answers that change if any stored event, property or person changes.
async fn fingerprint(addr: SocketAddr) -> Vec<String> {
    let mut out = vec![];
    for path in [
        "/api/events?limit=10000",
        "/api/properties?limit=10000",
        "/api/property_values?key=h&limit=10000",
        "/api/property_values?key=i&limit=10000",
        "/api/properties?type=person&limit=10000",
        "/api/person_events?id=hostile-0",
        "/api/person_events?id=hostile-1",
        "/api/person_events?id=plain-0",
    ] {
        let r = get(addr, path).await;
        out.push(format!("GET {path} → {} {}", r.status, r.text()));
    }
    let steps = json!([{"event": "$pageview"}, {"event": "signup"}]);
    let mut qs = vec![
        funnel(steps.clone()),
        funnel(json!([{"event": null}])),
        {
            let mut q = funnel(steps.clone());
            q["breakdown"] = json!({"property": "h", "limit": 1000});
            q
        },
        {
            let mut q = funnel(steps.clone());
            q["kind"] = json!("funnel_persons");
            q["persons_for"] = json!({"step": 1});
            q["limit"] = json!(10000);
            q
        },
    ];
    let mut all = funnel(steps);
    all["date_from"] = json!("all");
    qs.push(all);
    for q in qs {
        let r = query(addr, &q).await;
        out.push(format!("query {q} → {} {}", r.status, r.text()));
    }
    out
}

/// The `field` of every result of a picker route (which must answer 200).
async fn picked(addr: SocketAddr, path: &str, field: &str) -> BTreeSet<String> {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect()
}

/// A breakdown row's value: the string, or the one string of a
/// one-property breakdown's array.
fn breakdown_value(b: &Value) -> Option<String> {
    match &b["breakdown_value"] {
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        other => other.as_str().map(str::to_string),
    }
}

/// The per-step counts of a funnel (or of one breakdown row).
fn step_counts(f: &Value) -> Vec<u64> {
    f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect()
}

/// The hostile values come back exactly as captured.
async fn check_round_trip(addr: SocketAddr, values: &[String], backend: &str) {
    let want: BTreeSet<&str> = values.iter().map(String::as_str).collect();
    let contains_all = |got: &BTreeSet<String>, what: &str| {
        for v in values {
            assert!(got.contains(v), "{backend}: {what} {v:?} not in {got:?}");
        }
    };
    contains_all(
        &picked(addr, "/api/events?limit=10000", "name").await,
        "event name",
    );
    contains_all(
        &picked(
            addr,
            "/api/properties?event=%24pageview&limit=10000",
            "name",
        )
        .await,
        "property key",
    );
    // Property values, all and one by one (by hostile key and by search).
    let got = picked(
        addr,
        "/api/property_values?key=h&event=%24pageview&limit=10000",
        "value",
    )
    .await;
    let mut expected: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    expected.insert("plain".into());
    assert_eq!(got, expected, "{backend}: values of `h`");
    for v in values {
        let r = get(addr, &format!("/api/property_values?key={}", enc(v))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["results"],
            json!([{"value": v, "count": 1}]),
            "{backend}: values of key {v:?}"
        );
    }
    // Breakdown values.
    let mut q = funnel(json!([{"event": "$pageview"}, {"event": "signup"}]));
    q["breakdown"] = json!({"property": "h", "limit": 1000});
    let r = query(addr, &q).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let by_value: BTreeMap<String, Vec<u64>> = r.json()["breakdowns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (breakdown_value(b).unwrap_or_default(), step_counts(b)))
        .collect();
    for v in values {
        assert_eq!(
            by_value.get(v.as_str()),
            Some(&vec![1, 1]),
            "{backend}: breakdown value {v:?} in {by_value:?}"
        );
    }
    assert_eq!(by_value.get("plain"), Some(&vec![5, 0]), "{backend}");
    // Exact filters on hostile keys and values, and hostile event names as
    // steps: each matches exactly its person.
    for v in values {
        let q = funnel(json!([
            {"event": "$pageview", "properties": [{"key": v, "value": v, "type": "event"}]},
            {"event": v, "properties": [{"key": "h", "value": v}]},
            {"event": "signup"}
        ]));
        let r = query(addr, &q).await;
        assert_eq!(r.status, 200, "{backend} {v:?}: {}", r.text());
        assert_eq!(
            step_counts(&r.json()),
            vec![1, 1, 1],
            "{backend}: filters on {v:?}"
        );
    }
    // Person properties: a person breakdown, and the timeline.
    let mut q = funnel(json!([{"event": "$pageview"}]));
    q["breakdown"] = json!({"type": "person", "property": "hp", "limit": 1000});
    let r = query(addr, &q).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let person_values: BTreeSet<String> = r.json()["breakdowns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(breakdown_value)
        .collect();
    contains_all(&person_values, "person value");
    for (i, v) in values.iter().enumerate() {
        let r = get(addr, &format!("/api/person_events?id=hostile-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.json();
        assert_eq!(t["total"], json!(3), "{backend}");
        assert_eq!(t["events"][0]["properties"]["h"], json!(v), "{backend}");
        assert_eq!(
            t["events"][0]["properties"][v.as_str()],
            json!(v),
            "{backend}"
        );
        assert_eq!(t["events"][1]["event"], json!(v), "{backend}");
        if backend == "embedded" {
            // ClickHouse does not return person properties in the timeline.
            assert_eq!(t["properties"]["hp"], json!(v), "{backend}");
        }
    }
    if backend == "embedded" {
        // Person-property pickers (refused on ClickHouse for now).
        let got = picked(
            addr,
            "/api/property_values?type=person&key=hp&limit=10000",
            "value",
        )
        .await;
        let all: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, all, "{backend}: person values of `hp`");
    }
}

async fn run_corpus(mut srv: Serve, backend: &str) {
    let values = hostile_values();
    seed(srv.addr, &values).await;
    check_round_trip(srv.addr, &values, backend).await;
    let before = fingerprint(srv.addr).await;
    let started = Instant::now();
    let (replayed, failures) = replay(&mut srv, backend).await;
    eprintln!(
        "{backend}: replayed {replayed} corpus requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let after = fingerprint(srv.addr).await;
    srv.assert_alive("the replay");
    let log = srv.log();
    assert!(
        failures.is_empty(),
        "{backend}: {} of {replayed} corpus requests broke expectations:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        replayed >= 110,
        "{backend}: only {replayed} requests replayed"
    );
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a, b, "{backend}: stored data changed during the replay");
    }
    assert_eq!(before.len(), after.len());
    assert!(
        !log.contains("panicked"),
        "{backend}: the server panicked:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_on_the_embedded_store() {
    let srv = Serve::start(&LIMIT_FLAGS);
    run_corpus(srv, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_on_clickhouse() {
    let url = dropscope_testkit::clickhouse_server::url();
    let db = format!("ds_corpus_{}", std::process::id());
    dropscope_clickhouse::ClickHouse::open(url, &db)
        .and_then(|c| c.drop_database())
        .expect("dropping a leftover test database");
    let mut args: Vec<&str> = LIMIT_FLAGS.to_vec();
    args.extend([
        "--backend",
        "clickhouse",
        "--clickhouse-url",
        url,
        "--clickhouse-database",
        &db,
    ]);
    let srv = Serve::start(&args);
    run_corpus(srv, "clickhouse").await;
    dropscope_clickhouse::ClickHouse::open(url, &db)
        .and_then(|c| c.drop_database())
        .expect("dropping the test database");
}
