//! The server on the ClickHouse backend (`--backend clickhouse`), against a
//! real ClickHouse server: captured events (with identity joins) land in
//! ClickHouse and `/api/query` answers with the same numbers as the
//! embedded store fed the same requests; pickers, the person timeline and
//! /healthz work there too. A ClickHouse that cannot be started fails.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use dropscope_clickhouse::ClickHouse;
use dropscope_server::http1::{request, Response};
use dropscope_server::{spawn, spawn_backend, Backend, Running, Settings};
use dropscope_store::Store;
use serde_json::{json, Value};

const PT: &str = "phc_ch_token";
const SK: &str = "dss_ch_secret";

async fn post_json(addr: SocketAddr, path: &str, auth: bool, body: &Value) -> Response {
    let bearer = format!("Bearer {SK}");
    let mut headers = vec![("Content-Type", "application/json")];
    if auth {
        headers.push(("Authorization", &bearer));
    }
    request(addr, "POST", path, &headers, body.to_string().as_bytes())
        .await
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    let bearer = format!("Bearer {SK}");
    request(addr, "GET", path, &[("Authorization", &bearer)], b"")
        .await
        .unwrap()
}

/// Capture requests: anonymous browsing, an `$identify` joining the
/// anonymous id, a duplicate uuid, several people.
fn batches() -> Vec<Value> {
    let ev = |name: &str, did: &str, ts: &str, props: Value| json!({"event": name, "distinct_id": did, "timestamp": ts, "properties": props});
    vec![
        json!({"api_key": PT, "batch": [
            ev("$pageview", "anon-1", "2024-03-01T10:00:00Z", json!({"$browser": "Chrome", "path": "it's \\ \"quoted\""})),
            ev("$pageview", "anon-2", "2024-03-01T11:00:00Z", json!({"$browser": "Safari"})),
            ev("$pageview", "u-3", "2024-03-01T12:00:00Z", json!({"$browser": "Chrome"})),
        ]}),
        json!({"api_key": PT, "batch": [
            ev("$identify", "user-1", "2024-03-01T10:05:00Z", json!({"$anon_distinct_id": "anon-1"})),
            ev("signup", "user-1", "2024-03-01T10:06:00Z", json!({"plan": "pro"})),
            ev("signup", "u-3", "2024-03-01T12:30:00Z", json!({"plan": "free"})),
        ]}),
        json!({"api_key": PT, "batch": [
            ev("purchase", "user-1", "2024-03-02T09:00:00Z", json!({"amount": 30})),
            {"event": "purchase", "distinct_id": "u-3", "timestamp": "2024-03-20T09:00:00Z",
             "uuid": "0190a0b0-0000-7000-8000-0000000000aa", "properties": {}},
        ]}),
        // The same uuid again: stored once.
        json!({"api_key": PT, "batch": [
            {"event": "purchase", "distinct_id": "u-3", "timestamp": "2024-03-20T09:00:00Z",
             "uuid": "0190a0b0-0000-7000-8000-0000000000aa", "properties": {}},
        ]}),
    ]
}

fn queries() -> Vec<Value> {
    let steps = json!([{"event": "$pageview"}, {"event": "signup"}, {"event": "purchase"}]);
    vec![
        json!({"kind": "funnel", "steps": steps, "date_from": "2024-03-01", "date_to": "2024-03-31"}),
        json!({"kind": "funnel", "steps": steps, "date_from": "2024-03-01", "date_to": "2024-03-31",
               "window": {"value": 1, "unit": "day"}, "breakdown": {"property": "$browser"}}),
    ]
}

async fn feed(srv: &Running) {
    for b in batches() {
        let r = post_json(srv.addr, "/batch/", false, &b).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_clickhouse_answers_as_the_embedded_store() {
    let url = dropscope_testkit::clickhouse_server::url();
    let db = format!("ds_server_{}", std::process::id());
    let ch = ClickHouse::open(url, &db).unwrap();
    ch.drop_database().unwrap();
    let ch = ClickHouse::open(url, &db).unwrap();
    let on_ch = spawn_backend(
        Settings::for_tests(PT, SK),
        Backend::ClickHouse(Arc::new(RwLock::new(ch))),
    )
    .await
    .unwrap();
    let embedded = spawn(Settings::for_tests(PT, SK), Arc::new(Store::in_memory()))
        .await
        .unwrap();
    feed(&on_ch).await;
    feed(&embedded).await;

    for q in queries() {
        let body = json!({ "query": q });
        let a = post_json(on_ch.addr, "/api/query", true, &body).await;
        let b = post_json(embedded.addr, "/api/query", true, &body).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(b.status, 200, "{}", b.text());
        let (mut a, mut b) = (a.json(), b.json());
        // The Kaplan–Meier curve is an embedded-only extra for now.
        for v in [&mut a, &mut b] {
            v.as_object_mut().unwrap().remove("conversion_curve");
        }
        assert_eq!(a, b, "query {q}");
    }
    // The identified person (anonymous pageview, then signup and purchase
    // as user-1) converted; u-3 bought after the 14-day window.
    let r = post_json(
        on_ch.addr,
        "/api/query",
        true,
        &json!({"query": queries()[0]}),
    )
    .await;
    let counts: Vec<u64> = r.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![3, 2, 1]);

    // Pickers: computed inside ClickHouse.
    let r = get(on_ch.addr, "/api/events").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["results"][0],
        json!({"name": "$pageview", "count": 3})
    );
    let r = get(on_ch.addr, "/api/property_values?key=%24browser").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["results"][0],
        json!({"value": "Chrome", "count": 2})
    );
    assert_eq!(r.json()["total"], json!(2));
    let r = get(on_ch.addr, "/api/properties?event=%24pageview&search=PAT").await;
    assert_eq!(r.json()["results"], json!([{"name": "path", "count": 1}]));
    // The person timeline, found by the anonymous id, holds the identified
    // events too.
    let r = get(on_ch.addr, "/api/person_events?id=anon-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["distinct_ids"], json!(["anon-1", "user-1"]));
    assert_eq!(t["total"], json!(4));
    let names: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["$pageview", "$identify", "signup", "purchase"]);
    let r = get(on_ch.addr, "/api/person_events?id=nobody").await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Person-property pickers are refused, not answered wrongly.
    let r = get(on_ch.addr, "/api/properties?type=person").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ClickHouse"), "{}", r.text());

    let h = request(on_ch.addr, "GET", "/healthz", &[], b"")
        .await
        .unwrap();
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(h.json()["backend"], json!("clickhouse"));
    assert_eq!(h.json()["events"], json!(8));
    // Bad input still gets the capture API's errors, nothing stored.
    let r = post_json(
        on_ch.addr,
        "/batch/",
        false,
        &json!({"api_key": PT, "batch": [{"event": 5}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(
        on_ch.addr,
        "/batch/",
        false,
        &json!({"api_key": "wrong", "batch": [{"event": "x", "distinct_id": "d"}]}),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let h = request(on_ch.addr, "GET", "/healthz", &[], b"")
        .await
        .unwrap();
    assert_eq!(h.json()["events"], json!(8));

    on_ch.stop().await.unwrap();
    embedded.stop().await.unwrap();
    ClickHouse::open(url, &db).unwrap().drop_database().unwrap();
}
