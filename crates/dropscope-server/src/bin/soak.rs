//! Soak: mixed capture and queries against a real `dropscope serve` process
//! on loopback for a bounded time, watching errors, throughput, query
//! latency and the server's memory.
//!
//! Starts `dropscope serve` (the binary next to this one, or `--server-bin`)
//! on a fresh data directory and a free loopback port; `--clients` keep-alive
//! clients post `/batch/` requests of `--batch` events, `--query-clients`
//! clients run funnel, funnel trends and funnel persons queries in turn; the
//! server's RSS (`/proc/<pid>/status`) and store size (`/metrics`) are
//! sampled every `--sample-every`. At the end it prints a report and exits
//! 1 if any request failed. Every request goes to 127.0.0.1 and the run
//! stops by itself after `--duration`.
//!
//! ```text
//! cargo build -p dropscope-cli --bin dropscope && cargo build -p dropscope-server --bin soak
//! ./target/debug/soak --duration 180s
//! ```

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dropscope_server::http1::{request, Conn};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Soak a dropscope server with mixed capture and queries")]
struct Args {
    /// How long to run: `180s`, `3m`, `10s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent capture clients (keep-alive).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Events per capture request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent query clients.
    #[arg(long, default_value_t = 2)]
    query_clients: usize,
    /// Pause between one query client's queries.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    query_pause: Duration,
    /// Most events per second over all capture clients (0: as fast as the
    /// server acknowledges).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Stop growing the store after this many distinct events (0: never):
    /// past it, clients send events again with uuids already stored, which
    /// the server drops as duplicates. The capture path keeps running at
    /// full load while the data stays the same size, so any growth of the
    /// server's memory is a leak, not data.
    #[arg(long, default_value_t = 0)]
    distinct_events: u64,
    /// How often to sample the server's memory.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sample_every: Duration,
    /// The `dropscope` binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Data directory [default: a fresh temporary one, removed afterwards].
    #[arg(long)]
    data: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

const PT: &str = "phc_soak";
const SK: &str = "dss_soak";
const STEPS: [&str; 4] = ["$pageview", "signup", "add_to_cart", "purchase"];
const OTHER: [&str; 3] = ["$autocapture", "search", "settings_opened"];
const BROWSERS: [&str; 4] = ["Chrome", "Firefox", "Safari", "Edge"];

/// A batch of events from users of `0..users`, timestamped around now.
/// Events get uuid `(client + 1, n)`; `n` wraps at `wrap` (if not 0).
fn batch_body(seq: &mut u64, client: u64, batch: usize, users: u64, wrap: u64) -> Vec<u8> {
    let now = chrono::Utc::now();
    let events: Vec<Value> = (0..batch)
        .map(|i| {
            *seq += 1;
            if wrap > 0 && *seq > wrap {
                *seq = 1;
            }
            let k = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ client;
            let user = (k >> 7) % users;
            // Later funnel steps are rarer.
            let r = (k >> 40) % 100;
            let name = match r {
                0..=44 => STEPS[0],
                45..=59 => STEPS[1],
                60..=69 => STEPS[2],
                70..=74 => STEPS[3],
                _ => OTHER[(r % 3) as usize],
            };
            let ts = now - chrono::Duration::milliseconds((batch - i) as i64);
            json!({
                "event": name,
                "distinct_id": format!("user-{user}"),
                "uuid": uuid::Uuid::from_u64_pair(client + 1, *seq).to_string(),
                "timestamp": ts.to_rfc3339(),
                "properties": {
                    "$browser": BROWSERS[(user % 4) as usize],
                    "$current_url": format!("https://example.com/p/{}", k % 200),
                    "plan": if user.is_multiple_of(3) { "pro" } else { "free" },
                }
            })
        })
        .collect();
    json!({"api_key": PT, "batch": events})
        .to_string()
        .into_bytes()
}

fn queries() -> Vec<(&'static str, Value)> {
    let steps: Vec<Value> = STEPS.iter().map(|s| json!({"event": s})).collect();
    vec![
        (
            "funnel",
            json!({"kind": "funnel", "steps": steps, "date_from": "-1d", "window": {"value": 1, "unit": "day"}}),
        ),
        (
            "funnel_trends",
            json!({"kind": "funnel_trends", "steps": steps, "date_from": "-1d", "interval": "hour"}),
        ),
        (
            "funnel_persons",
            json!({"kind": "funnel_persons", "steps": steps, "date_from": "-1d", "persons_for": {"step": 2}, "limit": 100}),
        ),
    ]
}

/// Latencies of one kind of request.
#[derive(Default)]
struct Lat(Vec<Duration>);

impl Lat {
    fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

#[derive(Default)]
struct Totals {
    events: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Totals {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_errors.lock().expect("errors lock");
        if f.len() < 10 {
            f.push(what);
        }
    }
}

/// One memory sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    events: u64,
    duplicates: u64,
    store_mem: u64,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn sample(addr: SocketAddr, pid: u32, t0: Instant) -> anyhow::Result<Sample> {
    let auth = format!("Bearer {SK}");
    let m = request(addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await?;
    let text = m.text();
    Ok(Sample {
        at: t0.elapsed(),
        rss_kib: rss_kib(pid)?,
        events: metric(&text, "dropscope_store_events"),
        duplicates: metric(&text, "dropscope_events_duplicate_total"),
        store_mem: metric(&text, "dropscope_store_bytes_in_memory"),
    })
}

struct ServerProc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // SIGTERM (graceful), then SIGKILL if it does not stop.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(bin: &PathBuf, data: &std::path::Path) -> anyhow::Result<ServerProc> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--addr", &addr.to_string()])
        .args(["--project-token", PT, "--secret-key", SK])
        .env(
            "DROPSCOPE_LOG",
            std::env::var("DROPSCOPE_LOG").unwrap_or("warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut s = ServerProc { child, addr };
    let t0 = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait()? {
            bail!("the server exited during startup: {st}");
        }
        if let Ok(r) = request(addr, "GET", "/healthz", &[], b"").await {
            if r.status == 200 {
                return Ok(s);
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the server did not answer /healthz within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn capture_client(
    addr: SocketAddr,
    client: u64,
    args: Arc<Args>,
    deadline: Instant,
    totals: Arc<Totals>,
    lat: Arc<Mutex<Lat>>,
) {
    let mut seq = 0u64;
    let mut conn: Option<Conn> = None;
    // Per-client share of the rate: one request every `gap`.
    let gap = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.batch as f64 * args.clients as f64 / args.rate as f64)
    });
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(g) = gap {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
            next += g;
        }
        let wrap = args.distinct_events.div_ceil(args.clients as u64);
        let body = batch_body(&mut seq, client, args.batch, args.users, wrap);
        let Some(c) = connected(&mut conn, addr, &totals, "capture").await else {
            continue;
        };
        let t = Instant::now();
        let r = c
            .request(
                "POST",
                "/batch/",
                &[("Content-Type", "application/json")],
                &body,
            )
            .await;
        let dt = t.elapsed();
        totals.requests.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(r) if r.status == 200 => {
                totals
                    .events
                    .fetch_add(args.batch as u64, Ordering::Relaxed);
                lat.lock().expect("lat").0.push(dt);
            }
            Ok(r) => totals.error(format!("capture: {} {}", r.status, r.text())),
            Err(e) => {
                totals.error(format!("capture: {e}"));
                conn = None;
            }
        }
    }
}

/// The client's keep-alive connection, opened if it is not (after an
/// error); `None` (the error counted, after a pause) if that fails.
async fn connected<'c>(
    conn: &'c mut Option<Conn>,
    addr: SocketAddr,
    totals: &Totals,
    what: &str,
) -> Option<&'c mut Conn> {
    if conn.is_none() {
        match Conn::connect(addr).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                totals.error(format!("{what} connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                return None;
            }
        }
    }
    conn.as_mut()
}

async fn query_client(
    addr: SocketAddr,
    offset: usize,
    args: Arc<Args>,
    deadline: Instant,
    totals: Arc<Totals>,
    lats: Arc<Mutex<Vec<Lat>>>,
) {
    let qs = queries();
    let auth = format!("Bearer {SK}");
    let mut conn: Option<Conn> = None;
    let mut i = offset;
    while Instant::now() < deadline {
        let k = i % qs.len();
        i += 1;
        let body = json!({"query": qs[k].1}).to_string();
        let Some(c) = connected(&mut conn, addr, &totals, "query").await else {
            continue;
        };
        let t = Instant::now();
        let r = c
            .request(
                "POST",
                "/api/query",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .await;
        let dt = t.elapsed();
        totals.requests.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(r) if r.status == 200 => lats
                .lock()
                .expect("lat")
                .get_mut(k)
                .expect("kind")
                .0
                .push(dt),
            Ok(r) => totals.error(format!("{}: {} {}", qs[k].0, r.status, r.text())),
            Err(e) => {
                totals.error(format!("{}: {e}", qs[k].0));
                conn = None;
            }
        }
        tokio::time::sleep(args.query_pause).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("dropscope"),
    };
    if !bin.exists() {
        bail!(
            "no server binary at {} (build it: cargo build -p dropscope-cli --bin dropscope, or pass --server-bin)",
            bin.display()
        );
    }
    let tmp;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("data")
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = start_server(&bin, &data).await?;
        let addr = server.addr;
        let pid = server.child.id();
        let t0 = Instant::now();
        let deadline = t0 + args.duration;
        let totals = Arc::new(Totals::default());
        let cap_lat = Arc::new(Mutex::new(Lat::default()));
        let q_lat = Arc::new(Mutex::new(
            (0..queries().len()).map(|_| Lat::default()).collect::<Vec<_>>(),
        ));
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            tasks.push(tokio::spawn(capture_client(
                addr,
                c as u64,
                args.clone(),
                deadline,
                totals.clone(),
                cap_lat.clone(),
            )));
        }
        for q in 0..args.query_clients {
            tasks.push(tokio::spawn(query_client(
                addr,
                q,
                args.clone(),
                deadline,
                totals.clone(),
                q_lat.clone(),
            )));
        }
        let samples = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (samples, done, totals, every) =
                (samples.clone(), done.clone(), totals.clone(), args.sample_every);
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match sample(addr, pid, t0).await {
                        Ok(s) => {
                            eprintln!(
                                "[{:>6.1}s] rss {:>8} KiB, {:>10} events stored, store columns {:>8} KiB, {} errors",
                                s.at.as_secs_f64(),
                                s.rss_kib,
                                s.events,
                                s.store_mem / 1024,
                                totals.errors.load(Ordering::Relaxed)
                            );
                            samples.lock().expect("samples").push(s);
                        }
                        Err(e) => totals.error(format!("sampling: {e}")),
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        for t in tasks {
            t.await?;
        }
        let elapsed = t0.elapsed();
        done.store(true, Ordering::Relaxed);
        sampler.await?;
        let last = sample(addr, pid, t0).await?;
        samples.lock().expect("samples").push(last);
        drop(server);

        let samples = samples.lock().expect("samples").clone();
        let events = totals.events.load(Ordering::Relaxed);
        let errors = totals.errors.load(Ordering::Relaxed);
        println!("soak: {:.0} s, {} capture clients x batches of {}, {} query clients (pause {:?}), rate limit {}",
            elapsed.as_secs_f64(), args.clients, args.batch, args.query_clients, args.query_pause,
            if args.rate == 0 { "none".to_string() } else { format!("{} events/s", args.rate) });
        println!(
            "requests {}, errors {errors}, events acknowledged {events} ({:.0} events/s)",
            totals.requests.load(Ordering::Relaxed),
            events as f64 / elapsed.as_secs_f64()
        );
        {
            let l = cap_lat.lock().expect("lat");
            println!(
                "capture /batch/: n={} p50 {} ms, p99 {} ms",
                l.0.len(),
                ms(l.pct(0.5)),
                ms(l.pct(0.99))
            );
        }
        for (k, l) in q_lat.lock().expect("lat").iter().enumerate() {
            println!(
                "query {}: n={} p50 {} ms, p99 {} ms, max {} ms",
                queries()[k].0,
                l.0.len(),
                ms(l.pct(0.5)),
                ms(l.pct(0.99)),
                ms(l.pct(1.0))
            );
        }
        if let (Some(first), Some(end)) = (samples.first(), samples.last()) {
            println!(
                "stored at the end: {} events ({} dropped as duplicates)",
                end.events, end.duplicates
            );
            let max = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            println!(
                "server RSS: start {} MiB, max {} MiB, end {} MiB ({} samples)",
                first.rss_kib / 1024,
                max / 1024,
                end.rss_kib / 1024,
                samples.len()
            );
            if end.events > first.events {
                let per = (end.rss_kib.saturating_sub(first.rss_kib) * 1024) as f64
                    / (end.events - first.events) as f64;
                println!(
                    "RSS growth per stored event {per:.0} bytes (store columns at the end: {} MiB for {} events, {:.0} bytes/event)",
                    end.store_mem >> 20,
                    end.events,
                    end.store_mem as f64 / end.events.max(1) as f64
                );
            }
        }
        let first = totals.first_errors.lock().expect("errors");
        for e in first.iter() {
            println!("error: {e}");
        }
        if errors > 0 {
            bail!("{errors} requests failed");
        }
        Ok(())
    })
}
