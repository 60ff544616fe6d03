//! Parquet import and export.
//!
//! An events file has the columns `uuid` (utf8 or 16-byte fixed binary,
//! optional), `event` (utf8), `distinct_id` (utf8 or int64), `timestamp`
//! (a timestamp of any unit, utf8 RFC 3339, or int64 epoch milliseconds),
//! `properties` (utf8 JSON text, optional) and `elements` (utf8 JSON array,
//! optional). A file with a `distinct_ids` column is a persons file: `id`
//! (optional), `distinct_ids` (list of utf8, or utf8 JSON array) and
//! `properties` (utf8 JSON, optional). Other columns are not read.
//!
//! Each row is turned into the JSON object a JSONL line would hold and
//! checked by [`parse_json_record`], so the rules are the same in every
//! format. A bad row is reported with its 1-based row number (as
//! [`LineError::line`]) and reason, and every good row is kept.
//!
//! Export writes events with `timestamp` as `Timestamp(Millisecond, "UTC")`,
//! Snappy-compressed. Reading supports uncompressed and Snappy files only
//! (the other codecs are not compiled in).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use dropscope_core::event::{format_uuid, Event, ELEMENTS_KEY};
use dropscope_core::time::format_ts;
use dropscope_store::Record;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

use crate::{parse_json_record, LineError};

/// Rows per record batch (and per row group) written by [`EventParquetWriter`].
pub const WRITE_BATCH_ROWS: usize = 65_536;

/// What a column's cells mean, which decides the types accepted and how a
/// cell becomes JSON.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Text (or a number, for ids) passed through as is.
    Plain,
    /// A uuid: text, or 16 bytes.
    Uuid,
    /// An instant: a timestamp, RFC 3339 text, or int64 epoch milliseconds.
    Time,
    /// JSON text, parsed before the row is checked.
    Json,
    /// A list of strings, or JSON text holding one.
    StrList,
}

const EVENT_COLUMNS: &[(&str, Kind, bool)] = &[
    ("uuid", Kind::Uuid, false),
    ("event", Kind::Plain, true),
    ("distinct_id", Kind::Plain, true),
    ("timestamp", Kind::Time, true),
    // Text that `parse_json_record` parses itself.
    ("properties", Kind::Plain, false),
    ("elements", Kind::Json, false),
];

const PERSON_COLUMNS: &[(&str, Kind, bool)] = &[
    ("id", Kind::Plain, false),
    ("distinct_ids", Kind::StrList, true),
    ("properties", Kind::Json, false),
];

/// One column of a record batch, viewed by type.
enum Cells<'a> {
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    Utf8View(&'a arrow_array::StringViewArray),
    Int64(&'a arrow_array::Int64Array),
    /// Values and how many of them make a millisecond (negative: how many
    /// milliseconds make one).
    Ts(TsCells<'a>),
    Bytes16(&'a arrow_array::FixedSizeBinaryArray),
    List(&'a arrow_array::ListArray),
    LargeList(&'a arrow_array::LargeListArray),
}

enum TsCells<'a> {
    S(&'a arrow_array::TimestampSecondArray),
    Ms(&'a arrow_array::TimestampMillisecondArray),
    Us(&'a arrow_array::TimestampMicrosecondArray),
    Ns(&'a arrow_array::TimestampNanosecondArray),
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn type_ok(kind: Kind, t: &DataType) -> bool {
    match kind {
        Kind::Plain => is_text(t) || *t == DataType::Int64,
        Kind::Uuid => is_text(t) || *t == DataType::FixedSizeBinary(16),
        Kind::Time => is_text(t) || *t == DataType::Int64 || matches!(t, DataType::Timestamp(..)),
        Kind::Json => is_text(t),
        Kind::StrList => {
            is_text(t)
                || matches!(t, DataType::List(f) | DataType::LargeList(f) if is_text(f.data_type()))
        }
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Plain => "utf8 or int64",
        Kind::Uuid => "utf8 or fixed_size_binary(16)",
        Kind::Time => "a timestamp, utf8 (RFC 3339) or int64 (epoch milliseconds)",
        Kind::Json => "utf8 (JSON text)",
        Kind::StrList => "list<utf8> or utf8 (a JSON array)",
    }
}

impl<'a> Cells<'a> {
    fn new(a: &'a ArrayRef) -> Option<Cells<'a>> {
        Some(match a.data_type() {
            DataType::Utf8 => Cells::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Cells::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => Cells::Utf8View(a.as_string_view()),
            DataType::Int64 => Cells::Int64(a.as_primitive::<Int64Type>()),
            DataType::Timestamp(TimeUnit::Second, _) => {
                Cells::Ts(TsCells::S(a.as_primitive::<TimestampSecondType>()))
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                Cells::Ts(TsCells::Ms(a.as_primitive::<TimestampMillisecondType>()))
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Cells::Ts(TsCells::Us(a.as_primitive::<TimestampMicrosecondType>()))
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                Cells::Ts(TsCells::Ns(a.as_primitive::<TimestampNanosecondType>()))
            }
            DataType::FixedSizeBinary(16) => Cells::Bytes16(a.as_fixed_size_binary()),
            DataType::List(_) => Cells::List(a.as_list::<i32>()),
            DataType::LargeList(_) => Cells::LargeList(a.as_list::<i64>()),
            _ => return None,
        })
    }

    /// The cell at `i` as JSON (`Null` for a null cell).
    fn value(&self, i: usize) -> Value {
        fn text(s: Option<&str>) -> Value {
            s.map_or(Value::Null, |s| Value::String(s.to_string()))
        }
        fn strings(a: &ArrayRef) -> Value {
            let Some(c) = Cells::new(a) else {
                return Value::Null;
            };
            Value::Array((0..a.len()).map(|j| c.value(j)).collect())
        }
        match self {
            Cells::Utf8(a) => text(a.is_valid(i).then(|| a.value(i))),
            Cells::LargeUtf8(a) => text(a.is_valid(i).then(|| a.value(i))),
            Cells::Utf8View(a) => text(a.is_valid(i).then(|| a.value(i))),
            // A number, read as in JSONL (for a timestamp: epoch ms, or
            // seconds below 1e11).
            Cells::Int64(a) if a.is_valid(i) => Value::from(a.value(i)),
            Cells::Ts(t) => {
                let ms = match t {
                    TsCells::S(a) => a.is_valid(i).then(|| a.value(i).saturating_mul(1000)),
                    TsCells::Ms(a) => a.is_valid(i).then(|| a.value(i)),
                    TsCells::Us(a) => a.is_valid(i).then(|| a.value(i).div_euclid(1000)),
                    TsCells::Ns(a) => a.is_valid(i).then(|| a.value(i).div_euclid(1_000_000)),
                };
                ms.map_or(Value::Null, ms_value)
            }
            Cells::Bytes16(a) if a.is_valid(i) => {
                let b: [u8; 16] = a.value(i).try_into().unwrap_or([0; 16]);
                Value::String(format_uuid(u128::from_be_bytes(b)))
            }
            Cells::List(a) if a.is_valid(i) => strings(&a.value(i)),
            Cells::LargeList(a) if a.is_valid(i) => strings(&a.value(i)),
            _ => Value::Null,
        }
    }
}

/// An instant in epoch milliseconds, as JSON that `parse_event_timestamp`
/// reads back exactly: a number when it cannot be mistaken for seconds
/// (|ms| >= 1e11, i.e. after March 1973), RFC 3339 text otherwise.
fn ms_value(ms: i64) -> Value {
    if ms.unsigned_abs() >= 100_000_000_000 {
        Value::from(ms)
    } else {
        Value::String(format_ts(ms))
    }
}

/// Reads events or persons from a Parquet file, calling `sink` with batches
/// of at most `batch` good records and `bad` with each rejected row (its
/// 1-based row number in the file is [`LineError::line`]). An error from
/// either callback stops the read and is returned; records still buffered
/// then are not passed to `sink`, as in [`crate::read_records`].
///
/// Returns (rows read, file size in bytes). A file that is not Parquet, or
/// lacks a required column, or has a column of an unsupported type, is an
/// error for the whole file.
pub fn read_parquet(
    path: impl AsRef<Path>,
    batch: usize,
    mut sink: impl FnMut(Vec<Record>) -> Result<(), String>,
    mut bad: impl FnMut(LineError) -> Result<(), String>,
) -> Result<(u64, u64), String> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Types come from the Parquet schema alone (strings as utf8, lists as
    // lists), not from an embedded Arrow schema that may ask for
    // dictionaries or views.
    let opts = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, opts)
        .map_err(|e| format!("{}: not a readable Parquet file: {e}", path.display()))?;
    let schema = builder.schema().clone();
    let columns = if schema.field_with_name("distinct_ids").is_ok() {
        PERSON_COLUMNS
    } else {
        EVENT_COLUMNS
    };
    // (name, kind, index in the projected batch)
    let mut wanted: Vec<(&str, Kind, usize)> = Vec::new();
    let mut roots = Vec::new();
    for &(name, kind, required) in columns {
        match schema.index_of(name) {
            Ok(idx) => {
                let t = schema.field(idx).data_type();
                if !type_ok(kind, t) {
                    return Err(format!(
                        "{}: column `{name}` has type {t}; expected {}",
                        path.display(),
                        expected(kind)
                    ));
                }
                roots.push(idx);
                wanted.push((name, kind, 0));
            }
            Err(_) if required => {
                return Err(format!(
                    "{}: no `{name}` column (an events file needs `event`, `distinct_id` and \
                     `timestamp`; a persons file needs `distinct_ids`)",
                    path.display()
                ))
            }
            Err(_) => {}
        }
    }
    // A projection keeps the file's column order: find each column's place.
    let mut sorted = roots.clone();
    sorted.sort_unstable();
    for (w, root) in wanted.iter_mut().zip(&roots) {
        w.2 = sorted.binary_search(root).unwrap_or(0);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch.clamp(1, WRITE_BATCH_ROWS))
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))?;

    let mut buf = Vec::with_capacity(batch);
    let mut rows = 0u64;
    for rb in reader {
        let rb = rb.map_err(|e| format!("{}: reading row {}: {e}", path.display(), rows + 1))?;
        let cols: Vec<(&str, Kind, Cells)> = wanted
            .iter()
            .map(|&(name, kind, i)| {
                let cells = Cells::new(rb.column(i)).ok_or_else(|| {
                    format!("{}: column `{name}`: unsupported type", path.display())
                })?;
                Ok((name, kind, cells))
            })
            .collect::<Result<_, String>>()?;
        for i in 0..rb.num_rows() {
            rows += 1;
            match row_record(&cols, i, rows) {
                Ok(r) => buf.push(r),
                Err(e) => bad(e)?,
            }
            if buf.len() >= batch {
                sink(std::mem::take(&mut buf))?;
            }
        }
    }
    if !buf.is_empty() {
        sink(buf)?;
    }
    Ok((rows, bytes))
}

fn row_record(cols: &[(&str, Kind, Cells)], i: usize, row: u64) -> Result<Record, LineError> {
    let mut o = Map::with_capacity(cols.len());
    for (name, kind, cells) in cols {
        let mut v = cells.value(i);
        if matches!(kind, Kind::Json | Kind::StrList) {
            if let Value::String(s) = &v {
                if s.trim().is_empty() {
                    continue;
                }
                v = serde_json::from_str(s).map_err(|e| LineError {
                    line: row,
                    reason: format!("`{name}` is not valid JSON: {e}"),
                })?;
            }
        }
        // An absent optional value means the same as a missing key.
        if v.is_null() && matches!(*name, "id" | "properties" | "elements") {
            continue;
        }
        o.insert((*name).to_string(), v);
    }
    parse_json_record(Value::Object(o), row)
}

fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("uuid", DataType::Utf8, true),
        Field::new("event", DataType::Utf8, false),
        Field::new("distinct_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("properties", DataType::Utf8, false),
        Field::new("elements", DataType::Utf8, true),
    ]))
}

/// Writes events to Parquet in record batches (and row groups) of
/// [`WRITE_BATCH_ROWS`] rows. Call [`EventParquetWriter::finish`] at the end.
pub struct EventParquetWriter<W: Write + Send> {
    inner: ArrowWriter<W>,
    schema: SchemaRef,
    uuid: StringBuilder,
    event: StringBuilder,
    distinct_id: StringBuilder,
    timestamp: TimestampMillisecondBuilder,
    properties: StringBuilder,
    elements: StringBuilder,
    pending: usize,
    written: u64,
}

impl<W: Write + Send> EventParquetWriter<W> {
    pub fn new(w: W) -> Result<Self, String> {
        let schema = event_schema();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(WRITE_BATCH_ROWS))
            .build();
        let inner = ArrowWriter::try_new(w, schema.clone(), Some(props))
            .map_err(|e| format!("parquet writer: {e}"))?;
        Ok(EventParquetWriter {
            inner,
            schema,
            uuid: StringBuilder::new(),
            event: StringBuilder::new(),
            distinct_id: StringBuilder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            properties: StringBuilder::new(),
            elements: StringBuilder::new(),
            pending: 0,
            written: 0,
        })
    }

    /// Adds one event; writes a batch every [`WRITE_BATCH_ROWS`] events.
    pub fn push(&mut self, e: &Event) -> Result<(), String> {
        self.uuid.append_value(format_uuid(e.uuid));
        self.event.append_value(&e.event);
        self.distinct_id.append_value(&e.distinct_id);
        self.timestamp.append_value(e.timestamp);
        // Serializing a JSON map cannot fail.
        let text = |m: &Map<String, Value>| serde_json::to_string(m).unwrap_or_default();
        if e.properties.contains_key(ELEMENTS_KEY) {
            let mut props = e.properties.clone();
            let els = props.remove(ELEMENTS_KEY).unwrap_or(Value::Null);
            self.properties.append_value(text(&props));
            self.elements.append_value(els.to_string());
        } else {
            self.properties.append_value(text(&e.properties));
            self.elements.append_null();
        }
        self.pending += 1;
        if self.pending >= WRITE_BATCH_ROWS {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), String> {
        if self.pending == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.uuid.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.distinct_id.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.properties.finish()),
            Arc::new(self.elements.finish()),
        ];
        let rb = RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| format!("parquet batch: {e}"))?;
        self.inner
            .write(&rb)
            .map_err(|e| format!("writing parquet: {e}"))?;
        self.written += self.pending as u64;
        self.pending = 0;
        Ok(())
    }

    /// Writes what is left and the file footer; returns the events written
    /// and the underlying writer.
    pub fn finish(mut self) -> Result<(u64, W), String> {
        self.write_pending()?;
        let w = self
            .inner
            .into_inner()
            .map_err(|e| format!("closing parquet: {e}"))?;
        Ok((self.written, w))
    }
}

/// Writes every stored event of a snapshot to a Parquet file at `path`;
/// returns the number of events written.
pub fn write_events_parquet(
    path: impl AsRef<Path>,
    snap: &dropscope_store::Snapshot,
) -> Result<u64, String> {
    let path = path.as_ref();
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut w = EventParquetWriter::new(std::io::BufWriter::with_capacity(1 << 20, f))?;
    crate::snapshot_events(snap, |e| w.push(&e).map_err(std::io::Error::other))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (n, mut out) = w.finish()?;
    out.flush()
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(n)
}

/// Writes only what a funnel reads, one row per event: `person` (uint32,
/// the canonical person after identity joins, so other engines need no
/// join), `event` (utf8) and `ts` (int64 epoch milliseconds), in person
/// order. `dropscope-bench --compare` feeds this to DuckDB and ClickHouse.
pub fn write_funnel_columns_parquet(
    path: impl AsRef<Path>,
    snap: &dropscope_store::Snapshot,
) -> Result<u64, String> {
    use arrow_array::builder::{ArrayBuilder, Int64Builder, UInt32Builder};
    let path = path.as_ref();
    let err = |e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("person", DataType::UInt32, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(
        std::io::BufWriter::with_capacity(1 << 20, f),
        schema.clone(),
        Some(props),
    )
    .map_err(|e| err(&e))?;
    let names: Vec<String> = {
        let d = snap.dicts();
        d.events.iter().map(|(_, s)| s.to_string()).collect()
    };
    let (mut person, mut event, mut ts) = (
        UInt32Builder::new(),
        StringBuilder::new(),
        Int64Builder::new(),
    );
    let mut rows = 0u64;
    let mut merge = dropscope_store::EventColumns::new();
    let flush = |person: &mut UInt32Builder,
                 event: &mut StringBuilder,
                 ts: &mut Int64Builder,
                 w: &mut ArrowWriter<_>| {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(person.finish()),
            Arc::new(event.finish()),
            Arc::new(ts.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| err(&e))?;
        w.write(&batch).map_err(|e| err(&e))
    };
    for i in 0..snap.actor_count() {
        let p = snap.actor_person(i);
        let v = snap.events_of(i, &mut merge);
        for r in 0..v.len() {
            person.append_value(p);
            event.append_value(&names[v.event[r] as usize]);
            ts.append_value(v.ts[r]);
            rows += 1;
            if person.len() == WRITE_BATCH_ROWS {
                flush(&mut person, &mut event, &mut ts, &mut w)?;
            }
        }
    }
    if !person.is_empty() {
        flush(&mut person, &mut event, &mut ts, &mut w)?;
    }
    let mut out = w.into_inner().map_err(|e| err(&e))?;
    out.flush().map_err(|e| err(&e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dropscope_core::event::PersonRecord;
    use serde_json::json;

    fn read(path: &Path) -> (Vec<Record>, Vec<LineError>, u64) {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        let (rows, _) = read_parquet(
            path,
            3,
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
        (good, bad, rows)
    }

    fn ev(i: u128, props: Value) -> Event {
        let Value::Object(properties) = props else {
            panic!()
        };
        Event {
            uuid: 0x0123_4567_89ab_cdef_0000_0000_0000_0000 + i,
            event: format!("e{}", i % 3),
            distinct_id: format!("u{}", i % 5),
            timestamp: 1_620_000_000_123 + i as i64 * 1000,
            properties,
        }
    }

    /// Writes a batch with an arbitrary schema.
    fn write_batch(path: &Path, cols: Vec<(&str, ArrayRef)>) {
        let rb = RecordBatch::try_from_iter(cols).unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), rb.schema(), None).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let events: Vec<Event> = (0..10)
            .map(|i| match i {
                0 => ev(i, json!({})),
                1 => ev(i, json!({"$browser": "Chrome", "n": 1.5, "list": [1, "a"]})),
                2 => ev(
                    i,
                    json!({"$elements": [{"tag_name": "a", "attr__href": "/x"}], "k": null}),
                ),
                _ => ev(
                    i,
                    json!({"plan": format!("p{i}"), "nested": {"a": {"b": i as u64}}}),
                ),
            })
            .collect();
        let mut w = EventParquetWriter::new(File::create(&path).unwrap()).unwrap();
        for e in &events {
            w.push(e).unwrap();
        }
        assert_eq!(w.finish().unwrap().0, 10);
        let (good, bad, rows) = read(&path);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows, 10);
        let back: Vec<Event> = good
            .into_iter()
            .map(|r| match r {
                Record::Event(e) => e,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, events);
    }

    #[test]
    fn many_rows_span_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let n = WRITE_BATCH_ROWS as u128 + 10;
        let mut w = EventParquetWriter::new(File::create(&path).unwrap()).unwrap();
        for i in 0..n {
            w.push(&ev(i, json!({"i": i as u64}))).unwrap();
        }
        assert_eq!(w.finish().unwrap().0, n as u64);
        let mut count = 0u128;
        read_parquet(
            &path,
            10_000,
            |b| {
                for r in b {
                    let Record::Event(e) = r else { panic!() };
                    assert_eq!(e, ev(count, json!({"i": count as u64})));
                    count += 1;
                }
                Ok(())
            },
            |e| panic!("{e}"),
        )
        .unwrap();
        assert_eq!(count, n);
    }

    #[test]
    fn bad_rows_are_reported_with_row_numbers_and_good_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        let s = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(arrow_array::StringArray::from(v)) };
        write_batch(
            &path,
            vec![
                (
                    "event",
                    s(vec![
                        Some("a"),
                        None,
                        Some("b"),
                        Some("c"),
                        Some("d"),
                        Some(""),
                    ]),
                ),
                (
                    "distinct_id",
                    s(vec![
                        Some("u1"),
                        Some("u2"),
                        Some("u3"),
                        Some("u4"),
                        None,
                        Some("u6"),
                    ]),
                ),
                (
                    "timestamp",
                    s(vec![
                        Some("2021-05-01T00:00:00Z"),
                        Some("2021-05-01T00:00:00Z"),
                        Some("yesterday"),
                        Some("2021-05-01T00:00:01.5Z"),
                        Some("2021-05-01T00:00:00Z"),
                        Some("2021-05-01T00:00:00Z"),
                    ]),
                ),
                (
                    "properties",
                    s(vec![
                        Some(r#"{"x":1}"#),
                        None,
                        None,
                        Some("[1]"),
                        None,
                        None,
                    ]),
                ),
                ("extra", s(vec![None; 6])),
            ],
        );
        let (good, bad, rows) = read(&path);
        assert_eq!(rows, 6);
        assert_eq!(good.len(), 1, "{good:?}");
        let Record::Event(e) = &good[0] else { panic!() };
        assert_eq!((e.event.as_str(), e.timestamp), ("a", 1_619_827_200_000));
        assert_eq!(e.properties["x"], 1);
        let got: Vec<(u64, &str)> = bad.iter().map(|e| (e.line, e.reason.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "`event` must be a string, got null"),
                (3, "`timestamp` is not a timestamp: \"yesterday\""),
                (4, "`properties` must be a JSON object"),
                (5, "`distinct_id` must be a string, got null"),
                (6, "`event` is empty"),
            ]
        );
    }

    #[test]
    fn timestamps_of_every_accepted_type() {
        let dir = tempfile::tempdir().unwrap();
        let ms = 1_620_000_000_123i64;
        let cases: Vec<ArrayRef> = vec![
            Arc::new(arrow_array::TimestampMillisecondArray::from(vec![ms]).with_timezone("UTC")),
            Arc::new(arrow_array::TimestampMicrosecondArray::from(vec![
                ms * 1000 + 999,
            ])),
            Arc::new(arrow_array::TimestampNanosecondArray::from(vec![
                ms * 1_000_000 + 1,
            ])),
            Arc::new(arrow_array::TimestampSecondArray::from(vec![ms / 1000])),
            Arc::new(arrow_array::Int64Array::from(vec![ms])),
            Arc::new(arrow_array::StringArray::from(vec![
                "2021-05-03T00:00:00.123Z",
            ])),
        ];
        let want = [ms, ms, ms, ms - 123, ms, ms];
        // A typed timestamp before 1973 is not mistaken for seconds; an
        // int64 below 1e11 is seconds, as a JSON number.
        let early: Vec<(ArrayRef, i64)> = vec![
            (
                Arc::new(arrow_array::TimestampMillisecondArray::from(vec![5_000])),
                5_000,
            ),
            (
                Arc::new(arrow_array::Int64Array::from(vec![ms / 1000])),
                ms - 123,
            ),
        ];
        let cases = cases.into_iter().zip(want).chain(early);
        for (i, (ts, want)) in cases.enumerate() {
            let path = dir.path().join(format!("t{i}.parquet"));
            write_batch(
                &path,
                vec![
                    (
                        "event",
                        Arc::new(arrow_array::StringArray::from(vec!["a"])) as ArrayRef,
                    ),
                    (
                        "distinct_id",
                        Arc::new(arrow_array::Int64Array::from(vec![42i64])),
                    ),
                    ("timestamp", ts),
                ],
            );
            let (good, bad, _) = read(&path);
            assert!(bad.is_empty(), "case {i}: {bad:?}");
            let Record::Event(e) = &good[0] else { panic!() };
            assert_eq!(e.timestamp, want, "case {i}");
            assert_eq!(e.distinct_id, "42");
        }
    }

    #[test]
    fn persons_from_lists_and_json_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let mut lb = arrow_array::builder::ListBuilder::new(StringBuilder::new());
        lb.append_value([Some("a1"), Some("a2")]);
        lb.append_value([Some("b1")]);
        lb.append_value(Vec::<Option<&str>>::new());
        write_batch(
            &path,
            vec![
                (
                    "id",
                    Arc::new(arrow_array::StringArray::from(vec![
                        Some("A"),
                        None,
                        Some("C"),
                    ])),
                ),
                ("distinct_ids", Arc::new(lb.finish())),
                (
                    "properties",
                    Arc::new(arrow_array::StringArray::from(vec![
                        Some(r#"{"plan":"pro"}"#),
                        None,
                        None,
                    ])),
                ),
            ],
        );
        let (good, bad, _) = read(&path);
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
        assert_eq!(bad[0].reason, "person has no distinct_ids");
        let Record::Person(p) = &good[0] else {
            panic!()
        };
        let want: PersonRecord = serde_json::from_value(
            json!({"id": "A", "distinct_ids": ["a1", "a2"], "properties": {"plan": "pro"}}),
        )
        .unwrap();
        assert_eq!(p, &want);

        // distinct_ids as JSON text; bad JSON is reported.
        let path = dir.path().join("p2.parquet");
        write_batch(
            &path,
            vec![(
                "distinct_ids",
                Arc::new(arrow_array::StringArray::from(vec![
                    r#"["x","y"]"#,
                    "[oops",
                ])) as ArrayRef,
            )],
        );
        let (good, bad, _) = read(&path);
        let Record::Person(p) = &good[0] else {
            panic!()
        };
        assert_eq!(p.distinct_ids, vec!["x", "y"]);
        assert_eq!(bad[0].line, 2);
        assert!(
            bad[0]
                .reason
                .starts_with("`distinct_ids` is not valid JSON"),
            "{}",
            bad[0]
        );
    }

    #[test]
    fn wrong_files_fail_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let e = read_parquet(&path, 10, |_| Ok(()), |_| Ok(())).unwrap_err();
        assert!(e.contains("not a readable Parquet file"), "{e}");

        write_batch(
            &path,
            vec![(
                "event",
                Arc::new(arrow_array::StringArray::from(vec!["a"])) as ArrayRef,
            )],
        );
        let e = read_parquet(&path, 10, |_| Ok(()), |_| Ok(())).unwrap_err();
        assert!(e.contains("no `distinct_id` column"), "{e}");

        write_batch(
            &path,
            vec![
                (
                    "event",
                    Arc::new(arrow_array::StringArray::from(vec!["a"])) as ArrayRef,
                ),
                (
                    "distinct_id",
                    Arc::new(arrow_array::StringArray::from(vec!["u"])),
                ),
                (
                    "timestamp",
                    Arc::new(arrow_array::Float64Array::from(vec![1.0])),
                ),
            ],
        );
        let e = read_parquet(&path, 10, |_| Ok(()), |_| Ok(())).unwrap_err();
        assert!(e.contains("column `timestamp` has type Float64"), "{e}");
    }

    #[test]
    fn strict_style_abort_keeps_only_flushed_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let s = |v: Vec<&str>| -> ArrayRef { Arc::new(arrow_array::StringArray::from(v)) };
        write_batch(
            &path,
            vec![
                ("event", s(vec!["a", "a", "a", "a", "a"])),
                ("distinct_id", s(vec!["u", "u", "u", "u", "u"])),
                (
                    "timestamp",
                    s(vec![
                        "2021-05-01",
                        "2021-05-02",
                        "2021-05-03",
                        "bad",
                        "2021-05-05",
                    ]),
                ),
            ],
        );
        let mut sunk = 0;
        let e = read_parquet(
            &path,
            2,
            |b| {
                sunk += b.len();
                Ok(())
            },
            |e| Err(format!("strict: {e}")),
        )
        .unwrap_err();
        assert_eq!(e, "strict: line 4: `timestamp` is not a timestamp: \"bad\"");
        assert_eq!(sunk, 2);
    }
}
