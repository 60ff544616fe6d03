//! Profiling aid: opens a store and runs the demo funnel's correlation
//! queries (events; events with person properties; properties), printing
//! wall and CPU milliseconds per run and writing the last answers as JSON,
//! so that two builds can be compared for equal results and speed.
//!
//! `cargo run --release -p dropscope-engine --example correlation_run -- DIR [REPS] [ONLY] [OUT]`
//!
//! `ONLY` picks queries whose name contains it (`-` = all); `OUT` is the
//! file the answers are written to.

use std::time::Instant;

use dropscope_core::query::FunnelQuery;
use dropscope_store::{Store, StoreOptions};
use serde_json::{json, Value};

/// CPU time of the whole process so far, in milliseconds.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) * 10.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: correlation_run DIR [REPS] [ONLY] [OUT]");
    let reps: usize = args.next().map_or(5, |r| r.parse().expect("REPS"));
    let only = args.next().filter(|o| o != "-");
    let out = args.next();
    let store = Store::open(std::path::Path::new(&dir), StoreOptions::default()).expect("open");
    let steps: Vec<Value> = [
        "$pageview",
        "signup_started",
        "signup_completed",
        "onboarding_done",
        "first_purchase",
    ]
    .iter()
    .map(|e| json!({ "event": e }))
    .collect();
    let queries = [
        ("events", json!({"type": "events"})),
        (
            "events+person",
            json!({"type": "events", "with_person_properties": ["$browser", "$os"]}),
        ),
        (
            "properties",
            json!({"type": "properties", "names": ["$browser", "$os"]}),
        ),
    ];
    let mut answers = serde_json::Map::new();
    for (name, corr) in queries {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let q: FunnelQuery = serde_json::from_value(json!({
            "kind": "correlation",
            "steps": steps,
            "date_from": "all",
            "correlation": corr,
        }))
        .expect("query");
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            let snap = store.snapshot().expect("snapshot");
            let (t, c) = (Instant::now(), cpu_ms());
            let r = dropscope_engine::run_query(&snap, &q).expect("query");
            walls.push(t.elapsed().as_secs_f64() * 1000.0);
            cpus.push(cpu_ms() - c);
            last = Some(r);
        }
        let show = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            format!("median {:.0} min {:.0}", v[v.len() / 2], v[0])
        };
        println!(
            "{name}: wall ms {}; cpu ms {}",
            show(&mut walls),
            show(&mut cpus)
        );
        answers.insert(
            name.to_string(),
            serde_json::to_value(last.expect("one rep")).expect("json"),
        );
    }
    if let Some(out) = out {
        let text = serde_json::to_string_pretty(&Value::Object(answers)).expect("json");
        std::fs::write(&out, text).expect("write answers");
    }
}
