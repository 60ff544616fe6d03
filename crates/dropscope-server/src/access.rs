//! Who may call which route. Every route of [`crate::router`] is declared
//! with one [`Access`] class, and the router applies the class itself, so a
//! route cannot be added without deciding who may call it:
//!
//! - [`Access::Capture`]: capture and the SDKs' flag stubs. The handler
//!   checks the project token (body or `?token=`). Browsers may call these
//!   from any origin (CORS, preflight included).
//! - [`Access::Secret`]: every read of stored data (queries, pickers, the
//!   person timeline). `Authorization: Bearer <secret key>` is checked
//!   before the handler runs (and before the body is read). No CORS: a
//!   browser page from another origin cannot read the answers.
//! - [`Access::Public`]: no stored data (the web page's assets, the
//!   OpenAPI document, `/healthz`, `/metrics`).
//!
//! Keys are compared in time that depends only on the expected key's length
//! ([`constant_time_eq`]).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The project token (checked by the capture handler); CORS open.
    Capture,
    /// The secret key (checked before the handler); no CORS.
    Secret,
    /// Anyone; holds no stored data.
    Public,
}

/// One route: path, the methods it answers, who may call it, the handlers.
pub struct RouteDef {
    pub path: &'static str,
    pub methods: &'static [Method],
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

impl RouteDef {
    pub fn new(
        path: &'static str,
        methods: &'static [Method],
        access: Access,
        handler: MethodRouter<AppState>,
    ) -> RouteDef {
        RouteDef {
            path,
            methods,
            access,
            handler,
        }
    }

    /// The handlers with the class's checks and headers, and a JSON 405 for
    /// other methods.
    pub(crate) fn into_method_router(self, state: &AppState) -> MethodRouter<AppState> {
        let h = self.handler.fallback(method_not_allowed);
        match self.access {
            Access::Capture => h.layer(capture_cors()),
            Access::Secret => h.route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_secret,
            )),
            Access::Public => h,
        }
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// CORS for capture: any origin, the methods and headers the SDKs send,
/// preflight cached for a day. No credentials (the token is in the body).
fn capture_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::any())
        .max_age(Duration::from_secs(86_400))
}

async fn require_secret(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match check_secret(st.settings(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `Authorization: Bearer <secret key>`; the project token gets 403.
pub fn check_secret(s: &crate::Settings, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <secret key>` header".into(),
        ));
    };
    let v = v.to_str().unwrap_or("");
    let key = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <secret key>`".into())
        })?;
    if constant_time_eq(key.as_bytes(), s.secret_key.as_bytes()) {
        return Ok(());
    }
    if constant_time_eq(key.as_bytes(), s.project_token.as_bytes()) {
        return Err(ApiError::Forbidden);
    }
    Err(ApiError::Unauthorized("invalid secret key".into()))
}

/// `given == expected`, in time that depends only on `expected.len()`:
/// every byte of the expected key is compared, whatever the given key's
/// length and content, so timing tells neither where a guess first differs
/// nor how long the key is.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= usize::from(g ^ e);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"dss_abc", b"dss_abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"dss_abd", b"dss_abc"));
        assert!(!constant_time_eq(b"dss_ab", b"dss_abc"));
        assert!(!constant_time_eq(b"dss_abc\0", b"dss_abc"));
        assert!(!constant_time_eq(b"dss_abcd", b"dss_abc"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
    }
}
