//! The official PostHog SDKs, unmodified, against a server started here:
//! `posthog` from PyPI (in a venv) and `posthog-node` from npm, installed
//! under `target/tmp/sdk/` on first run. The tests FAIL (never skip) when
//! python3/node or the packages cannot be installed.
//!
//! Each SDK identifies an anonymous user, captures events with properties
//! and groups, aliases, sets person properties, identifies a group, and sends
//! several batches plain and gzip-compressed (see `tests/sdk/*_client.*`);
//! then `/api/query` must return the exact funnel those events make.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dropscope_clickhouse::ClickHouse;
use dropscope_server::http1::request;
use dropscope_server::{spawn_backend, Backend, Settings};
use dropscope_store::{Store, StoreOptions};
use serde_json::{json, Value};

const PT: &str = "phc_sdk_test";
const SK: &str = "dss_sdk_secret";
/// Major versions the scripts are written against.
const PYPI_SPEC: &str = "posthog>=7,<8";
const NPM_SPEC: &str = "posthog-node@5";

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk")
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tests run in parallel threads: two installing into one folder at once
/// break each other (npm: ENOTEMPTY).
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A venv with `posthog` installed; returns its python.
fn install_python() -> PathBuf {
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = sdk_dir().join("python");
    let py = dir.join("venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import posthog"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        std::fs::create_dir_all(&dir).unwrap();
        run(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(dir.join("venv")),
            "python3 -m venv",
        );
        run(
            Command::new(&py).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PYPI_SPEC,
            ]),
            "pip install posthog",
        );
    }
    py
}

/// A folder with `node_modules/posthog-node`; returns the folder.
fn install_node() -> PathBuf {
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = sdk_dir().join("node");
    if !dir.join("node_modules/posthog-node/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        if !dir.join("package.json").exists() {
            std::fs::write(
                dir.join("package.json"),
                "{\"name\": \"dropscope-sdk-test\", \"private\": true}\n",
            )
            .unwrap();
        }
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    NPM_SPEC,
                ])
                .current_dir(&dir),
            "npm install posthog-node",
        );
    }
    dir
}

async fn query(addr: std::net::SocketAddr, q: Value) -> Value {
    let auth = format!("Bearer {SK}");
    let r = request(
        addr,
        "POST",
        "/api/query",
        &[("Authorization", &auth)],
        json!({ "query": q }).to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn counts(r: &Value) -> Vec<u64> {
    r["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {r}"))
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect()
}

/// Which backend the server under test writes to.
#[derive(Clone, Copy, PartialEq)]
enum On {
    Embedded,
    ClickHouse,
}

/// Starts a server (a durable store, or a fresh ClickHouse database), runs
/// the SDK script, checks the funnel.
async fn check_sdk(mut cmd: Command, name: &str, on: On) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("ds_sdk_{}_{name}", std::process::id());
    let (backend, store) = match on {
        On::Embedded => {
            let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
            (Backend::Embedded(store.clone()), Some(store))
        }
        On::ClickHouse => {
            let url = dropscope_testkit::clickhouse_server::url();
            ClickHouse::open(url, &db).unwrap().drop_database().unwrap();
            let ch = ClickHouse::open(url, &db).unwrap();
            (Backend::ClickHouse(Arc::new(RwLock::new(ch))), None)
        }
    };
    let srv = spawn_backend(Settings::for_tests(PT, SK), backend)
        .await
        .unwrap();
    let host = format!("http://{}", srv.addr);
    cmd.arg(&host).arg(PT);
    let what = format!("{name} SDK script");
    tokio::task::spawn_blocking(move || run(&mut cmd, &what))
        .await
        .unwrap();
    let a = srv.addr;
    let funnel = |extra: Value| {
        let mut q = json!({
            "kind": "funnel",
            "steps": [{"event": "$pageview"}, {"event": "signup"}, {"event": "purchase"}],
            "date_from": "-2d"
        });
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        q
    };
    // 2 story persons + 40 batch users; anon-1/user-1/alias-1 are one person.
    assert_eq!(
        counts(&query(a, funnel(json!({}))).await),
        vec![42, 21, 11],
        "{name}"
    );
    // $identify's $set reached the person.
    let by_email = funnel(
        json!({"properties": [{"key": "email", "value": "p1@example.com", "type": "person"}]}),
    );
    assert_eq!(counts(&query(a, by_email).await), vec![1, 1, 1], "{name}");
    // $groups: one company went through all steps.
    assert_eq!(
        counts(&query(a, funnel(json!({"aggregation": "group:0"}))).await),
        vec![1, 1, 1],
        "{name}"
    );
    // $groupidentify set the group's properties.
    let by_group = funnel(
        json!({"properties": [{"key": "name", "value": "Acme", "type": "group", "group_type_index": 0}]}),
    );
    assert_eq!(counts(&query(a, by_group).await), vec![1, 1, 1], "{name}");
    // The persons of the last step, with the merged distinct ids.
    let persons = query(
        a,
        funnel(json!({"kind": "funnel_persons", "persons_for": {"step": 3}, "limit": 100})),
    )
    .await;
    assert_eq!(persons["persons"].as_array().unwrap().len(), 11, "{name}");
    let merged = persons["persons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["distinct_ids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == "alias-1")
        })
        .unwrap_or_else(|| panic!("{name}: no person with alias-1 in {persons}"));
    let mut ids: Vec<&str> = merged["distinct_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["alias-1", "anon-1", "user-1"], "{name}");
    let m = request(a, "GET", "/metrics", &[], b"")
        .await
        .unwrap()
        .text();
    assert!(
        !m.contains("dropscope_capture_rejected_requests_total{"),
        "{name}: {m}"
    );
    srv.stop().await.unwrap();
    match store {
        Some(store) => dropscope_server::reclaim_store(store, Duration::from_secs(10))
            .await
            .expect("the server released the store")
            .close()
            .unwrap(),
        None => {
            let url = dropscope_testkit::clickhouse_server::url();
            ClickHouse::open(url, &db).unwrap().drop_database().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_python_sdk() {
    let py = tokio::task::spawn_blocking(install_python).await.unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(scripts().join("python_client.py"));
    check_sdk(cmd, "python", On::Embedded).await;
}

/// The same SDK script against a server on the ClickHouse backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_python_sdk_on_clickhouse() {
    let py = tokio::task::spawn_blocking(install_python).await.unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(scripts().join("python_client.py"));
    check_sdk(cmd, "python_ch", On::ClickHouse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_node_sdk() {
    let dir = tokio::task::spawn_blocking(install_node).await.unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(scripts().join("node_client.js"))
        .env("NODE_PATH", dir.join("node_modules"));
    check_sdk(cmd, "node", On::Embedded).await;
}

/// The same SDK script against a server on the ClickHouse backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_node_sdk_on_clickhouse() {
    let dir = tokio::task::spawn_blocking(install_node).await.unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(scripts().join("node_client.js"))
        .env("NODE_PATH", dir.join("node_modules"));
    check_sdk(cmd, "node_ch", On::ClickHouse).await;
}
