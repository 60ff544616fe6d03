//! Time to convert (SEMANTICS rule 16) on stage B: per counted actor the
//! time `times[to] − times[from]`; ClickHouse returns the count, extremes
//! and sum, then the count per bin of the engine's [`BinLayout`].

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::TimeToConvertResult;
use dropscope_core::QueryError;
use dropscope_engine::ttc::BinLayout;

use crate::dispatch::refuse_amb;
use crate::funnel::{actors_sql, FunnelSpec};
use crate::ClickHouse;

pub fn run(
    ch: &ClickHouse,
    q: &FunnelQuery,
    spec: &FunnelSpec,
) -> Result<TimeToConvertResult, QueryError> {
    let n = spec.steps.len();
    let from = q.from_step.unwrap_or(0);
    let to = q.to_step.unwrap_or(n - 1);
    let actors = actors_sql(ch.database(), spec);
    let d = format!("(times[{}] - times[{}])", to + 1, from + 1);
    let conv = format!("bitTest(bits, {to}) AND bitTest(bits, {from})");
    let r = ch
        .select_json(&format!(
            "SELECT max(amb) AS amb, countIf({conv}) AS n, minIf({d}, {conv}) AS mn, \
             maxIf({d}, {conv}) AS mx, sumIf({d}, {conv}) AS sm FROM ({actors}) FORMAT JSON"
        ))
        .map_err(QueryError::Backend)?;
    let row = &r["data"][0];
    refuse_amb(&row["amb"])?;
    let count = row["n"].as_u64().unwrap_or(0);
    if count == 0 {
        return Ok(TimeToConvertResult::default());
    }
    let ms = |k: &str| row[k].as_i64().unwrap_or(0) as f64 / 1000.0;
    let layout = BinLayout::new(count as usize, ms("mn"), ms("mx"), q.bin_count);
    // The engine's BinLayout::bin, in SQL (same float operations).
    let r = ch
        .select_json(&format!(
            "SELECT least(toUInt64(floor(({d} / 1000 - {min}) / {width})), {c}) AS b, count() AS k \
             FROM ({actors}) WHERE {conv} GROUP BY b FORMAT JSON",
            min = f64_sql(layout.min),
            width = f64_sql(layout.width),
            c = layout.count,
        ))
        .map_err(QueryError::Backend)?;
    let mut counts = vec![0u64; layout.count + 1];
    for row in r["data"].as_array().into_iter().flatten() {
        let b = row["b"].as_u64().unwrap_or(0) as usize;
        if let Some(c) = counts.get_mut(b) {
            *c += row["k"].as_u64().unwrap_or(0);
        }
    }
    let sum_s = ms("sm");
    Ok(layout.result(&counts, Some(sum_s / count as f64), count))
}

/// A float literal ClickHouse reads back exactly (the layout's values are
/// whole numbers).
pub(crate) fn f64_sql(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:e}")
    }
}
