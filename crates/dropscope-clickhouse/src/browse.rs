//! Browsing a ClickHouse project: the counts behind the web page's pickers
//! (event names, property keys, property values) and a person's events.
//! Every count is a `GROUP BY` inside ClickHouse; only the top `limit`
//! rows come back.

use serde_json::Value;

use crate::events::{overrides_sql, PERSON_EXPR};
use crate::sql::{prop_value, quote_str};
use crate::ClickHouse;

/// `(name, count)` rows, by descending count then name.
pub type Counts = Vec<(String, u64)>;

/// One event of a person's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonEvent {
    pub uuid: String,
    pub event: String,
    pub distinct_id: String,
    /// UTC milliseconds.
    pub timestamp: i64,
    /// Property keys and their stored string forms.
    pub properties: Vec<(String, String)>,
}

/// A person's events (see [`ClickHouse::person_events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonTimeline {
    pub person_id: u64,
    pub distinct_ids: Vec<String>,
    pub total: u64,
    pub events: Vec<PersonEvent>,
}

/// The condition "`expr` contains `search`, ignoring case".
fn search_cond(expr: &str, search: Option<&str>) -> String {
    match search.filter(|s| !s.is_empty()) {
        Some(s) => format!(
            " AND position(lowerUTF8({expr}), {}) > 0",
            quote_str(&s.to_lowercase())
        ),
        None => String::new(),
    }
}

fn event_cond(event: Option<&str>) -> String {
    match event {
        Some(e) => format!(" AND event = {}", quote_str(e)),
        None => String::new(),
    }
}

fn counts(v: &Value) -> Counts {
    v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["c"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

impl ClickHouse {
    /// Event names with their event counts.
    pub fn event_names(&self, search: Option<&str>, limit: usize) -> Result<Counts, String> {
        let db = self.database();
        let sql = format!(
            "SELECT event AS name, count() AS c FROM {db}.events WHERE 1{s} \
             GROUP BY event ORDER BY c DESC, name LIMIT {limit} FORMAT JSON",
            s = search_cond("event", search)
        );
        Ok(counts(&self.select_json(&sql)?))
    }

    /// Event property keys with the number of events that have them
    /// (optionally only events named `event`).
    pub fn event_property_keys(
        &self,
        event: Option<&str>,
        search: Option<&str>,
        limit: usize,
    ) -> Result<Counts, String> {
        let db = self.database();
        let sql = format!(
            "SELECT k AS name, count() AS c FROM {db}.events ARRAY JOIN prop_keys AS k \
             WHERE 1{e}{s} GROUP BY k ORDER BY c DESC, name LIMIT {limit} FORMAT JSON",
            e = event_cond(event),
            s = search_cond("k", search)
        );
        Ok(counts(&self.select_json(&sql)?))
    }

    /// Values of event property `key` (their string forms) with event
    /// counts, and how many distinct values match `search`.
    pub fn event_property_values(
        &self,
        key: &str,
        event: Option<&str>,
        search: Option<&str>,
        limit: usize,
    ) -> Result<(Counts, u64), String> {
        let db = self.database();
        let v = prop_value(key);
        let filter = format!(
            "has(prop_keys, {k}){e}{s}",
            k = quote_str(key),
            e = event_cond(event),
            s = search_cond(&v, search)
        );
        let sql = format!(
            "SELECT {v} AS name, count() AS c FROM {db}.events WHERE {filter} \
             GROUP BY name ORDER BY c DESC, name LIMIT {limit} FORMAT JSON"
        );
        let rows = counts(&self.select_json(&sql)?);
        let total = self.select_json(&format!(
            "SELECT uniqExact({v}) AS n FROM {db}.events WHERE {filter} FORMAT JSON"
        ))?;
        Ok((rows, total["data"][0]["n"].as_u64().unwrap_or(0)))
    }

    /// The person that `id` names — one of its distinct ids, or its
    /// numeric person id — with identity joins applied: its distinct ids,
    /// its number of events, and its events oldest first (`offset`,
    /// `limit`). `None` when no such person has events.
    pub fn person_events(
        &self,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Option<PersonTimeline>, String> {
        let db = self.database();
        let (ov, person) = (overrides_sql(db), PERSON_EXPR);
        let by_did = format!(
            "SELECT {person} FROM {db}.events ANY LEFT JOIN ({ov}) AS ov USING distinct_id \
             WHERE distinct_id = {d} LIMIT 1",
            d = quote_str(id)
        );
        let pid = match self.select_json(&format!("{by_did} FORMAT JSON"))?["data"][0]
            .as_object()
            .and_then(|r| r.values().next())
            .and_then(Value::as_u64)
        {
            Some(p) => p,
            None => match id.parse::<u64>() {
                Ok(p) => p,
                Err(_) => return Ok(None),
            },
        };
        let from = format!(
            "FROM {db}.events ANY LEFT JOIN ({ov}) AS ov USING distinct_id WHERE {person} = {pid}"
        );
        let head = self.select_json(&format!(
            "SELECT count() AS n, groupUniqArray(distinct_id) AS dids {from} FORMAT JSON"
        ))?;
        let total = head["data"][0]["n"].as_u64().unwrap_or(0);
        if total == 0 {
            return Ok(None);
        }
        let mut distinct_ids: Vec<String> = head["data"][0]["dids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        distinct_ids.sort();
        let r = self.select_json(&format!(
            "SELECT uuid, event, distinct_id, timestamp, prop_keys, prop_values {from} \
             ORDER BY timestamp, seq LIMIT {offset}, {limit} FORMAT JSON"
        ))?;
        let events = r["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let keys = row["prop_keys"].as_array().cloned().unwrap_or_default();
                let vals = row["prop_values"].as_array().cloned().unwrap_or_default();
                PersonEvent {
                    uuid: row["uuid"].as_str().unwrap_or_default().to_string(),
                    event: row["event"].as_str().unwrap_or_default().to_string(),
                    distinct_id: row["distinct_id"].as_str().unwrap_or_default().to_string(),
                    timestamp: row["timestamp"].as_i64().unwrap_or(0),
                    properties: keys
                        .iter()
                        .zip(vals.iter())
                        .map(|(k, v)| {
                            (
                                k.as_str().unwrap_or_default().to_string(),
                                v.as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Some(PersonTimeline {
            person_id: pid,
            distinct_ids,
            total,
            events,
        }))
    }

    /// Events stored through this handle's sequence counter (restored from
    /// the database on open): the difference across an `append` is the
    /// number of events it stored (duplicates are skipped).
    pub fn stored_events(&self) -> u64 {
        self.seq
    }

    /// Number of events stored.
    pub fn event_count(&self) -> Result<u64, String> {
        let r = self.select_json(&format!(
            "SELECT count() AS c FROM {}.events FORMAT JSON",
            self.database()
        ))?;
        Ok(r["data"][0]["c"].as_u64().unwrap_or(0))
    }
}
