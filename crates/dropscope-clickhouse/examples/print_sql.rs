//! Prints the steps-view SQL the ClickHouse backend runs for a funnel query
//! (a JSON file, or `{"query": ...}`) against database DB, for reading and
//! timing it by hand:
//!
//! ```text
//! cargo run -p dropscope-clickhouse --example print_sql -- query.json DB
//! ```

use dropscope_core::query::FunnelQuery;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: print_sql QUERY.json DB")?;
    let db = args.next().unwrap_or_else(|| "dropscope".into());
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    if let Some(q) = v.get_mut("query") {
        v = q.take();
    }
    let q = FunnelQuery::from_json(v)?;
    let range = dropscope_core::time::resolve_range(&q, Some(0))?;
    let spec = dropscope_clickhouse::funnel::FunnelSpec {
        from_ms: range.from,
        to_ms: range.to,
        ..dropscope_clickhouse::check_supported(&q)?
    };
    println!("{}", dropscope_clickhouse::funnel::steps_sql(&db, &spec));
    Ok(())
}
