//! Acceptance cases (../shared/cases/README.md): loading a case into a
//! backend, running its query, comparing with `expected`.

use std::collections::BTreeSet;

use dropscope_core::event::{content_uuid, format_uuid, CohortRecord, GroupRecord, PersonRecord};
use dropscope_core::query::{FunnelQuery, PersonsFor, Window};
use dropscope_core::result::QueryResult;
use dropscope_core::time::parse_event_timestamp;
use dropscope_core::QueryError;
use dropscope_store::{Record, Store};
use serde_json::{json, Map, Value};

/// Something that can load records and answer queries: the embedded store,
/// or ClickHouse.
pub trait Backend {
    fn load(&mut self, records: &[Record]) -> Result<(), String>;
    fn query(&self, q: &FunnelQuery) -> Result<QueryResult, QueryError>;
}

/// The embedded backend over an in-memory store.
/// The embedded backend: a fresh durable store in a temporary folder (the
/// same WAL, segment and recovery code as `dropscope import`; fsync off since
/// the folder is thrown away), or an in-memory store.
pub struct Embedded {
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    /// A fresh durable store in a temporary folder.
    pub fn durable() -> Result<Embedded, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary folder: {e}"))?;
        let opts = dropscope_store::StoreOptions {
            fsync: false,
            background_compaction: false,
            ..Default::default()
        };
        let store = Store::open(dir.path(), opts)
            .map_err(|e| format!("opening a store in {}: {e}", dir.path().display()))?;
        Ok(Embedded {
            store,
            _dir: Some(dir),
        })
    }

    /// An in-memory store (unit tests).
    pub fn in_memory() -> Embedded {
        Embedded {
            store: Store::in_memory(),
            _dir: None,
        }
    }
}

impl Backend for Embedded {
    fn load(&mut self, records: &[Record]) -> Result<(), String> {
        self.store
            .append(records)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn query(&self, q: &FunnelQuery) -> Result<QueryResult, QueryError> {
        let snap = self
            .store
            .snapshot()
            .map_err(|e| QueryError::Backend(e.to_string()))?;
        dropscope_engine::run_query(&snap, q)
    }
}

/// The records a case's data makes, in the order the case lists them:
/// persons, groups, cohorts, then events.
pub fn case_records(case: &Value) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    let mut known_dids = BTreeSet::new();
    for (i, p) in case["persons"].as_array().into_iter().flatten().enumerate() {
        let p: PersonRecord =
            serde_json::from_value(p.clone()).map_err(|e| format!("persons[{i}]: {e}"))?;
        known_dids.extend(p.distinct_ids.iter().cloned());
        out.push(Record::Person(p));
    }
    for (i, g) in case["groups"].as_array().into_iter().flatten().enumerate() {
        let g: GroupRecord =
            serde_json::from_value(g.clone()).map_err(|e| format!("groups[{i}]: {e}"))?;
        out.push(Record::Group(g));
    }
    for (i, c) in case["cohorts"].as_array().into_iter().flatten().enumerate() {
        let c: CohortRecord =
            serde_json::from_value(c.clone()).map_err(|e| format!("cohorts[{i}]: {e}"))?;
        out.push(Record::Cohort(c));
    }
    for (i, e) in case["events"].as_array().into_iter().flatten().enumerate() {
        let did = e["distinct_id"]
            .as_str()
            .ok_or(format!("events[{i}].distinct_id: missing"))?;
        let name = e["event"]
            .as_str()
            .ok_or(format!("events[{i}].event: missing"))?;
        let ts = parse_event_timestamp(&e["timestamp"])
            .ok_or(format!("events[{i}].timestamp: not a timestamp"))?;
        if let Some(pid) = e.get("person_id").and_then(Value::as_str) {
            if !known_dids.contains(did) {
                known_dids.insert(did.to_string());
                out.push(Record::Person(PersonRecord {
                    id: pid.to_string(),
                    distinct_ids: vec![did.to_string()],
                    properties: Map::new(),
                }));
            }
        }
        // Through the import parser, as `dropscope import` reads a line. The
        // uuid includes the event's position: identical events in a case
        // (ties made with freeze_time) are distinct events.
        let mut line = json!({
            "uuid": format_uuid(content_uuid(name, did, ts, i as u64)),
            "event": name,
            "distinct_id": did,
            "timestamp": e["timestamp"],
            "properties": e.get("properties").cloned().unwrap_or(json!({})),
        });
        if let Some(els) = e.get("elements").filter(|v| v.is_array()) {
            line["elements"] = els.clone();
        }
        out.push(
            dropscope_io::parse_json_record(line, i as u64 + 1)
                .map_err(|e| format!("events[{i}]: {e}"))?,
        );
    }
    Ok(out)
}

/// The query of a case, as our spec: keys that only describe the case are
/// removed (`resolved_range`), aliases translated (`funnel_step`).
pub fn case_query(case: &Value) -> Result<(FunnelQuery, Value), QueryError> {
    let mut q = case["query"].clone();
    let obj = q
        .as_object_mut()
        .ok_or_else(|| QueryError::invalid("query", "not an object"))?;
    let extra = json!({
        "offset_queries": obj.remove("offset_queries"),
        "contingency_tables": obj.remove("contingency_tables"),
    });
    obj.remove("resolved_range");
    if let Some(step) = obj.remove("funnel_step") {
        let mut pf = obj.remove("persons_for").unwrap_or(json!({}));
        pf["step"] = step;
        obj.insert("persons_for".into(), pf);
    }
    if !obj.contains_key("steps") {
        obj.insert("steps".into(), json!([]));
    }
    Ok((FunnelQuery::from_json(q)?, extra))
}

/// Outcome of one case.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub passed: bool,
    pub detail: String,
}

/// Runs one case on a fresh backend.
pub fn run_case(case: &Value, backend: &mut dyn Backend) -> Outcome {
    let id = case["id"].as_str().unwrap_or("?").to_string();
    let r = run_case_inner(case, backend);
    match r {
        Ok(()) => Outcome {
            id,
            passed: true,
            detail: String::new(),
        },
        Err(detail) => Outcome {
            id,
            passed: false,
            detail,
        },
    }
}

fn run_case_inner(case: &Value, backend: &mut dyn Backend) -> Result<(), String> {
    let expected = &case["expected"];
    let kind = case["query"]["kind"].as_str().unwrap_or("funnel");
    let want_error = expected.get("error").and_then(Value::as_str) == Some("validation_error");
    if kind == "funnel_config" {
        let w: Option<Window> =
            serde_json::from_value(case["query"]["window"].clone()).map_err(|e| e.to_string())?;
        let (v, u) = Window::effective(w.as_ref());
        let got = json!({"value": v, "unit": u});
        return compare(&expected["effective_window"], &got, "effective_window");
    }
    if kind == "correlation_significance" {
        return crate::compare::significance(case);
    }
    let records = case_records(case)?;
    backend.load(&records)?;
    let (q, extra) = match case_query(case) {
        Ok(x) => x,
        Err(e) if want_error => return ok_refused(e),
        Err(e) => return Err(format!("query refused: {e}")),
    };
    if want_error {
        return match backend.query(&q) {
            Err(e) => ok_refused(e),
            Ok(_) => Err("expected a validation error, the query was answered".into()),
        };
    }
    crate::compare::check(case, &q, &extra, backend)
}

fn ok_refused(e: QueryError) -> Result<(), String> {
    if e.is_user_error() && !e.to_string().is_empty() {
        Ok(())
    } else {
        Err(format!("refused, but not as a validation error: {e}"))
    }
}

/// Compares an expected value with ours: numbers within 1e-6 (relative),
/// objects by the expected keys only, lists element-wise.
pub fn compare(want: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Null, Value::Null) => Ok(()),
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            if (a - b).abs() <= 1e-7 * a.abs().max(1.0) {
                Ok(())
            } else {
                Err(format!("{path}: expected {a}, got {b}"))
            }
        }
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let gv = g.get(k).unwrap_or(&Value::Null);
                compare(wv, gv, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                return Err(format!(
                    "{path}: expected {} entries, got {}: {}",
                    w.len(),
                    g.len(),
                    short(got)
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                if wv.is_null() {
                    continue;
                }
                compare(wv, gv, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if want == got => Ok(()),
        _ => Err(format!(
            "{path}: expected {}, got {}",
            short(want),
            short(got)
        )),
    }
}

pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..300])
    } else {
        s
    }
}

/// A persons query for one step (helper for `actors_at_step`).
pub fn persons_query(q: &FunnelQuery, step: i64, breakdown: Option<Value>) -> FunnelQuery {
    let mut q = q.clone();
    q.kind = dropscope_core::query::QueryKind::FunnelPersons;
    q.persons_for = Some(PersonsFor {
        step: Some(step),
        ..Default::default()
    });
    q.breakdown_value = breakdown;
    q.limit = Some(10_000);
    q
}
