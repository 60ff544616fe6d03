//! Data for pickers: event names, property keys, property values, each with
//! how often it occurs. One pass over a snapshot.

use std::collections::HashMap;

use dropscope_clickhouse::ClickHouse;
use dropscope_store::columns::EventColumns;
use dropscope_store::dict::{decode_value, value_str};
use dropscope_store::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// `GET /api/events` answer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventsResponse {
    /// Event names by descending count (ties by name).
    pub results: Vec<NameCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq)]
pub struct NameCount {
    pub name: String,
    /// Events (for event names and event properties) or persons (for
    /// person properties) that have it.
    pub count: u64,
}

/// `GET /api/properties` answer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PropertiesResponse {
    /// `event` or `person`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event the keys were collected from (`null`: all events).
    pub event: Option<String>,
    pub results: Vec<NameCount>,
}

/// `GET /api/property_values` answer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PropertyValuesResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub event: Option<String>,
    /// Values by descending count, at most `limit`.
    pub results: Vec<ValueCount>,
    /// Distinct values matching `search` (before `limit`).
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq)]
pub struct ValueCount {
    /// The value as stored (string, number, boolean, ...).
    pub value: Value,
    pub count: u64,
}

/// Query parameters of the picker endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickerParams {
    /// `event` (default) or `person`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only events with this name (event properties).
    pub event: Option<String>,
    /// The property key (values).
    pub key: Option<String>,
    /// Case-insensitive substring filter on names or values.
    pub search: Option<String>,
    /// Most results (default 100, at most 10000).
    pub limit: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Event,
    Person,
}

fn kind_of(p: &PickerParams) -> Result<Kind, ApiError> {
    match p.kind.as_deref() {
        None | Some("event") => Ok(Kind::Event),
        Some("person") => Ok(Kind::Person),
        Some(o) => Err(ApiError::Invalid(format!(
            "`type`: expected `event` or `person`, got {o:?}"
        ))),
    }
}

fn limit_of(p: &PickerParams) -> Result<usize, ApiError> {
    match p.limit {
        None => Ok(100),
        Some(0) => Err(ApiError::Invalid("`limit` must be positive".into())),
        Some(n) if n > 10_000 => Err(ApiError::Invalid("`limit` must be at most 10000".into())),
        Some(n) => Ok(n),
    }
}

fn matches(search: &Option<String>, s: &str) -> bool {
    match search {
        None => true,
        Some(q) => s.to_lowercase().contains(&q.to_lowercase()),
    }
}

fn sorted(counts: HashMap<u32, u64>, resolve: impl Fn(u32) -> String) -> Vec<NameCount> {
    let mut v: Vec<NameCount> = counts
        .into_iter()
        .map(|(id, count)| NameCount {
            name: resolve(id),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v
}

/// Visits every event of the snapshot.
fn for_each_event(snap: &Snapshot, mut f: impl FnMut(&dropscope_store::EventsView<'_>, usize)) {
    let mut scratch = EventColumns::new();
    for a in 0..snap.actor_count() {
        let v = snap.events_of(a, &mut scratch);
        for i in 0..v.len() {
            f(&v, i);
        }
    }
}

/// Event names with counts.
pub fn events(snap: &Snapshot, p: &PickerParams) -> Result<EventsResponse, ApiError> {
    let limit = limit_of(p)?;
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for_each_event(snap, |v, i| *counts.entry(v.event[i]).or_default() += 1);
    let d = snap.dicts();
    let mut results = sorted(counts, |id| d.events.resolve(id).to_string());
    results.retain(|r| matches(&p.search, &r.name));
    results.truncate(limit);
    Ok(EventsResponse { results })
}

/// Property keys of events (optionally of one event name) or of persons.
pub fn properties(snap: &Snapshot, p: &PickerParams) -> Result<PropertiesResponse, ApiError> {
    let kind = kind_of(p)?;
    let limit = limit_of(p)?;
    let mut counts: HashMap<u32, u64> = HashMap::new();
    match kind {
        Kind::Event => {
            let want = match &p.event {
                Some(name) => match snap.dicts().events.get(name) {
                    Some(id) => Some(id),
                    None => {
                        return Ok(PropertiesResponse {
                            kind: "event".into(),
                            event: p.event.clone(),
                            results: vec![],
                        })
                    }
                },
                None => None,
            };
            for_each_event(snap, |v, i| {
                if want.is_none_or(|w| v.event[i] == w) {
                    for (k, _) in v.props(i) {
                        *counts.entry(k).or_default() += 1;
                    }
                }
            });
        }
        Kind::Person => {
            for a in 0..snap.actor_count() {
                for (k, _) in snap.person(snap.actor_person(a)).props() {
                    *counts.entry(*k).or_default() += 1;
                }
            }
        }
    }
    let d = snap.dicts();
    let mut results = sorted(counts, |id| d.keys.resolve(id).to_string());
    results.retain(|r| matches(&p.search, &r.name));
    results.truncate(limit);
    Ok(PropertiesResponse {
        kind: if kind == Kind::Event {
            "event"
        } else {
            "person"
        }
        .into(),
        event: p.event.clone(),
        results,
    })
}

/// Values of one property key.
pub fn property_values(
    snap: &Snapshot,
    p: &PickerParams,
) -> Result<PropertyValuesResponse, ApiError> {
    let kind = kind_of(p)?;
    let limit = limit_of(p)?;
    let key_name = p
        .key
        .clone()
        .ok_or_else(|| ApiError::Invalid("missing query parameter `key`".into()))?;
    let mut out = PropertyValuesResponse {
        kind: if kind == Kind::Event {
            "event"
        } else {
            "person"
        }
        .into(),
        key: key_name.clone(),
        event: p.event.clone(),
        results: vec![],
        total: 0,
    };
    let (key, want) = {
        let d = snap.dicts();
        let Some(key) = d.keys.get(&key_name) else {
            return Ok(out);
        };
        let want = match &p.event {
            Some(name) => match d.events.get(name) {
                Some(id) => Some(id),
                None => return Ok(out),
            },
            None => None,
        };
        (key, want)
    };
    let mut counts: HashMap<u32, u64> = HashMap::new();
    match kind {
        Kind::Event => for_each_event(snap, |v, i| {
            if want.is_none_or(|w| v.event[i] == w) {
                if let Some(val) = v.prop(i, key) {
                    *counts.entry(val).or_default() += 1;
                }
            }
        }),
        Kind::Person => {
            for a in 0..snap.actor_count() {
                if let Some(val) = snap.person(snap.actor_person(a)).prop(key) {
                    *counts.entry(val).or_default() += 1;
                }
            }
        }
    }
    let d = snap.dicts();
    let mut rows: Vec<(u32, u64)> = counts
        .into_iter()
        .filter(|(id, _)| matches(&p.search, value_str(d.values.resolve(*id))))
        .collect();
    out.total = rows.len() as u64;
    rows.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| d.values.resolve(a.0).cmp(d.values.resolve(b.0)))
    });
    rows.truncate(limit);
    out.results = rows
        .into_iter()
        .map(|(id, count)| ValueCount {
            value: decode_value(d.values.resolve(id)),
            count,
        })
        .collect();
    Ok(out)
}

/// The same pickers on the ClickHouse backend: the counting is a
/// `GROUP BY` inside ClickHouse (`dropscope_clickhouse::browse`). Values
/// come back as their stored string forms.
fn ch_err(e: String) -> ApiError {
    ApiError::Unavailable(format!("ClickHouse: {e}"))
}

fn no_person_pickers() -> ApiError {
    ApiError::Query(
        "unsupported: person-property pickers are not available on the ClickHouse backend yet"
            .into(),
    )
}

fn name_counts(rows: Vec<(String, u64)>) -> Vec<NameCount> {
    rows.into_iter()
        .map(|(name, count)| NameCount { name, count })
        .collect()
}

pub fn events_clickhouse(ch: &ClickHouse, p: &PickerParams) -> Result<EventsResponse, ApiError> {
    let limit = limit_of(p)?;
    let rows = ch.event_names(p.search.as_deref(), limit).map_err(ch_err)?;
    Ok(EventsResponse {
        results: name_counts(rows),
    })
}

pub fn properties_clickhouse(
    ch: &ClickHouse,
    p: &PickerParams,
) -> Result<PropertiesResponse, ApiError> {
    if kind_of(p)? == Kind::Person {
        return Err(no_person_pickers());
    }
    let limit = limit_of(p)?;
    let rows = ch
        .event_property_keys(p.event.as_deref(), p.search.as_deref(), limit)
        .map_err(ch_err)?;
    Ok(PropertiesResponse {
        kind: "event".into(),
        event: p.event.clone(),
        results: name_counts(rows),
    })
}

pub fn property_values_clickhouse(
    ch: &ClickHouse,
    p: &PickerParams,
) -> Result<PropertyValuesResponse, ApiError> {
    if kind_of(p)? == Kind::Person {
        return Err(no_person_pickers());
    }
    let limit = limit_of(p)?;
    let key = p
        .key
        .clone()
        .ok_or_else(|| ApiError::Invalid("missing query parameter `key`".into()))?;
    let (rows, total) = ch
        .event_property_values(&key, p.event.as_deref(), p.search.as_deref(), limit)
        .map_err(ch_err)?;
    Ok(PropertyValuesResponse {
        kind: "event".into(),
        key,
        event: p.event.clone(),
        results: rows
            .into_iter()
            .map(|(v, count)| ValueCount {
                value: Value::String(v),
                count,
            })
            .collect(),
        total,
    })
}
