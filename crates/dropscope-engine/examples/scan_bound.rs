//! Profiling aid: opens a store, times a bare parallel scan of the columns
//! a funnel reads (event id and timestamp of every event, straight from
//! each run's columns, with the step-table lookup and nothing else), then
//! the demo funnel, so the two can be compared (BENCHMARKS.md, "bound").
//!
//! `cargo run --release -p dropscope-engine --example scan_bound -- DIR [REPS] [scan|funnel]`
//! (`DROPSCOPE_GATHER=scalar` or `avx2` runs the funnel kernel with a narrower gather)

use std::time::Instant;

use dropscope_core::query::{FunnelQuery, Step};
use dropscope_store::{Store, StoreOptions};
use rayon::prelude::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: scan_bound DIR [REPS]");
    let reps: usize = args.next().map_or(5, |r| r.parse().expect("REPS"));
    // "scan" or "funnel" runs only that one (for `perf stat` CPU time).
    let only = args.next().unwrap_or_default();
    let store = Store::open(std::path::Path::new(&dir), StoreOptions::default()).expect("open");
    let snap = store.snapshot().expect("snapshot");
    // DROPSCOPE_GATHER=scalar|avx2 picks a narrower gather to compare.
    println!("gather: {:?}", dropscope_engine::kernel::gather_path());
    let steps = [
        "$pageview",
        "signup_started",
        "signup_completed",
        "onboarding_done",
        "first_purchase",
    ];
    let table: Vec<u64> = {
        let d = snap.dicts();
        let mut t = vec![0u64; d.events.len()];
        for (i, s) in steps.iter().enumerate() {
            if let Some(id) = d.events.get(s) {
                t[id as usize] |= 1 << i;
            }
        }
        t
    };
    for _ in 0..reps {
        if only == "funnel" {
            funnel(&snap, &steps);
            continue;
        }
        let t = Instant::now();
        // The columns as the kernel reads them: each run's event ids and
        // times, in parallel chunks, with the same step-table lookup and
        // nothing else (no state machine, no per-actor work).
        let chunks: Vec<(&[u32], &[i64])> = snap
            .runs()
            .iter()
            .flat_map(|run| {
                let (event, ts): (&[u32], &[i64]) = (&run.cols.event, &run.cols.ts);
                event.chunks(1 << 16).zip(ts.chunks(1 << 16))
            })
            .collect();
        let (hits, sum) = chunks
            .par_iter()
            .map(|(event, ts)| {
                let (mut h, mut s) = (0u64, 0i64);
                for (&e, &t) in event.iter().zip(ts.iter()) {
                    let c = table.get(e as usize).copied().unwrap_or(0);
                    let hit = c != 0;
                    h += u64::from(hit);
                    s = s.wrapping_add(t & 0i64.wrapping_sub(i64::from(hit)));
                }
                (h, s)
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1.wrapping_add(b.1)));
        let scan = t.elapsed();
        println!(
            "bare scan: {:.1} ms ({hits} step events, checksum {sum})",
            scan.as_secs_f64() * 1e3
        );
        if only != "scan" {
            funnel(&snap, &steps);
        }
    }
}

fn funnel(snap: &dropscope_store::Snapshot, steps: &[&str]) {
    {
        let q = FunnelQuery {
            steps: steps
                .iter()
                .map(|e| Step {
                    event: Some(e.to_string()),
                    ..Default::default()
                })
                .collect(),
            date_from: Some("all".into()),
            ..Default::default()
        };
        let t = Instant::now();
        let r = dropscope_engine::run_query(snap, &q).expect("query");
        let fun = t.elapsed();
        let counts = match r {
            dropscope_core::result::QueryResult::Funnel(f) => {
                f.steps.iter().map(|s| s.count).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        };
        println!("funnel: {:.1} ms {counts:?}", fun.as_secs_f64() * 1e3);
    }
}
