//! The `dropscope` binary: a thin shell over the library crates.

// mimalloc instead of glibc malloc: capture and import parse and free many
// small JSON values per event; malloc/free were ~20% of capture CPU
// (BENCHMARKS.md, "Capture over HTTP").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dropscope_core::query::{Breakdown, FunnelOrder, FunnelQuery, Step, Window, WindowUnit};
use dropscope_core::result::{FunnelResult, QueryResult};
use dropscope_store::{Store, StoreOptions};

mod table;

#[derive(Parser)]
#[command(
    name = "dropscope",
    version,
    about = "Conversion funnels, and why users drop off."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a realistic demo dataset into a store, load it and print the demo funnel.
    Demo {
        /// Where the store goes.
        #[arg(long, default_value = ".dropscope-demo")]
        data: PathBuf,
        /// Random seed (same seed, same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Approximate number of events.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Only generate, load and print; do not serve.
        #[arg(long)]
        no_serve: bool,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        addr: std::net::SocketAddr,
    },
    /// Serve the PostHog-compatible capture API and the query API
    /// (crates/dropscope-server/README.md).
    Serve {
        #[command(flatten)]
        cfg: dropscope_server::ServeConfig,
    },
    /// Import events and persons from JSONL or CSV files (format from the extension).
    Import {
        #[command(flatten)]
        target: TargetArgs,
        /// Files to import (.jsonl/.ndjson/.json or .csv).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Abort at the first bad line instead of skipping it.
        #[arg(long)]
        strict: bool,
    },
    /// Export every stored event (JSONL, the import format).
    Export {
        #[arg(long)]
        data: PathBuf,
        /// `jsonl` or `parquet` (Parquet needs `-o FILE`).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Run a funnel and print it as a table.
    Funnel {
        #[command(flatten)]
        target: TargetArgs,
        /// Comma-separated event names, e.g. '$pageview,signup,purchase'.
        #[arg(long)]
        steps: String,
        /// Conversion window: <number><s|m|h|d|w|mo>, e.g. 14d (default 14d).
        #[arg(long, default_value = "14d")]
        window: String,
        /// ordered (default), strict or unordered.
        #[arg(long, default_value = "ordered")]
        order: String,
        /// Break down by this event property.
        #[arg(long)]
        breakdown: Option<String>,
        /// Range start (default: all data).
        #[arg(long, default_value = "all")]
        date_from: String,
        /// Range end (default: now).
        #[arg(long)]
        date_to: Option<String>,
        /// Print the JSON result instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Why people drop: conversion per step, the largest drop, drivers (q < 0.05,
    /// raw and adjusted), segments converting differently, what dropped people did next.
    Diagnose {
        #[command(flatten)]
        target: TargetArgs,
        /// Comma-separated event names.
        #[arg(long)]
        steps: String,
        /// Conversion window, e.g. 14d.
        #[arg(long, default_value = "14d")]
        window: String,
        /// Range start (default: all data).
        #[arg(long, default_value = "all")]
        date_from: String,
        /// Range end (default: now).
        #[arg(long)]
        date_to: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run any query of the spec (docs/query.md) from a JSON file; prints JSON.
    Query {
        #[command(flatten)]
        target: TargetArgs,
        /// A JSON file holding a query (or `{"query": {...}}`).
        file: PathBuf,
    },
    /// Run every acceptance case (*.json) in DIR; exits non-zero if any fails.
    Cases {
        /// Folder of case files.
        dir: PathBuf,
        /// Backend to check: `embedded` (default) or `clickhouse` (a fresh
        /// database per case on the server at --clickhouse-url).
        #[arg(long, default_value = "embedded")]
        backend: String,
        /// ClickHouse HTTP address for `--backend clickhouse`.
        #[arg(
            long,
            env = "DROPSCOPE_CLICKHOUSE_URL",
            default_value = "http://127.0.0.1:18123"
        )]
        clickhouse_url: String,
        /// Only cases whose id contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Count cases the backend refuses as unsupported apart and do not
        /// fail for them (wrong answers and other errors still fail).
        #[arg(long)]
        allow_unsupported: bool,
    },
}

/// Where `import`, `funnel`, `diagnose` and `query` read and write.
#[derive(clap::Args)]
struct TargetArgs {
    /// Data directory of the embedded store (required with the embedded
    /// backend).
    #[arg(long)]
    data: Option<PathBuf>,
    /// `embedded` (the store in --data) or `clickhouse`.
    #[arg(long, env = "DROPSCOPE_BACKEND", default_value = "embedded")]
    backend: String,
    /// ClickHouse HTTP address for `--backend clickhouse`.
    #[arg(
        long,
        env = "DROPSCOPE_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// ClickHouse database of the project (created and migrated if needed).
    #[arg(
        long,
        env = "DROPSCOPE_CLICKHOUSE_DATABASE",
        default_value = "dropscope"
    )]
    clickhouse_database: String,
}

/// An opened backend.
enum Target {
    Embedded(Store),
    ClickHouse(Box<dropscope_clickhouse::ClickHouse>),
}

impl TargetArgs {
    fn open(&self) -> Result<Target> {
        match self.backend.as_str() {
            "embedded" => {
                let dir = self
                    .data
                    .as_deref()
                    .context("--data DIR is required with the embedded backend")?;
                Ok(Target::Embedded(open_store(dir)?))
            }
            "clickhouse" => {
                let ch = dropscope_clickhouse::ClickHouse::open(
                    &self.clickhouse_url,
                    &self.clickhouse_database,
                )
                .map_err(anyhow::Error::msg)
                .with_context(|| {
                    format!(
                        "opening ClickHouse database {:?} at {}",
                        self.clickhouse_database, self.clickhouse_url
                    )
                })?;
                Ok(Target::ClickHouse(Box::new(ch)))
            }
            other => bail!("--backend {other:?}: use embedded or clickhouse"),
        }
    }
}

impl Target {
    fn query(&self, q: &FunnelQuery) -> Result<QueryResult> {
        Ok(match self {
            Target::Embedded(store) => dropscope_engine::run_query(&store.snapshot()?, q)?,
            Target::ClickHouse(ch) => ch.run(q)?,
        })
    }

    /// Appends records; returns (stored, duplicates).
    fn append(&mut self, batch: &[dropscope_store::Record]) -> Result<(u64, u64), String> {
        match self {
            Target::Embedded(store) => {
                let s = store.append(batch).map_err(|e| e.to_string())?;
                Ok((s.stored, s.duplicates))
            }
            Target::ClickHouse(ch) => {
                let before = ch.stored_events();
                ch.append(batch)?;
                let stored = ch.stored_events() - before;
                let events = batch
                    .iter()
                    .filter(|r| matches!(r, dropscope_store::Record::Event(_)))
                    .count() as u64;
                Ok((stored, events.saturating_sub(stored)))
            }
        }
    }

    /// Makes an import durable (the embedded store writes its segment).
    fn finish(self) -> Result<()> {
        match self {
            Target::Embedded(store) => {
                store.flush().context("flushing the store")?;
                store.close().context("closing the store")
            }
            Target::ClickHouse(_) => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DROPSCOPE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,dropscope_server=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn open_store(dir: &Path) -> Result<Store> {
    let store = Store::open(dir, StoreOptions::default())
        .with_context(|| format!("opening store {}", dir.display()))?;
    if let Some(r) = store.open_report() {
        if r.truncated_wal_bytes > 0 {
            eprintln!(
                "warning: cut {} bytes of torn WAL tail in {:?}: {}",
                r.truncated_wal_bytes,
                r.truncated_wal_file,
                r.truncation_reason.as_deref().unwrap_or("")
            );
        }
    }
    Ok(store)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Cases {
            dir,
            backend,
            filter,
            clickhouse_url,
            allow_unsupported,
        } => cases(
            &dir,
            &backend,
            filter.as_deref(),
            &clickhouse_url,
            allow_unsupported,
        ),
        Cmd::Import {
            target,
            files,
            strict,
        } => {
            let mut t = target.open()?;
            for f in files {
                import_file(&mut t, &f, strict)?;
            }
            t.finish()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            data,
            format,
            output,
        } => {
            if format != "jsonl" && format != "parquet" {
                bail!("unknown export format {format:?}: use jsonl or parquet");
            }
            if format == "parquet" {
                let out = output.as_ref().context("--format parquet needs -o FILE")?;
                let store = open_store(&data)?;
                let n = dropscope_io::parquet::write_events_parquet(out, &store.snapshot()?)
                    .map_err(anyhow::Error::msg)?;
                eprintln!("exported {n} events to {}", out.display());
                return Ok(ExitCode::SUCCESS);
            }

            let store = open_store(&data)?;
            let snap = store.snapshot()?;
            let mut w: Box<dyn Write> = match &output {
                Some(p) => Box::new(BufWriter::new(
                    File::create(p).with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let n = dropscope_io::snapshot_events(&snap, |e| {
                dropscope_io::write_event_jsonl(&mut w, &e)
            })?;
            w.flush()?;
            eprintln!("exported {n} events");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Funnel {
            target,
            steps,
            window,
            order,
            breakdown,
            date_from,
            date_to,
            json,
        } => {
            let q = funnel_query(&steps, &window, &order, breakdown, date_from, date_to)?;
            let target = target.open()?;
            let t = Instant::now();
            let res = target.query(&q)?;
            let took = t.elapsed();
            print_result(&res, json)?;
            if !json {
                println!("({:.1} ms)", took.as_secs_f64() * 1000.0);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Query { target, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            if let Some(q) = v.get_mut("query") {
                v = q.take();
            }
            let q = FunnelQuery::from_json(v)?;
            let res = target.open()?.query(&q)?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Diagnose {
            target,
            steps,
            window,
            date_from,
            date_to,
            json,
        } => {
            let mut q = funnel_query(&steps, &window, "ordered", None, date_from, date_to)?;
            q.kind = dropscope_core::query::QueryKind::Diagnosis;
            let res = target.open()?.query(&q)?;
            match (&res, json) {
                (QueryResult::Diagnosis(d), false) => {
                    print!("{}", dropscope_engine::diagnosis::render_text(d))
                }
                _ => println!("{}", serde_json::to_string_pretty(&res)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve { cfg } => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(dropscope_server::run(
                cfg,
                dropscope_server::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            data,
            seed,
            events,
            no_serve,
            addr,
        } => demo(&data, seed, events, no_serve, addr),
    }
}

/// A ClickHouse database made for one case and dropped after it.
struct FreshClickHouse(dropscope_clickhouse::ClickHouse);

impl FreshClickHouse {
    fn new(url: &str, db: &str) -> Result<Self, String> {
        dropscope_clickhouse::ClickHouse::open(url, db)?.drop_database()?;
        Ok(FreshClickHouse(dropscope_clickhouse::ClickHouse::open(
            url, db,
        )?))
    }
}

impl Drop for FreshClickHouse {
    fn drop(&mut self) {
        let _ = self.0.drop_database();
    }
}

impl dropscope_testkit::Backend for FreshClickHouse {
    fn load(&mut self, records: &[dropscope_store::Record]) -> Result<(), String> {
        dropscope_testkit::Backend::load(&mut self.0, records)
    }

    fn query(&self, q: &FunnelQuery) -> Result<QueryResult, dropscope_core::QueryError> {
        dropscope_testkit::Backend::query(&self.0, q)
    }
}

fn cases(
    dir: &Path,
    backend: &str,
    filter: Option<&str>,
    clickhouse_url: &str,
    allow_unsupported: bool,
) -> Result<ExitCode> {
    let mut n = 0u64;
    let outcomes = match backend {
        "embedded" => dropscope_testkit::run_dir(dir, || {
            dropscope_testkit::Embedded::durable()
                .map(|b| Box::new(b) as Box<dyn dropscope_testkit::Backend>)
        }),
        "clickhouse" => dropscope_testkit::run_dir(dir, || {
            n += 1;
            let db = format!("dropscope_cases_{}_{n}", std::process::id());
            FreshClickHouse::new(clickhouse_url, &db)
                .map(|b| Box::new(b) as Box<dyn dropscope_testkit::Backend>)
        }),
        other => bail!("unknown backend {other:?}: use embedded or clickhouse"),
    }
    .with_context(|| format!("reading cases from {}", dir.display()))?;
    let (mut passed, mut failed, mut unsupported) = (0, 0, 0);
    for o in outcomes
        .iter()
        .filter(|o| filter.is_none_or(|f| o.id.contains(f)))
    {
        if o.passed {
            passed += 1;
            println!("{} pass", o.id);
        } else if allow_unsupported && o.detail.contains("query failed: unsupported: ") {
            unsupported += 1;
            println!("{} UNSUPPORTED {}", o.id, o.detail);
        } else {
            failed += 1;
            println!("{} FAIL {}", o.id, o.detail);
        }
    }
    if allow_unsupported {
        println!("{passed} passed, {failed} failed, {unsupported} refused as unsupported");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn import_file(target: &mut Target, f: &Path, strict: bool) -> Result<()> {
    let format = dropscope_io::Format::from_path(f).with_context(|| {
        format!(
            "{}: unknown format (use .jsonl, .ndjson, .json, .csv or .parquet)",
            f.display()
        )
    })?;
    let file = File::open(f).with_context(|| format!("opening {}", f.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(f.display().to_string());
    let t = Instant::now();
    let (mut stored, mut dups, mut bad_count) = (0u64, 0u64, 0u64);
    let sink = |batch: Vec<dropscope_store::Record>| {
        let (s, d) = target.append(&batch)?;
        stored += s;
        dups += d;
        Ok(())
    };
    let bad = |e: dropscope_io::LineError| {
        bad_count += 1;
        if strict {
            return Err(format!("{}: {e} (--strict: aborting)", f.display()));
        }
        if bad_count <= 10 {
            bar.suspend(|| eprintln!("{}: rejected {e}", f.display()));
        }
        Ok(())
    };
    let res = if format == dropscope_io::Format::Parquet {
        drop(file);
        dropscope_io::parquet::read_parquet(f, 10_000, sink, bad)
    } else {
        let reader = BufReader::with_capacity(1 << 20, bar.wrap_read(file));
        dropscope_io::read_records(reader, format, 10_000, sink, bad)
    };
    bar.finish_and_clear();
    let (lines, _) = res.map_err(anyhow::Error::msg)?;
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{}: {lines} lines, {stored} stored, {dups} already stored, {bad_count} rejected; {:.0} lines/s",
        f.display(),
        lines as f64 / secs
    );
    Ok(())
}

fn parse_window(s: &str) -> Result<Window> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: i64 = num
        .parse()
        .with_context(|| format!("--window {s:?}: expected <number><unit>, e.g. 14d"))?;
    if value <= 0 {
        bail!("--window {s:?}: must be positive");
    }
    let unit = match unit {
        "s" => WindowUnit::Second,
        "m" | "min" => WindowUnit::Minute,
        "h" => WindowUnit::Hour,
        "" | "d" => WindowUnit::Day,
        "w" => WindowUnit::Week,
        "mo" => WindowUnit::Month,
        other => bail!("--window {s:?}: unknown unit {other:?} (s, m, h, d, w, mo)"),
    };
    Ok(Window {
        value: Some(value),
        unit: Some(unit),
    })
}

fn funnel_query(
    steps: &str,
    window: &str,
    order: &str,
    breakdown: Option<String>,
    date_from: String,
    date_to: Option<String>,
) -> Result<FunnelQuery> {
    let steps: Vec<Step> = steps
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|e| Step {
            event: Some(e.to_string()),
            ..Default::default()
        })
        .collect();
    if steps.is_empty() {
        bail!("--steps: give at least one event name");
    }
    let order = match order {
        "ordered" => FunnelOrder::Ordered,
        "strict" => FunnelOrder::Strict,
        "unordered" => FunnelOrder::Unordered,
        o => bail!("--order {o:?}: use ordered, strict or unordered"),
    };
    Ok(FunnelQuery {
        steps,
        order,
        window: Some(parse_window(window)?),
        breakdown: breakdown.map(|p| Breakdown {
            property: Some(p),
            limit: Some(10),
            ..Default::default()
        }),
        date_from: Some(date_from),
        date_to,
        ..Default::default()
    })
}

fn print_result(res: &QueryResult, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(res)?);
        return Ok(());
    }
    match res {
        QueryResult::Funnel(f) => print_funnel(f),
        other => println!("{}", serde_json::to_string_pretty(other)?),
    }
    Ok(())
}

fn print_funnel(f: &FunnelResult) {
    print!("{}", table::funnel_table(&f.steps));
    for row in f.breakdowns.iter().flatten() {
        println!(
            "\n{}:",
            if row.breakdown_display.is_empty() {
                "(none)"
            } else {
                &row.breakdown_display
            }
        );
        print!("{}", table::funnel_table(&row.steps));
    }
}

fn demo(
    data: &Path,
    seed: u64,
    events: usize,
    no_serve: bool,
    addr: std::net::SocketAddr,
) -> Result<ExitCode> {
    let opts = dropscope_testkit::demo::DemoOptions {
        seed,
        events,
        ..Default::default()
    };
    if data.exists() {
        std::fs::remove_dir_all(data).with_context(|| format!("clearing {}", data.display()))?;
    }
    let store = Store::open(data, StoreOptions::default())
        .with_context(|| format!("creating store {}", data.display()))?;
    let t = Instant::now();
    let bar = indicatif::ProgressBar::new(events as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "generating [{bar:30}] {pos}/{len} events {per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut batch = Vec::with_capacity(10_000);
    let mut n = 0u64;
    for r in dropscope_testkit::demo::generate(&opts) {
        batch.push(r);
        if batch.len() == 10_000 {
            n += store.append(&batch)?.stored;
            bar.set_position(n);
            batch.clear();
        }
    }
    n += store.append(&batch)?.stored;
    bar.finish_and_clear();
    store.flush()?;
    store.compact()?;
    println!(
        "stored {n} events in {} ({:.1} s)",
        data.display(),
        t.elapsed().as_secs_f64()
    );
    let q = dropscope_testkit::demo::funnel_query();
    let t = Instant::now();
    let res = dropscope_engine::run_query(&store.snapshot()?, &q)?;
    println!("\ndemo funnel (14-day window, all data):");
    print_result(&res, false)?;
    println!("({:.1} ms)", t.elapsed().as_secs_f64() * 1000.0);
    println!(
        "\nnext: dropscope funnel --data {} --steps '{}' --breakdown '$browser'",
        data.display(),
        dropscope_testkit::demo::DEMO_FUNNEL.join(",")
    );
    if !no_serve {
        let settings = dropscope_server::ServeConfig {
            data: Some(data.to_path_buf()),
            addr: Some(addr),
            ..Default::default()
        }
        .resolve()?;
        println!("\nserving on http://{addr}/  (Ctrl-C to stop)");
        println!(
            "  project token (capture, write-only): {}",
            settings.project_token
        );
        println!(
            "  secret key (queries, web page):      {}",
            settings.secret_key
        );
        println!(
            "  try: curl -s -H 'Authorization: Bearer {}' http://{addr}/api/events",
            settings.secret_key
        );
        let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let store = std::sync::Arc::new(store);
        rt.block_on(dropscope_server::serve(
            settings,
            store,
            dropscope_server::shutdown_signal(),
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
