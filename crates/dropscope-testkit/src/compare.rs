//! The `expected` keys of acceptance cases, checked against our answers.

use std::collections::BTreeSet;

use dropscope_core::query::{FunnelQuery, PersonsFor, QueryKind};
use dropscope_core::result::{PersonsResult, QueryResult};
use serde_json::{json, Value};

use crate::case::{compare, persons_query, short, Backend};

type R = Result<(), String>;

fn run(backend: &dyn Backend, q: &FunnelQuery) -> Result<QueryResult, String> {
    backend.query(q).map_err(|e| format!("query failed: {e}"))
}

fn persons(backend: &dyn Backend, q: &FunnelQuery) -> Result<PersonsResult, String> {
    match run(backend, q)? {
        QueryResult::FunnelPersons(p) | QueryResult::CorrelationPersons(p) => Ok(p),
        other => Err(format!(
            "expected a persons result, got {}",
            short(&serde_json::to_value(other).unwrap_or_default())
        )),
    }
}

fn id_set(p: &PersonsResult) -> BTreeSet<String> {
    p.persons.iter().map(|a| a.id.clone()).collect()
}

fn want_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            x.as_str()
                .map(String::from)
                .unwrap_or_else(|| x.to_string())
        })
        .collect()
}

fn same_set(want: &Value, got: BTreeSet<String>, path: &str) -> R {
    let w = want_set(want);
    if w == got {
        Ok(())
    } else {
        Err(format!("{path}: expected {w:?}, got {got:?}"))
    }
}

/// Checks every asserted key of a case.
pub fn check(case: &Value, q: &FunnelQuery, extra: &Value, backend: &dyn Backend) -> R {
    let exp = &case["expected"];
    match q.kind {
        QueryKind::Funnel => check_funnel(exp, q, backend),
        QueryKind::FunnelPersons => check_persons(exp, q, extra, backend),
        QueryKind::FunnelTrends => check_trends(exp, q, backend),
        QueryKind::TimeToConvert => {
            let got = serde_json::to_value(run(backend, q)?).map_err(|e| e.to_string())?;
            let bins: Vec<Value> = got["bins"].as_array().cloned().unwrap_or_default();
            if let Some(w) = exp.get("bins") {
                compare(w, &Value::Array(bins), "bins")?;
            }
            if let Some(w) = exp.get("average_conversion_time") {
                compare(
                    w,
                    &got["average_conversion_time"],
                    "average_conversion_time",
                )?;
            }
            Ok(())
        }
        QueryKind::Correlation => check_correlation(exp, q, backend),
        QueryKind::CorrelationPersons => {
            let p = persons(backend, &with_limit(q))?;
            if let Some(w) = exp.get("persons") {
                same_set(w, id_set(&p), "persons")?;
            }
            if exp.get("exact_list") == Some(&Value::Bool(true)) {
                let ids: Vec<&String> = p.persons.iter().map(|a| &a.id).collect();
                let set: BTreeSet<&String> = ids.iter().copied().collect();
                if set.len() != ids.len() {
                    return Err(format!("persons: duplicates in {ids:?}"));
                }
            }
            Ok(())
        }
        other => Err(format!("no checks for kind {other:?}")),
    }
}

fn with_limit(q: &FunnelQuery) -> FunnelQuery {
    let mut q = q.clone();
    if q.limit.is_none() {
        q.limit = Some(10_000);
    }
    q
}

fn check_funnel(exp: &Value, q: &FunnelQuery, backend: &dyn Backend) -> R {
    let res = run(backend, q)?;
    let got = serde_json::to_value(&res).map_err(|e| e.to_string())?;
    let empty_ok = exp.get("empty_result_allowed") == Some(&Value::Bool(true));
    let all_zero = got["steps"]
        .as_array()
        .is_some_and(|s| s.iter().all(|x| x["count"] == json!(0)));
    if let Some(w) = exp.get("steps") {
        if !(empty_ok && all_zero) {
            compare_prefix(w, &got["steps"], "steps")?;
        }
    }
    if let Some(w) = exp.get("step_count") {
        compare(
            w,
            &json!(got["steps"].as_array().map_or(0, Vec::len)),
            "step_count",
        )?;
    }
    let rows = got["breakdowns"].as_array().cloned().unwrap_or_default();
    if let Some(w) = exp.get("breakdowns") {
        let mut used = vec![false; rows.len()];
        for (i, wr) in w.as_array().into_iter().flatten().enumerate() {
            let Some(bv) = wr.get("breakdown_value") else {
                // No value asserted: some row not matched yet must have these steps.
                let hit = rows
                    .iter()
                    .enumerate()
                    .position(|(j, r)| !used[j] && compare(&wr["steps"], &r["steps"], "").is_ok());
                match hit {
                    Some(j) => used[j] = true,
                    None => {
                        return Err(format!(
                            "breakdowns[{i}]: no row has steps {}",
                            short(&wr["steps"])
                        ))
                    }
                }
                continue;
            };
            let row = rows
                .iter()
                .find(|r| dropscope_engine::funnel::bd_matches(bv, &r["breakdown_value"]))
                .ok_or_else(|| {
                    format!(
                        "breakdowns[{i}]: no row {bv} among {}",
                        short(&Value::Array(
                            rows.iter().map(|r| r["breakdown_value"].clone()).collect()
                        ))
                    )
                })?;
            compare(
                &wr["steps"],
                &row["steps"],
                &format!("breakdowns[{bv}].steps"),
            )?;
        }
    }
    if let Some(w) = exp.get("breakdown_count") {
        compare(w, &json!(rows.len()), "breakdown_count")?;
    }
    for key in ["breakdown_values_sorted", "breakdown_values_any_order"] {
        if let Some(w) = exp.get(key) {
            let want: BTreeSet<String> = w
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.to_string())
                .collect();
            let got: BTreeSet<String> = rows
                .iter()
                .map(|r| r["breakdown_value"].to_string())
                .collect();
            if want != got {
                return Err(format!("{key}: expected {want:?}, got {got:?}"));
            }
        }
    }
    if let Some(w) = exp.get("breakdowns_first_row") {
        let first = rows.first().cloned().unwrap_or(Value::Null);
        compare(w, &first, "breakdowns_first_row")?;
    }
    if let Some(w) = exp.get("actors_at_step") {
        for (i, a) in w.as_array().into_iter().flatten().enumerate() {
            let step = a["funnel_step"]
                .as_i64()
                .ok_or(format!("actors_at_step[{i}].funnel_step"))?;
            let bd = a.get("breakdown").filter(|b| !b.is_null()).cloned();
            let pq = persons_query(q, step, bd);
            let p = persons(backend, &pq)?;
            same_set(
                &a["persons"],
                id_set(&p),
                &format!(
                    "actors_at_step[{i}] (step {step}, breakdown {})",
                    a.get("breakdown").unwrap_or(&Value::Null)
                ),
            )?;
        }
    }
    Ok(())
}

/// Compares a list of asserted steps with ours; a shorter expected list
/// asserts only the first steps.
fn compare_prefix(want: &Value, got: &Value, path: &str) -> R {
    match (want.as_array(), got.as_array()) {
        (Some(w), Some(g)) if w.len() < g.len() => {
            compare(want, &Value::Array(g[..w.len()].to_vec()), path)
        }
        _ => compare(want, got, path),
    }
}

fn check_persons(exp: &Value, q: &FunnelQuery, extra: &Value, backend: &dyn Backend) -> R {
    if let Some(offsets) = extra["offset_queries"].as_array() {
        let sizes = exp["page_sizes"].as_array().cloned().unwrap_or_default();
        for (i, off) in offsets.iter().enumerate() {
            let mut pq = q.clone();
            pq.offset = off.as_u64().map(|o| o as usize);
            let p = persons(backend, &pq)?;
            if let Some(w) = sizes.get(i) {
                compare(
                    &w["count"],
                    &json!(p.persons.len()),
                    &format!("page_sizes[{i}]"),
                )?;
            }
        }
    }
    if let Some(lookups) = exp.get("lookups") {
        for (i, l) in lookups.as_array().into_iter().flatten().enumerate() {
            let mut pq = with_limit(q);
            pq.breakdown_value = l.get("breakdown").filter(|b| !b.is_null()).cloned();
            let p = persons(backend, &pq)?;
            same_set(&l["persons"], id_set(&p), &format!("lookups[{i}]"))?;
        }
    }
    if exp.get("count").is_some()
        || exp.get("persons").is_some()
        || exp.get("persons_distinct_ids").is_some()
    {
        let p = persons(backend, &with_limit(q))?;
        if let Some(w) = exp.get("count") {
            compare(w, &json!(p.total), "count")?;
        }
        if let Some(w) = exp.get("persons") {
            same_set(w, id_set(&p), "persons")?;
        }
        if let Some(w) = exp.get("persons_distinct_ids") {
            check_did_sets(w, &p, "persons_distinct_ids")?;
        }
    }
    Ok(())
}

fn check_did_sets(want: &Value, p: &PersonsResult, path: &str) -> R {
    let norm = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    let w: BTreeSet<Vec<String>> = want
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            norm(
                l.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
            )
        })
        .collect();
    let g: BTreeSet<Vec<String>> = p
        .persons
        .iter()
        .map(|a| norm(a.distinct_ids.clone()))
        .collect();
    if w == g {
        Ok(())
    } else {
        Err(format!("{path}: expected {w:?}, got {g:?}"))
    }
}

fn check_trends(exp: &Value, q: &FunnelQuery, backend: &dyn Backend) -> R {
    let got = serde_json::to_value(run(backend, q)?).map_err(|e| e.to_string())?;
    let rows = got["rows"].as_array().cloned().unwrap_or_default();
    if let Some(w) = exp.get("rows") {
        compare(w, &Value::Array(rows.clone()), "rows")?;
    }
    if let Some(w) = exp.get("row_count") {
        let n = if got["series"].is_array() {
            got["series"].as_array().map_or(0, |s| {
                s.iter()
                    .map(|x| x["rows"].as_array().map_or(0, Vec::len))
                    .sum()
            })
        } else {
            rows.len()
        };
        compare(w, &json!(n), "row_count")?;
    }
    if let Some(w) = exp.get("rows_by_index").and_then(Value::as_object) {
        for (k, v) in w {
            let i: usize = k
                .parse()
                .map_err(|_| format!("rows_by_index: bad index {k}"))?;
            compare(
                v,
                rows.get(i).unwrap_or(&Value::Null),
                &format!("rows[{i}]"),
            )?;
        }
    }
    if let Some(w) = exp.get("rows_prefix").and_then(Value::as_array) {
        for (i, v) in w.iter().enumerate() {
            compare(
                v,
                rows.get(i).unwrap_or(&Value::Null),
                &format!("rows[{i}]"),
            )?;
        }
    }
    if let Some(w) = exp.get("every_row") {
        for (i, r) in rows.iter().enumerate() {
            compare(w, r, &format!("rows[{i}]"))?;
        }
    }
    if let Some(w) = exp.get("first_day_label") {
        compare(
            w,
            rows.first()
                .map(|r| &r["timestamp"])
                .unwrap_or(&Value::Null),
            "first_day_label",
        )?;
    }
    for (key, field) in [
        ("conversion_rates", "conversion_rate"),
        ("rows_reached_from_step_count", "reached_from_step_count"),
        ("rows_reached_to_step_count", "reached_to_step_count"),
    ] {
        if let Some(w) = exp.get(key) {
            let g: Vec<Value> = rows.iter().map(|r| r[field].clone()).collect();
            compare(w, &Value::Array(g), key)?;
        }
    }
    let series = got["series"].as_array().cloned().unwrap_or_default();
    if let Some(w) = exp.get("series_count") {
        compare(
            w,
            &json!(series.len().max(if series.is_empty() && !rows.is_empty() {
                1
            } else {
                0
            })),
            "series_count",
        )?;
    }
    if let Some(w) = exp.get("trend_series").and_then(Value::as_array) {
        for (i, ws) in w.iter().enumerate() {
            let srows = match ws.get("breakdown_value") {
                Some(bv) => series
                    .iter()
                    .find(|s| dropscope_engine::funnel::bd_matches(bv, &s["breakdown_value"]))
                    .map(|s| s["rows"].as_array().cloned().unwrap_or_default())
                    .ok_or_else(|| format!("trend_series[{i}]: no series {bv}"))?,
                None => rows.clone(),
            };
            let data: Vec<Value> = srows.iter().map(|r| r["conversion_rate"].clone()).collect();
            compare(
                &ws["data"],
                &Value::Array(data.clone()),
                &format!("trend_series[{i}].data"),
            )?;
            if let Some(dc) = ws.get("days_count") {
                compare(
                    dc,
                    &json!(data.len()),
                    &format!("trend_series[{i}].days_count"),
                )?;
            }
        }
    }
    if let Some(w) = exp.get("by_breakdown").and_then(Value::as_object) {
        for (bv, want) in w {
            let s = series
                .iter()
                .find(|s| dropscope_engine::funnel::bd_matches(&json!(bv), &s["breakdown_value"]))
                .ok_or_else(|| format!("by_breakdown: no series {bv}"))?;
            let srows = s["rows"].as_array().cloned().unwrap_or_default();
            for field in [
                "reached_from_step_count",
                "reached_to_step_count",
                "conversion_rate",
            ] {
                if let Some(wv) = want.get(field) {
                    let g: Vec<Value> = srows.iter().map(|r| r[field].clone()).collect();
                    compare(wv, &Value::Array(g), &format!("by_breakdown[{bv}].{field}"))?;
                }
            }
        }
    }
    if let Some(w) = exp.get("trend_actors").and_then(Value::as_array) {
        for (i, a) in w.iter().enumerate() {
            let mut pq = with_limit(q);
            pq.kind = QueryKind::FunnelPersons;
            pq.entrance_period_start = a["entrance_period_start"].as_str().map(String::from);
            pq.drop_off = a["dropped_off"].as_bool();
            let p = persons(backend, &pq)?;
            check_did_sets(
                &a["persons_distinct_ids"],
                &p,
                &format!("trend_actors[{i}]"),
            )?;
        }
    }
    Ok(())
}

fn check_correlation(exp: &Value, q: &FunnelQuery, backend: &dyn Backend) -> R {
    let got = serde_json::to_value(run(backend, q)?).map_err(|e| e.to_string())?;
    let events = got["events"].as_array().cloned().unwrap_or_default();
    if let Some(w) = exp.get("results").and_then(Value::as_array) {
        if w.len() != events.len() {
            return Err(format!(
                "results: expected {} rows, got {}: {}",
                w.len(),
                events.len(),
                short(&Value::Array(
                    events
                        .iter()
                        .map(|e| json!([e["event"], e["success_count"], e["failure_count"]]))
                        .collect()
                ))
            ));
        }
        for (i, (wr, gr)) in w.iter().zip(&events).enumerate() {
            let mut wr = wr.clone();
            let exact = wr.get("odds_ratio_compare").and_then(Value::as_str) == Some("exact");
            if let Some(o) = wr.as_object_mut() {
                o.remove("odds_ratio_compare");
                let odds = o.remove("odds_ratio");
                compare(&Value::Object(o.clone()), gr, &format!("results[{i}]"))?;
                if let Some(odds) = odds {
                    let (a, b) = (
                        odds.as_f64().unwrap_or(f64::NAN),
                        gr["odds_ratio"].as_f64().unwrap_or(f64::NAN),
                    );
                    let ok = if exact {
                        (a - b).abs() < 1e-9 * a.abs().max(1.0)
                    } else {
                        (a - b).abs() < 5e-8
                    };
                    if !ok {
                        return Err(format!("results[{i}].odds_ratio: expected {a}, got {b}"));
                    }
                }
            }
        }
    }
    if let Some(w) = exp.get("result_count") {
        compare(w, &json!(events.len()), "result_count")?;
    }
    if let Some(w) = exp.get("skewed") {
        compare(w, &got["skewed"], "skewed")?;
    }
    if let Some(w) = exp.get("correlation_actors").and_then(Value::as_array) {
        for (i, a) in w.iter().enumerate() {
            let mut pq = with_limit(q);
            pq.kind = QueryKind::CorrelationPersons;
            pq.persons_for = Some(PersonsFor {
                event: a["event"].as_str().map(String::from),
                properties: a
                    .get("event_properties")
                    .filter(|p| !p.is_null())
                    .and_then(|p| serde_json::from_value(p.clone()).ok()),
                converted: a["converted"].as_bool(),
                ..Default::default()
            });
            let p = persons(backend, &pq)?;
            compare(
                &a["count"],
                &json!(p.total),
                &format!("correlation_actors[{i}]"),
            )?;
        }
    }
    if let Some(w) = exp.get("property_actors").and_then(Value::as_array) {
        for (i, a) in w.iter().enumerate() {
            let prop = a["property"].as_array().cloned().unwrap_or_default();
            let key = prop.first().and_then(Value::as_str).unwrap_or("");
            let val = prop
                .get(1)
                .map(dropscope_core::event::value_string_form)
                .unwrap_or_default();
            let mut pq = with_limit(q);
            pq.kind = QueryKind::CorrelationPersons;
            pq.persons_for = Some(PersonsFor {
                property: Some(format!("{key}::{val}")),
                converted: a["converted"].as_bool(),
                ..Default::default()
            });
            let p = persons(backend, &pq)?;
            compare(
                &a["count"],
                &json!(p.total),
                &format!("property_actors[{i}]"),
            )?;
        }
    }
    Ok(())
}

/// `correlation_significance`: how many rows survive the support rule.
pub fn significance(case: &Value) -> R {
    let tables = case["query"]["contingency_tables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, t) in case["expected"]["kept_count_by_thresholds"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pct = t["min_person_percentage"].as_f64().unwrap_or(0.02);
        let cnt = t["min_person_count"].as_f64().unwrap_or(25.0);
        let kept = tables
            .iter()
            .filter(|r| {
                let s = r["success_count"].as_u64().unwrap_or(0);
                let f = r["failure_count"].as_u64().unwrap_or(0);
                let total = r["success_total"].as_u64().unwrap_or(0)
                    + r["failure_total"].as_u64().unwrap_or(0);
                dropscope_engine::correlation::has_support(s, f, total, pct, cnt)
            })
            .count();
        compare(
            &t["kept"],
            &json!(kept),
            &format!("kept_count_by_thresholds[{i}]"),
        )?;
    }
    Ok(())
}
