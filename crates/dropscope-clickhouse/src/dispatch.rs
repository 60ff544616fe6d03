//! Every query kind besides the steps view: which subset is supported, and
//! the dispatch to the kind's module. Each kind builds on the funnel's
//! stages (`events.rs` stage A, `funnel.rs` stage B `actors_sql`) and
//! aggregates inside ClickHouse; only aggregates (or one page of a persons
//! list) come back.

use dropscope_core::query::{Counting, FunnelOrder, FunnelQuery, QueryKind};
use dropscope_core::result::QueryResult;
use dropscope_core::time::DateRange;
use dropscope_core::QueryError;

use crate::funnel::FunnelSpec;
use crate::{check_supported, ClickHouse};

fn unsupported<T>(what: &str) -> Result<T, QueryError> {
    Err(QueryError::Unsupported(format!(
        "{what} is not supported by the ClickHouse backend yet"
    )))
}

/// The kind-specific part of the supported subset (the funnel definition
/// itself is checked by [`check_supported`]).
fn check_kind(q: &FunnelQuery) -> Result<(), QueryError> {
    let kind = q.kind;
    if kind == QueryKind::Diagnosis {
        return crate::diagnosis::check(q);
    }
    // Beyond the funnel definition, every kind takes:
    // * every `counting`: it changes only the steps view; every other kind
    //   follows each actor's best path (`funnel_of` builds on `unique`
    //   stages), as the engine's;
    // * every aggregation: stage A groups the events by the actor key
    //   (`events::ActorKind`), the kinds read their actors from stage B
    //   (`persons::actors_of`, `persons::keyed`);
    // * every breakdown the steps view takes (stage A partitions the
    //   events for `all_events`, `step` and cohorts). Funnel trends (their
    //   own stage) also take strict order (every event in range attributes
    //   the value, `spec_of`) and unordered `step` attribution (the same
    //   unconstrained walk under each value, `DataSpec::step_free`).
    if matches!(kind, QueryKind::Correlation | QueryKind::CorrelationPersons) {
        crate::correlation::check(q)?;
    }
    Ok(())
}

/// Checks that a query of another kind than `funnel` is supported and
/// compiles its funnel definition (date range filled in later).
pub fn check(q: &FunnelQuery) -> Result<FunnelSpec, QueryError> {
    dropscope_engine::plan::validate(q)?;
    // The engine's breakdown checks with the query's own order (the
    // stage specs may run trends' funnels as ordered ones).
    dropscope_engine::plan::breakdown_shape(q)?;
    // The funnel definition first: an invalid one is refused as invalid
    // (as the engine does) even when the kind would refuse the shape.
    let spec = check_supported(&funnel_of(q, true))?;
    check_kind(q)?;
    Ok(spec)
}

/// Whether the kind runs its own stage on stage A (funnel trends), so the
/// funnel order only matters to it.
fn own_stage(q: &FunnelQuery) -> bool {
    q.kind == QueryKind::FunnelTrends
        || (q.kind == QueryKind::FunnelPersons && q.entrance_period_start.is_some())
}

/// The `funnel` query whose stages a query builds on.
pub(crate) fn funnel_of(q: &FunnelQuery, keep_breakdown: bool) -> FunnelQuery {
    FunnelQuery {
        kind: QueryKind::Funnel,
        // The other kinds read each actor's best path: `unique` stages
        // (the engine ignores `counting` outside the steps view).
        counting: if q.kind == QueryKind::Funnel {
            q.counting
        } else {
            Counting::Unique
        },
        breakdown: if keep_breakdown {
            q.breakdown.clone()
        } else {
            None
        },
        // Stage A does not depend on the order (trends checks it itself).
        order: if own_stage(q) {
            FunnelOrder::Ordered
        } else {
            q.order
        },
        ..q.clone()
    }
}

/// The stage specs of a query: the funnel definition with the resolved
/// range; without its breakdown when the kind ignores it.
pub(crate) fn spec_of(
    ch: &ClickHouse,
    q: &FunnelQuery,
    range: DateRange,
    keep_breakdown: bool,
) -> Result<FunnelSpec, QueryError> {
    // With this database's cohorts resolved (`check_supported` cannot).
    let spec = ch.funnel_spec(&funnel_of(q, keep_breakdown))?;
    let trends = own_stage(q);
    Ok(FunnelSpec {
        from_ms: range.from,
        to_ms: range.to,
        // As the engine's plan: correlation and paths read every event of
        // the actor, which also shapes same-instant groups (rule 5); strict
        // trends (run as ordered ones) read every event for the breakdown
        // attribution (rule 6).
        keep_all: spec.keep_all
            || matches!(
                q.kind,
                QueryKind::Correlation | QueryKind::CorrelationPersons | QueryKind::Paths
            )
            || (trends && q.order == FunnelOrder::Strict),
        data: crate::events::DataSpec {
            // The engine's unordered trends do not constrain step N to the
            // partition's value (`trends.rs::unordered_buckets`).
            step_free: trends && q.order == FunnelOrder::Unordered,
            ..spec.data
        },
        ..spec
    })
}

/// Answers a query of any kind but `funnel` (already checked).
pub(crate) fn run_kind(
    ch: &ClickHouse,
    q: &FunnelQuery,
    range: DateRange,
) -> Result<QueryResult, QueryError> {
    match q.kind {
        QueryKind::TimeToConvert => Ok(QueryResult::TimeToConvert(crate::ttc::run(
            ch,
            q,
            &spec_of(ch, q, range, false)?,
        )?)),
        QueryKind::FunnelPersons if q.entrance_period_start.is_some() => Ok(
            QueryResult::FunnelPersons(crate::trends::persons(ch, q, range)?),
        ),
        QueryKind::FunnelPersons => Ok(QueryResult::FunnelPersons(crate::persons::run(
            ch,
            q,
            &spec_of(ch, q, range, true)?,
        )?)),
        QueryKind::FunnelTrends => Ok(QueryResult::FunnelTrends(crate::trends::run(ch, q, range)?)),
        QueryKind::Correlation => Ok(QueryResult::Correlation(crate::correlation::run(
            ch,
            q,
            &spec_of(ch, q, range, false)?,
        )?)),
        QueryKind::CorrelationPersons => Ok(QueryResult::CorrelationPersons(
            crate::correlation::persons(ch, q, &spec_of(ch, q, range, false)?)?,
        )),
        QueryKind::Paths => Ok(QueryResult::Paths(crate::paths::run(
            ch,
            q,
            &spec_of(ch, q, range, false)?,
        )?)),
        QueryKind::Diagnosis => Ok(QueryResult::Diagnosis(Box::new(crate::diagnosis::run(
            ch, q, range,
        )?))),
        other => unsupported(&format!("query kind {other:?}")),
    }
}

/// Refuses an answer when an actor is flagged `amb` by stage B (an event
/// matching several steps of an unordered funnel); `amb` is the max over
/// actors.
pub(crate) fn refuse_amb(amb: &serde_json::Value) -> Result<(), QueryError> {
    if amb.as_u64() == Some(3) {
        return Err(QueryError::Unsupported(format!(
            "more than {} full exclusions for one actor in funnel trends are not supported by \
             the ClickHouse backend yet",
            crate::trends::EPOCHS
        )));
    }
    if amb.as_u64().unwrap_or(0) != 0 {
        return Err(QueryError::Unsupported(
            "an event matching several steps of an unordered funnel (SEMANTICS rule 8) is not \
             supported by the ClickHouse backend yet"
                .into(),
        ));
    }
    Ok(())
}
