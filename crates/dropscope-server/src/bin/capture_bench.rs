//! Sustained capture throughput over HTTP with durable acks.
//!
//! Starts the server in-process on loopback over a durable store in a temp
//! directory (WAL fsync, group commit), then N keep-alive clients each post
//! `/batch/` requests of B PostHog-style events for S seconds and wait for
//! each `{"status": 1}` before sending the next. Prints events/s and the
//! request latency percentiles.
//!
//! ```text
//! cargo run --release -p dropscope-server --bin capture_bench -- --clients 16 --seconds 10 --batch 100
//! ```

// mimalloc instead of glibc malloc: capture and import parse and free many
// small JSON values per event; malloc/free were ~20% of capture CPU
// (BENCHMARKS.md, "Capture over HTTP").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dropscope_server::http1::Conn;
use dropscope_server::{spawn, Settings};
use dropscope_store::{Store, StoreOptions};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "HTTP capture throughput with durable acks")]
struct Args {
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Server worker threads.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Data directory (default: a fresh temp dir, removed afterwards).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Send the bodies gzip-compressed (as posthog-node does).
    #[arg(long)]
    gzip: bool,
    /// Do not fsync the WAL (shows the cost of durability; acks are then
    /// not durable).
    #[arg(long)]
    no_fsync: bool,
}

const PT: &str = "phc_bench";

fn bodies(n: usize, batch: usize, gzip: bool) -> Vec<Vec<u8>> {
    let events = ["$pageview", "signup", "add_to_cart", "checkout", "purchase"];
    let browsers = ["Chrome", "Firefox", "Safari", "Edge"];
    let sent_at = chrono::Utc::now();
    (0..n)
        .map(|b| {
            let batch: Vec<_> = (0..batch)
                .map(|i| {
                    let k = b * batch + i;
                    let ts = sent_at - chrono::Duration::milliseconds((batch - i) as i64 * 10);
                    json!({
                        "event": events[k % events.len()],
                        "distinct_id": format!("user-{}", (k * 7919) % 50_000),
                        "properties": {
                            "$current_url": format!("https://example.com/p/{}", k % 300),
                            "$browser": browsers[k % browsers.len()],
                            "$os": "Mac OS X",
                            "$lib": "posthog-python",
                            "$lib_version": "7.0.0",
                            "plan": if k.is_multiple_of(3) { "pro" } else { "free" },
                            "$groups": {"company": format!("c{}", k % 500)}
                        },
                        "timestamp": ts.to_rfc3339(),
                        "type": "capture"
                    })
                })
                .collect();
            let body = json!({"api_key": PT, "batch": batch, "sent_at": sent_at.to_rfc3339()})
                .to_string()
                .into_bytes();
            if gzip {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&body).unwrap();
                e.finish().unwrap()
            } else {
                body
            }
        })
        .collect()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let opts = StoreOptions {
        fsync: !args.no_fsync,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open(&dir, opts)?);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .enable_all()
        .build()?;
    let settings = Settings::for_tests(PT, "dss_bench_secret");
    let srv = server_rt.block_on(spawn(settings, store.clone()))?;
    let addr = srv.addr;
    let bodies = Arc::new(bodies(64, args.batch, args.gzip));
    let body_bytes: usize = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len();
    println!(
        "capture_bench: {} clients x batches of {} events ({} bytes/request{}), {:.0} s, {} server threads, data {}",
        args.clients,
        args.batch,
        body_bytes,
        if args.gzip { ", gzip" } else { "" },
        args.seconds,
        args.server_threads,
        dir.display()
    );

    // Clients on their own single-threaded runtime (like an external load
    // generator sharing the machine).
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Duration::from_secs_f64(args.seconds);
    let headers: &'static [(&'static str, &'static str)] = if args.gzip {
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ]
    } else {
        &[("Content-Type", "application/json")]
    };
    let start = Instant::now();
    let lat: Vec<Vec<u32>> = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let bodies = bodies.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await.expect("connect");
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i = c;
                while start.elapsed() < deadline {
                    let t = Instant::now();
                    let r = conn
                        .request("POST", "/batch/", headers, &bodies[i % bodies.len()])
                        .await
                        .expect("request");
                    assert_eq!(r.status, 200, "{}", r.text());
                    lat.push(t.elapsed().as_micros() as u32);
                    i += 1;
                }
                lat
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("client"));
        }
        out
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<u32> = lat.into_iter().flatten().collect();
    all.sort_unstable();
    let requests = all.len();
    let events = requests * args.batch;
    let stats = store.stats()?;
    println!(
        "requests {requests}  events {events}  in {elapsed:.2} s  ->  {:.0} events/s, {:.0} requests/s",
        events as f64 / elapsed,
        requests as f64 / elapsed
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        pct(&all, 0.50),
        pct(&all, 0.90),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    if let Some(w) = &stats.wal {
        println!(
            "store: {} events ({} in segments), WAL appends {} fsyncs {} ({:.1} appends per fsync)",
            stats.events,
            stats.events - stats.unflushed_events,
            w.appends,
            w.syncs,
            w.appends as f64 / w.syncs.max(1) as f64
        );
    }
    let metrics = srv.state.metrics().render(None);
    for line in metrics.lines() {
        if ["append", "capture"].iter().any(|k| {
            line.starts_with(&format!("dropscope_{k}_seconds_sum"))
                || line.starts_with(&format!("dropscope_{k}_seconds_count"))
        }) {
            println!("  {line}");
        }
    }
    anyhow::ensure!(
        stats.events == events,
        "stored {} of {events} acknowledged events",
        stats.events
    );
    server_rt.block_on(srv.stop())?;
    drop(server_rt);
    Arc::try_unwrap(store)
        .map_err(|_| anyhow::anyhow!("store still shared"))?
        .close()?;
    Ok(())
}
