//! The diagnosis: the engine's composition ([`compose`]) over parts the
//! ClickHouse backend computes — the steps views, the correlations of every
//! transition, paths — and the segment keys, counted inside ClickHouse from
//! every actor's first first-step event (stage A; the event's properties
//! are read back by its ingest sequence number).

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::{
    CorrelationResult, DiagnosisResult, FunnelResult, PathsResult, QueryResult,
};
use dropscope_core::time::DateRange;
use dropscope_core::QueryError;
use dropscope_engine::diagnosis::{base_query, compose, drivers_query, pick_segment_keys, Parts};

use crate::dispatch::spec_of;
use crate::events::events_sql;
use crate::{check_supported, ClickHouse};

/// The queries a diagnosis runs must all be supported.
pub fn check(q: &FunnelQuery) -> Result<(), QueryError> {
    check_supported(&base_query(q))?;
    if q.steps.len() >= 2 {
        check_supported(&drivers_query(q, 0))?;
    }
    Ok(())
}

struct ChParts<'a> {
    ch: &'a ClickHouse,
    range: DateRange,
}

fn wrong_kind<T>() -> Result<T, QueryError> {
    Err(QueryError::Backend(
        "a part of the diagnosis answered another kind".into(),
    ))
}

impl Parts for ChParts<'_> {
    fn funnel(&self, q: &FunnelQuery) -> Result<FunnelResult, QueryError> {
        match self.ch.run(q)? {
            QueryResult::Funnel(f) => Ok(f),
            _ => wrong_kind(),
        }
    }

    fn segment_keys(&self, q: &FunnelQuery) -> Result<Vec<String>, QueryError> {
        let spec = spec_of(self.ch, q, self.range, false)?;
        let db = self.ch.database();
        let firsts = format!(
            "SELECT arraySort(groupArray((ts, seq)))[1].2 AS fs FROM ({}) \
             WHERE bitAnd(mask, toUInt64(1)) != 0 GROUP BY actor, part",
            events_sql(db, &spec)
        );
        let r = self
            .ch
            .select_json(&format!("SELECT count() AS n FROM ({firsts}) FORMAT JSON"))
            .map_err(QueryError::Backend)?;
        let entered = r["data"][0]["n"].as_u64().unwrap_or(0);
        let r = self
            .ch
            .select_json(&format!(
                "SELECT k, count() AS n, least(uniqExact(v), 32) AS u FROM \
                 (SELECT prop_keys, prop_values FROM {db}.events WHERE seq IN ({firsts})) \
                 ARRAY JOIN prop_keys AS k, prop_values AS v GROUP BY k FORMAT JSON"
            ))
            .map_err(QueryError::Backend)?;
        let keys = r["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                (
                    row["k"].as_str().unwrap_or_default().to_string(),
                    row["n"].as_u64().unwrap_or(0),
                    row["u"].as_u64().unwrap_or(0) as usize,
                )
            })
            .collect();
        Ok(pick_segment_keys(entered, keys))
    }

    fn correlation(&self, q: &FunnelQuery) -> Result<CorrelationResult, QueryError> {
        match self.ch.run(q)? {
            QueryResult::Correlation(c) => Ok(c),
            _ => wrong_kind(),
        }
    }

    fn paths(&self, q: &FunnelQuery) -> Result<PathsResult, QueryError> {
        match self.ch.run(q)? {
            QueryResult::Paths(p) => Ok(p),
            _ => wrong_kind(),
        }
    }
}

pub fn run(
    ch: &ClickHouse,
    q: &FunnelQuery,
    range: DateRange,
) -> Result<DiagnosisResult, QueryError> {
    compose(q, &ChParts { ch, range })
}
