//! The web page in a real browser: Debian's chromium, driven by
//! `playwright-core` (npm) through `web/tests/run.mjs`, against a server
//! started here on ~20k demo events.
//!
//! It installs what it needs: chromium with apt-get when it is missing (as
//! root), and `npm ci` in `web/tests` (into its gitignored `node_modules`).
//! It FAILS, never skips, when chromium, node or the package cannot be had.
//! Screenshots are written to `target/browser-tests/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dropscope_server::http1::request;
use dropscope_server::{spawn, Settings};
use dropscope_store::Store;

const PT: &str = "phc_browser_test";
const SK: &str = "dss_browser_test_secret";
const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("browser-tests")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh(script: &str, what: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Debian's chromium and node/npm, installed with apt-get when missing.
fn ensure_tools() {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("chromium");
    }
    if !has("node") || !has("npm") {
        missing.extend(["nodejs", "npm"]);
    }
    if missing.is_empty() {
        return;
    }
    assert!(
        is_root(),
        "the browser tests need {missing:?} ({CHROMIUM}, node, npm) and are not running as root \
         to install them: run `apt-get update && apt-get install -y {}` first",
        missing.join(" ")
    );
    let script = format!(
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {}",
        missing.join(" ")
    );
    if let Err(e) = sh(&script, "installing the browser-test tools") {
        panic!("cannot install {missing:?} for the browser tests: {e}");
    }
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is still missing after apt-get install chromium"
    );
}

/// `npm ci` in web/tests unless playwright-core is already there.
fn ensure_playwright(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let script = format!(
        "cd '{}' && npm ci --no-audit --no-fund --loglevel=error",
        dir.display()
    );
    if let Err(e) = sh(&script, "npm ci in web/tests") {
        panic!("cannot install playwright-core for the browser tests: {e}");
    }
}

/// Runs `cmd`, killing it after `limit`; returns (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(Stdio::from(std::fs::File::create(&o).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&e).unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let ok = status.is_some_and(|s| s.success());
    let mut err = read(&e);
    if status.is_none() {
        err.push_str(&format!("\n(killed after {limit:?})"));
    }
    (ok, read(&o), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_in_chromium() {
    let started = Instant::now();
    let tests_dir = repo().join("web/tests");
    tokio::task::spawn_blocking({
        let d = tests_dir.clone();
        move || {
            ensure_tools();
            ensure_playwright(&d);
        }
    })
    .await
    .unwrap();

    // ~20k demo events in an in-memory store.
    let store = Arc::new(Store::in_memory());
    let opts = dropscope_testkit::demo::DemoOptions {
        events: 20_000,
        ..Default::default()
    };
    let records: Vec<_> = dropscope_testkit::demo::generate(&opts).collect();
    for chunk in records.chunks(10_000) {
        store.append(chunk).unwrap();
    }
    let running = spawn(Settings::for_tests(PT, SK), store.clone())
        .await
        .unwrap();
    let addr = running.addr;

    // The assets are served with their content types and caching headers.
    for (path, ct) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let r = request(addr, "GET", path, &[], b"").await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ct), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        let etag = r.header("etag").expect("etag").to_string();
        let again = request(addr, "GET", path, &[("If-None-Match", &etag)], b"")
            .await
            .unwrap();
        assert_eq!(again.status, 304, "{path} revalidation");
    }

    let out = out_dir();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let url = format!("http://{addr}");
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            run_bounded(
                Command::new("node")
                    .arg(tests_dir.join("run.mjs"))
                    .arg(&url)
                    .arg(SK)
                    .arg(&out)
                    .env("CHROMIUM", CHROMIUM),
                Duration::from_secs(180),
            )
        }
    })
    .await
    .unwrap();
    println!("{stdout}");
    eprintln!("{stderr}");
    running.stop().await.unwrap();
    assert!(
        ok,
        "browser tests failed:\n{stdout}\n{stderr}\n(screenshots in {})",
        out.display()
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "no summary line:\n{stdout}"
    );
    assert!(!stdout.contains("not ok"), "{stdout}");
    for shot in [
        "03-funnel.png",
        "06-correlation.png",
        "08-timeline.png",
        "12-diagnosis.png",
    ] {
        assert!(out.join(shot).exists(), "screenshot {shot} missing");
    }
    println!(
        "browser tests: {:.1} s in all, screenshots in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
}
