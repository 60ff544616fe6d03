//! The web page's routes over HTTP: the embedded assets (content types,
//! caching, CSP) and `GET /api/person_events` (secret key, lookup by person
//! id or distinct id, paging, bad input).

use std::net::SocketAddr;
use std::sync::Arc;

use dropscope_server::http1::{request, Response};
use dropscope_server::{spawn, Running, Settings};
use dropscope_store::Store;
use serde_json::json;

const PT: &str = "phc_web_test";
const SK: &str = "dss_web_secret";

async fn start() -> (Running, Arc<Store>) {
    let store = Arc::new(Store::in_memory());
    let running = spawn(Settings::for_tests(PT, SK), store.clone())
        .await
        .unwrap();
    (running, store)
}

async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(addr, "GET", path, &headers, b"").await.unwrap()
}

#[tokio::test]
async fn assets_are_served_with_types_and_caching() {
    let (srv, _) = start().await;
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
    ] {
        let r = get(srv.addr, path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let etag = r.header("etag").unwrap().to_string();
        let r2 = request(srv.addr, "GET", path, &[("If-None-Match", &etag)], b"")
            .await
            .unwrap();
        assert_eq!(r2.status, 304, "{path}");
        assert!(r2.body.is_empty());
        let r3 = request(
            srv.addr,
            "GET",
            path,
            &[("If-None-Match", "\"other\"")],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(r3.status, 200, "{path}");
    }
    let html = get(srv.addr, "/", None).await;
    let csp = html.header("content-security-policy").unwrap();
    assert!(csp.contains("connect-src 'self'") && csp.contains("script-src 'self'"));
    assert!(html.text().contains("<script src=\"app.js\""));
    // the page holds no data: no key needed for it, but the APIs need one
    assert_eq!(get(srv.addr, "/api/events", None).await.status, 401);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn person_events_needs_the_key_and_finds_persons() {
    let (srv, _) = start().await;
    let batch = json!({"api_key": PT, "batch": [
        {"event": "$pageview", "distinct_id": "anon-1", "timestamp": "2024-01-01T10:00:00Z", "properties": {"$browser": "Edge"}},
        {"event": "signup", "distinct_id": "anon-1", "timestamp": "2024-01-01T10:05:00Z"},
        {"event": "$identify", "distinct_id": "user-1", "timestamp": "2024-01-01T10:06:00Z",
         "properties": {"$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}}},
        {"event": "purchase", "distinct_id": "user-1", "timestamp": "2024-01-02T09:00:00Z", "properties": {"revenue": 12.5}},
        {"event": "$pageview", "distinct_id": "other", "timestamp": "2024-01-01T11:00:00Z"}
    ]});
    let r = request(
        srv.addr,
        "POST",
        "/batch/",
        &[("Content-Type", "application/json")],
        batch.to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // auth like every /api/ route
    assert_eq!(
        get(srv.addr, "/api/person_events?id=user-1", None)
            .await
            .status,
        401
    );
    assert_eq!(
        get(srv.addr, "/api/person_events?id=user-1", Some("dss_wrong"))
            .await
            .status,
        401
    );
    assert_eq!(
        get(srv.addr, "/api/person_events?id=user-1", Some(PT))
            .await
            .status,
        403
    );

    // by either distinct id: the merged person's whole timeline, oldest first
    for id in ["user-1", "anon-1"] {
        let r = get(srv.addr, &format!("/api/person_events?id={id}"), Some(SK)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["total"], 4);
        let names: Vec<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["$pageview", "signup", "$identify", "purchase"]);
        assert_eq!(v["events"][0]["distinct_id"], "anon-1");
        assert_eq!(v["events"][0]["timestamp"], "2024-01-01T10:00:00.000Z");
        assert_eq!(v["events"][0]["properties"]["$browser"], "Edge");
        assert_eq!(v["events"][3]["properties"]["revenue"], 12.5);
        assert_eq!(v["properties"]["plan"], "pro");
        let mut dids: Vec<&str> = v["distinct_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        dids.sort();
        assert_eq!(dids, ["anon-1", "user-1"]);
    }

    // paging
    let r = get(
        srv.addr,
        "/api/person_events?id=user-1&limit=2&offset=1",
        Some(SK),
    )
    .await;
    let v = r.json();
    assert_eq!(v["total"], 4);
    assert_eq!(v["offset"], 1);
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["events"][0]["event"], "signup");

    // bad input
    for (path, status, needle) in [
        ("/api/person_events", 400, "`id`"),
        ("/api/person_events?id=", 400, "`id`"),
        ("/api/person_events?id=user-1&limit=0", 400, "limit"),
        ("/api/person_events?id=user-1&limit=10001", 400, "limit"),
        ("/api/person_events?id=user-1&bogus=1", 400, "bogus"),
        ("/api/person_events?id=nobody", 404, "nobody"),
    ] {
        let r = get(srv.addr, path, Some(SK)).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains(needle), "{path}: {}", r.text());
    }
    srv.stop().await.unwrap();
}
