//! dropscope-server: the HTTP server.
//!
//! - PostHog-compatible capture (`/capture/`, `/batch/`, `/e/`, `/i/v0/e/`,
//!   `/track/`, plus `/decide/` and `/flags/` stubs), acknowledged once the
//!   events are durable in the store's WAL (group commit across requests);
//! - the query API (`POST /api/query`, pickers under `/api/`), behind the
//!   secret key;
//! - `/api/openapi.json`, `/healthz`, `/metrics`.
//!
//! Modules: [`config`] (flags, env, config file), [`capture`] (payload
//! decoding and parsing, limits), [`error`] (the one mapping from error class
//! to HTTP status), [`metrics`], [`pickers`], [`openapi`], [`http1`] (a tiny
//! HTTP/1.1 client for tests and the capture benchmark).
//!
//! Entry points: [`run`] (open the store in the data dir, serve until
//! `shutdown`, close), [`serve`] (serve an open store), [`spawn`] (serve in
//! the background on an already bound port; tests), [`router`].

pub mod access;
pub mod capture;
pub mod config;
pub mod error;
pub mod http1;
pub mod metrics;
pub mod openapi;
pub mod pickers;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dropscope_clickhouse::ClickHouse;
use dropscope_core::query::FunnelQuery;
use dropscope_store::{Record, Store, StoreOptions};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub use access::{Access, RouteDef};
pub use config::{generate_token, BackendChoice, Limits, ServeConfig, Settings};
pub use error::ApiError;

use capture::{CaptureInput, CaptureParams};
use metrics::Metrics;
use pickers::PickerParams;

/// Where a server keeps its events and answers queries.
#[derive(Clone)]
pub enum Backend {
    /// The embedded store.
    Embedded(Arc<Store>),
    /// A ClickHouse database: captures take the write lock (inserts and
    /// identity bookkeeping), queries the read lock.
    ClickHouse(Arc<std::sync::RwLock<ClickHouse>>),
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    settings: Settings,
    metrics: Metrics,
    openapi: Bytes,
}

impl AppState {
    pub fn new(settings: Settings, store: Arc<Store>) -> AppState {
        AppState::with_backend(settings, Backend::Embedded(store))
    }

    pub fn with_backend(settings: Settings, backend: Backend) -> AppState {
        let openapi = serde_json::to_vec_pretty(&openapi::document()).expect("openapi json");
        AppState {
            inner: Arc::new(Inner {
                backend,
                settings,
                metrics: Metrics::default(),
                openapi: Bytes::from(openapi),
            }),
        }
    }

    /// The embedded store (`None` on the ClickHouse backend).
    pub fn store(&self) -> Option<&Arc<Store>> {
        match &self.inner.backend {
            Backend::Embedded(s) => Some(s),
            Backend::ClickHouse(_) => None,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

/// Every route, with who may call it ([`Access`]). [`router`] serves
/// exactly these, and applies each one's access class.
pub fn routes() -> Vec<RouteDef> {
    const POST: &[Method] = &[Method::POST];
    const GET: &[Method] = &[Method::GET];
    const GET_POST: &[Method] = &[Method::GET, Method::POST];
    let mut v = vec![];
    for p in [
        "/capture",
        "/capture/",
        "/batch",
        "/batch/",
        "/e",
        "/e/",
        "/i/v0/e",
        "/i/v0/e/",
        "/track",
        "/track/",
    ] {
        v.push(RouteDef::new(
            p,
            POST,
            Access::Capture,
            post(capture_handler),
        ));
    }
    for p in ["/decide", "/decide/", "/flags", "/flags/"] {
        v.push(RouteDef::new(
            p,
            GET_POST,
            Access::Capture,
            get(flags_handler).post(flags_handler),
        ));
    }
    v.extend([
        RouteDef::new("/api/query", POST, Access::Secret, post(query_handler)),
        RouteDef::new("/api/events", GET, Access::Secret, get(events_handler)),
        RouteDef::new(
            "/api/properties",
            GET,
            Access::Secret,
            get(properties_handler),
        ),
        RouteDef::new(
            "/api/property_values",
            GET,
            Access::Secret,
            get(property_values_handler),
        ),
        RouteDef::new(
            "/api/openapi.json",
            GET,
            Access::Public,
            get(openapi_handler),
        ),
        RouteDef::new("/healthz", GET, Access::Public, get(health_handler)),
        RouteDef::new("/metrics", GET, Access::Public, get(metrics_handler)),
    ]);
    v.extend(web::routes());
    v
}

/// The router: every route of [`routes`], a JSON 404 for anything else.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    for def in routes() {
        r = r.route(def.path, def.into_method_router(&state));
    }
    r.fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if status >= 500 {
        tracing::warn!(%method, %path, status, ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status, ms, "request");
    }
    resp
}

/// Reads a body, refusing it as soon as it passes `max` bytes (by
/// `Content-Length` before reading, else while streaming).
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > max as u64 {
            return Err(ApiError::limit(
                error::Limit::MaxBodyBytes,
                max,
                format_args!("request body ({n} bytes)"),
            ));
        }
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::Decode(format!("error reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(ApiError::limit(
                    error::Limit::MaxBodyBytes,
                    max,
                    "request body",
                ));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn capture_handler(
    State(st): State<AppState>,
    params: Result<Query<CaptureParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let m = &st.inner.metrics;
    m.capture_requests.fetch_add(1, Ordering::Relaxed);
    match capture(&st, params, &headers, body).await {
        Ok(()) => {
            m.capture_latency.observe(start.elapsed());
            (StatusCode::OK, Json(json!({"status": 1}))).into_response()
        }
        Err((e, n)) => {
            m.reject(e.code(), n);
            e.into_response()
        }
    }
}

async fn capture(
    st: &AppState,
    params: Result<Query<CaptureParams>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), (ApiError, usize)> {
    let s = &st.inner.settings;
    let Query(params) = params.map_err(|e| (ApiError::Decode(e.body_text()), 0))?;
    let raw = read_body(headers, body, s.limits.max_body_bytes)
        .await
        .map_err(|e| (e, 0))?;
    let input = CaptureInput {
        body: &raw,
        content_type: header_str(headers, header::CONTENT_TYPE),
        content_encoding: header_str(headers, header::CONTENT_ENCODING),
        params: &params,
    };
    let captured =
        capture::parse_capture(input, &s.limits, capture::now_ms()).map_err(|e| (e, 0))?;
    let n = captured.events.len();
    if captured.tokens.is_empty() {
        return Err((ApiError::NoToken, n));
    }
    if captured
        .tokens
        .iter()
        .any(|t| !access::constant_time_eq(t.as_bytes(), s.project_token.as_bytes()))
    {
        return Err((ApiError::BadToken, n));
    }
    let records: Vec<Record> = captured.events.into_iter().map(Record::Event).collect();
    let backend = st.inner.backend.clone();
    let t = Instant::now();
    let res = tokio::task::spawn_blocking(move || match backend {
        Backend::Embedded(store) => store.append(&records).map_err(ApiError::from),
        Backend::ClickHouse(ch) => {
            let mut ch = ch
                .write()
                .map_err(|_| ApiError::Unavailable("ClickHouse backend lock poisoned".into()))?;
            let before = ch.stored_events();
            ch.append(&records)
                .map_err(|e| ApiError::Unavailable(format!("ClickHouse insert failed: {e}")))?;
            let stored = ch.stored_events() - before;
            Ok(dropscope_store::AppendStats {
                stored,
                duplicates: records.len() as u64 - stored,
            })
        }
    })
    .await
    .map_err(|e| (ApiError::Internal(format!("append task failed: {e}")), n))?;
    let stats = res.map_err(|e| (e, n))?;
    let m = &st.inner.metrics;
    m.append_latency.observe(t.elapsed());
    m.events_accepted.fetch_add(stats.stored, Ordering::Relaxed);
    m.events_duplicate
        .fetch_add(stats.duplicates, Ordering::Relaxed);
    Ok(())
}

/// A minimal `/decide/` / `/flags/` answer: no flags, no recordings.
async fn flags_handler() -> Json<Value> {
    Json(json!({
        "config": {"enable_collect_everything": true},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "flags": {},
        "errorsWhileComputingFlags": false,
        "quotaLimited": [],
        "sessionRecording": false,
        "supportedCompression": ["gzip", "gzip-js"],
        "requestId": uuid::Uuid::new_v4().to_string(),
    }))
}

fn kind_name(q: &FunnelQuery) -> String {
    serde_json::to_value(q.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Parses `{"query": {...}}`.
pub fn parse_query_body(body: &[u8]) -> Result<FunnelQuery, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::Decode(format!(
            "body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| ApiError::Decode(format!("malformed JSON: {e}")))?;
    let Value::Object(mut m) = v else {
        return Err(ApiError::Invalid(
            "the body must be an object `{\"query\": {...}}`".into(),
        ));
    };
    if let Some(k) = m.keys().find(|k| *k != "query") {
        return Err(ApiError::Invalid(format!(
            "unknown field `{k}` in the body, expected only `query`"
        )));
    }
    let q = m
        .remove("query")
        .ok_or_else(|| ApiError::Invalid("missing field `query`".into()))?;
    Ok(FunnelQuery::from_json(q)?)
}

async fn query_handler(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match query(&st, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn query(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    if let Some(enc) = header_str(headers, header::CONTENT_ENCODING)
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::Decode(format!(
            "unsupported Content-Encoding `{enc}`: the query API takes uncompressed JSON"
        )));
    }
    let raw = read_body(headers, body, st.inner.settings.limits.max_body_bytes).await?;
    let q = parse_query_body(&raw)?;
    let kind = kind_name(&q);
    let backend = st.inner.backend.clone();
    let start = Instant::now();
    let res = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let r = match backend {
            Backend::Embedded(store) => dropscope_engine::run_query(&store.snapshot()?, &q)?,
            Backend::ClickHouse(ch) => ch
                .read()
                .map_err(|_| ApiError::Unavailable("ClickHouse backend lock poisoned".into()))?
                .run(&q)?,
        };
        serde_json::to_vec(&r).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("query task failed: {e}")))?;
    st.inner.metrics.query(&kind, start.elapsed(), res.is_ok());
    let bytes = res?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// Refuses a query string that the lenient form decoding would otherwise
/// take with replacement characters or literal `%`: every `%` must start a
/// two-digit hex escape, and every decoded name and value must be UTF-8.
fn check_query_string(q: Option<&str>) -> Result<(), ApiError> {
    let Some(q) = q else { return Ok(()) };
    for pair in q.split('&') {
        let b = pair.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => {
                    let hex = b
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            ApiError::Invalid(format!(
                                "query string: bad percent-escape in {pair:?}"
                            ))
                        })?;
                    out.push(hex);
                    i += 3;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        if std::str::from_utf8(&out).is_err() {
            let name = pair.split('=').next().unwrap_or(pair);
            return Err(ApiError::Invalid(format!(
                "query string: `{name}` is not valid UTF-8 once decoded"
            )));
        }
    }
    Ok(())
}

/// A read endpoint with query-string parameters (the secret key is checked
/// by the router, see [`access`]): parses the parameters, runs `f` on a snapshot (embedded) or `g` on the
/// ClickHouse backend, off the async threads.
pub(crate) async fn picker<P, T>(
    st: AppState,
    raw_query: Option<String>,
    params: Result<Query<P>, QueryRejection>,
    f: fn(&dropscope_store::Snapshot, &P) -> Result<T, ApiError>,
    g: fn(&ClickHouse, &P) -> Result<T, ApiError>,
) -> Response
where
    P: Send + 'static,
    T: serde::Serialize + Send + 'static,
{
    let run = async {
        check_query_string(raw_query.as_deref())?;
        let Query(p) = params.map_err(|e| ApiError::Invalid(e.body_text()))?;
        let backend = st.inner.backend.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<T, ApiError> {
            match backend {
                Backend::Embedded(store) => f(&store.snapshot()?, &p),
                Backend::ClickHouse(ch) => {
                    let ch = ch.read().map_err(|_| {
                        ApiError::Unavailable("ClickHouse backend lock poisoned".into())
                    })?;
                    g(&ch, &p)
                }
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("task failed: {e}")))??;
        Ok::<_, ApiError>(Json(r).into_response())
    };
    match run.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn events_handler(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    params: Result<Query<PickerParams>, QueryRejection>,
) -> Response {
    picker(st, raw, params, pickers::events, pickers::events_clickhouse).await
}

async fn properties_handler(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    params: Result<Query<PickerParams>, QueryRejection>,
) -> Response {
    picker(
        st,
        raw,
        params,
        pickers::properties,
        pickers::properties_clickhouse,
    )
    .await
}

async fn property_values_handler(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    params: Result<Query<PickerParams>, QueryRejection>,
) -> Response {
    picker(
        st,
        raw,
        params,
        pickers::property_values,
        pickers::property_values_clickhouse,
    )
    .await
}

async fn openapi_handler(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.inner.openapi.clone(),
    )
        .into_response()
}

async fn health_handler(State(st): State<AppState>) -> Response {
    let store = match &st.inner.backend {
        Backend::Embedded(s) => s.clone(),
        Backend::ClickHouse(ch) => {
            let ch = ch.clone();
            let r = tokio::task::spawn_blocking(move || match ch.read() {
                Ok(ch) => ch.event_count(),
                Err(_) => Err("ClickHouse backend lock poisoned".to_string()),
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            return match r {
                Ok(n) => Json(json!({"status": "ok", "backend": "clickhouse", "events": n}))
                    .into_response(),
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "error", "backend": "clickhouse", "detail": e})),
                )
                    .into_response(),
            };
        }
    };
    match store.stats() {
        Ok(s) if s.background_error.is_none() => match &s.flush_error {
            None => Json(json!({"status": "ok", "events": s.events})).into_response(),
            // Still serving and capturing durably (into the WAL), but the
            // WAL cannot be flushed into segments: an operator should look.
            Some(e) => {
                Json(json!({"status": "degraded", "events": s.events, "detail": e})).into_response()
            }
        },
        Ok(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "detail": s.background_error})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "detail": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(st): State<AppState>) -> Response {
    let stats = st.store().and_then(|s| s.stats().ok());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.inner.metrics.render(stats.as_ref()),
    )
        .into_response()
}

/// Serves on a bound listener until `shutdown` completes; in-flight
/// requests finish (and their events are acknowledged) before it returns.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")
}

/// Binds `settings.addr` and serves `store` until `shutdown`.
pub async fn serve(
    settings: Settings,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_backend(settings, Backend::Embedded(store), shutdown).await
}

/// Binds `settings.addr` and serves `backend` until `shutdown`.
pub async fn serve_backend(
    settings: Settings,
    backend: Backend,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, project_token = %settings.project_token, "dropscope server listening");
    serve_on(
        listener,
        AppState::with_backend(settings, backend),
        shutdown,
    )
    .await?;
    tracing::info!("dropscope server stopped");
    Ok(())
}

/// Resolves `cfg`, opens the store in the data directory, serves until
/// `shutdown`, then closes the store. What `dropscope serve` runs.
pub async fn run(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = cfg.resolve()?;
    if let BackendChoice::ClickHouse { url, database } = settings.backend.clone() {
        let ch = tokio::task::spawn_blocking(move || ClickHouse::open(&url, &database))
            .await?
            .map_err(anyhow::Error::msg)
            .context("opening the ClickHouse backend")?;
        tracing::info!(
            database = ch.database(),
            "ClickHouse backend ready (schema migrated)"
        );
        return serve_backend(
            settings,
            Backend::ClickHouse(Arc::new(std::sync::RwLock::new(ch))),
            shutdown,
        )
        .await;
    }
    let dir = settings
        .data
        .clone()
        .context("--data (or DROPSCOPE_DATA, or `data` in the config file) is required")?;
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, StoreOptions::default()))
        .await?
        .context("opening the store")?;
    if let Some(r) = store.open_report() {
        tracing::info!(
            events = r.events_loaded,
            segments = r.segments_loaded,
            wal_records = r.wal_records_replayed,
            truncated_wal_bytes = r.truncated_wal_bytes,
            "store opened"
        );
    }
    let store = Arc::new(store);
    serve(settings, store.clone(), shutdown).await?;
    match reclaim_store(store, std::time::Duration::from_secs(30)).await {
        Ok(s) => tokio::task::spawn_blocking(move || s.close())
            .await?
            .context("closing the store")?,
        Err(_) => tracing::warn!("store still shared 30 s after shutdown; not closed explicitly"),
    }
    Ok(())
}

/// Takes the store back once the server is done with it. A graceful
/// shutdown returns when every connection has closed, but a connection's
/// task may still be dropping its handle for a moment, and a blocking
/// append or query whose client went away runs to its end: waits up to
/// `patience` for the last handle, then hands the `Arc` back.
pub async fn reclaim_store(
    mut store: Arc<Store>,
    patience: std::time::Duration,
) -> Result<Store, Arc<Store>> {
    let deadline = Instant::now() + patience;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => return Ok(s),
            Err(s) if Instant::now() < deadline => {
                store = s;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// A server running in the background (tests, benchmarks).
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful shutdown; waits until the server has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await?
    }
}

/// Binds `settings.addr` (port 0 picks a free port) and serves in a
/// background task.
pub async fn spawn(settings: Settings, store: Arc<Store>) -> anyhow::Result<Running> {
    spawn_backend(settings, Backend::Embedded(store)).await
}

/// [`spawn`] on any backend.
pub async fn spawn_backend(settings: Settings, backend: Backend) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(settings.addr).await?;
    let addr = listener.local_addr()?;
    let state = AppState::with_backend(settings, backend);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        state,
        stop: Some(tx),
        task,
    })
}
