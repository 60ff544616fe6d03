//! The server over real HTTP: capture shapes, the query API, pickers,
//! OpenAPI, metrics, durability across a graceful shutdown, and a bad-input
//! test per endpoint (each refused with the right 4xx and a clear message,
//! the store unchanged).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use dropscope_server::http1::{request, Conn, Response};
use dropscope_server::{spawn, Limits, Running, Settings};
use dropscope_store::{Store, StoreOptions};
use serde_json::{json, Value};

const PT: &str = "phc_test_token";
const SK: &str = "dss_test_secret";
const CAPTURE_PATHS: [&str; 5] = ["/capture/", "/batch/", "/e/", "/i/v0/e/", "/track/"];

fn small_limits() -> Limits {
    Limits {
        max_body_bytes: 64 * 1024,
        max_events_per_batch: 50,
        max_event_bytes: 2048,
        max_property_depth: 5,
    }
}

async fn start(limits: Limits) -> (Running, Arc<Store>) {
    let store = Arc::new(Store::in_memory());
    let mut s = Settings::for_tests(PT, SK);
    s.limits = limits;
    (spawn(s, store.clone()).await.unwrap(), store)
}

async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(addr, "POST", path, headers, body).await.unwrap()
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Response {
    post(
        addr,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

async fn query(addr: SocketAddr, q: Value) -> Response {
    let auth = format!("Bearer {SK}");
    post(
        addr,
        "/api/query",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        json!({ "query": q }).to_string().as_bytes(),
    )
    .await
}

async fn get_auth(addr: SocketAddr, path: &str) -> Response {
    let auth = format!("Bearer {SK}");
    request(addr, "GET", path, &[("Authorization", &auth)], b"")
        .await
        .unwrap()
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn ev(name: &str, did: &str, ts: &str) -> Value {
    json!({"event": name, "distinct_id": did, "timestamp": ts, "properties": {"plan": "pro"}})
}

fn steps(r: &Response) -> Vec<u64> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect()
}

fn funnel(names: &[&str]) -> Value {
    json!({
        "kind": "funnel",
        "steps": names.iter().map(|n| json!({"event": n})).collect::<Vec<_>>(),
        "date_from": "2024-01-01", "date_to": "2024-01-31"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capture_shape_lands_in_the_funnel() {
    let (srv, _store) = start(Limits::default()).await;
    let a = srv.addr;
    // 1. single event object with api_key, on /capture/
    let mut e = ev("a", "u1", "2024-01-10T10:00:00Z");
    e["api_key"] = json!(PT);
    let r = post_json(a, "/capture/", &e).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": 1})));
    // 2. {batch, api_key, sent_at} on /batch/ — sent_at equal to the
    //    timestamps would move events to now; omit it here.
    let b = json!({"api_key": PT, "batch": [ev("b", "u1", "2024-01-10T10:01:00Z"), ev("a", "u2", "2024-01-10T10:00:00Z")]});
    assert_eq!(post_json(a, "/batch/", &b).await.status, 200);
    // 3. bare array with the token in properties, gzip by header, on /e/
    let mut e3 = ev("c", "u1", "2024-01-10T10:02:00Z");
    e3["properties"]["token"] = json!(PT);
    let body = gz(json!([e3]).to_string().as_bytes());
    let r = post(a, "/e/", &[("Content-Encoding", "gzip")], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 4. gzip-js by query parameter on /i/v0/e/
    let body = gz(
        json!({"token": PT, "batch": [ev("b", "u2", "2024-01-10T10:03:00Z")]})
            .to_string()
            .as_bytes(),
    );
    let r = post(
        a,
        "/i/v0/e/?compression=gzip-js&ver=1.2",
        &[("Content-Type", "text/plain")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 5. data=<base64> form on /track/, token in the query string
    use base64::Engine;
    let json_body = json!([ev("a", "u3", "2024-01-10T10:00:00Z")]).to_string();
    let data = base64::engine::general_purpose::STANDARD.encode(json_body);
    let form = format!("data={}", data.replace('+', "%2B").replace('=', "%3D"));
    let r = post(
        a,
        &format!("/track/?token={PT}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Shown in queries at once.
    assert_eq!(
        steps(&query(a, funnel(&["a", "b", "c"])).await),
        vec![3, 2, 1]
    );
    // Same uuid twice: stored once.
    let mut d = ev("dup", "u9", "2024-01-10T10:00:00Z");
    d["uuid"] = json!("0190a0b0-0000-7000-8000-000000000001");
    d["api_key"] = json!(PT);
    post_json(a, "/capture", &d).await;
    post_json(a, "/capture", &d).await;
    assert_eq!(steps(&query(a, funnel(&["dup"])).await), vec![1]);
    let m = request(a, "GET", "/metrics", &[], b"")
        .await
        .unwrap()
        .text();
    assert!(m.contains("dropscope_events_accepted_total 7"), "{m}");
    assert!(m.contains("dropscope_events_duplicate_total 1"), "{m}");
    assert!(
        m.contains("dropscope_query_seconds_count{kind=\"funnel\"} 2"),
        "{m}"
    );
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_alias_set_and_groups_apply() {
    let (srv, _store) = start(Limits::default()).await;
    let a = srv.addr;
    let batch = json!({"api_key": PT, "batch": [
        {"event": "$pageview", "distinct_id": "anon-1", "timestamp": "2024-01-05T10:00:00Z",
         "properties": {"$groups": {"company": "acme"}}},
        {"event": "$identify", "distinct_id": "user-1", "timestamp": "2024-01-05T10:00:01Z",
         "properties": {"$anon_distinct_id": "anon-1"}, "$set": {"email": "a@example.com"}},
        {"event": "signup", "distinct_id": "user-1", "timestamp": "2024-01-05T10:01:00Z",
         "properties": {"$groups": {"company": "acme"}}},
        {"event": "$create_alias", "distinct_id": "user-1", "timestamp": "2024-01-05T10:01:30Z",
         "properties": {"alias": "alias-1"}},
        {"event": "purchase", "distinct_id": "alias-1", "timestamp": "2024-01-05T10:02:00Z",
         "properties": {"$groups": {"company": "acme"}}},
        {"event": "$pageview", "distinct_id": "anon-2", "timestamp": "2024-01-05T11:00:00Z"},
        {"event": "$groupidentify", "distinct_id": "user-1", "timestamp": "2024-01-05T10:00:00Z",
         "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}}
    ]});
    assert_eq!(post_json(a, "/batch/", &batch).await.status, 200);
    assert_eq!(
        steps(&query(a, funnel(&["$pageview", "signup", "purchase"])).await),
        vec![2, 1, 1]
    );
    let mut q = funnel(&["$pageview", "signup"]);
    q["properties"] = json!([{"key": "email", "value": "a@example.com", "type": "person"}]);
    assert_eq!(steps(&query(a, q).await), vec![1, 1]);
    let mut q = funnel(&["$pageview", "signup", "purchase"]);
    q["aggregation"] = json!("group:0");
    assert_eq!(steps(&query(a, q).await), vec![1, 1, 1]);
    // Persons of the last step.
    let mut q = funnel(&["$pageview", "signup", "purchase"]);
    q["kind"] = json!("funnel_persons");
    q["persons_for"] = json!({"step": 3});
    let r = query(a, q).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert_eq!(p["kind"], "funnel_persons");
    assert_eq!(p["persons"].as_array().unwrap().len(), 1);
    let mut dids: Vec<String> = p["persons"][0]["distinct_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    dids.sort();
    assert_eq!(dids, vec!["alias-1", "anon-1", "user-1"]);
    // Pickers.
    let r = get_auth(a, "/api/events").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["results"][0],
        json!({"name": "$pageview", "count": 2})
    );
    let r = get_auth(a, "/api/properties?event=signup").await;
    assert!(r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "$groups"));
    let r = get_auth(a, "/api/properties?type=person").await;
    assert_eq!(r.json()["results"], json!([{"name": "email", "count": 1}]));
    let r = get_auth(a, "/api/property_values?type=person&key=email").await;
    assert_eq!(
        r.json()["results"],
        json!([{"value": "a@example.com", "count": 1}])
    );
    let r = get_auth(a, "/api/property_values?key=%24group_0&search=AC").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"], json!([{"value": "acme", "count": 3}]));
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_kind_is_answered() {
    let (srv, _store) = start(Limits::default()).await;
    let a = srv.addr;
    let mut batch = vec![];
    for i in 0..40u32 {
        let d = format!("p{i}");
        batch.push(json!({"event": "a", "distinct_id": d, "timestamp": format!("2024-01-0{}T10:00:00Z", 1 + i % 7), "properties": {"browser": if i.is_multiple_of(2) {"x"} else {"y"}}}));
        if !i.is_multiple_of(3) {
            batch.push(json!({"event": "b", "distinct_id": d, "timestamp": format!("2024-01-0{}T10:05:00Z", 1 + i % 7)}));
        }
        batch.push(json!({"event": "other", "distinct_id": d, "timestamp": format!("2024-01-0{}T10:06:00Z", 1 + i % 7)}));
    }
    let r = post_json(a, "/batch/", &json!({"api_key": PT, "batch": batch})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for kind in [
        "funnel",
        "funnel_trends",
        "time_to_convert",
        "funnel_persons",
        "correlation",
        "paths",
        "diagnosis",
    ] {
        let mut q = funnel(&["a", "b"]);
        q["kind"] = json!(kind);
        let r = query(a, q).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(r.json()["kind"], kind, "{}", r.text());
    }
    let mut q = funnel(&["a", "b"]);
    q["kind"] = json!("correlation_persons");
    q["persons_for"] = json!({"event": "other", "converted": true});
    let r = query(a, q).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(steps(&query(a, funnel(&["a", "b"])).await), vec![40, 26]);
    // OpenAPI document.
    let r = request(a, "GET", "/api/openapi.json", &[], b"")
        .await
        .unwrap();
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["schemas"]["FunnelQuery"].is_object());
    assert!(doc["paths"]["/api/query"]["post"].is_object());
    // Health and flags stubs.
    let r = request(a, "GET", "/healthz", &[], b"").await.unwrap();
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    let r = post(a, "/decide/?v=3", &[], b"{}").await;
    assert_eq!(r.json()["featureFlags"], json!({}));
    let r = post(a, "/flags/?v=2", &[], b"{}").await;
    assert_eq!(r.json()["flags"], json!({}));
    srv.stop().await.unwrap();
}

/// Asserts a refusal: status, code, a message containing `want`.
fn refused(r: &Response, status: u16, code: &str, want: &str) {
    let b = r.json();
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(b["code"], code, "{}", r.text());
    let detail = b["detail"].as_str().unwrap_or("");
    assert!(detail.contains(want), "{detail:?} should contain {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_capture_input_is_refused_and_stores_nothing() {
    let (srv, store) = start(small_limits()).await;
    let a = srv.addr;
    let big_prop = "x".repeat(3000);
    let deep = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
    let mut bomb_src = Vec::new();
    {
        let mut e = flate2::write::GzEncoder::new(&mut bomb_src, flate2::Compression::best());
        e.write_all(&vec![b' '; 20 * 1024 * 1024]).unwrap();
        e.finish().unwrap();
    }
    assert!(bomb_src.len() < 64 * 1024);
    let many: Vec<Value> = (0..51)
        .map(|i| ev("a", &format!("u{i}"), "2024-01-01T00:00:00Z"))
        .collect();
    type Case = (
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
        u16,
        &'static str,
        &'static str,
    );
    let t = |v: Value| v.to_string().into_bytes();
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            vec![],
            b"{\"api_key\": \"phc\", \"batch\": [".to_vec(),
            400,
            "invalid_payload",
            "malformed JSON",
        ),
        (
            "not an object",
            vec![],
            b"\"hello\"".to_vec(),
            400,
            "invalid_payload",
            "malformed JSON",
        ),
        (
            "invalid UTF-8",
            vec![],
            b"{\"event\": \"a\xff\", \"distinct_id\": \"u\", \"api_key\": \"phc_test_token\"}"
                .to_vec(),
            400,
            "invalid_payload",
            "UTF-8",
        ),
        (
            "missing event",
            vec![],
            t(json!({"api_key": PT, "batch": [{"distinct_id": "u"}]})),
            400,
            "invalid_event",
            "batch[0].event: missing event name",
        ),
        (
            "event wrong type",
            vec![],
            t(json!({"api_key": PT, "batch": [{"event": 1, "distinct_id": "u"}]})),
            400,
            "invalid_event",
            "batch[0].event: must be a string",
        ),
        (
            "missing distinct_id",
            vec![],
            t(json!({"api_key": PT, "batch": [{"event": "a"}]})),
            400,
            "invalid_event",
            "distinct_id: missing",
        ),
        (
            "properties wrong type",
            vec![],
            t(
                json!({"api_key": PT, "batch": [{"event": "a", "distinct_id": "u", "properties": "x"}]}),
            ),
            400,
            "invalid_event",
            "properties: must be an object",
        ),
        (
            "bad timestamp",
            vec![],
            t(
                json!({"api_key": PT, "batch": [{"event": "a", "distinct_id": "u", "timestamp": "31/12/2024"}]}),
            ),
            400,
            "invalid_event",
            "batch[0].timestamp: cannot parse",
        ),
        (
            "bad sent_at",
            vec![],
            t(
                json!({"api_key": PT, "sent_at": "later", "batch": [{"event": "a", "distinct_id": "u"}]}),
            ),
            400,
            "invalid_event",
            "sent_at",
        ),
        (
            "bad uuid",
            vec![],
            t(json!({"api_key": PT, "batch": [{"event": "a", "distinct_id": "u", "uuid": "123"}]})),
            400,
            "invalid_event",
            "uuid",
        ),
        (
            "empty batch",
            vec![],
            t(json!({"api_key": PT, "batch": []})),
            400,
            "empty_batch",
            "no events",
        ),
        (
            "second event bad",
            vec![],
            t(
                json!({"api_key": PT, "batch": [ev("a", "u", "2024-01-01T00:00:00Z"), {"event": "a"}]}),
            ),
            400,
            "invalid_event",
            "batch[1]",
        ),
        (
            "no token",
            vec![],
            t(json!({"batch": [ev("a", "u", "2024-01-01T00:00:00Z")]})),
            401,
            "missing_token",
            "api_key",
        ),
        (
            "wrong token",
            vec![],
            t(json!({"api_key": "phc_wrong", "batch": [ev("a", "u", "2024-01-01T00:00:00Z")]})),
            401,
            "invalid_token",
            "invalid project token",
        ),
        (
            "secret key as token",
            vec![],
            t(json!({"api_key": SK, "batch": [ev("a", "u", "2024-01-01T00:00:00Z")]})),
            401,
            "invalid_token",
            "invalid project token",
        ),
        (
            "mixed tokens",
            vec![],
            t(
                json!({"api_key": PT, "batch": [{"event": "a", "distinct_id": "u", "api_key": "phc_other"}]}),
            ),
            401,
            "invalid_token",
            "invalid project token",
        ),
        (
            "oversize body",
            vec![],
            vec![b' '; 70 * 1024],
            413,
            "max_body_bytes",
            "request body",
        ),
        (
            "gzip bomb",
            vec![("Content-Encoding", "gzip".into())],
            bomb_src.clone(),
            413,
            "max_body_bytes",
            "decompressed body",
        ),
        (
            "bad gzip",
            vec![("Content-Encoding", "gzip".into())],
            b"\x1f\x8b\x08\x00garbage".to_vec(),
            400,
            "invalid_payload",
            "gzip",
        ),
        (
            "unknown encoding",
            vec![("Content-Encoding", "br".into())],
            b"{}".to_vec(),
            400,
            "invalid_payload",
            "Content-Encoding",
        ),
        (
            "too many events",
            vec![],
            t(json!({"api_key": PT, "batch": many})),
            413,
            "max_events_per_batch",
            "max_events_per_batch (50)",
        ),
        (
            "event too big",
            vec![],
            t(
                json!({"api_key": PT, "batch": [{"event": "a", "distinct_id": "u", "properties": {"x": big_prop}}]}),
            ),
            413,
            "max_event_bytes",
            "batch[0]",
        ),
        (
            "too deep",
            vec![],
            t(
                json!({"api_key": PT, "batch": [{"event": "a", "distinct_id": "u", "properties": {"x": deep}}]}),
            ),
            400,
            "max_property_depth",
            "depth 6",
        ),
        (
            "bad base64 form",
            vec![("Content-Type", "application/x-www-form-urlencoded".into())],
            b"data=!!!!".to_vec(),
            400,
            "invalid_payload",
            "base64",
        ),
        (
            "lz64",
            vec![("Content-Type", "application/x-www-form-urlencoded".into())],
            b"data=abc&compression=lz64".to_vec(),
            400,
            "invalid_payload",
            "lz64",
        ),
    ];
    for path in CAPTURE_PATHS {
        for (name, headers, body, status, code, want) in &cases {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = post(a, path, &h, body).await;
            eprintln!("{path} {name}: {} {}", r.status, r.text());
            refused(&r, *status, code, want);
        }
    }
    // Oversize without Content-Length (chunked): refused while reading.
    let mut c = Conn::connect(a).await.unwrap();
    let mut req =
        b"POST /batch/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend_from_slice(&[b' '; 8192]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = c.raw(&req).await.unwrap();
    refused(&r, 413, "max_body_bytes", "request body");
    assert_eq!(store.stats().unwrap().events, 0);
    assert_eq!(store.snapshot().unwrap().event_count(), 0);
    assert_eq!(store.snapshot().unwrap().dicts().distinct_ids.len(), 0);
    let m = request(a, "GET", "/metrics", &[], b"")
        .await
        .unwrap()
        .text();
    assert!(
        m.contains("dropscope_capture_rejected_requests_total{reason=\"invalid_token\"} 15"),
        "{m}"
    );
    assert!(m.contains("dropscope_events_accepted_total 0"), "{m}");
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_api_input_is_refused() {
    let (srv, store) = start(small_limits()).await;
    let a = srv.addr;
    let r = post_json(
        a,
        "/batch/",
        &json!({"api_key": PT, "batch": [ev("a", "u", "2024-01-02T00:00:00Z")]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let before = store.stats().unwrap().events;
    let auth = format!("Bearer {SK}");
    let project = format!("Bearer {PT}");
    let q = json!({"query": funnel(&["a"])}).to_string();
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no key",
            vec![],
            q.clone().into_bytes(),
            401,
            "not_authenticated",
            "Authorization",
        ),
        (
            "not bearer",
            vec![("Authorization", "Basic abc")],
            q.clone().into_bytes(),
            401,
            "not_authenticated",
            "Bearer",
        ),
        (
            "wrong key",
            vec![("Authorization", "Bearer nope")],
            q.clone().into_bytes(),
            401,
            "not_authenticated",
            "invalid secret key",
        ),
        (
            "project token",
            vec![("Authorization", &project)],
            q.clone().into_bytes(),
            403,
            "permission_denied",
            "write-only",
        ),
        (
            "malformed",
            vec![("Authorization", &auth)],
            b"{\"query\": ".to_vec(),
            400,
            "invalid_payload",
            "malformed JSON",
        ),
        (
            "invalid utf-8",
            vec![("Authorization", &auth)],
            b"{\"query\": \"\xff\"}".to_vec(),
            400,
            "invalid_payload",
            "UTF-8",
        ),
        (
            "missing query",
            vec![("Authorization", &auth)],
            b"{}".to_vec(),
            400,
            "invalid_event",
            "missing field `query`",
        ),
        (
            "extra field",
            vec![("Authorization", &auth)],
            b"{\"query\": {}, \"x\": 1}".to_vec(),
            400,
            "invalid_event",
            "unknown field `x`",
        ),
        (
            "wrong type",
            vec![("Authorization", &auth)],
            br#"{"query": {"steps": 5}}"#.to_vec(),
            400,
            "invalid_query",
            "invalid query",
        ),
        (
            "unknown kind",
            vec![("Authorization", &auth)],
            br#"{"query": {"kind": "nope", "steps": [{"event": "a"}]}}"#.to_vec(),
            400,
            "invalid_query",
            "nope",
        ),
        (
            "unknown query field",
            vec![("Authorization", &auth)],
            br#"{"query": {"stepz": []}}"#.to_vec(),
            400,
            "invalid_query",
            "stepz",
        ),
        (
            "no steps",
            vec![("Authorization", &auth)],
            br#"{"query": {"steps": []}}"#.to_vec(),
            400,
            "invalid_query",
            "steps",
        ),
        (
            "bad date",
            vec![("Authorization", &auth)],
            br#"{"query": {"steps": [{"event": "a"}], "date_from": "someday"}}"#.to_vec(),
            400,
            "invalid_query",
            "date_from",
        ),
        (
            "oversize",
            vec![("Authorization", &auth)],
            vec![b' '; 70 * 1024],
            413,
            "max_body_bytes",
            "request body",
        ),
    ];
    for (name, h, body, status, code, want) in &cases {
        let r = post(a, "/api/query", h, body).await;
        eprintln!("query {name}: {} {}", r.status, r.text());
        refused(&r, *status, code, want);
    }
    for path in [
        "/api/events",
        "/api/properties",
        "/api/property_values?key=plan",
    ] {
        let r = request(a, "GET", path, &[], b"").await.unwrap();
        refused(&r, 401, "not_authenticated", "Authorization");
        let r = request(a, "GET", path, &[("Authorization", &project)], b"")
            .await
            .unwrap();
        refused(&r, 403, "permission_denied", "write-only");
    }
    refused(
        &get_auth(a, "/api/property_values").await,
        400,
        "invalid_event",
        "`key`",
    );
    refused(
        &get_auth(a, "/api/properties?type=group").await,
        400,
        "invalid_event",
        "`type`",
    );
    refused(
        &get_auth(a, "/api/events?limit=abc").await,
        400,
        "invalid_event",
        "limit",
    );
    refused(
        &get_auth(a, "/api/events?colour=red").await,
        400,
        "invalid_event",
        "colour",
    );
    let r = request(a, "GET", "/nope", &[], b"").await.unwrap();
    refused(&r, 404, "not_found", "no such endpoint");
    assert_eq!(store.stats().unwrap().events, before);
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let srv = spawn(Settings::for_tests(PT, SK), store.clone())
        .await
        .unwrap();
    let a = srv.addr;
    let mut tasks = vec![];
    for c in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(a).await.unwrap();
            for b in 0..10 {
                let batch: Vec<Value> = (0..20)
                    .map(|i| {
                        ev(
                            "e",
                            &format!("c{c}-{i}"),
                            &format!("2024-01-0{}T00:00:00Z", 1 + b % 9),
                        )
                    })
                    .collect();
                let body = json!({"api_key": PT, "batch": batch}).to_string();
                let r = conn
                    .request("POST", "/batch/", &[], body.as_bytes())
                    .await
                    .unwrap();
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    srv.stop().await.unwrap();
    let store = dropscope_server::reclaim_store(store, std::time::Duration::from_secs(10))
        .await
        .expect("server released the store");
    store.close().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.stats().unwrap().events, 8 * 10 * 20);
}
