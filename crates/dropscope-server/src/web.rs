//! The web page: `/` (index.html), `/app.js` and `/app.css`, embedded in the
//! binary from the repository's `web/` folder, and `GET /api/person_events`,
//! a person's event timeline for the page's person drawer.
//!
//! The page itself is public (it holds no data); every data call it makes
//! carries the secret key, and `/api/person_events` checks it like the rest
//! of `/api/`.
//!
//! Caching: the assets are revalidated on every load (`Cache-Control:
//! no-cache`) with a strong `ETag` (a hash of the embedded bytes), so a new
//! binary is picked up at once and an unchanged page costs a `304`.

use std::sync::OnceLock;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dropscope_clickhouse::ClickHouse;
use dropscope_store::columns::EventColumns;
use dropscope_store::dict::decode_value;
use dropscope_store::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::{Access, RouteDef};
use crate::error::ApiError;
use crate::AppState;

pub const INDEX_HTML: &str = include_str!("../../../web/index.html");
pub const APP_JS: &str = include_str!("../../../web/app.js");
pub const APP_CSS: &str = include_str!("../../../web/app.css");

/// The page has no inline script; it talks only to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// The page's routes, part of [`crate::routes`]: the assets are public,
/// the person timeline needs the secret key.
pub fn routes() -> Vec<RouteDef> {
    const GET: &[Method] = &[Method::GET];
    vec![
        RouteDef::new("/", GET, Access::Public, get(index)),
        RouteDef::new("/index.html", GET, Access::Public, get(index)),
        RouteDef::new("/app.js", GET, Access::Public, get(app_js)),
        RouteDef::new("/app.css", GET, Access::Public, get(app_css)),
        RouteDef::new(
            "/api/person_events",
            GET,
            Access::Secret,
            get(person_events_handler),
        ),
    ]
}

/// FNV-1a 64 of the bytes, as a quoted strong ETag.
fn etag_of(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

fn assets() -> &'static [Asset; 3] {
    static A: OnceLock<[Asset; 3]> = OnceLock::new();
    A.get_or_init(|| {
        [
            Asset {
                body: INDEX_HTML,
                content_type: "text/html; charset=utf-8",
                etag: etag_of(INDEX_HTML),
            },
            Asset {
                body: APP_JS,
                content_type: "text/javascript; charset=utf-8",
                etag: etag_of(APP_JS),
            },
            Asset {
                body: APP_CSS,
                content_type: "text/css; charset=utf-8",
                etag: etag_of(APP_CSS),
            },
        ]
    })
}

fn serve_asset(a: &Asset, headers: &HeaderMap) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    if a.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    (StatusCode::OK, h, a.body).into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve_asset(&assets()[0], &headers)
}

async fn app_js(headers: HeaderMap) -> Response {
    serve_asset(&assets()[1], &headers)
}

async fn app_css(headers: HeaderMap) -> Response {
    serve_asset(&assets()[2], &headers)
}

/// Query parameters of `GET /api/person_events`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonEventsParams {
    /// A person id (as in persons results) or any of its distinct ids.
    pub id: Option<String>,
    /// Most events (default 500, at most 10000).
    pub limit: Option<usize>,
    /// Events to skip (oldest first).
    pub offset: Option<usize>,
}

impl PersonEventsParams {
    /// `(id, limit, offset)`, checked: an id is required, the limit is
    /// 1..=10000 (default 500).
    fn checked(&self) -> Result<(&str, usize, usize), ApiError> {
        let id = self
            .id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Invalid("missing query parameter `id`".into()))?;
        let limit = match self.limit {
            None => 500,
            Some(0) => return Err(ApiError::Invalid("`limit` must be positive".into())),
            Some(n) if n > 10_000 => {
                return Err(ApiError::Invalid("`limit` must be at most 10000".into()))
            }
            Some(n) => n,
        };
        Ok((id, limit, self.offset.unwrap_or(0)))
    }
}

/// `GET /api/person_events` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersonEventsResponse {
    /// The person's id (its label).
    pub id: String,
    pub distinct_ids: Vec<String>,
    /// Current person properties.
    pub properties: Map<String, Value>,
    /// Events the person has in all.
    pub total: u64,
    pub offset: u64,
    /// Oldest first.
    pub events: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimelineEvent {
    pub event: String,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    pub distinct_id: String,
    pub properties: Map<String, Value>,
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A person's events, found by person id (label) or distinct id.
pub fn person_events(
    snap: &Snapshot,
    p: &PersonEventsParams,
) -> Result<PersonEventsResponse, ApiError> {
    let (id, limit, offset) = p.checked()?;
    let by_did = {
        let d = snap.dicts();
        d.distinct_ids
            .get(id)
            .and_then(|did| snap.identity().person_of_did(did))
    };
    let root = by_did.map(|p| snap.identity().root(p));
    let actor = (0..snap.actor_count()).find(|&i| {
        let person = snap.actor_person(i);
        match root {
            Some(r) => person == r,
            None => snap.person(person).label(snap.dicts()) == id,
        }
    });
    let Some(actor) = actor else {
        return Err(ApiError::NotFound(format!(
            "no person with id or distinct id {id:?} has events"
        )));
    };
    let person = snap.person(snap.actor_person(actor));
    let d = snap.dicts();
    let mut scratch = EventColumns::new();
    let v = snap.events_of(actor, &mut scratch);
    let end = v.len().min(offset.saturating_add(limit));
    let events = (offset.min(end)..end)
        .map(|row| TimelineEvent {
            event: d.events.resolve(v.event[row]).to_string(),
            timestamp: rfc3339_ms(v.ts[row]),
            distinct_id: d.distinct_ids.resolve(v.did[row]).to_string(),
            properties: v
                .props(row)
                .map(|(k, val)| {
                    (
                        d.keys.resolve(k).to_string(),
                        decode_value(d.values.resolve(val)),
                    )
                })
                .collect(),
        })
        .collect();
    Ok(PersonEventsResponse {
        id: person.label(d).to_string(),
        distinct_ids: person
            .dids()
            .map(|x| d.distinct_ids.resolve(x).to_string())
            .collect(),
        properties: person
            .props()
            .iter()
            .map(|(k, val)| {
                (
                    d.keys.resolve(*k).to_string(),
                    decode_value(d.values.resolve(*val)),
                )
            })
            .collect(),
        total: v.len() as u64,
        offset: offset as u64,
        events,
    })
}

/// A person's events on the ClickHouse backend, found by distinct id or
/// numeric person id. Person properties are not kept there yet (empty);
/// event property values are their stored string forms.
pub fn person_events_clickhouse(
    ch: &ClickHouse,
    p: &PersonEventsParams,
) -> Result<PersonEventsResponse, ApiError> {
    let (id, limit, offset) = p.checked()?;
    let t = ch
        .person_events(id, offset, limit)
        .map_err(|e| ApiError::Unavailable(format!("ClickHouse: {e}")))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no person with id or distinct id {id:?} has events"
            ))
        })?;
    Ok(PersonEventsResponse {
        id: t.person_id.to_string(),
        distinct_ids: t.distinct_ids,
        properties: Map::new(),
        total: t.total,
        offset: offset as u64,
        events: t
            .events
            .into_iter()
            .map(|e| TimelineEvent {
                event: e.event,
                timestamp: rfc3339_ms(e.timestamp),
                distinct_id: e.distinct_id,
                properties: e
                    .properties
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            })
            .collect(),
    })
}

async fn person_events_handler(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    params: Result<Query<PersonEventsParams>, QueryRejection>,
) -> Response {
    crate::picker(st, raw, params, person_events, person_events_clickhouse).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_with_stable_etags() {
        assert!(INDEX_HTML.contains("app.js"));
        assert!(!APP_JS.is_empty() && !APP_CSS.is_empty());
        assert_eq!(etag_of("abc"), etag_of("abc"));
        assert_ne!(etag_of("abc"), etag_of("abd"));
        // Nothing is fetched from another origin (the only URL in the
        // script is the SVG namespace).
        assert!(!INDEX_HTML.contains("://") && !APP_CSS.contains("://"));
        let svg_ns = "http://www.w3.org/2000/svg";
        assert_eq!(
            APP_JS.matches("://").count(),
            APP_JS.matches(svg_ns).count()
        );
    }
}
