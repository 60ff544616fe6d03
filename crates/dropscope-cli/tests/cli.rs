//! Integration tests of the `dropscope` binary: import (JSONL, CSV, Parquet)
//! with per-line errors, export, duplicates, `--strict`, funnel and query.
//!
//! The large import test uses `DROPSCOPE_IMPORT_TEST_EVENTS` lines
//! (default [`DEFAULT_EVENTS`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dropscope_core::event::{format_uuid, ELEMENTS_KEY};
use dropscope_core::time::format_ts;
use dropscope_store::{Record, Store, StoreOptions};
use serde_json::{json, Map, Value};

const DEFAULT_EVENTS: usize = 200_000;
const BASE_MS: i64 = 1_620_000_000_000; // 2021-05-03T00:00:00Z
const EVENTS: [&str; 3] = ["$pageview", "signup", "purchase"];
const PLANS: [&str; 3] = ["free", "pro", "team"];

fn dropscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dropscope"))
        .args(args)
        .output()
        .expect("running dropscope")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the binary, asserts success, returns (stdout, stderr).
fn ok(args: &[&str]) -> (String, String) {
    let out = dropscope(args);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "dropscope {args:?} failed ({}):\n{so}\n{se}",
        out.status
    );
    (so, se)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An event of the generated file, as it should be stored.
struct Gen {
    uuid: Option<u128>,
    event: &'static str,
    distinct_id: String,
    ts: i64,
    properties: Map<String, Value>,
}

/// The good event for 1-based line `i`. Timestamps, uuids and elements take
/// several forms so that every import path is used.
fn gen(i: usize) -> (Gen, Value) {
    let ts = BASE_MS + i as i64 * 1_007;
    let event = EVENTS[i % 3];
    let distinct_id = format!("u{}", i % 4_999);
    let mut props = json!({
        "i": i,
        "plan": PLANS[i % 3],
        "$browser": if i.is_multiple_of(2) { "Chrome" } else { "Firefox" },
    });
    if i.is_multiple_of(11) {
        props["price"] = json!(i as f64 / 4.0);
        props["tags"] = json!(["a", i % 7]);
        props["nested"] = json!({"k": null, "b": i.is_multiple_of(2)});
    }
    let uuid =
        (i.is_multiple_of(2)).then(|| 0x0190_0000_0000_7000_8000_0000_0000_0000u128 + i as u128);
    let ts_json = match i % 5 {
        // Whole seconds, so the number form loses nothing.
        0 => json!((ts - ts % 1000) / 1000),
        1 => json!(ts),
        _ => json!(format_ts(ts)),
    };
    let ts = if i.is_multiple_of(5) {
        ts - ts % 1000
    } else {
        ts
    };
    let mut line = json!({
        "event": event,
        "distinct_id": distinct_id,
        "timestamp": ts_json,
        "properties": props,
    });
    if let Some(u) = uuid {
        line["uuid"] = json!(format_uuid(u));
    }
    let Value::Object(mut properties) = props else {
        unreachable!()
    };
    if i.is_multiple_of(13) {
        let els =
            json!([{"tag_name": "button", "$el_text": format!("Buy {i}")}, {"tag_name": "div"}]);
        line["elements"] = els.clone();
        properties.insert(ELEMENTS_KEY.into(), els);
    }
    (
        Gen {
            uuid,
            event,
            distinct_id,
            ts,
            properties,
        },
        line,
    )
}

/// Bad lines: (1-based line number, bytes, expected reason text).
fn bad_lines(n: usize) -> Vec<(usize, Vec<u8>, &'static str)> {
    vec![
        (
            7,
            br#"{"event": "x", "distinct_id": "u1", "timestamp": "#.to_vec(),
            "malformed JSON",
        ),
        (
            1_234,
            br#"{"event": 5, "distinct_id": "u1", "timestamp": "2021-05-01T00:00:00Z"}"#.to_vec(),
            "`event` must be a string, got 5",
        ),
        (
            25_000,
            br#"{"event": "x", "distinct_id": "u1", "timestamp": "not-a-date"}"#.to_vec(),
            "`timestamp` is not a timestamp: \"not-a-date\"",
        ),
        (
            77_777,
            br#"{"event": "x", "timestamp": "2021-05-01T00:00:00Z"}"#.to_vec(),
            "missing `distinct_id`",
        ),
        (
            150_001,
            b"{\"event\": \"\xff\xfe\", \"distinct_id\": \"u1\", \"timestamp\": \"2021-05-01T00:00:00Z\"}"
                .to_vec(),
            "invalid UTF-8 at byte 11",
        ),
        (
            n - 2,
            br#"{"event": "x", "distinct_id": "u1", "timestamp": 1620000000, "properties": [1, 2]}"#
                .to_vec(),
            "`properties` must be a JSON object, got [1,2]",
        ),
    ]
}

/// Writes the N-line file; returns the good events (by line).
fn write_jsonl(path: &Path, n: usize) -> Vec<(usize, Gen)> {
    let bad = bad_lines(n);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut good = Vec::with_capacity(n);
    for i in 1..=n {
        if let Some((_, bytes, _)) = bad.iter().find(|b| b.0 == i) {
            w.write_all(bytes).unwrap();
        } else {
            let (g, line) = gen(i);
            serde_json::to_writer(&mut w, &line).unwrap();
            good.push((i, g));
        }
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();
    good
}

/// A JSON value with object keys sorted and integral numbers as integers,
/// as text.
fn canon(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            // The store keeps numbers by value: 11.0 comes back as 11.
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => Value::from(f as i64),
                _ => Value::Number(n.clone()),
            },
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// (uuid, hash of event, distinct_id, timestamp ms and properties).
type Key = (u128, u64);

fn key(uuid: u128, event: &str, did: &str, ts: i64, props: &Map<String, Value>) -> Key {
    let mut h = DefaultHasher::new();
    (event, did, ts, canon(&Value::Object(props.clone()))).hash(&mut h);
    (uuid, h.finish())
}

/// The expected keys of generated events. Lines without a uuid get the one
/// the importer derives from their content.
fn expected_keys(good: &[(usize, Gen)]) -> Vec<Key> {
    let mut keys: Vec<Key> = good
        .iter()
        .map(|(i, g)| {
            let uuid = g.uuid.unwrap_or_else(|| {
                let (_, line) = gen(*i);
                match dropscope_io::parse_json_record(line, *i as u64) {
                    Ok(Record::Event(e)) => e.uuid,
                    other => panic!("line {i}: {other:?}"),
                }
            });
            key(uuid, g.event, &g.distinct_id, g.ts, &g.properties)
        })
        .collect();
    keys.sort_unstable();
    keys
}

/// Keys of an exported JSONL file, parsed independently of the importer.
fn exported_keys(path: &Path) -> Vec<Key> {
    let body = std::fs::read_to_string(path).unwrap();
    let mut keys: Vec<Key> = body
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let uuid =
                u128::from_str_radix(&v["uuid"].as_str().unwrap().replace('-', ""), 16).unwrap();
            let ts = v["timestamp"].as_str().unwrap();
            let ts_ms = parse_rfc3339_ms(ts);
            assert_eq!(format_ts(ts_ms), ts, "exported timestamp form");
            let mut props = v["properties"].as_object().cloned().unwrap_or_default();
            if let Some(els) = v.get("elements") {
                props.insert(ELEMENTS_KEY.into(), els.clone());
            }
            key(
                uuid,
                v["event"].as_str().unwrap(),
                v["distinct_id"].as_str().unwrap(),
                ts_ms,
                &props,
            )
        })
        .collect();
    keys.sort_unstable();
    keys
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` to epoch ms (days from civil, no library).
fn parse_rfc3339_ms(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let (hh, mm, ss, ms) = (n(11, 13), n(14, 16), n(17, 19), n(20, 23));
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms
}

fn export_jsonl(data: &Path, out: &Path) -> u64 {
    let (_, se) = ok(&[
        "export",
        "--data",
        s(data),
        "--format",
        "jsonl",
        "-o",
        s(out),
    ]);
    parse_count(&se, "exported ", " events")
}

fn parse_count(hay: &str, before: &str, after: &str) -> u64 {
    let start = hay
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {hay}"))
        + before.len();
    let end = start + hay[start..].find(after).unwrap();
    hay[start..end].parse().unwrap()
}

fn events_count() -> usize {
    std::env::var("DROPSCOPE_IMPORT_TEST_EVENTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_EVENTS)
        .max(150_004)
}

/// (a) A large JSONL import with bad lines at known places; export; import
/// again; `--strict`.
#[test]
fn jsonl_import_reports_bad_lines_exports_and_dedups() {
    let n = events_count();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let good = write_jsonl(&file, n);
    let bad = bad_lines(n);
    assert_eq!(good.len(), n - bad.len());
    let data = dir.path().join("store");

    let (so, se) = ok(&["import", "--data", s(&data), s(&file)]);
    for (line, _, reason) in &bad {
        let want = format!("{}: rejected line {line}: {reason}", file.display());
        assert!(se.contains(&want), "missing {want:?} in stderr:\n{se}");
    }
    // The invalid UTF-8 line is rejected but not counted among the lines.
    let want = format!(
        "{}: {} lines, {} stored, 0 already stored, {} rejected;",
        file.display(),
        n - 1,
        n - bad.len(),
        bad.len()
    );
    assert!(so.contains(&want), "missing {want:?} in stdout:\n{so}");

    let out = dir.path().join("out.jsonl");
    assert_eq!(export_jsonl(&data, &out), good.len() as u64);
    let exported = exported_keys(&out);
    let expected = expected_keys(&good);
    assert_eq!(exported.len(), expected.len());
    assert!(
        exported == expected,
        "exported events differ from the good lines"
    );

    // The same file again: nothing new.
    let (so, _) = ok(&["import", "--data", s(&data), s(&file)]);
    let want = format!(
        "{}: {} lines, 0 stored, {} already stored, {} rejected;",
        file.display(),
        n - 1,
        n - bad.len(),
        bad.len()
    );
    assert!(so.contains(&want), "missing {want:?} in stdout:\n{so}");

    // --strict into a fresh store: aborts at line 7, the first bad line.
    // Good records reach the store in batches of 10,000, so the 6 good lines
    // before it are never stored.
    let strict_data = dir.path().join("strict");
    let out1 = dropscope(&["import", "--data", s(&strict_data), "--strict", s(&file)]);
    assert_eq!(out1.status.code(), Some(2));
    let se = text(&out1.stderr);
    assert!(
        se.contains(&format!("{}: line 7: malformed JSON", file.display()))
            && se.contains("--strict: aborting"),
        "{se}"
    );
    assert!(!text(&out1.stdout).contains("stored"));
    assert_eq!(
        export_jsonl(&strict_data, &dir.path().join("strict.jsonl")),
        0
    );
}

/// `--strict` stores the good lines before the first bad one, rounded down to
/// whole batches of 10,000 records, and nothing after it.
#[test]
fn strict_import_stores_whole_batches_before_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strict.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for i in 1..=30_000 {
        if i == 25_000 {
            writeln!(w, r#"{{"event": "x", "distinct_id": "u1"}}"#).unwrap();
        } else {
            serde_json::to_writer(&mut w, &gen(i).1).unwrap();
            writeln!(w).unwrap();
        }
    }
    drop(w);
    let data = dir.path().join("store");
    let out = dropscope(&["import", "--data", s(&data), "--strict", s(&file)]);
    assert_eq!(out.status.code(), Some(2));
    let se = text(&out.stderr);
    assert!(
        se.contains(&format!(
            "{}: line 25000: missing `timestamp` (--strict: aborting)",
            file.display()
        )),
        "{se}"
    );
    let exported = dir.path().join("out.jsonl");
    assert_eq!(export_jsonl(&data, &exported), 20_000);
    let is: Vec<u64> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["properties"]["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(is.iter().all(|&i| (1..=20_000).contains(&i)));
}

/// (b) CSV with a bad row.
#[test]
fn csv_import_with_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.csv");
    std::fs::write(
        &file,
        concat!(
            "uuid,event,distinct_id,timestamp,properties\n",
            "01900000-0000-7000-8000-000000000001,$pageview,u1,2021-05-01T10:00:00Z,\"{\"\"$browser\"\":\"\"Chrome\"\"}\"\n",
            ",signup,,2021-05-01T10:01:00Z,\n",
            ",signup,u1,2021-05-01T10:02:00.250Z,\n",
            ",purchase,u2,yesterday,\n",
        ),
    )
    .unwrap();
    let data = dir.path().join("store");
    let (so, se) = ok(&["import", "--data", s(&data), s(&file)]);
    let f = file.display();
    assert!(
        se.contains(&format!("{f}: rejected line 3: `distinct_id` is empty")),
        "{se}"
    );
    assert!(
        se.contains(&format!(
            "{f}: rejected line 5: `timestamp` is not a timestamp"
        )),
        "{se}"
    );
    assert!(
        so.contains(&format!(
            "{f}: 4 lines, 2 stored, 0 already stored, 2 rejected;"
        )),
        "{so}"
    );
    let out = dir.path().join("out.jsonl");
    assert_eq!(export_jsonl(&data, &out), 2);
    let mut got: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    got.sort_by_key(|v| v["timestamp"].as_str().unwrap().to_string());
    assert_eq!(got[0]["uuid"], "01900000-0000-7000-8000-000000000001");
    assert_eq!(got[0]["properties"], json!({"$browser": "Chrome"}));
    assert_eq!(got[1]["event"], "signup");
    assert_eq!(got[1]["timestamp"], "2021-05-01T10:02:00.250Z");
}

/// A small JSONL file of `n` generated events (no bad lines) imported into
/// a store; returns (store dir, the file's expected keys).
fn small_store(dir: &Path, n: usize) -> (PathBuf, Vec<Key>) {
    let file = dir.join("small.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let mut good = Vec::new();
    for i in 1..=n {
        let (g, line) = gen(i);
        serde_json::to_writer(&mut w, &line).unwrap();
        writeln!(w).unwrap();
        good.push((i, g));
    }
    drop(w);
    let data = dir.join("store");
    ok(&["import", "--data", s(&data), s(&file)]);
    (data, expected_keys(&good))
}

/// (c) Parquet through the library: export a store to Parquet, import the
/// file into a fresh store, and both stores export the same events.
#[test]
fn parquet_round_trip_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (data, expected) = small_store(dir.path(), 20_000);
    let pq = dir.path().join("events.parquet");
    {
        let store = Store::open(&data, StoreOptions::default()).unwrap();
        let n =
            dropscope_io::parquet::write_events_parquet(&pq, &store.snapshot().unwrap()).unwrap();
        assert_eq!(n, 20_000);
    }
    let fresh = dir.path().join("fresh");
    {
        let store = Store::open(&fresh, StoreOptions::default()).unwrap();
        let mut stored = 0;
        let (rows, _) = dropscope_io::parquet::read_parquet(
            &pq,
            10_000,
            |b| {
                stored += store.append(&b).map_err(|e| e.to_string())?.stored;
                Ok(())
            },
            |e| Err(e.to_string()),
        )
        .unwrap();
        assert_eq!((rows, stored), (20_000, 20_000));
        store.flush().unwrap();
    }
    let out = dir.path().join("fresh.jsonl");
    assert_eq!(export_jsonl(&fresh, &out), 20_000);
    assert!(exported_keys(&out) == expected);
}

/// (c) The same through the binary: `export --format parquet` and
/// `.parquet` import.
#[test]
fn parquet_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (data, expected) = small_store(dir.path(), 20_000);
    let pq = dir.path().join("events.parquet");
    let (_, se) = ok(&[
        "export",
        "--data",
        s(&data),
        "--format",
        "parquet",
        "-o",
        s(&pq),
    ]);
    assert!(se.contains("exported 20000 events"), "{se}");
    let fresh = dir.path().join("fresh");
    let (so, _) = ok(&["import", "--data", s(&fresh), s(&pq)]);
    assert!(
        so.contains("20000 stored, 0 already stored, 0 rejected"),
        "{so}"
    );
    let out = dir.path().join("fresh.jsonl");
    assert_eq!(export_jsonl(&fresh, &out), 20_000);
    assert!(exported_keys(&out) == expected);
    // Importing the Parquet file again stores nothing new.
    let (so, _) = ok(&["import", "--data", s(&fresh), s(&pq)]);
    assert!(so.contains("0 stored, 20000 already stored"), "{so}");
}

/// (d) `funnel` on a tiny file prints the expected counts.
#[test]
fn funnel_on_a_tiny_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.jsonl");
    let mut lines = String::new();
    let mut ev = |e: &str, u: &str, min: i64| {
        lines.push_str(
            &json!({"event": e, "distinct_id": u, "timestamp": format_ts(BASE_MS + min * 60_000)})
                .to_string(),
        );
        lines.push('\n');
    };
    for u in ["a", "b", "c", "d"] {
        ev("$pageview", u, 0);
    }
    for u in ["a", "b", "c"] {
        ev("signup", u, 5);
    }
    ev("purchase", "a", 10);
    // Out of order for d: purchase before signup does not count.
    ev("purchase", "d", 1);
    ev("signup", "d", 2);
    // Out of the 14-day window for b.
    ev("purchase", "b", 15 * 24 * 60);
    std::fs::write(&file, lines).unwrap();
    let data = dir.path().join("store");
    ok(&["import", "--data", s(&data), s(&file)]);

    let steps = "$pageview,signup,purchase";
    let (so, _) = ok(&["funnel", "--data", s(&data), "--steps", steps, "--json"]);
    let v: Value = serde_json::from_str(&so).unwrap();
    let steps_v = v
        .get("steps")
        .or_else(|| v.get("funnel").and_then(|f| f.get("steps")))
        .unwrap_or_else(|| panic!("no steps in {so}"));
    let counts: Vec<u64> = steps_v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![4, 4, 1]);

    let (table, _) = ok(&["funnel", "--data", s(&data), "--steps", steps]);
    let rows: Vec<(String, u64)> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, name, count) = (w.next()?, w.next()?, w.next()?);
            Some((name.to_string(), count.parse().ok()?))
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("$pageview".to_string(), 4),
            ("signup".to_string(), 4),
            ("purchase".to_string(), 1)
        ],
        "{table}"
    );
}

/// (d) `query` with an invalid query file exits 2 naming the field.
#[test]
fn invalid_query_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let q = dir.path().join("q.json");
    std::fs::write(
        &q,
        r#"{"query": {"steps": [{"event": "a"}], "windoww": {"value": 3}}}"#,
    )
    .unwrap();
    let out = dropscope(&["query", "--data", s(&data), s(&q)]);
    assert_eq!(out.status.code(), Some(2));
    let se = text(&out.stderr);
    assert!(se.contains("unknown field `windoww`"), "{se}");

    std::fs::write(&q, r#"{"steps": [{"event": "a"}], "order": "sideways"}"#).unwrap();
    let out = dropscope(&["query", "--data", s(&data), s(&q)]);
    assert_eq!(out.status.code(), Some(2));
    let se = text(&out.stderr);
    assert!(se.contains("sideways"), "{se}");
}

/// `import`, `funnel`, `query` and `diagnose` with `--backend clickhouse`
/// against a real ClickHouse server: the same numbers as the embedded
/// store from the same file.
#[test]
fn clickhouse_backend_import_and_queries_match_embedded() {
    let url = dropscope_testkit::clickhouse_server::url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut lines = String::new();
    for i in 0..60i64 {
        let u = format!("user-{}", i % 20);
        let name = EVENTS[(i % 7 % 3) as usize];
        let plan = PLANS[(i % 3) as usize];
        lines.push_str(
            &json!({"event": name, "distinct_id": u, "timestamp": format_ts(BASE_MS + i * 3_600_000),
                    "properties": {"plan": plan}})
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&file, lines).unwrap();
    let data = dir.path().join("store");
    let db = format!("ds_cli_{}", std::process::id());
    let ch = [
        "--backend",
        "clickhouse",
        "--clickhouse-url",
        url,
        "--clickhouse-database",
        db.as_str(),
    ];
    let with_ch = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(ch.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).0;
    ok(&["import", "--data", s(&data), s(&file)]);
    let (imported, _) = ok(&with_ch(&["import", s(&file)])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(imported.contains("60 stored"), "{imported}");

    let steps = "$pageview,signup,purchase";
    let strip = |so: &str| {
        let mut v: Value = serde_json::from_str(so).unwrap();
        v.as_object_mut().unwrap().remove("conversion_curve");
        v
    };
    for extra in [&[][..], &["--breakdown", "plan"][..]] {
        let mut args = vec!["funnel", "--steps", steps, "--json"];
        args.extend_from_slice(extra);
        let mut emb = args.clone();
        emb.extend_from_slice(&["--data", s(&data)]);
        let a = strip(&ok(&emb).0);
        let b = strip(&run(with_ch(&args)));
        assert_eq!(a, b, "funnel {extra:?}");
        assert!(a["steps"][0]["count"].as_u64().unwrap() > 0);
    }
    let q = dir.path().join("q.json");
    std::fs::write(
        &q,
        json!({"query": {"kind": "funnel", "date_from": "all",
            "steps": [{"event": "$pageview"}, {"event": "purchase", "properties": [{"key": "plan", "value": "pro"}]}]}})
        .to_string(),
    )
    .unwrap();
    let a = strip(&ok(&["query", "--data", s(&data), s(&q)]).0);
    let b = strip(&run(with_ch(&["query", s(&q)])));
    assert_eq!(a, b);
    // Without --data the embedded backend says what it needs.
    let out = dropscope(&["funnel", "--steps", steps]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--data"),
        "{}",
        text(&out.stderr)
    );
    let out = dropscope(&["funnel", "--steps", steps, "--backend", "oracle"]);
    assert!(text(&out.stderr).contains("embedded or clickhouse"));
    dropscope_clickhouse::ClickHouse::open(url, &db)
        .unwrap()
        .drop_database()
        .unwrap();
}
