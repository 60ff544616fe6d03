//! Every acceptance case (../shared/cases, or $CASES_DIR) through the
//! ClickHouse backend, one fresh database per case. Cases inside the
//! supported subset must pass; the others must be refused as unsupported
//! (never answered wrongly). A ClickHouse that cannot be started fails.

mod common;

use std::path::PathBuf;

use dropscope_clickhouse::check_supported;
use dropscope_core::query::{PersonsFor, QueryKind};
use dropscope_core::QueryError;
use dropscope_testkit::case::{case_query, persons_query};
use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Class {
    /// Checked without a backend (funnel_config, correlation_significance).
    NoBackend,
    Supported,
    Unsupported(String),
}

fn classify(case: &Value) -> Class {
    let kind = case["query"]["kind"].as_str().unwrap_or("funnel");
    if matches!(kind, "funnel_config" | "correlation_significance") {
        return Class::NoBackend;
    }
    match case_query(case) {
        Err(_) => Class::Supported, // refused while parsing: a validation case
        Ok((q, _)) => {
            // The main query and every follow-up query the checks make.
            let mut queries = vec![q.clone()];
            let exp = &case["expected"];
            let list = |k: &str| {
                exp.get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            for a in list("actors_at_step") {
                let step = a["funnel_step"].as_i64().unwrap_or(1);
                let bd = a.get("breakdown").filter(|b| !b.is_null()).cloned();
                queries.push(persons_query(&q, step, bd));
            }
            for a in list("trend_actors") {
                let mut pq = q.clone();
                pq.kind = QueryKind::FunnelPersons;
                pq.entrance_period_start = a["entrance_period_start"].as_str().map(String::from);
                pq.drop_off = a["dropped_off"].as_bool();
                queries.push(pq);
            }
            for a in list("correlation_actors") {
                let mut pq = q.clone();
                pq.kind = QueryKind::CorrelationPersons;
                pq.persons_for = Some(PersonsFor {
                    event: a["event"].as_str().map(String::from),
                    properties: a
                        .get("event_properties")
                        .filter(|p| !p.is_null())
                        .and_then(|p| serde_json::from_value(p.clone()).ok()),
                    ..Default::default()
                });
                queries.push(pq);
            }
            for _ in list("property_actors") {
                let mut pq = q.clone();
                pq.kind = QueryKind::CorrelationPersons;
                pq.persons_for = Some(PersonsFor {
                    property: Some("key::value".into()),
                    ..Default::default()
                });
                queries.push(pq);
            }
            for q in &queries {
                match check_supported(q) {
                    Ok(_) | Err(QueryError::Invalid { .. }) => {}
                    Err(e) => return Class::Unsupported(e.to_string()),
                }
            }
            Class::Supported
        }
    }
}

#[test]
fn acceptance_cases_on_clickhouse() {
    let dir = std::env::var("CASES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::workspace().join("../shared/cases"));
    assert!(
        dir.is_dir(),
        "acceptance cases not found at {} (set CASES_DIR)",
        dir.display()
    );
    common::server();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    // (file stem, class, outcome), one fresh database per case.
    let mut outcomes = Vec::new();
    for p in &files {
        let id = p.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(p).expect("read case");
        let case: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{id}: not JSON: {e}"));
        let class = classify(&case);
        let mut backend = common::Fresh::new("dscase")
            .unwrap_or_else(|e| panic!("{id}: creating a ClickHouse database: {e}"));
        let o = dropscope_testkit::run_case(&case, &mut backend);
        outcomes.push((id, class, o));
    }
    let (mut passed, mut failed, mut refused, mut wrong, mut no_backend) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (id, class, o) in &outcomes {
        let id = id.clone();
        match class {
            Class::NoBackend => no_backend.push(id),
            Class::Supported if o.passed => passed.push(id),
            Class::Supported => failed.push(format!("{id}: {}", o.detail)),
            Class::Unsupported(why) if o.passed || o.detail.contains("unsupported:") => {
                refused.push(format!("{id}: {why}"))
            }
            Class::Unsupported(why) => {
                wrong.push(format!("{id} (unsupported: {why}): {}", o.detail))
            }
        }
    }
    println!("supported cases passed ({}):", passed.len());
    for id in &passed {
        println!("  {id}");
    }
    println!(
        "unsupported, refused as such: {}; checked without a backend: {}",
        refused.len(),
        no_backend.len()
    );
    for r in &refused {
        println!("  refused {r}");
    }
    assert!(
        failed.is_empty(),
        "supported cases failed ({}):\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "unsupported cases not refused as unsupported ({}):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        !passed.is_empty(),
        "no supported case found in {}",
        dir.display()
    );
}
