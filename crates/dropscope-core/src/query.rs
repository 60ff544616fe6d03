//! The query spec: one serde type used by the CLI, the HTTP API, the web page
//! and the acceptance cases alike.
//!
//! Field names follow PostHog's funnel vocabulary in snake_case (`date_from`,
//! `date_to`, `exclusions` with `from_step`/`to_step`, `breakdown` with
//! `attribution`, `interval`, `bin_count`), so a PostHog user recognises them.
//! Every field is documented in `docs/query.md`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::QueryError;

/// Maximum number of funnel steps.
pub const MAX_STEPS: usize = 30;

/// What a query asks for.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// Per-step counts and conversion (the steps view).
    #[default]
    Funnel,
    /// Conversion by interval of entry.
    FunnelTrends,
    /// Histogram of the time between two steps.
    TimeToConvert,
    /// The actors who reached (or dropped before) a step.
    FunnelPersons,
    /// Events / properties that go with converting or dropping.
    Correlation,
    /// The actors behind one correlation row.
    CorrelationPersons,
    /// What people did after dropping (or converting) at a step.
    Paths,
    /// Everything a person needs to know why people drop: one report.
    Diagnosis,
}

/// A funnel query. Every query kind shares the funnel definition; the
/// kind-specific options are ignored by the other kinds.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    #[serde(default)]
    pub kind: QueryKind,
    /// IANA name of the project timezone (date strings, trend buckets). Default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Start of the range: `2021-05-01`, `2021-05-01 10:00:00`, RFC 3339,
    /// relative (`-7d`, `-2w`, `-1m`, `-1y`, `-24h`), or `all`. Default `-7d`.
    #[serde(default)]
    pub date_from: Option<String>,
    /// End of the range (inclusive). Default: now.
    #[serde(default)]
    pub date_to: Option<String>,
    /// Keep `date_from`/`date_to` exactly as given (no snapping to day bounds).
    #[serde(default)]
    pub explicit_date: bool,
    /// "Current time" for relative and default ranges (RFC 3339). Default: the clock.
    #[serde(default)]
    pub now: Option<String>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub order: FunnelOrder,
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default)]
    pub exclusions: Vec<Exclusion>,
    /// Global filters on every event the funnel looks at.
    #[serde(default)]
    pub properties: Option<PropertyFilters>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    /// `person` (default), `group:N`, `event_property:<key>`, `distinct_id`,
    /// `person_property:<key>`.
    #[serde(default)]
    pub aggregation: Option<String>,
    /// Trends bucket: `hour`, `day` (default), `week`, `month`.
    #[serde(default)]
    pub interval: Option<Interval>,
    /// Trends / time-to-convert / correlation-transition range (0-based).
    #[serde(default)]
    pub from_step: Option<usize>,
    #[serde(default)]
    pub to_step: Option<usize>,
    /// Time-to-convert bins (1..=90; default automatic).
    #[serde(default)]
    pub bin_count: Option<i64>,
    /// `unique` actors (default, the reference numbers) or `totals`
    /// (every conversion attempt, with re-entry).
    #[serde(default)]
    pub counting: Counting,
    #[serde(default)]
    pub correlation: Option<CorrelationOptions>,
    /// Funnel persons: which actors.
    #[serde(default)]
    pub persons_for: Option<PersonsFor>,
    /// Funnel persons: only actors of this breakdown value (a list for
    /// event/person breakdowns, a string for group, a number for cohorts).
    #[serde(default)]
    pub breakdown_value: Option<Value>,
    /// Funnel trends persons: the entry bucket (`2021-05-01` or RFC 3339).
    #[serde(default)]
    pub entrance_period_start: Option<String>,
    /// Funnel trends persons: `true` = entered but did not convert.
    #[serde(default)]
    pub drop_off: Option<bool>,
    /// Page size for persons lists (default 100, at most 10000).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    /// Paths: options.
    #[serde(default)]
    pub paths: Option<PathsOptions>,
    /// Diagnosis: options.
    #[serde(default)]
    pub diagnosis: Option<DiagnosisOptions>,
}

/// Diagnosis options.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisOptions {
    /// Report drivers and segments with q below this (default 0.05).
    #[serde(default)]
    pub q_threshold: Option<f64>,
    /// Event properties whose values at entry form segments (default:
    /// discovered: keys on most first-step events with 2..=30 values).
    #[serde(default)]
    pub segment_properties: Option<Vec<String>>,
    /// Person properties to test (default `$all`).
    #[serde(default)]
    pub person_properties: Option<Vec<String>>,
    /// Drivers shown per direction (default 10).
    #[serde(default)]
    pub top: Option<usize>,
}

/// One funnel step.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Event name; `null` = any event.
    #[serde(default)]
    pub event: Option<String>,
    /// An action: matches when any alternative matches.
    #[serde(default)]
    pub action: Option<Action>,
    /// Filters ANDed onto the step.
    #[serde(default)]
    pub properties: Option<PropertyFilters>,
    #[serde(default)]
    pub math: Option<StepMath>,
    #[serde(default)]
    pub optional: bool,
    /// Display name; defaults to the event or action name.
    #[serde(default)]
    pub name: Option<String>,
    /// dropscope extension: this step must follow the previous one within
    /// this window (in addition to the funnel window from the first step).
    #[serde(default)]
    pub within: Option<Window>,
    /// dropscope extension: at least this long after the previous step.
    #[serde(default)]
    pub min_gap: Option<Window>,
}

impl Step {
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if let Some(a) = &self.action {
            return a.name.clone();
        }
        self.event
            .clone()
            .unwrap_or_else(|| "All events".to_string())
    }
}

/// A PostHog action: any of several event-and-filter alternatives.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(default)]
    pub id: Option<Value>,
    pub name: String,
    pub match_any: Vec<ActionAlternative>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionAlternative {
    /// `null` = any event.
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub properties: Option<PropertyFilters>,
    /// The element chain must contain an element with all these attributes.
    #[serde(default)]
    pub elements: Option<serde_json::Map<String, Value>>,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepMath {
    Total,
    FirstTimeForUser,
    FirstTimeForUserWithFilters,
}

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum FunnelOrder {
    #[default]
    Ordered,
    Strict,
    Unordered,
}

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    #[default]
    Unique,
    Totals,
}

/// A duration: value × unit.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[serde(default)]
    pub value: Option<i64>,
    #[serde(default)]
    pub unit: Option<WindowUnit>,
}

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum WindowUnit {
    Second,
    Minute,
    Hour,
    #[default]
    Day,
    Week,
    /// 31 days.
    Month,
}

impl WindowUnit {
    pub fn seconds(self) -> i64 {
        match self {
            WindowUnit::Second => 1,
            WindowUnit::Minute => 60,
            WindowUnit::Hour => 3600,
            WindowUnit::Day => 86_400,
            WindowUnit::Week => 7 * 86_400,
            WindowUnit::Month => 31 * 86_400,
        }
    }
}

/// Default conversion window: 14 days.
pub const DEFAULT_WINDOW_DAYS: i64 = 14;

impl Window {
    /// The window PostHog would use: a missing, zero or negative value falls
    /// back to 14; the unit defaults to day.
    pub fn effective(w: Option<&Window>) -> (i64, WindowUnit) {
        let unit = w.and_then(|w| w.unit).unwrap_or_default();
        match w.and_then(|w| w.value) {
            Some(v) if v > 0 => (v, unit),
            _ => (DEFAULT_WINDOW_DAYS, unit),
        }
    }

    /// The effective window in milliseconds.
    pub fn effective_ms(w: Option<&Window>) -> i64 {
        let (v, u) = Window::effective(w);
        v.saturating_mul(u.seconds()).saturating_mul(1000)
    }

    /// This duration in milliseconds, if it has a positive value.
    pub fn ms(&self) -> Option<i64> {
        let v = self.value.filter(|v| *v > 0)?;
        Some(
            v.saturating_mul(self.unit.unwrap_or_default().seconds())
                .saturating_mul(1000),
        )
    }
}

/// An exclusion step: an attempt that does this between `from_step` and
/// `to_step` (0-based) is excluded.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub properties: Option<PropertyFilters>,
    pub from_step: usize,
    pub to_step: usize,
    #[serde(default)]
    pub name: Option<String>,
}

/// Filters: a plain list (ANDed) or a nested AND/OR group.
///
/// Deserialized by shape (an array is a list, an object a group) rather
/// than by trying each variant, so that an error names the filter and the
/// field that is wrong instead of "did not match any variant".
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PropertyFilters {
    List(Vec<PropertyFilterItem>),
    Group(PropertyGroup),
}

/// An item of a filter list: a filter or a nested group (an object with
/// `values`).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PropertyFilterItem {
    Group(PropertyGroup),
    Filter(PropertyFilter),
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyGroup {
    #[serde(rename = "type")]
    pub kind: GroupOp,
    pub values: Vec<PropertyFilterItem>,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOp {
    #[serde(rename = "AND", alias = "and")]
    And,
    #[serde(rename = "OR", alias = "or")]
    Or,
}

/// One property filter.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    pub key: String,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub operator: Option<Operator>,
    /// `event` (default), `person`, `group`, `element`, `cohort`.
    #[serde(default, rename = "type")]
    pub kind: Option<FilterType>,
    #[serde(default)]
    pub group_type_index: Option<u8>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum FilterType {
    #[default]
    Event,
    Person,
    Group,
    Element,
    Cohort,
}

/// Filter operators (PostHog's names).
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Equal to the value (or to any of a list of values).
    #[default]
    Exact,
    IsNot,
    Icontains,
    NotIcontains,
    Regex,
    NotRegex,
    Gt,
    Gte,
    Lt,
    Lte,
    IsSet,
    IsNotSet,
    IsDateExact,
    IsDateBefore,
    IsDateAfter,
    /// Cohort membership (`type: cohort`).
    In,
    NotIn,
}

/// Trend bucket size.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Minute,
    Hour,
    #[default]
    Day,
    Week,
    Month,
}

/// How a funnel is split.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    /// `event` (default), `person`, `group`, `event_metadata`, `cohort`.
    #[serde(default, rename = "type")]
    pub kind: Option<BreakdownType>,
    #[serde(default)]
    pub property: Option<String>,
    /// Multi-property breakdown.
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// For `attribution: step`: the 0-based step.
    #[serde(default)]
    pub attribution_step: Option<usize>,
    /// Keep this many values, merge the rest into `Other`.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub group_type_index: Option<u8>,
    /// Cohort breakdown: ids, or `"all"` for every actor (id 0).
    #[serde(default)]
    pub cohorts: Option<Vec<Value>>,
}

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum BreakdownType {
    #[default]
    Event,
    Person,
    Group,
    EventMetadata,
    Cohort,
}

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    #[default]
    FirstTouch,
    LastTouch,
    AllEvents,
    Step,
}

/// Which actors a funnel persons query returns.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PersonsFor {
    /// N>0: reached step N (1-based); N<0: reached step |N|−1 but not |N|.
    #[serde(default)]
    pub step: Option<i64>,
    /// Furthest-step values (1-based) to select; wins over `step`.
    #[serde(default)]
    pub custom_steps: Option<Vec<i64>>,
    /// Correlation persons: the event of the row.
    #[serde(default)]
    pub event: Option<String>,
    /// Correlation persons: a person/group property `key::value` row, or an
    /// `event::key::value` row.
    #[serde(default)]
    pub property: Option<String>,
    /// Correlation persons: filters on the row's event.
    #[serde(default)]
    pub properties: Option<PropertyFilters>,
    /// Correlation persons: `true` converted, `false` dropped, `null` both.
    #[serde(default)]
    pub converted: Option<bool>,
}

/// Correlation options.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CorrelationOptions {
    /// `events` (default), `properties`, `event_with_properties`.
    #[serde(default, rename = "type")]
    pub kind: CorrelationType,
    /// Property names for `properties` (`$all` = every key present).
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Property names to skip.
    #[serde(default)]
    pub exclude_names: Option<Vec<String>>,
    /// Event names to skip.
    #[serde(default)]
    pub exclude_event_names: Option<Vec<String>>,
    /// Events whose properties are analysed (`event_with_properties`).
    #[serde(default)]
    pub event_names: Option<Vec<String>>,
    /// Event property names to skip (`event_with_properties`).
    #[serde(default)]
    pub event_exclude_property_names: Option<Vec<String>>,
    /// Minimum support: a row needs `s+f >= min(count, percentage·(S+F))`.
    #[serde(default)]
    pub min_person_percentage: Option<f64>,
    #[serde(default)]
    pub min_person_count: Option<f64>,
    /// Success = reached this 0-based step (default: the last step);
    /// population = reached `from_step` (default 0).
    #[serde(default)]
    pub success_step: Option<usize>,
    /// Observe converters and drop-offs over the same span from their first
    /// step (the window), instead of converters only until conversion.
    #[serde(default)]
    pub equal_window: bool,
    /// Number of strongest rows per direction (default 10, as PostHog).
    #[serde(default)]
    pub top: Option<usize>,
    /// Person properties as of the step's time (from `$set` history and the
    /// step event's own properties) instead of current values.
    #[serde(default)]
    pub properties_at_step: bool,
    /// Candidates for the adjusted (logistic) analysis (default 20; 0 = off).
    #[serde(default)]
    pub adjusted_top_k: Option<usize>,
    /// Events correlation only: also test these person properties (`$all` =
    /// every key) in the same population, as rows `$person::key::value`, so
    /// the adjusted odds ratios weigh events and properties together.
    #[serde(default)]
    pub with_person_properties: Option<Vec<String>>,
}

/// Row-name prefix of person-property rows in a combined events correlation.
pub const PERSON_ROW_PREFIX: &str = "$person::";

#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationType {
    #[default]
    Events,
    Properties,
    EventWithProperties,
}

/// Paths options.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PathsOptions {
    /// 0-based step after which people dropped (default: the step with the
    /// largest drop).
    #[serde(default)]
    pub after_step: Option<usize>,
    /// Events per sequence (default 3, at most 10).
    #[serde(default)]
    pub depth: Option<usize>,
    /// Rows returned (default 10).
    #[serde(default)]
    pub top: Option<usize>,
}

impl PropertyFilter {
    /// The value(s) compared, in string form (a list means "any of").
    pub fn values(&self) -> Vec<String> {
        match &self.value {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.iter().map(crate::event::value_string_form).collect(),
            Some(v) => vec![crate::event::value_string_form(v)],
        }
    }

    /// Whether the operator compares against a value (all but `is_set`/`is_not_set`).
    pub fn needs_value(&self) -> bool {
        !matches!(
            self.operator.unwrap_or_default(),
            Operator::IsSet | Operator::IsNotSet
        )
    }

    /// The cohort id of a cohort filter (a number or a numeric string);
    /// `field` names the filter in the error.
    pub fn cohort_id(&self, field: &str) -> Result<u64, QueryError> {
        self.value
            .as_ref()
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .ok_or_else(|| {
                QueryError::invalid(
                    format!("{field}.value"),
                    "a cohort filter needs a cohort id",
                )
            })
    }
}

impl FunnelQuery {
    /// Parses a query from JSON, naming the field that is wrong by its path
    /// (`steps[0].properties[1].operator`; `query` for the whole query).
    pub fn from_json(v: Value) -> Result<FunnelQuery, QueryError> {
        path_error::deserialize(v).map_err(|(path, message)| {
            let field = if path.is_empty() {
                "query".into()
            } else {
                path
            };
            QueryError::invalid(field, message)
        })
    }
}

impl<'de> Deserialize<'de> for PropertyFilters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            v @ Value::Array(_) => path_error::nested(v).map(PropertyFilters::List),
            v @ Value::Object(_) => path_error::nested(v).map(PropertyFilters::Group),
            other => Err(serde::de::Error::custom(format!(
                "expected a list of filters or a group {{\"type\": \"AND\" or \"OR\", \"values\": [...]}}, got {other}"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for PropertyFilterItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Object(m) if m.contains_key("values") => {
                path_error::nested(v).map(PropertyFilterItem::Group)
            }
            Value::Object(_) => path_error::nested(v).map(PropertyFilterItem::Filter),
            other => Err(serde::de::Error::custom(format!(
                "expected a filter object {{\"key\", \"value\", \"operator\", \"type\"}} or a group, got {other}"
            ))),
        }
    }
}

/// Deserialization that keeps the path of the field that failed, also
/// through the filter types above (which buffer their input as a `Value`
/// to look at its shape first, and so start a new deserializer).
mod path_error {
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// Separates a nested path from its message inside an error's text.
    const MARK: char = '\u{1f}';

    fn join(outer: &str, inner: &str) -> String {
        let outer = if outer == "." { "" } else { outer };
        let inner = if inner == "." { "" } else { inner };
        match (outer.is_empty(), inner.is_empty()) {
            (_, true) => outer.to_string(),
            (true, false) => inner.to_string(),
            (false, false) if inner.starts_with('[') => format!("{outer}{inner}"),
            (false, false) => format!("{outer}.{inner}"),
        }
    }

    /// `(path, message)` of a failed deserialization; `Ok(value)` when it
    /// worked. The path is empty for the top level.
    pub(super) fn deserialize<T: DeserializeOwned>(v: Value) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let outer = e.path().to_string();
            let text = e.into_inner().to_string();
            match text.strip_prefix(MARK).and_then(|t| t.split_once(MARK)) {
                Some((inner, msg)) => (join(&outer, inner), msg.to_string()),
                None => (join(&outer, ""), text),
            }
        })
    }

    /// [`deserialize`] inside a `Deserialize` impl: the error carries the
    /// inner path for the outer one to prepend.
    pub(super) fn nested<T: DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
        deserialize(v).map_err(|(path, msg)| E::custom(format!("{MARK}{path}{MARK}{msg}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(q: Value) -> String {
        match FunnelQuery::from_json(q) {
            Err(QueryError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid query, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_by_path() {
        let steps = json!([{"event": "a"}]);
        assert_eq!(field_of(json!({"steps": steps, "kind": "x"})), "kind");
        assert_eq!(field_of(json!({"kind": "funnel"})), "query");
        assert_eq!(
            field_of(
                json!({"steps": [{"event": "a", "properties": [{"key": "k", "operator": "like"}]}]})
            ),
            "steps[0].properties[0].operator"
        );
        assert_eq!(
            field_of(
                json!({"steps": steps, "properties": {"type": "AND", "values": [
                {"type": "OR", "values": [{"key": "k", "type": "planet"}]}]}})
            ),
            "properties.values[0].values[0].type"
        );
        assert_eq!(
            field_of(json!({"steps": steps, "window": {"value": 1, "unit": "eon"}})),
            "window.unit"
        );
        // Filters still parse in every shape.
        let q = FunnelQuery::from_json(json!({"steps": steps, "properties": [
            {"key": "k", "value": "v"},
            {"type": "OR", "values": [{"key": "a"}, {"key": "b", "operator": "is_set"}]}
        ]}))
        .unwrap();
        match q.properties {
            Some(PropertyFilters::List(items)) => {
                assert!(matches!(items[0], PropertyFilterItem::Filter(_)));
                assert!(matches!(items[1], PropertyFilterItem::Group(_)));
            }
            other => panic!("{other:?}"),
        }
    }
}
