//! `dropscope-bench`: the benchmark behind BENCHMARKS.md.
//!
//! Generates demo data, writes it into a durable store, reopens it, and
//! times: import (append with fsync'ed group commits), bytes per event on
//! disk and in memory, store open, the 5-step demo funnel (plain, with a
//! breakdown, strict), and event correlation over all event names.
//! `--smoke` runs a tiny size and only checks that everything works (CI).

// mimalloc instead of glibc malloc: capture and import parse and free many
// small JSON values per event; malloc/free were ~20% of capture CPU
// (BENCHMARKS.md, "Capture over HTTP").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use dropscope_core::query::{
    Breakdown, CorrelationOptions, FunnelOrder, FunnelQuery, QueryKind, Step,
};
use dropscope_core::result::QueryResult;
use dropscope_store::{Store, StoreOptions};

#[derive(Parser)]
struct Args {
    /// Approximate number of demo events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Store folder (default: a temporary one, removed afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Query repetitions (the best and the median are reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Tiny run that checks the benchmark works (CI).
    #[arg(long)]
    smoke: bool,
    /// Reuse the store in --data if it exists (only time opening and queries).
    #[arg(long)]
    reuse: bool,
    /// Only queries whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Also load the same events into ClickHouse at this HTTP address and
    /// time the same queries there (answers must agree with the embedded
    /// store; queries it does not support are listed as such).
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// ClickHouse database for --clickhouse-url (replaced unless --reuse
    /// finds it filled).
    #[arg(long, default_value = "dropscope_bench")]
    clickhouse_database: String,
}

fn time_query(store: &Store, q: &FunnelQuery, reps: usize) -> Result<(f64, f64, QueryResult)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..reps.max(1) {
        let snap = store.snapshot()?;
        let t = Instant::now();
        let r = dropscope_engine::run_query(&snap, q)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[0], times[times.len() / 2], last.expect("one rep")))
}

fn main() -> Result<()> {
    let args = Args::parse();
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
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    println!(
        "dropscope-bench: {events} demo events, store {}",
        dir.display()
    );
    println!(
        "machine: {} cpus",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if !reuse {
        import(&dir, events)?;
    }

    // Open.
    let t = Instant::now();
    let store = Store::open(&dir, StoreOptions::default())?;
    let open_s = t.elapsed().as_secs_f64();
    let stats2 = store.stats()?;
    println!(
        "stored events: {}; on disk: {:.1} bytes/event (segments {:.1}); in memory: {:.1} bytes/event (columns); open: {:.3} s",
        stats2.events,
        stats2.bytes_on_disk as f64 / stats2.events.max(1) as f64,
        stats2.segment_bytes as f64 / stats2.events.max(1) as f64,
        stats2.bytes_in_memory as f64 / stats2.events.max(1) as f64,
        open_s
    );
    let embedded = queries(&store, &args)?;
    if let Some(url) = &args.clickhouse_url {
        clickhouse(url, &args, events, &embedded)?;
    }
    Ok(())
}

/// Loads the demo events into ClickHouse (unless --reuse finds them) and
/// times the same queries there.
fn clickhouse(
    url: &str,
    args: &Args,
    events: usize,
    embedded: &[(String, QueryResult)],
) -> Result<()> {
    use dropscope_clickhouse::ClickHouse;
    let db = &args.clickhouse_database;
    let mut ch = ClickHouse::open(url, db).map_err(anyhow::Error::msg)?;
    let filled = ch.event_count().map_err(anyhow::Error::msg)? > 0;
    if !(args.reuse && filled) {
        ch.drop_database().map_err(anyhow::Error::msg)?;
        ch = ClickHouse::open(url, db).map_err(anyhow::Error::msg)?;
        let gen: Vec<_> = dropscope_testkit::demo::generate(&demo_options(events)).collect();
        let t = Instant::now();
        for chunk in gen.chunks(100_000) {
            ch.append(chunk).map_err(anyhow::Error::msg)?;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "clickhouse load ({url}, database {db}): {} events in {s:.1} s = {:.0} events/s",
            ch.event_count().map_err(anyhow::Error::msg)?,
            ch.event_count().map_err(anyhow::Error::msg)? as f64 / s
        );
    }
    for (name, q) in all_queries() {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        let reps = if args.smoke { 1 } else { args.reps.max(1) };
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            let t = Instant::now();
            match ch.run(&q) {
                Ok(r) => last = Some(r),
                Err(dropscope_core::QueryError::Unsupported(why)) => {
                    println!("clickhouse {name:<19} unsupported: {why}");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let Some(res) = last else { continue };
        times.sort_by(f64::total_cmp);
        println!(
            "clickhouse {name:<19} best {:>9.1} ms  median {:>9.1} ms  [{}]",
            times[0],
            times[times.len() / 2],
            summary(&res)
        );
        if let Some((_, e)) = embedded.iter().find(|(n, _)| n == name) {
            if let (QueryResult::Funnel(a), QueryResult::Funnel(b)) = (e, &res) {
                let counts = |f: &dropscope_core::result::FunnelResult| {
                    f.steps.iter().map(|s| s.count).collect::<Vec<_>>()
                };
                anyhow::ensure!(
                    counts(a) == counts(b),
                    "{name}: ClickHouse {:?} != embedded {:?}",
                    counts(b),
                    counts(a)
                );
            }
        }
    }
    Ok(())
}

fn demo_options(events: usize) -> dropscope_testkit::demo::DemoOptions {
    dropscope_testkit::demo::DemoOptions {
        seed: 7,
        events,
        ..Default::default()
    }
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
        _ => String::new(),
    }
}

fn import(dir: &std::path::Path, events: usize) -> Result<()> {
    let t = Instant::now();
    let gen: Vec<_> = dropscope_testkit::demo::generate(&demo_options(events)).collect();
    let gen_s = t.elapsed().as_secs_f64();
    let store = Store::open(dir, StoreOptions::default())?;
    let t = Instant::now();
    let mut stored = 0;
    for chunk in gen.chunks(10_000) {
        stored += store.append(chunk)?.stored;
    }
    store.flush()?;
    let append_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.compact()?;
    let compact_s = t.elapsed().as_secs_f64();
    drop(gen);
    println!("generate: {:.2} s; append+flush: {:.2} s = {:.0} events/s (fsync group commits of 10k); compact: {:.2} s", gen_s, append_s, stored as f64 / append_s, compact_s);
    store.close()?;
    Ok(())
}

/// The benchmark's queries over the demo funnel.
fn all_queries() -> Vec<(&'static str, FunnelQuery)> {
    let steps: Vec<Step> = dropscope_testkit::demo::DEMO_FUNNEL
        .iter()
        .map(|e| Step {
            event: Some(e.to_string()),
            ..Default::default()
        })
        .collect();
    let base = FunnelQuery {
        steps,
        date_from: Some("all".into()),
        ..Default::default()
    };
    let mut queries = vec![("funnel 5 steps", base.clone())];
    queries.push((
        "funnel + breakdown $browser",
        FunnelQuery {
            breakdown: Some(Breakdown {
                property: Some("$browser".into()),
                ..Default::default()
            }),
            ..base.clone()
        },
    ));
    queries.push((
        "strict funnel",
        FunnelQuery {
            order: FunnelOrder::Strict,
            ..base.clone()
        },
    ));
    queries.push((
        "unordered funnel",
        FunnelQuery {
            order: FunnelOrder::Unordered,
            ..base.clone()
        },
    ));
    queries.push((
        "correlation (events)",
        FunnelQuery {
            kind: QueryKind::Correlation,
            correlation: Some(CorrelationOptions::default()),
            ..base.clone()
        },
    ));
    queries
}

fn queries(store: &Store, args: &Args) -> Result<Vec<(String, QueryResult)>> {
    let queries = all_queries();
    let mut out = Vec::new();
    for (name, q) in &queries {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        let (best, median, res) = time_query(store, q, if args.smoke { 1 } else { args.reps })?;
        println!(
            "{name:<30} best {best:>9.1} ms  median {median:>9.1} ms  [{}]",
            summary(&res)
        );
        if let QueryResult::Funnel(f) = &res {
            anyhow::ensure!(
                f.steps[0].count > 0,
                "{name}: nobody entered the demo funnel"
            );
        }
        out.push((name.to_string(), res));
    }
    Ok(out)
}
