//! `dropscope-bench`: the benchmark behind BENCHMARKS.md.
//!
//! Generates the deterministic demo data (`--events`), imports it into a
//! durable store, and reports: the import rate, bytes per event on disk and
//! in memory, and for every query of the demo funnel (ordered, strict and
//! unordered funnels, a 30-value breakdown, conversion trends by day, time
//! to convert, the persons dropped at step 3, event correlation, the
//! diagnosis report) the time of a cold run (a fresh process: open the store
//! and answer once) and of warm runs (median, min and max of `--reps`), with
//! the peak memory (RSS) of the fresh process.
//!
//! `--compare` runs the same 5-step ordered funnel with a 14-day window in
//! DuckDB and in ClickHouse's `windowFunnel` (chDB, an embedded current
//! ClickHouse) on the same events, checks that the counts agree and prints
//! the ratio of their time to ours. `--capture-seconds` adds the durable
//! HTTP capture rate (the `capture_bench` binary). `--clickhouse-url` runs
//! the queries on a ClickHouse server through dropscope's ClickHouse
//! backend. `--smoke` runs a tiny size and only checks that everything
//! works (CI).

// mimalloc instead of glibc malloc: capture and import parse and free many
// small JSON values per event; malloc/free were ~20% of capture CPU
// (BENCHMARKS.md, "Capture over HTTP").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_store::{Store, StoreOptions};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Approximate number of demo events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Store folder: generated into when absent or empty (a folder with
    /// files is refused unless --reuse; default: a temporary one, removed
    /// afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Warm repetitions per query (median, min and max are reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Tiny run that checks the benchmark works (CI).
    #[arg(long)]
    smoke: bool,
    /// Reuse the store in --data if it exists (skip generating and importing).
    #[arg(long)]
    reuse: bool,
    /// Only queries whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Skip the cold runs (a fresh process per query).
    #[arg(long)]
    no_cold: bool,
    /// Run the 5-step ordered funnel in DuckDB and ClickHouse windowFunnel
    /// (chDB) on the same data and report the ratios (installs both from
    /// PyPI into target/tmp/chdb-venv on first use).
    #[arg(long)]
    compare: bool,
    /// Seconds of durable HTTP capture to measure (0: skip). Needs the
    /// `capture_bench` binary built beside this one.
    #[arg(long, default_value_t = 0.0)]
    capture_seconds: f64,
    /// Also load the same events into ClickHouse at this HTTP address and
    /// time the same queries there through dropscope's ClickHouse backend
    /// (answers must agree with the embedded store; queries it does not
    /// support are listed as such).
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// ClickHouse database for --clickhouse-url (replaced unless --reuse
    /// finds it filled).
    #[arg(long, default_value = "dropscope_bench")]
    clickhouse_database: String,
    /// Internal: open the store in --data, answer this one query once, print
    /// timings and peak RSS as JSON (a cold run).
    #[arg(long, hide = true)]
    cold_child: Option<String>,
}

/// The 14-day window of the comparison, in milliseconds.
const WINDOW_MS: i64 = 14 * 24 * 3600 * 1000;

/// The benchmark's queries over the demo funnel, by name.
fn all_queries() -> Vec<(&'static str, FunnelQuery)> {
    let demo = serde_json::to_value(dropscope_testkit::demo::funnel_query()).expect("json");
    let q = |extra: Value| -> FunnelQuery {
        let mut base = demo.clone();
        for (k, v) in extra.as_object().expect("object") {
            base[k] = v.clone();
        }
        serde_json::from_value(base).expect("a valid benchmark query")
    };
    vec![
        ("funnel ordered", q(json!({}))),
        ("funnel strict", q(json!({"order": "strict"}))),
        ("funnel unordered", q(json!({"order": "unordered"}))),
        (
            "funnel by city (30)",
            q(json!({"breakdown": {"property": "$geoip_city_name", "limit": 30}})),
        ),
        (
            "trends by day",
            q(json!({"kind": "funnel_trends", "interval": "day"})),
        ),
        ("time to convert", q(json!({"kind": "time_to_convert"}))),
        (
            "persons dropped at 3",
            q(json!({"kind": "funnel_persons", "persons_for": {"step": -3}, "limit": 100})),
        ),
        (
            "correlation events",
            q(json!({"kind": "correlation", "correlation": {"type": "events"}})),
        ),
        ("diagnosis", q(json!({"kind": "diagnosis"}))),
    ]
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(name) = &args.cold_child {
        return cold_child(&args, name);
    }
    check_args(&args)?;
    let events = if args.smoke {
        args.events.min(50_000)
    } else {
        args.events
    };
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| tmp.path().join("store"));
    let reuse = args.reuse && dir.exists();
    if dir.exists() && !reuse {
        // Only an empty folder: one with files may be someone's store.
        ensure!(
            std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_none(),
            "--data {} exists and is not empty: pass --reuse to benchmark the store in it, or remove it to generate anew",
            dir.display()
        );
    }
    if reuse {
        println!("dropscope-bench: reusing the store in {}", dir.display());
    } else {
        println!(
            "dropscope-bench: {events} demo events, store {}",
            dir.display()
        );
    }
    println!("machine: {}", machine());
    if !reuse {
        import(&dir, events)?;
    }

    // Cold runs first: each is a fresh process that opens the store, which
    // only one process may have open at a time.
    let cold = if args.no_cold {
        Vec::new()
    } else {
        let mut cold = Vec::new();
        for (name, _) in selected(&args) {
            cold.push((name, cold_run(&dir, name)?));
        }
        cold
    };

    let t = Instant::now();
    let store = Store::open(&dir, StoreOptions::default())?;
    let open_s = t.elapsed().as_secs_f64();
    let st = store.stats()?;
    let per = |b: f64| b / st.events.max(1) as f64;
    println!(
        "stored events: {}; on disk: {:.1} bytes/event (segments {:.1}); on the heap: {:.1} bytes/event (columns not in mapped segments); open: {open_s:.2} s",
        st.events,
        per(st.bytes_on_disk as f64),
        per(st.segment_bytes as f64),
        per(st.bytes_in_memory as f64),
    );
    let reps = if args.smoke { 2 } else { args.reps.max(1) };
    let embedded = queries(&store, &args, &cold, reps)?;
    println!(
        "peak RSS of this process (import, open, warm queries): {:.0} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    if args.compare {
        compare(&store, &dir, &embedded, if args.smoke { 1 } else { reps })?;
    }
    drop(store);
    if args.capture_seconds > 0.0 {
        capture(args.capture_seconds)?;
    }
    if let Some(url) = &args.clickhouse_url {
        clickhouse(url, &args, events, reps, &embedded)?;
    }
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{cpus} cpus ({model})")
}

/// Peak resident set size of this process so far, KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn demo_options(events: usize) -> dropscope_testkit::demo::DemoOptions {
    dropscope_testkit::demo::DemoOptions {
        seed: 7,
        events,
        ..Default::default()
    }
}

/// Generates the demo events and appends them in fsync'ed group commits of
/// 10k, then compacts (what `dropscope import` does).
fn import(dir: &Path, events: usize) -> Result<()> {
    // Streamed: 100M generated events would not fit in memory at once.
    let store = Store::open(dir, StoreOptions::default())?;
    let (mut gen_s, mut append_s) = (0.0, 0.0);
    let mut stored = 0;
    let mut gen = dropscope_testkit::demo::generate(&demo_options(events));
    let mut chunk = Vec::with_capacity(10_000);
    loop {
        let t = Instant::now();
        chunk.clear();
        chunk.extend(gen.by_ref().take(10_000));
        gen_s += t.elapsed().as_secs_f64();
        if chunk.is_empty() {
            break;
        }
        let t = Instant::now();
        stored += store.append(&chunk)?.stored;
        append_s += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    store.flush()?;
    append_s += t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.compact()?;
    let compact_s = t.elapsed().as_secs_f64();
    println!(
        "generate: {gen_s:.2} s; import (append + flush, fsync'ed group commits of 10k): {append_s:.2} s = {:.0} events/s; compact: {compact_s:.2} s",
        stored as f64 / append_s
    );
    store.close()?;
    Ok(())
}

fn summary(res: &QueryResult) -> String {
    match res {
        QueryResult::Funnel(f) => f
            .steps
            .iter()
            .map(|s| s.count.to_string())
            .collect::<Vec<_>>()
            .join(" → "),
        QueryResult::Correlation(c) => {
            format!("{} rows tested, {} shown", c.rows_tested, c.events.len())
        }
        other => {
            let v = serde_json::to_value(other).unwrap_or_default();
            let n = |k: &str| v.get(k).and_then(Value::as_array).map(Vec::len);
            [
                ("rows", "periods"),
                ("bins", "bins"),
                ("persons", "persons"),
                ("drivers", "drivers"),
            ]
            .iter()
            .find_map(|(k, what)| n(k).map(|c| format!("{c} {what}")))
            .unwrap_or_default()
        }
    }
}

fn step_counts(res: &QueryResult) -> Option<Vec<u64>> {
    match res {
        QueryResult::Funnel(f) => Some(f.steps.iter().map(|s| s.count).collect()),
        _ => None,
    }
}

fn stats(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

/// Refuses, before any work, flags that would end in an empty or failed run.
fn check_args(args: &Args) -> Result<()> {
    let names: Vec<&str> = all_queries().iter().map(|(n, _)| *n).collect();
    let chosen: Vec<&str> = selected(args).iter().map(|(n, _)| *n).collect();
    if let Some(only) = &args.only {
        ensure!(
            !chosen.is_empty(),
            "--only {only:?} matches no benchmark query; the queries are: {}",
            names.join(", ")
        );
    }
    ensure!(
        !args.compare || chosen.contains(&"funnel ordered"),
        "--compare times the `funnel ordered` query against DuckDB and ClickHouse: --only {:?} leaves it out",
        args.only.as_deref().unwrap_or_default()
    );
    Ok(())
}

/// The queries `--only` selects.
fn selected(args: &Args) -> Vec<(&'static str, FunnelQuery)> {
    all_queries()
        .into_iter()
        .filter(|(name, _)| args.only.as_ref().is_none_or(|o| name.contains(o.as_str())))
        .collect()
}

/// Warm runs in this process, printed beside the cold runs (`cold`).
fn queries(
    store: &Store,
    args: &Args,
    cold: &[(&str, Value)],
    reps: usize,
) -> Result<Vec<(String, QueryResult)>> {
    let mut out = Vec::new();
    println!(
        "\n| query | warm median ms | warm min–max ms | cold ms (open + query) | cold peak RSS MiB | result |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for (name, q) in selected(args) {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            let snap = store.snapshot()?;
            let t = Instant::now();
            let r = dropscope_engine::run_query(&snap, &q)
                .with_context(|| format!("query {name:?}"))?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            last = Some(r);
        }
        let res = last.expect("one rep");
        if let Some(c) = step_counts(&res) {
            ensure!(c[0] > 0, "{name}: nobody entered the demo funnel");
        }
        let (med, min, max) = stats(times);
        let cold = match cold.iter().find(|(n, _)| *n == name) {
            None => "– | –".to_string(),
            Some((_, c)) => {
                let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
                let (open, query) = (f("open_ms"), f("query_ms"));
                format!(
                    "{:.0} ({open:.0} + {query:.1}) | {:.0}",
                    open + query,
                    f("peak_rss_kib") / 1024.0
                )
            }
        };
        println!(
            "| {name} | {med:.1} | {min:.1}–{max:.1} | {cold} | {} |",
            summary(&res)
        );
        out.push((name.to_string(), res));
    }
    Ok(out)
}

/// Runs `cmd` to its end; its stdout, or an error with its stderr.
fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs this binary again as `--cold-child NAME` and reads its JSON line.
fn cold_run(dir: &Path, name: &str) -> Result<Value> {
    let line = output(
        Command::new(std::env::current_exe()?)
            .arg("--data")
            .arg(dir)
            .arg("--cold-child")
            .arg(name),
        &format!("the cold run of {name:?}"),
    )?;
    serde_json::from_str(line.trim()).with_context(|| format!("cold run printed {line:?}"))
}

fn cold_child(args: &Args, name: &str) -> Result<()> {
    let dir = args.data.as_ref().context("--cold-child needs --data")?;
    let (_, q) = all_queries()
        .into_iter()
        .find(|(n, _)| *n == name)
        .with_context(|| format!("no benchmark query named {name:?}"))?;
    let t = Instant::now();
    let store = Store::open(dir, StoreOptions::default())?;
    let snap = store.snapshot()?;
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    dropscope_engine::run_query(&snap, &q)?;
    let query_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{}",
        json!({"open_ms": open_ms, "query_ms": query_ms, "peak_rss_kib": peak_rss_kib()})
    );
    Ok(())
}

/// The scripts folder of this repository.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// The 5-step ordered funnel in DuckDB and ClickHouse windowFunnel on the
/// same events (exported to Parquet), against ours.
fn compare(
    store: &Store,
    dir: &Path,
    embedded: &[(String, QueryResult)],
    reps: usize,
) -> Result<()> {
    let ours = embedded
        .iter()
        .find(|(n, _)| n == "funnel ordered")
        .context("--compare needs the `funnel ordered` query (check --only)")?;
    let ours_counts = step_counts(&ours.1).expect("a funnel");
    // Our warm median again, measured right before theirs.
    let q = &all_queries()[0].1;
    let mut times = Vec::new();
    for _ in 0..reps.max(3) {
        let snap = store.snapshot()?;
        let t = Instant::now();
        dropscope_engine::run_query(&snap, q)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (our_med, our_min, our_max) = stats(times);

    let parquet = dir.with_extension("funnel.parquet");
    let t = Instant::now();
    let rows = dropscope_io::parquet::write_funnel_columns_parquet(&parquet, &store.snapshot()?)
        .map_err(anyhow::Error::msg)?;
    println!(
        "\ncomparison: exported {rows} events (person, event, ts) to {} in {:.1} s",
        parquet.display(),
        t.elapsed().as_secs_f64()
    );
    let python = output(
        Command::new("bash").arg(scripts().join("bench_venv.sh")),
        "scripts/bench_venv.sh (installs duckdb and chdb from PyPI)",
    )?
    .trim()
    .to_string();
    let out = output(
        Command::new(&python)
            .arg(scripts().join("bench_compare.py"))
            .arg(&parquet)
            .arg(WINDOW_MS.to_string())
            .arg(reps.max(3).to_string())
            .args(dropscope_testkit::demo::DEMO_FUNNEL),
        "scripts/bench_compare.py",
    )?;
    println!("| engine | median ms | min–max ms | load s | ratio to dropscope (median) | counts |");
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| dropscope (embedded, warm) | {our_med:.1} | {our_min:.1}–{our_max:.1} | – | 1.0 | {} |",
        join(&ours_counts)
    );
    let mut mismatch = Vec::new();
    for line in out.lines() {
        let r: Value = serde_json::from_str(line)
            .with_context(|| format!("bench_compare.py printed {line:?}"))?;
        let times: Vec<f64> = r["times_ms"]
            .as_array()
            .context("times_ms")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let counts: Vec<u64> = r["counts"]
            .as_array()
            .context("counts")?
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        let (med, min, max) = stats(times);
        let engine = format!(
            "{} ({})",
            r["engine"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or("?")
        );
        println!(
            "| {engine} | {med:.1} | {min:.1}–{max:.1} | {:.1} | {:.1} | {} |",
            r["load_s"].as_f64().unwrap_or(0.0),
            med / our_med,
            join(&counts)
        );
        if counts != ours_counts {
            mismatch.push(format!(
                "{engine}: {} (dropscope {})",
                join(&counts),
                join(&ours_counts)
            ));
        }
    }
    let _ = std::fs::remove_file(&parquet);
    if !mismatch.is_empty() {
        bail!(
            "the engines disagree on the funnel counts:\n{}",
            mismatch.join("\n")
        );
    }
    println!("counts agree.");
    Ok(())
}

fn join(c: &[u64]) -> String {
    c.iter().map(u64::to_string).collect::<Vec<_>>().join(" → ")
}

/// Durable HTTP capture: runs `capture_bench` (built beside this binary).
fn capture(seconds: f64) -> Result<()> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("capture_bench");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p dropscope-server --bin capture_bench` (same profile as this binary)",
            bin.display()
        );
    }
    println!("\ndurable HTTP capture (capture_bench, 16 clients, batches of 100):");
    let status = Command::new(bin)
        .args(["--clients", "16", "--batch", "100", "--seconds"])
        .arg(seconds.to_string())
        .status()?;
    ensure!(status.success(), "capture_bench failed");
    Ok(())
}

/// Loads the demo events into ClickHouse (unless --reuse finds them) and
/// times the same queries there.
fn clickhouse(
    url: &str,
    args: &Args,
    events: usize,
    reps: usize,
    embedded: &[(String, QueryResult)],
) -> Result<()> {
    use dropscope_clickhouse::ClickHouse;
    let db = &args.clickhouse_database;
    let mut ch = ClickHouse::open(url, db).map_err(anyhow::Error::msg)?;
    let filled = ch.event_count().map_err(anyhow::Error::msg)? > 0;
    if !(args.reuse && filled) {
        ch.drop_database().map_err(anyhow::Error::msg)?;
        ch = ClickHouse::open(url, db).map_err(anyhow::Error::msg)?;
        let mut gen = dropscope_testkit::demo::generate(&demo_options(events));
        let t = Instant::now();
        loop {
            let chunk: Vec<_> = gen.by_ref().take(100_000).collect();
            if chunk.is_empty() {
                break;
            }
            ch.append(&chunk).map_err(anyhow::Error::msg)?;
        }
        let s = t.elapsed().as_secs_f64();
        let n = ch.event_count().map_err(anyhow::Error::msg)?;
        println!(
            "\nclickhouse load ({url}, database {db}): {n} events in {s:.1} s = {:.0} events/s",
            n as f64 / s
        );
    }
    println!("| query (ClickHouse backend) | median ms | min–max ms | result |");
    println!("|---|---:|---:|---|");
    for (name, q) in all_queries() {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            let t = Instant::now();
            match ch.run(&q) {
                Ok(r) => last = Some(r),
                Err(dropscope_core::QueryError::Unsupported(why)) => {
                    println!("| {name} | unsupported: {why} | | |");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let Some(res) = last else { continue };
        let (med, min, max) = stats(times);
        println!(
            "| {name} | {med:.1} | {min:.1}–{max:.1} | {} |",
            summary(&res)
        );
        if let Some((_, e)) = embedded.iter().find(|(n, _)| n == name) {
            if let (Some(a), Some(b)) = (step_counts(e), step_counts(&res)) {
                ensure!(a == b, "{name}: ClickHouse {b:?} != embedded {a:?}");
            }
        }
    }
    Ok(())
}
