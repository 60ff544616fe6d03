//! Profiling aid: runs the demo funnel's diagnosis report part by part (the
//! steps view, the segment keys, one correlation per transition, one
//! breakdown funnel per segment key, the paths) and prints, for each part,
//! its wall time and the process's peak resident memory while it ran,
//! split into heap (anonymous) and mapped file pages, so the part that
//! sets the report's peak can be found (BENCHMARKS.md, "On a machine without
//! AVX-512").
//!
//! `cargo run --release -p dropscope-engine --example diagnosis_memory -- DIR`
//! (`DM_SMAPS=1` also lists the mappings holding the most resident memory)
//!
//! Linux only: the peak is reset before each part by writing `5` to
//! `/proc/self/clear_refs`, and read from `/proc/self/status`.

use std::time::Instant;

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{CorrelationResult, FunnelResult, PathsResult};
use dropscope_core::QueryError;
use dropscope_engine::diagnosis::{compose, discover_segment_keys, Parts};
use dropscope_engine::Plan;
use dropscope_store::{Snapshot, Store, StoreOptions};
use serde_json::json;

/// A field of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Runs `f`, printing its time and the peak RSS it reached.
fn measured<T>(name: &str, f: impl FnOnce() -> T) -> T {
    // Resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_mib("VmRSS:");
    let t = Instant::now();
    let out = f();
    println!(
        "{name:<40} {:>9.1} ms   peak RSS {:>7.0} MiB (before {:>6.0}; after: heap {:>6.0}, file {:>6.0})",
        t.elapsed().as_secs_f64() * 1000.0,
        status_mib("VmHWM:"),
        before,
        status_mib("RssAnon:"),
        status_mib("RssFile:"),
    );
    top_mappings();
    out
}

struct Measured<'s>(&'s Snapshot);

impl Parts for Measured<'_> {
    fn funnel(&self, q: &FunnelQuery) -> Result<FunnelResult, QueryError> {
        let name = match &q.breakdown {
            Some(b) => format!("funnel by {}", b.property.clone().unwrap_or_default()),
            None => "funnel".into(),
        };
        measured(&name, || {
            dropscope_engine::funnel::funnel(&Plan::new(self.0, q)?)
        })
    }
    fn segment_keys(&self, q: &FunnelQuery) -> Result<Vec<String>, QueryError> {
        measured("segment keys", || {
            Ok(discover_segment_keys(&Plan::new(self.0, q)?))
        })
    }
    fn correlation(&self, q: &FunnelQuery) -> Result<CorrelationResult, QueryError> {
        let name = format!("correlation from step {}", q.from_step.unwrap_or(0));
        measured(&name, || {
            dropscope_engine::correlation::correlation_supported(&Plan::new(self.0, q)?)
        })
    }
    fn paths(&self, q: &FunnelQuery) -> Result<PathsResult, QueryError> {
        measured("paths", || {
            dropscope_engine::paths::paths(&Plan::new(self.0, q)?)
        })
    }
}

/// The mapped files holding the most resident memory, with `DM_SMAPS=1`.
fn top_mappings() {
    if std::env::var_os("DM_SMAPS").is_none() {
        return;
    }
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut by_file: std::collections::HashMap<String, f64> = Default::default();
    let mut current = String::new();
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: f64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0.0);
            *by_file.entry(current.clone()).or_default() += kib / 1024.0;
        } else if line
            .split_whitespace()
            .next()
            .and_then(|range| range.split_once('-'))
            .is_some_and(|(a, b)| {
                u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
            })
        {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            current = line
                .split_whitespace()
                .nth(5)
                .unwrap_or("[anon]")
                .to_string();
        }
    }
    let mut v: Vec<_> = by_file.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (f, mib) in v.iter().take(8) {
        println!("    {mib:>8.1} MiB  {f}");
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: diagnosis_memory DIR");
    let store = measured("open", || {
        Store::open(std::path::Path::new(&dir), StoreOptions::default()).expect("open")
    });
    let snap = store.snapshot().expect("snapshot");
    let q: FunnelQuery = serde_json::from_value(json!({
        "kind": "diagnosis",
        "steps": [
            {"event": "$pageview"},
            {"event": "signup_started"},
            {"event": "signup_completed"},
            {"event": "onboarding_done"},
            {"event": "first_purchase"},
        ],
        "date_from": "all",
    }))
    .expect("query");
    // Each part resets the peak, so the report's peak is the largest above.
    let t = Instant::now();
    let r = compose(&q, &Measured(&snap)).expect("diagnosis");
    println!(
        "whole report: {:.1} ms; {} drivers, {} segments, {} hypotheses",
        t.elapsed().as_secs_f64() * 1000.0,
        r.drivers.len(),
        r.segments.len(),
        r.hypotheses
    );
}
