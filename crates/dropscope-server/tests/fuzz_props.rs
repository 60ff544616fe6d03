//! Property tests of the two parsers that read untrusted bytes (the same
//! functions the cargo-fuzz targets in `fuzz/` drive with libFuzzer):
//!
//! * any bytes, framed as any capture request the SDKs send, give events or
//!   a 4xx error, never a panic;
//! * valid batches survive every framing (plain JSON, gzip by header, gzip
//!   by `?compression=gzip-js`, base64 `data=` forms) unchanged, with
//!   hostile names and values (quotes, backslashes, SQL, control and
//!   non-ASCII characters);
//! * any JSON value shaped like a query body gives a query or a 4xx error,
//!   and a query that parses runs (or is refused) on a small store without
//!   a panic.

use std::io::Write;

use base64::Engine as _;
use dropscope_core::event::Event;
use dropscope_server::capture::{parse_capture, CaptureInput, CaptureParams};
use dropscope_server::{parse_query_body, Limits};
use dropscope_store::{Record, Store};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NOW: i64 = 1_700_000_000_000;

const PLANS: [&str; 2] = ["free", "pro"];

fn params(compression: Option<&str>) -> CaptureParams {
    CaptureParams {
        compression: compression.map(str::to_string),
        token: Some("phc_t".into()),
        api_key: None,
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

/// Strings with the characters that break naive escaping.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        Just("'; DROP TABLE events; --".to_string()),
        Just("\\\\'\"`".to_string()),
        Just("a\u{0}b\u{1f}c".to_string()),
        Just("日本語 🎉 \u{202e}".to_string()),
        "[ -~]{1,20}",
        any::<String>(),
    ]
    // Blank names and ids are refused by design (not a round trip).
    .prop_filter("not blank", |s| !s.trim().is_empty())
}

fn prop_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        hostile().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        Just(Value::Null),
    ]
}

prop_compose! {
    fn wire_event()(
        name in hostile(),
        did in hostile(),
        minutes in 0i64..100_000,
        props in prop::collection::btree_map("[a-z_]{1,10}|'\"\\\\[a-z]{0,3}", prop_value(), 0..5),
    ) -> Value {
        let ts = chrono::DateTime::from_timestamp_millis(1_600_000_000_000 + minutes * 60_000)
            .expect("ts")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        json!({"event": name, "distinct_id": did, "timestamp": ts,
               "properties": props.into_iter().collect::<Map<String, Value>>()})
    }
}

/// How a body is sent: a label, the bytes, `Content-Type`,
/// `Content-Encoding` and `?compression=`.
type Framing = (
    &'static str,
    Vec<u8>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

fn framings(body: &[u8]) -> Vec<Framing> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let form = format!("data={}", urlencode(&b64)).into_bytes();
    vec![
        ("plain", body.to_vec(), Some("application/json"), None, None),
        (
            "gzip header",
            gzip(body),
            Some("application/json"),
            Some("gzip"),
            None,
        ),
        (
            "gzip-js",
            gzip(body),
            Some("text/plain"),
            None,
            Some("gzip-js"),
        ),
        (
            "base64 form",
            form,
            Some("application/x-www-form-urlencoded"),
            None,
            None,
        ),
    ]
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn capture_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
        sel in 0usize..60,
    ) {
        let ct = [None, Some("application/json"), Some("application/x-www-form-urlencoded")][sel % 3];
        let ce = [None, Some("gzip"), Some("deflate")][(sel / 3) % 3];
        let compression = [None, Some("gzip-js"), Some("base64"), Some("lz64")][(sel / 9) % 4];
        let p = params(compression);
        let input = CaptureInput { body: &body, content_type: ct, content_encoding: ce, params: &p };
        if let Err(e) = parse_capture(input, &Limits::default(), NOW) {
            prop_assert!(e.status().is_client_error(), "{} for {e}", e.status());
        }
    }

    #[test]
    fn capture_json_shapes_never_panic(v in json_value(4)) {
        let body = serde_json::to_vec(&v).expect("json");
        let p = params(None);
        let input = CaptureInput { body: &body, content_type: Some("application/json"), content_encoding: None, params: &p };
        if let Err(e) = parse_capture(input, &Limits::default(), NOW) {
            prop_assert!(e.status().is_client_error(), "{} for {e}", e.status());
        }
    }

    #[test]
    fn valid_batches_survive_every_framing(events in prop::collection::vec(wire_event(), 1..6)) {
        let body = serde_json::to_vec(&json!({"api_key": "phc_t", "batch": events})).expect("json");
        for (how, bytes, ct, ce, compression) in framings(&body) {
            let p = params(compression);
            let input = CaptureInput { body: &bytes, content_type: ct, content_encoding: ce, params: &p };
            let c = parse_capture(input, &Limits::default(), NOW)
                .map_err(|e| TestCaseError::fail(format!("{how}: {e}")))?;
            prop_assert_eq!(c.events.len(), events.len(), "{}", how);
            for (got, sent) in c.events.iter().zip(&events) {
                prop_assert_eq!(&got.event, sent["event"].as_str().expect("name"), "{}", how);
                prop_assert_eq!(&got.distinct_id, sent["distinct_id"].as_str().expect("did"), "{}", how);
                let ts = chrono::DateTime::parse_from_rfc3339(sent["timestamp"].as_str().expect("ts"))
                    .expect("ts").timestamp_millis();
                prop_assert_eq!(got.timestamp, ts, "{}", how);
                for (k, v) in sent["properties"].as_object().expect("props") {
                    prop_assert_eq!(got.properties.get(k), Some(v), "{}: property {}", how, k);
                }
            }
        }
    }

    #[test]
    fn query_bodies_never_panic(v in query_like()) {
        let body = serde_json::to_vec(&v).expect("json");
        match parse_query_body(&body) {
            Err(e) => prop_assert!(e.status().is_client_error(), "{} for {e}", e.status()),
            Ok(q) => {
                // Answers or refuses: both fine; a panic fails the test.
                let _ = dropscope_engine::run_query(&small_store().snapshot().expect("snapshot"), &q);
            }
        }
    }

    #[test]
    fn query_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_query_body(&body) {
            prop_assert!(e.status().is_client_error(), "{} for {e}", e.status());
        }
    }
}

/// Arbitrary JSON, `depth` levels deep at most.
fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        hostile().prop_map(Value::from),
        prop_oneof![
            Just("event"),
            Just("distinct_id"),
            Just("properties"),
            Just("timestamp"),
            Just("batch"),
            Just("$set"),
            Just("$identify"),
            Just("2021-05-01T00:00:00Z"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event".to_string()),
                    Just("distinct_id".to_string()),
                    Just("properties".to_string()),
                    Just("timestamp".to_string()),
                    Just("batch".to_string()),
                    Just("sent_at".to_string()),
                    Just("api_key".to_string()),
                    Just("$set".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON shaped like a query body: the real field names and values, mixed
/// with wrong types and unknown fields.
fn query_like() -> impl Strategy<Value = Value> {
    let step = prop_oneof![
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("c"),
            Just("$pageview"),
            Just("zz")
        ]
        .prop_map(|e| json!({"event": e})),
        json_value(2),
    ];
    let field = prop_oneof![
        prop_oneof![
            Just("funnel"),
            Just("funnel_trends"),
            Just("time_to_convert"),
            Just("funnel_persons"),
            Just("correlation"),
            Just("correlation_persons"),
            Just("paths"),
            Just("diagnosis"),
            Just("bogus"),
        ]
        .prop_map(|k| ("kind", json!(k))),
        prop_oneof![
            Just("ordered"),
            Just("strict"),
            Just("unordered"),
            Just("up")
        ]
        .prop_map(|o| ("order", json!(o))),
        (
            -3i64..40,
            prop_oneof![
                Just("second"),
                Just("minute"),
                Just("hour"),
                Just("day"),
                Just("week"),
                Just("month"),
                Just("year")
            ]
        )
            .prop_map(|(v, u)| ("window", json!({"value": v, "unit": u}))),
        prop_oneof![
            Just("all"),
            Just("-7d"),
            Just("2021-05-01"),
            Just("nonsense"),
            Just("-99999999d")
        ]
        .prop_map(|d| ("date_from", json!(d))),
        prop_oneof![Just("2021-06-01"), Just("2020-01-01"), Just("x")]
            .prop_map(|d| ("date_to", json!(d))),
        (0i64..6, -1i64..6, json_value(1)).prop_map(|(f, t, e)| (
            "exclusions",
            json!([{"event": e, "from_step": f, "to_step": t}])
        )),
        prop_oneof![Just("plan"), Just("$browser"), Just("n"), Just("'\"")]
            .prop_map(|p| ("breakdown", json!({"property": p}))),
        prop_oneof![
            Just("minute"),
            Just("hour"),
            Just("day"),
            Just("week"),
            Just("month"),
            Just("decade")
        ]
        .prop_map(|i| ("interval", json!(i))),
        (-6i64..6).prop_map(|s| ("persons_for", json!({"step": s}))),
        (0i64..4).prop_map(|s| ("from_step", json!(s))),
        (0i64..4).prop_map(|s| ("to_step", json!(s))),
        prop_oneof![
            Just("events"),
            Just("properties"),
            Just("event_with_properties")
        ]
        .prop_map(|t| (
            "correlation",
            json!({"type": t, "names": ["$all"], "event_names": ["a"]})
        )),
        json_value(2).prop_map(|v| ("properties", v)),
        json_value(1).prop_map(|v| ("limit", v)),
        json_value(1).prop_map(|v| ("unknown_field", v)),
    ];
    (
        prop::collection::vec(step, 0..5),
        prop::collection::vec(field, 0..6),
    )
        .prop_map(|(steps, fields)| {
            let mut q = Map::new();
            q.insert("steps".into(), Value::Array(steps));
            for (k, v) in fields {
                q.insert(k.into(), v);
            }
            json!({"query": q})
        })
}

fn small_store() -> &'static Store {
    static STORE: std::sync::OnceLock<Store> = std::sync::OnceLock::new();
    STORE.get_or_init(|| {
        let s = Store::in_memory();
        let names = ["a", "b", "c", "$pageview"];
        let recs: Vec<Record> = (0..40u32)
            .map(|i| {
                Record::Event(Event {
                    uuid: i as u128 + 1,
                    event: names[(i * 7 % 4) as usize].into(),
                    distinct_id: format!("u{}", i % 7),
                    timestamp: 1_620_000_000_000 + i as i64 * 3_600_000,
                    properties: json!({"plan": PLANS[i as usize % 2], "n": i % 5})
                        .as_object()
                        .cloned()
                        .expect("object"),
                })
            })
            .collect();
        s.append(&recs).expect("append");
        s
    })
}
