//! The access model, route by route, over real HTTP. The routes come from
//! `dropscope_server::routes()`, the table the router is built from, so a
//! new route is checked here as soon as it exists (and a new secret route
//! fails until it has an example request below):
//! - secret routes refuse no key and a wrong key (401) and the project
//!   token (403), each with a JSON message, and never send CORS headers;
//! - capture routes answer a browser's CORS preflight from any origin;
//! - public routes hold no stored data and answer without a key;
//! - the OpenAPI document marks exactly the secret routes as needing the
//!   key;
//! - nothing outside the embedded assets can be fetched (`..`, `%2e%2e`,
//!   encoded slashes and backslashes, absolute paths).

use std::net::SocketAddr;
use std::sync::Arc;

use dropscope_server::http1::{request, Response};
use dropscope_server::{routes, spawn, Access, Settings};
use dropscope_store::Store;
use serde_json::json;

const PT: &str = "phc_access_token";
const SK: &str = "dss_access_secret";
const ORIGIN: &str = "https://elsewhere.example";

/// A valid request (path with query string, body) for each secret route.
fn example(path: &str) -> Option<(String, Vec<u8>)> {
    let q = json!({"query": {"kind": "funnel", "steps": [{"event": "a"}],
                             "date_from": "2024-01-01", "date_to": "2024-01-31"}});
    Some(match path {
        "/api/query" => (path.into(), q.to_string().into_bytes()),
        "/api/events" | "/api/properties" => (path.into(), vec![]),
        "/api/property_values" => ("/api/property_values?key=plan".into(), vec![]),
        "/api/person_events" => ("/api/person_events?id=u1".into(), vec![]),
        _ => return None,
    })
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn refused(r: &Response, status: u16, code: &str, what: &str) {
    let b = r.json();
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(b["code"], code, "{what}: {}", r.text());
    assert!(
        b["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: no message: {}",
        r.text()
    );
}

async fn start() -> dropscope_server::Running {
    let srv = spawn(Settings::for_tests(PT, SK), Arc::new(Store::in_memory()))
        .await
        .unwrap();
    let batch = json!({"api_key": PT, "batch": [
        {"event": "a", "distinct_id": "u1", "timestamp": "2024-01-02T00:00:00Z", "properties": {"plan": "pro"}}
    ]});
    let r = call(
        srv.addr,
        "POST",
        "/batch/",
        &[],
        batch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    srv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_classified_and_its_class_enforced() {
    let srv = start().await;
    let a = srv.addr;
    let table = routes();
    let mut seen = std::collections::BTreeSet::new();
    let key = format!("Bearer {SK}");
    let token = format!("Bearer {PT}");
    for def in &table {
        assert!(seen.insert(def.path), "route {} declared twice", def.path);
        assert!(!def.methods.is_empty(), "{}: no methods", def.path);
        for m in def.methods {
            let m = m.as_str();
            let what = format!("{m} {}", def.path);
            match def.access {
                Access::Secret => {
                    let (path, body) = example(def.path).unwrap_or_else(|| {
                        panic!(
                            "secret route {} has no example request in this test",
                            def.path
                        )
                    });
                    let r = call(a, m, &path, &[("Origin", ORIGIN)], &body).await;
                    refused(&r, 401, "not_authenticated", &what);
                    assert_eq!(r.header("access-control-allow-origin"), None, "{what}");
                    let wrong = format!("Bearer {SK}x");
                    let r = call(a, m, &path, &[("Authorization", &wrong)], &body).await;
                    refused(&r, 401, "not_authenticated", &what);
                    let r = call(a, m, &path, &[("Authorization", &token)], &body).await;
                    refused(&r, 403, "permission_denied", &what);
                    assert!(r.text().contains("write-only"), "{what}: {}", r.text());
                    // With the key: answered, and still no CORS header for
                    // a page of another origin.
                    let r = call(
                        a,
                        m,
                        &path,
                        &[("Authorization", &key), ("Origin", ORIGIN)],
                        &body,
                    )
                    .await;
                    assert_eq!(r.status, 200, "{what}: {}", r.text());
                    assert_eq!(r.header("access-control-allow-origin"), None, "{what}");
                    // A browser's preflight is not granted.
                    let r = call(
                        a,
                        "OPTIONS",
                        &path,
                        &[
                            ("Origin", ORIGIN),
                            ("Access-Control-Request-Method", m),
                            ("Access-Control-Request-Headers", "authorization"),
                        ],
                        b"",
                    )
                    .await;
                    assert_ne!(r.status / 100, 2, "{what}: preflight granted");
                    assert_eq!(r.header("access-control-allow-origin"), None, "{what}");
                }
                Access::Capture => {
                    let r = call(
                        a,
                        "OPTIONS",
                        def.path,
                        &[
                            ("Origin", ORIGIN),
                            ("Access-Control-Request-Method", m),
                            ("Access-Control-Request-Headers", "content-type"),
                        ],
                        b"",
                    )
                    .await;
                    assert_eq!(r.status / 100, 2, "{what} preflight: {}", r.text());
                    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{what}");
                    let methods = r.header("access-control-allow-methods").unwrap_or("");
                    assert!(methods.contains(m), "{what}: allows {methods:?}");
                    // The answer itself carries the header too (here a
                    // refusal: no token).
                    let r = call(a, m, def.path, &[("Origin", ORIGIN)], b"{}").await;
                    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{what}");
                    // The secret key is no capture token.
                    if def.path.contains("capture") {
                        let e = json!({"api_key": SK, "event": "x", "distinct_id": "d"});
                        let r = call(a, m, def.path, &[], e.to_string().as_bytes()).await;
                        refused(&r, 401, "invalid_token", &what);
                    }
                }
                Access::Public => {
                    let r = call(a, m, def.path, &[("Origin", ORIGIN)], b"").await;
                    assert_eq!(r.status, 200, "{what}: {}", r.text());
                    assert_eq!(r.header("access-control-allow-origin"), None, "{what}");
                    // Nothing stored is shown: the captured property value
                    // and distinct id do not appear.
                    let t = r.text();
                    assert!(!t.contains("u1") && !t.contains("\"pro\""), "{what}: {t}");
                }
            }
        }
    }
    // The data-reading routes are all secret.
    for p in [
        "/api/query",
        "/api/events",
        "/api/properties",
        "/api/property_values",
        "/api/person_events",
    ] {
        let d = table.iter().find(|d| d.path == p).expect(p);
        assert_eq!(d.access, Access::Secret, "{p}");
    }
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_marks_exactly_the_secret_routes() {
    let srv = start().await;
    let doc = call(srv.addr, "GET", "/api/openapi.json", &[], b"")
        .await
        .json();
    let paths = doc["paths"].as_object().unwrap();
    let table = routes();
    for (p, item) in paths {
        let def = table
            .iter()
            .find(|d| d.path == p)
            .unwrap_or_else(|| panic!("OpenAPI path {p} is not a route"));
        for (m, op) in item.as_object().unwrap() {
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(
                secured,
                def.access == Access::Secret,
                "{m} {p}: OpenAPI security {:?} vs {:?}",
                op["security"],
                def.access
            );
        }
    }
    for d in table.iter().filter(|d| d.access == Access::Secret) {
        assert!(
            paths.contains_key(d.path),
            "{} missing from OpenAPI",
            d.path
        );
    }
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_cannot_escape_their_folder() {
    let srv = start().await;
    for path in [
        "/../Cargo.toml",
        "/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/app.js/../../Cargo.toml",
        "/app.js/..%2f..%2fCargo.toml",
        "/..%5c..%5cCargo.toml",
        "/%5c..%5c..%5cetc%5cpasswd",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/etc/passwd",
        "/web/index.html",
        "/web%2fapp.js",
        "/crates/dropscope-server/Cargo.toml",
        "/.%2e/.%2e/Cargo.toml",
        "/index.html%00.js",
        "/app.js%3f",
        "/.git/HEAD",
        "/%c0%ae%c0%ae/etc/passwd",
    ] {
        let r = call(srv.addr, "GET", path, &[], b"").await;
        let t = r.text();
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: {} {t}",
            r.status
        );
        assert!(
            !t.contains("root:") && !t.contains("[package]") && !t.contains("ref:"),
            "{path} leaked a file: {t}"
        );
        if r.status == 404 {
            assert_eq!(r.json()["code"], json!("not_found"), "{path}: {t}");
        }
    }
    // The assets themselves are there.
    for path in ["/", "/index.html", "/app.js", "/app.css"] {
        let r = call(srv.addr, "GET", path, &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
    }
    srv.stop().await.unwrap();
}
