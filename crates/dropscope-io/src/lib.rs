//! dropscope-io: reading events and persons from files, writing them back.
//!
//! Formats: JSONL (one JSON object per line) and CSV (header row). Event
//! columns: `uuid` (optional), `event`, `distinct_id`, `timestamp` (RFC 3339,
//! or epoch seconds/milliseconds), `properties` (a JSON object; in CSV a
//! JSON text). A line with `distinct_ids` (and optional `id`, `properties`)
//! is a person record. Events without a uuid get one derived from their
//! content, so importing the same file twice stores nothing new.
//!
//! A bad line never stops the import unless asked: it is reported with its
//! line number and reason, and every good line is kept.
//!
//! ```
//! let line = r#"{"event": "$pageview", "distinct_id": "u1", "timestamp": "2021-05-01T10:00:00Z"}"#;
//! let rec = dropscope_io::parse_json_record(serde_json::from_str(line).unwrap(), 1).unwrap();
//! assert!(matches!(rec, dropscope_store::Record::Event(_)));
//! ```

use std::io::{BufRead, Write};

use dropscope_core::event::{
    content_uuid, format_uuid, parse_uuid, Event, PersonRecord, ELEMENTS_KEY,
};
use dropscope_core::time::{format_ts, parse_event_timestamp};
use dropscope_store::Record;
use serde_json::{json, Map, Value};
use thiserror::Error;

pub mod parquet;

/// Why one input line was rejected.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: u64,
    pub reason: String,
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    /// Read with [`parquet::read_parquet`] (a file, not a stream).
    Parquet,
}

impl Format {
    /// Guesses the format from a file name.
    pub fn from_path(p: &std::path::Path) -> Option<Format> {
        match p.extension()?.to_str()? {
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

fn err(line: u64, reason: impl Into<String>) -> LineError {
    LineError {
        line,
        reason: reason.into(),
    }
}

/// Turns one JSON object into a record.
pub fn parse_json_record(v: Value, line: u64) -> Result<Record, LineError> {
    let Value::Object(mut o) = v else {
        return Err(err(line, "not a JSON object"));
    };
    if o.contains_key("distinct_ids") {
        let p: PersonRecord = serde_json::from_value(Value::Object(o))
            .map_err(|e| err(line, format!("bad person: {e}")))?;
        if p.distinct_ids.is_empty() {
            return Err(err(line, "person has no distinct_ids"));
        }
        return Ok(Record::Person(p));
    }
    let event = match o.remove("event") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(err(line, "`event` is empty")),
        Some(other) => return Err(err(line, format!("`event` must be a string, got {other}"))),
        None => return Err(err(line, "missing `event`")),
    };
    let distinct_id = match o.remove("distinct_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) => return Err(err(line, "`distinct_id` is empty")),
        Some(other) => {
            return Err(err(
                line,
                format!("`distinct_id` must be a string, got {other}"),
            ))
        }
        None => return Err(err(line, "missing `distinct_id`")),
    };
    let ts_value = o
        .remove("timestamp")
        .ok_or_else(|| err(line, "missing `timestamp`"))?;
    let timestamp = parse_event_timestamp(&ts_value)
        .ok_or_else(|| err(line, format!("`timestamp` is not a timestamp: {ts_value}")))?;
    let mut properties = match o.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            _ => return Err(err(line, "`properties` must be a JSON object")),
        },
        Some(other) => {
            return Err(err(
                line,
                format!("`properties` must be a JSON object, got {other}"),
            ))
        }
    };
    if let Some(els) = o.remove("elements").filter(Value::is_array) {
        properties.insert(ELEMENTS_KEY.into(), els);
    }
    let uuid = match o.remove("uuid") {
        None | Some(Value::Null) => {
            content_uuid(&event, &distinct_id, timestamp, hash_props(&properties))
        }
        Some(Value::String(s)) if s.is_empty() => {
            content_uuid(&event, &distinct_id, timestamp, hash_props(&properties))
        }
        Some(Value::String(s)) => {
            parse_uuid(&s).ok_or_else(|| err(line, format!("`uuid` is not a uuid: {s:?}")))?
        }
        Some(other) => return Err(err(line, format!("`uuid` must be a string, got {other}"))),
    };
    Ok(Record::Event(Event {
        uuid,
        event,
        distinct_id,
        timestamp,
        properties,
    }))
}

fn hash_props(p: &Map<String, Value>) -> u64 {
    let s = Value::Object(p.clone()).to_string();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Reads records from a reader, calling `sink` with batches of good records
/// and `bad` with each rejected line. Returns (lines read, bytes read).
pub fn read_records(
    reader: impl BufRead,
    format: Format,
    batch: usize,
    mut sink: impl FnMut(Vec<Record>) -> Result<(), String>,
    mut bad: impl FnMut(LineError) -> Result<(), String>,
) -> Result<(u64, u64), String> {
    let mut buf = Vec::with_capacity(batch);
    let mut lines = 0u64;
    let mut bytes = 0u64;
    match format {
        Format::Parquet => {
            return Err("Parquet is read from a file: use parquet::read_parquet".into())
        }
        Format::Jsonl => {
            for (i, l) in reader.split(b'\n').enumerate() {
                let l = l.map_err(|e| format!("read error: {e}"))?;
                let line = i as u64 + 1;
                bytes += l.len() as u64 + 1;
                let text = match std::str::from_utf8(&l) {
                    Ok(t) => t.trim(),
                    Err(e) => {
                        bad(err(
                            line,
                            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        ))?;
                        continue;
                    }
                };
                if text.is_empty() {
                    continue;
                }
                lines += 1;
                let rec = serde_json::from_str::<Value>(text)
                    .map_err(|e| err(line, format!("malformed JSON: {e}")))
                    .and_then(|v| parse_json_record(v, line));
                match rec {
                    Ok(r) => buf.push(r),
                    Err(e) => bad(e)?,
                }
                if buf.len() >= batch {
                    sink(std::mem::take(&mut buf))?;
                }
            }
        }
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
            let headers = rdr
                .headers()
                .map_err(|e| format!("CSV header: {e}"))?
                .clone();
            for (i, row) in rdr.records().enumerate() {
                let line = i as u64 + 2;
                lines += 1;
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        bad(err(line, format!("malformed CSV: {e}")))?;
                        continue;
                    }
                };
                bytes += row.as_slice().len() as u64;
                let mut o = Map::new();
                for (h, v) in headers.iter().zip(row.iter()) {
                    let val = if h == "distinct_ids" {
                        serde_json::from_str(v).unwrap_or(Value::String(v.into()))
                    } else {
                        Value::String(v.to_string())
                    };
                    o.insert(h.to_string(), val);
                }
                match parse_json_record(Value::Object(o), line) {
                    Ok(r) => buf.push(r),
                    Err(e) => bad(e)?,
                }
                if buf.len() >= batch {
                    sink(std::mem::take(&mut buf))?;
                }
            }
        }
    }
    if !buf.is_empty() {
        sink(buf)?;
    }
    Ok((lines, bytes))
}

/// Writes one event as a JSONL line (the import format).
pub fn write_event_jsonl(w: &mut impl Write, e: &Event) -> std::io::Result<()> {
    let mut props = e.properties.clone();
    let elements = props.remove(ELEMENTS_KEY);
    let mut v = json!({
        "uuid": format_uuid(e.uuid),
        "event": e.event,
        "distinct_id": e.distinct_id,
        "timestamp": format_ts(e.timestamp),
        "properties": props,
    });
    if let Some(els) = elements {
        v["elements"] = els;
    }
    serde_json::to_writer(&mut *w, &v)?;
    w.write_all(b"\n")
}

/// Every stored event of a snapshot, reconstructed (for export).
pub fn snapshot_events(
    snap: &dropscope_store::Snapshot,
    mut f: impl FnMut(Event) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let dicts = snap.dicts();
    let mut scratch = dropscope_store::EventColumns::new();
    let mut n = 0;
    for i in 0..snap.actor_count() {
        let v = snap.events_of(i, &mut scratch);
        for row in 0..v.len() {
            let properties: Map<String, Value> = v
                .props(row)
                .map(|(k, val)| {
                    (
                        dicts.keys.resolve(k).to_string(),
                        dropscope_store::dict::decode_value(dicts.values.resolve(val)),
                    )
                })
                .collect();
            f(Event {
                uuid: v.uuid[row],
                event: dicts.events.resolve(v.event[row]).to_string(),
                distinct_id: dicts.distinct_ids.resolve(v.did[row]).to_string(),
                timestamp: v.ts[row],
                properties,
            })?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, f: Format) -> (Vec<Record>, Vec<LineError>) {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        read_records(
            text.as_bytes(),
            f,
            2,
            |b| {
                good.extend(b);
                Ok(())
            },
            |e| {
                bad.push(e);
                Ok(())
            },
        )
        .unwrap();
        (good, bad)
    }

    #[test]
    fn bad_lines_are_reported_with_numbers_and_good_ones_kept() {
        let text = concat!(
            r#"{"event":"a","distinct_id":"u1","timestamp":"2021-05-01T00:00:00Z"}"#,
            "\n",
            "{not json\n",
            r#"{"event":"a","distinct_id":"u1","timestamp":"yesterday"}"#,
            "\n",
            r#"{"event":5,"distinct_id":"u1","timestamp":"2021-05-01T00:00:00Z"}"#,
            "\n",
            r#"{"event":"b","distinct_id":"u2","timestamp":1620000000,"properties":{"x":1}}"#,
            "\n",
        );
        let (good, bad) = read(text, Format::Jsonl);
        assert_eq!(good.len(), 2);
        let lines: Vec<u64> = bad.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(bad[0].reason.contains("malformed JSON"), "{}", bad[0]);
        assert!(bad[1].reason.contains("timestamp"), "{}", bad[1]);
        assert!(
            bad[2].reason.contains("`event` must be a string"),
            "{}",
            bad[2]
        );
    }

    #[test]
    fn same_content_same_uuid() {
        let l = r#"{"event":"a","distinct_id":"u1","timestamp":"2021-05-01T00:00:00Z","properties":{"k":"v"}}"#;
        let a = parse_json_record(serde_json::from_str(l).unwrap(), 1).unwrap();
        let b = parse_json_record(serde_json::from_str(l).unwrap(), 9).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn csv_with_json_properties() {
        let text = "event,distinct_id,timestamp,properties\na,u1,2021-05-01T00:00:00Z,\"{\"\"$browser\"\":\"\"Chrome\"\"}\"\nb,,2021-05-01T00:00:00Z,\n";
        let (good, bad) = read(text, Format::Csv);
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
        let Record::Event(e) = &good[0] else { panic!() };
        assert_eq!(e.properties["$browser"], "Chrome");
    }

    #[test]
    fn export_then_import_round_trips() {
        let l = r#"{"uuid":"01234567-89ab-cdef-0011-223344556677","event":"a","distinct_id":"u1","timestamp":"2021-05-01T00:00:00.123Z","properties":{"k":[1,2]},"elements":[{"tag_name":"a"}]}"#;
        let Record::Event(e) = parse_json_record(serde_json::from_str(l).unwrap(), 1).unwrap()
        else {
            panic!()
        };
        let mut out = Vec::new();
        write_event_jsonl(&mut out, &e).unwrap();
        let Record::Event(back) = parse_json_record(
            serde_json::from_str(std::str::from_utf8(&out).unwrap().trim()).unwrap(),
            1,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(back, e);
    }
}
