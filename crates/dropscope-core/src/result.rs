//! What queries answer. Documented field by field in `docs/query.md`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Answer to any query kind.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryResult {
    Funnel(FunnelResult),
    FunnelTrends(TrendsResult),
    TimeToConvert(TimeToConvertResult),
    FunnelPersons(PersonsResult),
    Correlation(CorrelationResult),
    CorrelationPersons(PersonsResult),
    Paths(PathsResult),
    Diagnosis(Box<DiagnosisResult>),
}

/// One step of a funnel.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepResult {
    /// 0-based step index.
    pub order: usize,
    pub name: String,
    /// Actors (or attempts, with `counting: totals`) that reached this step.
    pub count: u64,
    /// `count / count of step 0`.
    pub conversion_from_first: f64,
    /// `count / count of the previous step` (1 for step 0).
    pub conversion_from_previous: f64,
    /// 95% Wilson interval of `conversion_from_first`.
    pub conversion_from_first_interval: [f64; 2],
    /// 95% Wilson interval of `conversion_from_previous`.
    pub conversion_from_previous_interval: [f64; 2],
    /// Reached the previous step but not this one (0 for step 0).
    pub dropped: u64,
    /// Of `dropped`: still inside their conversion window at the end of the
    /// range (they may yet convert).
    pub in_progress: u64,
    /// Mean seconds from the previous step over actors with a positive gap.
    pub average_conversion_time: Option<f64>,
    /// Median (interpolated) of the same gaps.
    pub median_conversion_time: Option<f64>,
}

/// A funnel split by one breakdown value.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakdownRow {
    /// `["Chrome"]` for event/person breakdowns (a list, one entry per
    /// property), a string for group breakdowns, a cohort id for cohorts,
    /// `["Other"]` / `"Other"` for the merged tail.
    pub breakdown_value: Value,
    /// Label for display.
    pub breakdown_display: String,
    pub steps: Vec<StepResult>,
}

/// Answer of a `funnel` query.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FunnelResult {
    /// All actors together (for breakdowns, every actor once per value it is
    /// counted under, like the sum of the rows).
    pub steps: Vec<StepResult>,
    /// Present when the query has a breakdown; ordered by last-step count
    /// desc, then earlier steps desc, then value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdowns: Option<Vec<BreakdownRow>>,
    /// Conversion curve since entry (Kaplan–Meier, actors still in their
    /// window censored): points `(seconds since entry, share converted)`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub conversion_curve: Vec<CurvePoint>,
    /// The resolved range (UTC ms, inclusive).
    pub date_from_ms: i64,
    pub date_to_ms: i64,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub seconds: f64,
    pub converted: f64,
    pub at_risk: u64,
}

/// One bucket of funnel trends.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendRow {
    /// Bucket start in the project timezone (`2021-05-01` for UTC day/week/
    /// month buckets, RFC 3339 with offset otherwise).
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub reached_from_step_count: u64,
    pub reached_to_step_count: u64,
    /// Percentage rounded to 2 decimals (0 when nobody entered).
    pub conversion_rate: f64,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendSeries {
    pub breakdown_value: Value,
    pub rows: Vec<TrendRow>,
}

/// Answer of a `funnel_trends` query.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrendsResult {
    /// Without breakdown: every bucket of the range, zero-filled.
    pub rows: Vec<TrendRow>,
    /// With a breakdown: one series per value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<TrendSeries>>,
}

/// Answer of a `time_to_convert` query.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TimeToConvertResult {
    /// `[bin_start_seconds, actors]`, `bin_count + 1` entries (the last one
    /// marks the end of the last bin and counts 0).
    pub bins: Vec<(i64, u64)>,
    pub average_conversion_time: Option<f64>,
    pub converted: u64,
}

/// One actor in a persons list.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorRow {
    /// Person label (or group key, or the aggregation value).
    pub id: String,
    pub distinct_ids: Vec<String>,
    /// Furthest step reached (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub furthest_step: Option<usize>,
    /// Matched time of each step (RFC 3339), `null` where not reached.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub matched_times: Vec<Option<String>>,
}

/// Answer of a persons query: one page.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PersonsResult {
    pub persons: Vec<ActorRow>,
    /// Actors matching, over all pages.
    pub total: u64,
    pub offset: usize,
    /// Offset of the next page, if any.
    pub next_offset: Option<usize>,
}

/// One correlation row.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationRow {
    /// The event name, `key::value` for properties, `event::key::value` for
    /// event properties.
    pub event: String,
    pub success_count: u64,
    pub failure_count: u64,
    pub success_total: u64,
    pub failure_total: u64,
    /// PostHog's odds ratio with the +1 prior.
    pub odds_ratio: f64,
    /// `success` when odds_ratio > 1, else `failure`.
    pub correlation_type: String,
    /// Exact two-sided Fisher p-value.
    pub p_value: f64,
    /// Benjamini–Hochberg q-value over all rows tested.
    pub q_value: f64,
    /// 95% Woolf interval of the odds ratio (+0.5 to zero cells).
    pub odds_ratio_interval: [f64; 2],
    /// Below the minimum-support rule.
    pub low_support: bool,
    /// Odds ratio adjusted for the other strongest candidates (L2-regularised
    /// logistic regression over the top `adjusted_top_k` rows by p-value).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub adjusted_odds_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub adjusted_odds_ratio_interval: Option<[f64; 2]>,
    /// Set when the direction reverses once the breakdown's segments are
    /// accounted for (Mantel–Haenszel odds ratio on the other side of 1).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub simpson_warning: Option<String>,
}

/// Answer of a `correlation` query.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CorrelationResult {
    /// PostHog's shape: the strongest success rows by odds desc, then the
    /// strongest failure rows by odds asc.
    pub events: Vec<CorrelationRow>,
    /// Rows left out because they lack support (never dropped silently).
    pub low_support: Vec<CorrelationRow>,
    /// True when one side is empty or one side is >10× the other.
    pub skewed: bool,
    pub success_total: u64,
    pub failure_total: u64,
    /// Rows tested (the BH family size).
    pub rows_tested: usize,
    /// The transition analysed (0-based): population reached `from_step`,
    /// success reached `to_step`.
    pub from_step: usize,
    pub to_step: usize,
}

/// Paths after dropping at a step.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PathsResult {
    pub after_step: usize,
    pub dropped: u64,
    pub converted: u64,
    /// First event after the step, for people who dropped.
    pub dropped_next: Vec<PathRow>,
    /// The same for people who went on.
    pub converted_next: Vec<PathRow>,
    /// Top sequences of the next few events, for people who dropped.
    pub dropped_sequences: Vec<PathRow>,
    pub converted_sequences: Vec<PathRow>,
    /// For people who went from `after_step` to the next step: what they did
    /// in between (empty path = nothing in between).
    pub between_sequences: Vec<PathRow>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathRow {
    pub path: Vec<String>,
    pub actors: u64,
    pub share: f64,
}

/// The diagnosis report: where people drop and what goes with it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiagnosisResult {
    /// The funnel, with intervals.
    pub steps: Vec<StepResult>,
    /// The transition (0-based from, to) with the most people lost.
    pub largest_drop: Option<(usize, usize)>,
    /// Drivers with q below the threshold, strongest first, over every
    /// transition "reached step k → completed the funnel".
    pub drivers: Vec<Driver>,
    /// Segments (values of an event property at entry) whose conversion
    /// differs significantly from the rest.
    pub segments: Vec<SegmentFinding>,
    /// What people did after the largest drop.
    pub paths: Option<PathsResult>,
    /// The q-value threshold used.
    pub q_threshold: f64,
    /// Number of hypotheses in the BH family (rows plus segments).
    pub hypotheses: usize,
}

/// One driver row of the diagnosis.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Driver {
    /// `event` or `person_property`.
    pub kind: String,
    /// Population: reached this 0-based step; success: completed the funnel.
    pub from_step: usize,
    pub to_step: usize,
    /// The correlation row; its `q_value` is over the whole diagnosis family.
    pub row: CorrelationRow,
}

/// A segment whose conversion differs from the rest.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentFinding {
    pub property: String,
    pub value: String,
    pub entered: u64,
    pub converted: u64,
    pub rate: f64,
    pub rest_rate: f64,
    /// Two-proportion z-test against everyone else.
    pub z: f64,
    pub p_value: f64,
    pub q_value: f64,
    /// `higher` or `lower` than the rest.
    pub direction: String,
}
