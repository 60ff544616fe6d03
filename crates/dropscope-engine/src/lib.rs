//! dropscope-engine: every query kind over the embedded store.
//!
//! [`run_query`] is the front door: it compiles a [`FunnelQuery`] against a
//! [`Snapshot`] ([`plan`]), then runs the query kind's module. The per-actor
//! funnel algorithms live in [`ordered`] (ordered and strict) and
//! [`unordered`]; each takes one actor's matched events and is a single pass.
//!
//! ```
//! use dropscope_store::{Store, Record};
//! use dropscope_core::{event::Event, query::FunnelQuery, result::QueryResult};
//! let store = Store::in_memory();
//! let ev = |id: u128, name: &str, ts: i64| Record::Event(Event {
//!     uuid: id, event: name.into(), distinct_id: "u1".into(), timestamp: ts, properties: Default::default() });
//! store.append(&[ev(1, "a", 1_600_000_000_000), ev(2, "b", 1_600_000_060_000)]).unwrap();
//! let q = FunnelQuery::from_json(serde_json::json!({
//!     "steps": [{"event": "a"}, {"event": "b"}],
//!     "date_from": "2020-09-01", "date_to": "2020-09-30"})).unwrap();
//! let QueryResult::Funnel(r) = dropscope_engine::run_query(&store.snapshot().unwrap(), &q).unwrap() else { panic!() };
//! assert_eq!(r.steps[1].count, 1);
//! ```

pub mod correlation;
pub mod diagnosis;
pub mod filter;
pub mod funnel;
pub mod kernel;
pub mod ordered;
pub mod paths;
pub mod persons;
pub mod plan;
pub mod totals;
pub mod trends;
pub mod ttc;
pub mod unordered;

use dropscope_core::query::{FunnelQuery, QueryKind};
use dropscope_core::result::QueryResult;
use dropscope_core::QueryError;
use dropscope_store::Snapshot;

pub use plan::Plan;

/// Runs any query against a snapshot.
pub fn run_query(snap: &Snapshot, q: &FunnelQuery) -> Result<QueryResult, QueryError> {
    if q.kind == QueryKind::Diagnosis {
        return Ok(QueryResult::Diagnosis(Box::new(diagnosis::diagnosis(
            snap, q,
        )?)));
    }
    let plan = Plan::new(snap, q)?;
    match q.kind {
        QueryKind::Funnel => Ok(QueryResult::Funnel(funnel::funnel(&plan)?)),
        QueryKind::FunnelTrends => Ok(QueryResult::FunnelTrends(trends::trends(&plan)?)),
        QueryKind::TimeToConvert => Ok(QueryResult::TimeToConvert(ttc::time_to_convert(&plan)?)),
        QueryKind::FunnelPersons => Ok(QueryResult::FunnelPersons(persons::persons(&plan)?)),
        QueryKind::Correlation => Ok(QueryResult::Correlation(correlation::correlation(&plan)?)),
        QueryKind::CorrelationPersons => Ok(QueryResult::CorrelationPersons(
            correlation::correlation_persons(&plan)?,
        )),
        QueryKind::Paths => Ok(QueryResult::Paths(paths::paths(&plan)?)),
        other => Err(QueryError::Unsupported(format!(
            "query kind {other:?} is not implemented yet"
        ))),
    }
}
