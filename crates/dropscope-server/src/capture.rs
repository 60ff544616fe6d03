//! PostHog capture payloads: decoding and parsing, with limits checked while
//! reading.
//!
//! Accepted shapes (as PostHog's `/capture/`, `/batch/`, `/e/`, `/i/v0/e/`,
//! `/track/`):
//! - one event object `{"event", "distinct_id", "properties", ...}`;
//! - `{"batch": [events], "api_key", "sent_at"}` (posthog-python, -node);
//! - a bare array of events (posthog-js);
//! - any of those gzip-compressed (`Content-Encoding: gzip`,
//!   `?compression=gzip-js` / `gzip`, or gzip magic bytes), or as a form body
//!   `data=<base64 of the JSON or of its gzip>`. `lz64` is refused.
//!
//! Limits: the body size while decompressing (a gzip bomb stops at the limit,
//! it is never inflated whole), the number of events while the batch array is
//! read (the rest is not parsed), each event's JSON size and nesting depth
//! before it is turned into values.

use std::cell::Cell;
use std::fmt;
use std::io::Read;

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use dropscope_core::event::{parse_uuid, Event, TimestampMs};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Limits;
use crate::error::{ApiError, Limit};

/// PostHog moves timestamps more than this far in the future to now.
const MAX_FUTURE_MS: i64 = 23 * 3600 * 1000;
/// The earliest event time accepted: 1970-01-01T00:00:00Z.
pub const MIN_TIMESTAMP_MS: i64 = 0;
/// The latest time a `timestamp` or `sent_at` may name:
/// 9999-12-31T23:59:59.999Z (times past now + 23 h then become now).
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Query parameters of a capture request.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CaptureParams {
    /// `gzip-js` / `gzip` (decompress), `lz64` (refused), `base64`.
    pub compression: Option<String>,
    pub token: Option<String>,
    pub api_key: Option<String>,
}

/// A capture request as received.
#[derive(Debug, Clone, Copy)]
pub struct CaptureInput<'a> {
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub params: &'a CaptureParams,
}

/// The events of a request, ready to store, and the tokens it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// Every distinct project token found (envelope, query, events).
    pub tokens: Vec<String>,
    pub events: Vec<Event>,
}

/// Decodes and parses a capture request. `now_ms` is the receive time used
/// for clock-skew correction.
pub fn parse_capture(
    input: CaptureInput<'_>,
    limits: &Limits,
    now_ms: TimestampMs,
) -> Result<Captured, ApiError> {
    let json = decode_body(input, limits)?;
    let mut c = parse_events(&json, limits, now_ms)?;
    for t in [&input.params.token, &input.params.api_key]
        .into_iter()
        .flatten()
    {
        push_token(&mut c.tokens, t);
    }
    Ok(c)
}

fn push_token(tokens: &mut Vec<String>, t: &str) {
    if !t.is_empty() && !tokens.iter().any(|x| x == t) {
        tokens.push(t.to_string());
    }
}

fn is_gzip(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == 0x1f && b[1] == 0x8b
}

/// Inflates gzip data, refusing as soon as the output passes `max` bytes.
pub fn gunzip_limited(data: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    let mut dec = flate2::read::MultiGzDecoder::new(data);
    let mut out = Vec::with_capacity((data.len() * 4).min(max));
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = dec
            .read(&mut buf)
            .map_err(|e| ApiError::Decode(format!("invalid gzip body: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            return Err(ApiError::limit(
                Limit::MaxBodyBytes,
                max,
                "decompressed body",
            ));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Body bytes to JSON bytes: gzip, form, base64. Returns a borrowed slice
/// when nothing needed decoding.
pub fn decode_body<'a>(
    input: CaptureInput<'a>,
    limits: &Limits,
) -> Result<std::borrow::Cow<'a, [u8]>, ApiError> {
    use std::borrow::Cow;
    let compression = input
        .params
        .compression
        .as_deref()
        .map(str::to_ascii_lowercase);
    match compression.as_deref() {
        None | Some("") | Some("gzip-js") | Some("gzip") | Some("base64") => {}
        Some("lz64") => {
            return Err(ApiError::Decode(
                "compression lz64 is not supported: send gzip-js or uncompressed JSON".into(),
            ))
        }
        Some(other) => {
            return Err(ApiError::Decode(format!(
                "unsupported `compression` {other:?}: send gzip-js, base64 or uncompressed JSON"
            )))
        }
    }
    let encoding = input
        .content_encoding
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty() && s != "identity");
    let mut body: Cow<'a, [u8]> = Cow::Borrowed(input.body);
    match encoding.as_deref() {
        None => {}
        Some("gzip") | Some("x-gzip") => {
            body = Cow::Owned(gunzip_limited(&body, limits.max_body_bytes)?);
        }
        Some(other) => {
            return Err(ApiError::Decode(format!(
                "unsupported Content-Encoding `{other}`: send gzip or identity"
            )))
        }
    }
    let gzip_param = matches!(compression.as_deref(), Some("gzip-js") | Some("gzip"));
    if is_gzip(&body) || (gzip_param && encoding.is_none()) {
        body = Cow::Owned(gunzip_limited(&body, limits.max_body_bytes)?);
    }
    let form = input
        .content_type
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
        || body.starts_with(b"data=");
    if form {
        body = Cow::Owned(decode_form(&body, limits)?);
    }
    Ok(body)
}

/// `data=<base64>` (and optionally `compression=...`) form bodies.
fn decode_form(body: &[u8], limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let mut data: Option<Vec<u8>> = None;
    let mut compression: Option<String> = None;
    for pair in body.split(|b| *b == b'&') {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        match k {
            b"data" => data = Some(percent_decode(v)?),
            b"compression" => {
                compression = Some(String::from_utf8_lossy(&percent_decode(v)?).to_lowercase())
            }
            _ => {}
        }
    }
    if compression.as_deref() == Some("lz64") {
        return Err(ApiError::Decode(
            "compression lz64 is not supported: send gzip-js or uncompressed JSON".into(),
        ));
    }
    let data = data.ok_or_else(|| ApiError::Decode("form body without a `data` field".into()))?;
    let trimmed: Vec<u8> = data
        .iter()
        .map(|b| if *b == b' ' { b'+' } else { *b })
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let first = trimmed.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{') | Some(b'[')) {
        return Ok(data);
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = engine
        .decode(&trimmed)
        .or_else(|_| {
            base64::engine::GeneralPurpose::new(
                &base64::alphabet::URL_SAFE,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            )
            .decode(&trimmed)
        })
        .map_err(|e| ApiError::Decode(format!("form field `data` is not valid base64: {e}")))?;
    if is_gzip(&decoded) {
        return gunzip_limited(&decoded, limits.max_body_bytes);
    }
    Ok(decoded)
}

fn percent_decode(v: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = v
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::Decode(format!("bad percent-escape in form body at byte {i}"))
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Deepest nesting of arrays/objects in a parsed JSON value (a scalar is
/// 0, `[1]` is 1). Parsing itself is bounded: the event's bytes are checked
/// first, and serde_json refuses nesting beyond 128 levels.
pub fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks one event's raw JSON against the size limit.
fn check_event_bytes(label: impl fmt::Display, raw: &str, limits: &Limits) -> Result<(), ApiError> {
    if raw.len() > limits.max_event_bytes {
        return Err(ApiError::limit(
            Limit::MaxEventBytes,
            limits.max_event_bytes,
            format_args!("{label} ({} bytes)", raw.len()),
        ));
    }
    Ok(())
}

/// Checks a parsed event against the property nesting limit: the deepest
/// nesting inside its fields, the `properties` object itself not counted
/// (`{"properties": {"x": [[1]]}}` has depth 2).
fn check_event_depth(
    label: impl Fn() -> String,
    w: &WireEvent,
    limits: &Limits,
) -> Result<(), ApiError> {
    let depth = [&w.properties, &w.set, &w.set_once, &w.event, &w.distinct_id]
        .into_iter()
        .map(value_depth)
        .max()
        .unwrap_or(0)
        .saturating_sub(1);
    if depth > limits.max_property_depth {
        return Err(ApiError::limit(
            Limit::MaxPropertyDepth,
            limits.max_property_depth,
            format_args!("{}: property nesting depth {depth}", label()),
        ));
    }
    Ok(())
}

/// One element of a batch: its raw text (checked against the per-event
/// byte limit, parsed later) or, on the fast path, the parsed event.
enum Item<'de> {
    Raw(&'de RawValue),
    Wire(Box<WireEvent>),
}

/// Reads a batch array element by element, enforcing the limits as it goes.
/// `direct`: the whole body is within the per-event byte limit, so no event
/// can exceed it; elements are parsed straight into events (one pass
/// instead of a raw scan and a parse).
struct BatchSeed<'c> {
    limits: &'c Limits,
    err: &'c Cell<Option<ApiError>>,
    direct: bool,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Vec<Item<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Vec<Item<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<Item<'de>> = Vec::new();
        loop {
            let item = if self.direct {
                match seq.next_element::<WireEvent>()? {
                    Some(w) => Item::Wire(Box::new(w)),
                    None => break,
                }
            } else {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => Item::Raw(raw),
                    None => break,
                }
            };
            if out.len() >= self.limits.max_events_per_batch {
                self.err.set(Some(ApiError::limit(
                    Limit::MaxEventsPerBatch,
                    self.limits.max_events_per_batch,
                    "number of events in the request",
                )));
                return Err(de::Error::custom("limit"));
            }
            if let Item::Raw(raw) = &item {
                let label = format_args!("batch[{}]", out.len());
                if let Err(e) = check_event_bytes(label, raw.get(), self.limits) {
                    self.err.set(Some(e));
                    return Err(de::Error::custom("limit"));
                }
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// The top level: a batch array, an envelope with `batch`, or one event.
#[derive(Default)]
struct Top<'de> {
    batch: Option<Vec<Item<'de>>>,
    token: Option<Value>,
    api_key: Option<Value>,
    sent_at: Option<Value>,
}

struct TopSeed<'c> {
    limits: &'c Limits,
    err: &'c Cell<Option<ApiError>>,
    direct: bool,
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Top<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object, {\"batch\": [...]} or an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let events = BatchSeed {
            limits: self.limits,
            err: self.err,
            direct: self.direct,
        }
        .visit_seq(seq)?;
        Ok(Top {
            batch: Some(events),
            ..Default::default()
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = Top::default();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*k {
                "batch" => {
                    top.batch = Some(map.next_value_seed(BatchSeed {
                        limits: self.limits,
                        err: self.err,
                        direct: self.direct,
                    })?)
                }
                "api_key" => top.api_key = Some(map.next_value()?),
                "token" => top.token = Some(map.next_value()?),
                "sent_at" => top.sent_at = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(top)
    }
}

/// One event as PostHog's SDKs send it. Unknown fields (`type`, `library`,
/// `messageId`, ...) are ignored.
#[derive(Deserialize)]
#[serde(expecting = "an event object")]
struct WireEvent {
    #[serde(default)]
    event: Value,
    #[serde(default)]
    distinct_id: Value,
    #[serde(default)]
    properties: Value,
    #[serde(default)]
    timestamp: Value,
    #[serde(default)]
    sent_at: Value,
    #[serde(default)]
    offset: Value,
    #[serde(default)]
    uuid: Value,
    #[serde(default, rename = "$set")]
    set: Value,
    #[serde(default, rename = "$set_once")]
    set_once: Value,
    #[serde(default)]
    api_key: Value,
    #[serde(default)]
    token: Value,
}

/// Reads the top level of a capture body (see [`Top`]).
fn read_top<'de>(text: &'de str, limits: &Limits, direct: bool) -> Result<Top<'de>, ApiError> {
    let err = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    de::Deserializer::deserialize_any(
        &mut de,
        TopSeed {
            limits,
            err: &err,
            direct,
        },
    )
    .and_then(|t| de.end().map(|_| t))
    .map_err(|e| json_error(e, &err, limits))
}

fn json_error(e: serde_json::Error, err: &Cell<Option<ApiError>>, limits: &Limits) -> ApiError {
    if let Some(e) = err.take() {
        return e;
    }
    let msg = e.to_string();
    if msg.contains("recursion limit exceeded") {
        return ApiError::limit(
            Limit::MaxPropertyDepth,
            limits.max_property_depth,
            "JSON nesting depth",
        );
    }
    ApiError::Decode(format!("malformed JSON: {msg}"))
}

/// Parses decoded JSON bytes into events.
pub fn parse_events(
    json: &[u8],
    limits: &Limits,
    now_ms: TimestampMs,
) -> Result<Captured, ApiError> {
    let text = std::str::from_utf8(json).map_err(|e| {
        ApiError::Decode(format!(
            "body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    // Fast path (one pass) when no event can exceed the per-event limit;
    // any error there is reported by the checked path, which names the
    // offending element.
    let direct = text.len() <= limits.max_event_bytes;
    let top = match direct.then(|| read_top(text, limits, true)) {
        Some(Ok(top)) => top,
        _ => read_top(text, limits, false)?,
    };
    let mut tokens = Vec::new();
    for v in [&top.api_key, &top.token].into_iter().flatten() {
        match v {
            Value::String(s) => push_token(&mut tokens, s),
            Value::Null => {}
            _ => {
                return Err(ApiError::Invalid(
                    "`api_key`/`token` must be a string".into(),
                ))
            }
        }
    }
    let envelope_sent_at = match &top.sent_at {
        Some(v) => parse_timestamp(v).map_err(|m| ApiError::Invalid(format!("`sent_at`: {m}")))?,
        None => None,
    };
    let (raws, single_event): (Vec<Item>, bool) = match top.batch {
        Some(b) => (b, false),
        None => {
            check_event_bytes("the event", text, limits)?;
            let raw = serde_json::from_str::<&RawValue>(text)
                .map_err(|e| ApiError::Decode(format!("malformed JSON: {e}")))?;
            (vec![Item::Raw(raw)], true)
        }
    };
    if raws.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    let mut events = Vec::with_capacity(raws.len());
    for (i, item) in raws.into_iter().enumerate() {
        // Labels for error messages are only formatted when needed.
        let label = || {
            if single_event {
                "event".to_string()
            } else {
                format!("batch[{i}]")
            }
        };
        let w: WireEvent = match item {
            Item::Wire(w) => *w,
            Item::Raw(raw) => serde_json::from_str(raw.get()).map_err(|e| {
                if e.to_string().contains("recursion limit exceeded") {
                    ApiError::limit(
                        Limit::MaxPropertyDepth,
                        limits.max_property_depth,
                        format_args!("{}: JSON nesting depth", label()),
                    )
                } else {
                    ApiError::Invalid(format!("{}: {e}", label()))
                }
            })?,
        };
        check_event_depth(label, &w, limits)?;
        events.push(to_event(label, w, envelope_sent_at, now_ms, &mut tokens)?);
    }
    Ok(Captured { tokens, events })
}

fn to_event(
    label: impl Fn() -> String,
    w: WireEvent,
    envelope_sent_at: Option<TimestampMs>,
    now_ms: TimestampMs,
    tokens: &mut Vec<String>,
) -> Result<Event, ApiError> {
    let bad = |field: &str, msg: &str| ApiError::Invalid(format!("{}.{field}: {msg}", label()));
    let event = match w.event {
        Value::String(s) if !s.is_empty() => s,
        Value::String(_) | Value::Null => return Err(bad("event", "missing event name")),
        _ => return Err(bad("event", "must be a string")),
    };
    let mut properties = match w.properties {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(bad("properties", "must be an object")),
    };
    for (key, v, once) in [("$set", w.set, false), ("$set_once", w.set_once, true)] {
        match v {
            Value::Null => {}
            Value::Object(top) => {
                let entry = properties
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                match entry {
                    Value::Object(m) => {
                        for (k, v) in top {
                            if once {
                                m.entry(k).or_insert(v);
                            } else {
                                m.insert(k, v);
                            }
                        }
                    }
                    other => *other = Value::Object(top),
                }
            }
            _ => return Err(bad(key, "must be an object")),
        }
    }
    let usable = |v: &Value| match v {
        Value::String(s) if !s.trim().is_empty() => Some(Ok(s.clone())),
        Value::Number(n) => Some(Ok(n.to_string())),
        Value::String(_) | Value::Null => None,
        _ => Some(Err(())),
    };
    // The properties are only looked into when the top level has none.
    let distinct_id = usable(&w.distinct_id).or_else(|| {
        ["distinct_id", "$distinct_id"]
            .into_iter()
            .find_map(|k| properties.get(k).and_then(usable))
    });
    let distinct_id = match distinct_id {
        Some(Ok(d)) => d,
        Some(Err(())) => return Err(bad("distinct_id", "must be a string or a number")),
        None => return Err(bad("distinct_id", "missing distinct_id")),
    };
    let uuid = match &w.uuid {
        Value::Null => uuid::Uuid::now_v7().as_u128(),
        Value::String(s) => {
            parse_uuid(s).ok_or_else(|| bad("uuid", &format!("not a uuid: {s:?}")))?
        }
        _ => return Err(bad("uuid", "must be a string")),
    };
    for v in [
        &w.api_key,
        &w.token,
        properties.get("token").unwrap_or(&Value::Null),
    ] {
        if let Value::String(s) = v {
            push_token(tokens, s);
        }
    }
    let ts = parse_timestamp(&w.timestamp).map_err(|m| bad("timestamp", &m))?;
    let sent_at = parse_timestamp(&w.sent_at)
        .map_err(|m| bad("sent_at", &m))?
        .or(envelope_sent_at);
    let offset = match &w.offset {
        Value::Null => None,
        Value::Number(n) => Some(
            n.as_i64()
                .or_else(|| n.as_f64().filter(|f| f.abs() < 1e18).map(|f| f as i64))
                .filter(|o| o.unsigned_abs() <= MAX_TIMESTAMP_MS as u64)
                .ok_or_else(|| {
                    bad(
                        "offset",
                        &format!("{n} is out of range (at most {MAX_TIMESTAMP_MS} ms)"),
                    )
                })?,
        ),
        _ => return Err(bad("offset", "must be a number of milliseconds")),
    };
    let ignore_sent_at = properties
        .get("$ignore_sent_at")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let timestamp = skew_corrected(
        ts,
        if ignore_sent_at { None } else { sent_at },
        offset,
        now_ms,
    );
    if timestamp < MIN_TIMESTAMP_MS {
        return Err(bad(
            "timestamp",
            &format!(
                "out of range: {timestamp} ms after clock-skew correction (`sent_at`, `offset`) is before 1970-01-01"
            ),
        ));
    }
    Ok(Event {
        uuid,
        event,
        distinct_id,
        timestamp,
        properties,
    })
}

/// PostHog's clock-skew correction: with `timestamp` and `sent_at`, the
/// event happened `sent_at - timestamp` before we received it; with only
/// `offset`, `offset` ms before; else at `timestamp`, else now. Timestamps
/// more than 23 hours in the future become now.
pub fn skew_corrected(
    ts: Option<TimestampMs>,
    sent_at: Option<TimestampMs>,
    offset: Option<i64>,
    now_ms: TimestampMs,
) -> TimestampMs {
    let t = match (ts, sent_at, offset) {
        (Some(t), Some(s), _) => now_ms + (t - s),
        (None, _, Some(o)) => now_ms - o,
        (Some(t), None, _) => t,
        (None, _, None) => now_ms,
    };
    if t > now_ms + MAX_FUTURE_MS {
        now_ms
    } else {
        t
    }
}

/// ISO 8601 / RFC 3339 text (a missing zone means UTC) or epoch
/// milliseconds, between 1970-01-01 and 9999-12-31. `null` is `None`.
pub fn parse_timestamp(v: &Value) -> Result<Option<TimestampMs>, String> {
    let ms = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.abs() < 1e18).map(|f| f as i64))
            .ok_or_else(|| {
                format!(
                    "out of range: {n} epoch milliseconds is not between 1970-01-01 and 9999-12-31"
                )
            })?,
        Value::String(s) => {
            parse_ts_str(s).ok_or_else(|| format!("cannot parse {s:?} as an ISO 8601 timestamp"))?
        }
        _ => return Err("must be an ISO 8601 string".into()),
    };
    if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms) {
        return Err(format!(
            "out of range: {v} is not between 1970-01-01 and 9999-12-31"
        ));
    }
    Ok(Some(ms))
}

fn parse_ts_str(s: &str) -> Option<TimestampMs> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(s, f) {
            return Some(d.timestamp_millis());
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, f) {
            return Some(d.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    None
}

/// The current time in epoch milliseconds.
pub fn now_ms() -> TimestampMs {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    const NOW: i64 = 1_700_000_000_000;

    fn limits() -> Limits {
        Limits::default()
    }

    fn parse(body: &[u8]) -> Result<Captured, ApiError> {
        parse_with(body, None, None, &CaptureParams::default(), &limits())
    }

    fn parse_with(
        body: &[u8],
        ct: Option<&str>,
        ce: Option<&str>,
        params: &CaptureParams,
        limits: &Limits,
    ) -> Result<Captured, ApiError> {
        parse_capture(
            CaptureInput {
                body,
                content_type: ct,
                content_encoding: ce,
                params,
            },
            limits,
            NOW,
        )
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn timestamps_outside_1970_to_9999_are_refused() {
        for v in [
            json!(-1),
            json!(1e20),
            json!(-1e300),
            json!(i64::MIN),
            json!("0001-01-01T00:00:00Z"),
            json!("1969-12-31T23:59:59Z"),
        ] {
            let e = parse_timestamp(&v).unwrap_err();
            assert!(e.contains("out of range"), "{v}: {e}");
        }
        assert_eq!(parse_timestamp(&json!(0)), Ok(Some(0)));
        assert_eq!(
            parse_timestamp(&json!("9999-12-31T23:59:59.999Z")),
            Ok(Some(MAX_TIMESTAMP_MS))
        );
        // An offset that would overflow is refused, not wrapped.
        let body = json!({"api_key": "t", "event": "a", "distinct_id": "d", "offset": i64::MIN});
        let err = parse(body.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("offset"), "{err}");
    }

    #[test]
    fn single_event() {
        let c = parse(br#"{"event":"a","distinct_id":"u1","api_key":"phc","properties":{"x":1},"timestamp":"2023-11-14T22:13:20Z"}"#).unwrap();
        assert_eq!(c.tokens, vec!["phc"]);
        assert_eq!(c.events.len(), 1);
        let e = &c.events[0];
        assert_eq!((e.event.as_str(), e.distinct_id.as_str()), ("a", "u1"));
        assert_eq!(e.timestamp, 1_700_000_000_000);
        assert_eq!(e.properties["x"], json!(1));
    }

    #[test]
    fn batch_envelope_and_bare_array() {
        let body = json!({"api_key": "k", "sent_at": "2023-11-14T22:13:30Z", "batch": [
            {"event": "a", "distinct_id": "u", "timestamp": "2023-11-14T22:13:20Z"},
            {"event": "b", "distinct_id": 42, "timestamp": "2023-11-14T22:13:25+00:00"}]});
        let c = parse(body.to_string().as_bytes()).unwrap();
        // The client clock is 10 s ahead of ours: now + (ts - sent_at).
        assert_eq!(c.events[0].timestamp, NOW - 10_000);
        assert_eq!(c.events[1].timestamp, NOW - 5_000);
        assert_eq!(c.events[1].distinct_id, "42");
        let c = parse(br#"[{"event":"a","distinct_id":"u","properties":{"token":"t"}}]"#).unwrap();
        assert_eq!(c.tokens, vec!["t"]);
        assert_eq!(c.events[0].timestamp, NOW);
    }

    #[test]
    fn offset_and_future_and_naive() {
        let c = parse(br#"[{"event":"a","distinct_id":"u","offset":1500}]"#).unwrap();
        assert_eq!(c.events[0].timestamp, NOW - 1500);
        let c = parse(br#"[{"event":"a","distinct_id":"u","timestamp":"2099-01-01T00:00:00Z"}]"#)
            .unwrap();
        assert_eq!(c.events[0].timestamp, NOW);
        let c = parse(br#"[{"event":"a","distinct_id":"u","timestamp":"2023-11-14 22:13:20.5"}]"#)
            .unwrap();
        assert_eq!(c.events[0].timestamp, NOW + 500);
        let c = parse(br#"[{"event":"a","distinct_id":"u","timestamp":"2023-11-14T22:13:20Z","sent_at":"2023-11-14T22:13:20Z","properties":{"$ignore_sent_at":true}}]"#).unwrap();
        assert_eq!(c.events[0].timestamp, NOW);
    }

    #[test]
    fn top_level_set_moves_into_properties() {
        let c = parse(br#"{"event":"$set","distinct_id":"u","$set":{"a":1,"b":2},"$set_once":{"c":3},"properties":{"$set":{"a":0,"z":9}}}"#).unwrap();
        let p = &c.events[0].properties;
        assert_eq!(p["$set"], json!({"a": 1, "z": 9, "b": 2}));
        assert_eq!(p["$set_once"], json!({"c": 3}));
    }

    #[test]
    fn uuids_kept_or_generated() {
        let c = parse(br#"[{"event":"a","distinct_id":"u","uuid":"01234567-89ab-cdef-0011-223344556677"},{"event":"a","distinct_id":"u"}]"#).unwrap();
        assert_eq!(c.events[0].uuid, 0x0123456789abcdef0011223344556677);
        assert_ne!(c.events[1].uuid, 0);
        assert!(matches!(
            parse(br#"[{"event":"a","distinct_id":"u","uuid":"nope"}]"#),
            Err(ApiError::Invalid(m)) if m.contains("batch[0].uuid")
        ));
    }

    #[test]
    fn gzip_by_header_param_and_magic() {
        let body = gz(br#"{"batch":[{"event":"a","distinct_id":"u"}],"api_key":"k"}"#);
        let p = CaptureParams::default();
        assert_eq!(
            parse_with(&body, None, Some("gzip"), &p, &limits())
                .unwrap()
                .events
                .len(),
            1
        );
        let p = CaptureParams {
            compression: Some("gzip-js".into()),
            ..Default::default()
        };
        assert_eq!(
            parse_with(&body, Some("text/plain"), None, &p, &limits())
                .unwrap()
                .events
                .len(),
            1
        );
        assert_eq!(parse(&body).unwrap().events.len(), 1);
    }

    #[test]
    fn base64_form() {
        let json = br#"[{"event":"a","distinct_id":"u","properties":{"token":"t"}}]"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        let body = format!("data={}&ver=1", b64.replace('+', "%2B").replace('=', "%3D"));
        let c = parse_with(
            body.as_bytes(),
            Some("application/x-www-form-urlencoded"),
            None,
            &CaptureParams::default(),
            &limits(),
        )
        .unwrap();
        assert_eq!(c.events.len(), 1);
        // base64 of gzip inside a form
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz(json));
        let body = format!("data={}", b64.replace('+', "%2B"));
        assert_eq!(parse(body.as_bytes()).unwrap().events.len(), 1);
        let err = parse(b"data=abc&compression=lz64").unwrap_err();
        assert!(err.to_string().contains("lz64"));
        let p = CaptureParams {
            compression: Some("lz64".into()),
            ..Default::default()
        };
        assert_eq!(
            parse_with(b"data=x", None, None, &p, &limits())
                .unwrap_err()
                .status(),
            400
        );
        assert!(parse(b"data=%%%")
            .unwrap_err()
            .to_string()
            .contains("percent"));
    }

    #[test]
    fn bad_inputs() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "malformed JSON"),
            (b"\xff\xfe", "UTF-8"),
            (b"[]", "no events"),
            (br#"{"batch":[]}"#, "no events"),
            (b"42", "malformed JSON"),
            (
                br#"[{"distinct_id":"u"}]"#,
                "batch[0].event: missing event name",
            ),
            (
                br#"[{"event":5,"distinct_id":"u"}]"#,
                "batch[0].event: must be a string",
            ),
            (br#"[{"event":"a"}]"#, "batch[0].distinct_id: missing"),
            (
                br#"[{"event":"a","distinct_id":"u","properties":[1]}]"#,
                "properties: must be an object",
            ),
            (
                br#"[{"event":"a","distinct_id":"u","timestamp":"yesterday"}]"#,
                "batch[0].timestamp: cannot parse",
            ),
            (
                br#"{"batch":[{"event":"a","distinct_id":"u"}],"sent_at":"soon"}"#,
                "`sent_at`",
            ),
            (
                br#"[{"event":"a","distinct_id":{"x":1}}]"#,
                "distinct_id: must be",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
            assert!(e.to_string().contains(want), "{e} vs {want}");
        }
    }

    #[test]
    fn limits_are_checked_while_reading() {
        let l = Limits {
            max_body_bytes: 1000,
            max_events_per_batch: 2,
            max_event_bytes: 100,
            max_property_depth: 2,
        };
        let p = CaptureParams::default();
        // Third element refused: the array is malformed after it, which is
        // never reached.
        let e = parse_with(br#"[{"event":"a","distinct_id":"u"},{"event":"a","distinct_id":"u"},{"event":"a","distinct_id":"u"},{{{"#, None, None, &p, &l).unwrap_err();
        assert_eq!(e.code(), "max_events_per_batch");
        assert_eq!(e.status(), 413);
        let big = format!(
            r#"[{{"event":"a","distinct_id":"u","properties":{{"x":"{}"}}}}]"#,
            "y".repeat(200)
        );
        let e = parse_with(big.as_bytes(), None, None, &p, &l).unwrap_err();
        assert_eq!(e.code(), "max_event_bytes");
        let deep = br#"[{"event":"a","distinct_id":"u","properties":{"x":[[[1]]]}}]"#;
        let e = parse_with(deep, None, None, &p, &l).unwrap_err();
        assert_eq!(e.code(), "max_property_depth");
        assert!(e.to_string().contains("depth 3"), "{e}");
        let ok = br#"[{"event":"a","distinct_id":"u","properties":{"x":[[1]]}}]"#;
        assert!(parse_with(ok, None, None, &p, &l).is_ok());
        let very_deep = format!("[{}]", "[".repeat(500));
        let e = parse_with(very_deep.as_bytes(), None, None, &p, &Limits::default()).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn one_pass_and_checked_parsing_agree() {
        // The one-pass path (body within the per-event limit) and the
        // checked path (raw scan per element) give the same events, and the
        // same errors naming the element.
        let body = br#"{"api_key":"k","sent_at":"2021-05-01T00:00:10Z","batch":[
            {"event":"a","distinct_id":"u1","uuid":"0188b8b0-0000-7000-8000-000000000001","timestamp":"2021-05-01T00:00:00Z","properties":{"x":[1,{"y":"z"}],"$set":{"p":1}}},
            {"event":"b","distinct_id":7,"uuid":"0188b8b0-0000-7000-8000-000000000002","offset":5,"$set_once":{"q":"r"},"unknown":{"deep":[[[1]]]}}
        ]}"#;
        let p = CaptureParams::default();
        let fast = Limits::default();
        assert!(body.len() <= fast.max_event_bytes);
        let checked = Limits {
            max_event_bytes: body.len() - 1,
            ..Limits::default()
        };
        let a = parse_with(body, None, None, &p, &fast).unwrap();
        let b = parse_with(body, None, None, &p, &checked).unwrap();
        assert_eq!(a.events, b.events);
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.events.len(), 2);
        for bad in [
            &br#"[{"event":"a","distinct_id":"u"}, 5]"#[..],
            br#"{"batch":[{"event":"a","distinct_id":"u"},{"event":"a","distinct_id":"u","properties":{"x":[[[1]]]}}]}"#,
            br#"[{"event":"a","distinct_id":"u"},{"event":"a","distinct_id":"u"},{"event":"a","distinct_id":"u"}]"#,
            br#"[{"event":"a","distinct_id":"u"},{"event":"a" "distinct_id":"u"}]"#,
        ] {
            let small = Limits {
                max_events_per_batch: 2,
                max_property_depth: 2,
                ..Limits::default()
            };
            let checked = Limits {
                max_event_bytes: bad.len() - 1,
                ..small
            };
            let e1 = parse_with(bad, None, None, &p, &small).unwrap_err();
            let e2 = parse_with(bad, None, None, &p, &checked).unwrap_err();
            assert_eq!(e1.to_string(), e2.to_string());
            assert_eq!(e1.code(), e2.code());
        }
        let e = parse_with(
            br#"[{"event":"a","distinct_id":"u"}, 5]"#,
            None,
            None,
            &p,
            &fast,
        )
        .unwrap_err();
        assert!(e.to_string().contains("batch[1]"), "{e}");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let zeros = vec![b' '; 50 * 1024 * 1024];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&zeros).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 200 * 1024);
        let l = Limits {
            max_body_bytes: 1024 * 1024,
            ..Limits::default()
        };
        let e = parse_with(&bomb, None, Some("gzip"), &CaptureParams::default(), &l).unwrap_err();
        assert_eq!(e.code(), "max_body_bytes");
        assert_eq!(e.status(), 413);
        let e = parse_with(
            b"\x1f\x8bnot gzip",
            None,
            None,
            &CaptureParams::default(),
            &l,
        )
        .unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");
        let e = parse_with(b"{}", None, Some("br"), &CaptureParams::default(), &l).unwrap_err();
        assert!(e.to_string().contains("Content-Encoding"), "{e}");
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        let v: Value = serde_json::from_str(r#"{"a":"[[[{{{","b":[1,{"c":"\"]"}]}"#).unwrap();
        assert_eq!(value_depth(&v), 3);
        assert_eq!(value_depth(&Value::from(1)), 0);
    }
}
