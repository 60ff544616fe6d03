//! Shared by the ClickHouse integration tests: starts the private server
//! through scripts/clickhouse.sh (installing it if missing) and hands out
//! fresh databases.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use dropscope_clickhouse::ClickHouse;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{BreakdownRow, FunnelResult, PersonsResult, QueryResult, StepResult};
use dropscope_core::QueryError;
use dropscope_store::Record;
use dropscope_testkit::Backend;
use serde_json::Value;

pub fn workspace() -> PathBuf {
    dropscope_testkit::clickhouse_server::workspace()
}

/// The server's URL, after starting it (once per test binary). Panics when
/// it cannot be started: a missing ClickHouse fails the tests.
pub fn server() -> &'static str {
    dropscope_testkit::clickhouse_server::url()
}

/// A backend on a database of its own, dropped with it.
pub struct Fresh(pub ClickHouse);

impl Fresh {
    pub fn new(prefix: &str) -> Result<Fresh, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let db = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ch = ClickHouse::open(server(), &db)?;
        ch.drop_database()?;
        Ok(Fresh(ClickHouse::open(server(), &db)?))
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.0.drop_database();
    }
}

impl Backend for Fresh {
    fn load(&mut self, records: &[Record]) -> Result<(), String> {
        self.0.load(records)
    }

    fn query(&self, q: &FunnelQuery) -> Result<QueryResult, QueryError> {
        self.0.query(q)
    }
}

/// The same records in an in-memory store (the engine's side) and in a
/// fresh database (`prefix`) on the ClickHouse server.
pub fn load_both(prefix: &str, recs: &[Record]) -> (dropscope_store::Store, Fresh) {
    let store = dropscope_store::Store::in_memory();
    store.append(recs).expect("append");
    let mut ch = Fresh::new(prefix).expect("clickhouse");
    ch.load(recs).expect("load");
    (store, ch)
}

/// Random cases per comparison test: `PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Equal within 1e-6 relative (absolute below 1), or both absent.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * x.abs().max(1.0),
        _ => false,
    }
}

/// Every number of the steps: counts, drop-off, in progress, rates, times.
pub fn same_steps(a: &[StepResult], b: &[StepResult]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} steps vs {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        let ok = x.name == y.name
            && x.count == y.count
            && x.dropped == y.dropped
            && x.in_progress == y.in_progress
            && close(Some(x.conversion_from_first), Some(y.conversion_from_first))
            && close(
                Some(x.conversion_from_previous),
                Some(y.conversion_from_previous),
            )
            && close(x.average_conversion_time, y.average_conversion_time)
            && close(x.median_conversion_time, y.median_conversion_time);
        if !ok {
            return Err(format!(
                "step {}:\n engine     {x:?}\n clickhouse {y:?}",
                x.order
            ));
        }
    }
    Ok(())
}

/// The steps and the breakdown rows (values, displayed values, order,
/// every number) of two funnel answers.
pub fn same_funnel(a: &FunnelResult, b: &FunnelResult) -> Result<(), String> {
    same_steps(&a.steps, &b.steps).map_err(|e| format!("steps: {e}"))?;
    match (&a.breakdowns, &b.breakdowns) {
        (None, None) => Ok(()),
        (Some(x), Some(y)) => {
            let rows = |r: &[BreakdownRow]| -> Vec<(Value, String)> {
                r.iter()
                    .map(|r| (r.breakdown_value.clone(), r.breakdown_display.clone()))
                    .collect()
            };
            let (vx, vy) = (rows(x), rows(y));
            if vx != vy {
                return Err(format!("breakdown rows: engine {vx:?}, clickhouse {vy:?}"));
            }
            for (rx, ry) in x.iter().zip(y) {
                same_steps(&rx.steps, &ry.steps)
                    .map_err(|e| format!("breakdown {}: {e}", rx.breakdown_value))?;
            }
            Ok(())
        }
        _ => Err("breakdowns present on one side only".into()),
    }
}

/// The Kaplan–Meier conversion curves of two funnel answers.
pub fn same_curve(a: &FunnelResult, b: &FunnelResult) -> Result<(), String> {
    let differ = a.conversion_curve.len() != b.conversion_curve.len()
        || a.conversion_curve
            .iter()
            .zip(&b.conversion_curve)
            .any(|(p, q)| {
                !close(Some(p.seconds), Some(q.seconds))
                    || !close(Some(p.converted), Some(q.converted))
                    || p.at_risk != q.at_risk
            });
    if differ {
        return Err(format!(
            "curve: engine {:?}, clickhouse {:?}",
            a.conversion_curve, b.conversion_curve
        ));
    }
    Ok(())
}

/// (sorted distinct ids, furthest step, matched times) of a persons row.
pub type PersonKey = (Vec<String>, Option<usize>, Vec<Option<String>>);

/// Persons pages: equal as lists when labels agree (no identity joins);
/// otherwise (labels may differ: see README) as sets of rows keyed by
/// their distinct ids, on a single page.
pub fn same_persons(a: &PersonsResult, b: &PersonsResult, exact_order: bool) -> Result<(), String> {
    let key = |p: &PersonsResult| {
        let mut v: Vec<PersonKey> = p
            .persons
            .iter()
            .map(|r| {
                let mut d = r.distinct_ids.clone();
                d.sort();
                (d, r.furthest_step, r.matched_times.clone())
            })
            .collect();
        if !exact_order {
            v.sort();
        }
        v
    };
    let ids = |p: &PersonsResult| p.persons.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    if (a.total, a.offset, a.next_offset) != (b.total, b.offset, b.next_offset)
        || key(a) != key(b)
        || (exact_order && ids(a) != ids(b))
    {
        return Err(format!("persons:\n engine     {a:?}\n clickhouse {b:?}"));
    }
    Ok(())
}

/// Compared answers per query shape along the lifted refusals (actors,
/// `totals`, strict trends with a breakdown, unordered trends by step,
/// properties at step, correlation breakdowns), printed so a run shows
/// they are compared.
static SHAPES: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

pub fn count_shapes(qv: &Value) {
    let kind = qv["kind"].as_str().unwrap_or("funnel");
    let mut tags = Vec::new();
    if let Some(a) = qv["aggregation"].as_str() {
        tags.push(format!("{kind} by {}", a.split(':').next().unwrap_or(a)));
    }
    if qv["counting"] == serde_json::json!("totals") {
        tags.push(format!("{kind} totals"));
    }
    if qv["correlation"]["properties_at_step"] == serde_json::json!(true) {
        tags.push(format!("{kind} properties_at_step"));
    }
    if kind == "correlation" && qv.get("breakdown").is_some() {
        let t = qv["breakdown"]["type"].as_str().unwrap_or("event");
        if t == "cohort" {
            tags.push("correlation with a cohort breakdown".to_string());
        } else {
            let a = qv["breakdown"]["attribution"]
                .as_str()
                .unwrap_or("first_touch");
            tags.push(format!("correlation with a {t} breakdown ({a})"));
        }
    }
    // `step` attribution in strict and unordered funnels (the steps view
    // and the kinds built on stage B; trends are counted below).
    let trends = kind == "funnel_trends" || qv.get("entrance_period_start").is_some();
    if !trends && qv["breakdown"]["attribution"] == serde_json::json!("step") {
        if let Some(o @ ("strict" | "unordered")) = qv["order"].as_str() {
            tags.push(format!("{kind} {o} by step"));
        }
    }
    if let Some(ids) = qv["breakdown"]["cohorts"].as_array() {
        if ids.iter().enumerate().any(|(i, x)| ids[..i].contains(x)) {
            tags.push(format!("{kind} with a cohort listed twice"));
        }
    }
    if kind == "funnel_trends" || qv.get("entrance_period_start").is_some() {
        if qv["order"] == serde_json::json!("strict") && qv.get("breakdown").is_some() {
            tags.push(format!("{kind} strict with breakdown"));
        }
        if qv["order"] == serde_json::json!("unordered")
            && qv["breakdown"]["attribution"] == serde_json::json!("step")
        {
            tags.push(format!("{kind} unordered by step"));
        }
    }
    let mut m = SHAPES.lock().unwrap();
    for t in tags {
        *m.entry(t).or_default() += 1;
    }
}

/// The counts of [`count_shapes`] so far.
pub fn shapes() -> std::collections::BTreeMap<String, usize> {
    SHAPES.lock().unwrap().clone()
}
