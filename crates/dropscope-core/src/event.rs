//! The event model: what a product sends us, before it is stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch, UTC.
pub type TimestampMs = i64;

/// One event as captured or imported.
///
/// `uuid` is the deduplication key: an event whose uuid was stored before is
/// dropped. Events sent without one get a fresh random uuid at the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub uuid: u128,
    pub event: String,
    pub distinct_id: String,
    /// UTC, milliseconds.
    pub timestamp: TimestampMs,
    /// JSON properties, as sent. Autocapture element chains live under
    /// [`ELEMENTS_KEY`] as a JSON array of element objects.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

impl Event {
    /// The other distinct id this event joins to its own into one person
    /// (SEMANTICS: `$identify` with `$anon_distinct_id`, `$create_alias` and
    /// `$merge_dangerously` with `alias`); `None` when it joins nothing.
    pub fn joined_distinct_id(&self) -> Option<&str> {
        let other = match self.event.as_str() {
            "$identify" => self.properties.get("$anon_distinct_id"),
            "$create_alias" | "$merge_dangerously" => self.properties.get("alias"),
            _ => None,
        };
        other
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && *s != self.distinct_id)
    }
}

/// Property key under which an `$autocapture` element chain is stored.
pub const ELEMENTS_KEY: &str = "$elements";

/// A person record from a persons file: a set of distinct ids that are one
/// person, with properties. `id` is the label under which the person is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonRecord {
    /// Defaults to the first distinct id.
    #[serde(default)]
    pub id: String,
    pub distinct_ids: Vec<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// A group (company, team, ...): `$groups: {"<type>": "<key>"}` on events
/// names it; `group_type_index` is the slot (`$group_0` .. `$group_4`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group_type_index: u8,
    pub group_type: String,
    pub key: String,
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// A cohort: a named set of persons, either a static list or defined by
/// person-property filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortRecord {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    /// `{"properties": [filters...]}` or a property group; person filters only.
    #[serde(default)]
    pub definition: Option<Value>,
    #[serde(default, rename = "static")]
    pub is_static: bool,
    /// Person labels (or distinct ids) that are members. Used for static
    /// cohorts, and for dynamic ones whose definition cannot be evaluated.
    #[serde(default)]
    pub members: Vec<String>,
}

/// The string form under which PostHog compares and breaks down a JSON value:
/// strings as they are, numbers and booleans as JSON text, null as `""`.
pub fn value_string_form(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => number_string_form(n),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn number_string_form(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        // 1.0 prints as "1" like ClickHouse's toString(Float64).
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

/// Parses a uuid in its canonical text form (with or without hyphens).
pub fn parse_uuid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

/// Formats a uuid as `8-4-4-4-12` lowercase hex.
pub fn format_uuid(u: u128) -> String {
    let h = format!("{u:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A deterministic uuid for events that arrive without one (imports and
/// acceptance cases): a hash of what the event is, so that importing the
/// same file twice stores it once.
pub fn content_uuid(event: &str, distinct_id: &str, ts: TimestampMs, ordinal: u64) -> u128 {
    // FNV-1a over the fields, twice with different offsets to fill 128 bits.
    fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
        let mut h = seed;
        for p in parts {
            for b in *p {
                h ^= *b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
            h ^= 0xff;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }
    let parts: [&[u8]; 4] = [
        event.as_bytes(),
        distinct_id.as_bytes(),
        &ts.to_le_bytes(),
        &ordinal.to_le_bytes(),
    ];
    let hi = fnv(0xcbf29ce484222325, &parts);
    let lo = fnv(0x84222325cbf29ce4, &parts);
    ((hi as u128) << 64) | lo as u128
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_forms() {
        assert_eq!(value_string_form(&json!(95)), "95");
        assert_eq!(value_string_form(&json!(0)), "0");
        assert_eq!(value_string_form(&json!(true)), "true");
        assert_eq!(value_string_form(&json!(1.5)), "1.5");
        assert_eq!(value_string_form(&json!(2.0)), "2");
        assert_eq!(value_string_form(&json!(null)), "");
        assert_eq!(value_string_form(&json!("Chrome")), "Chrome");
    }

    #[test]
    fn uuid_round_trip() {
        let u = 0x0123456789abcdef0011223344556677u128;
        let s = format_uuid(u);
        assert_eq!(s, "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(parse_uuid(&s), Some(u));
        assert_eq!(parse_uuid("xyz"), None);
    }
}
