//! Every refusal the server can answer, and the one mapping from error
//! class to HTTP status and JSON body.
//!
//! Body shape (PostHog's): `{"type": "validation_error", "code":
//! "invalid_payload", "detail": "...", "attr": null}`; limit refusals add
//! `"limit": "<name>", "max": N`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dropscope_core::QueryError;
use dropscope_store::StoreError;
use serde::Serialize;

/// Which configured limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxBodyBytes,
    MaxEventsPerBatch,
    MaxEventBytes,
    MaxPropertyDepth,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxBodyBytes => "max_body_bytes",
            Limit::MaxEventsPerBatch => "max_events_per_batch",
            Limit::MaxEventBytes => "max_event_bytes",
            Limit::MaxPropertyDepth => "max_property_depth",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body could not be decoded (gzip, base64, form, UTF-8, JSON
    /// syntax, unsupported compression).
    #[error("{0}")]
    Decode(String),
    /// The body decoded but an event is not what PostHog's API expects
    /// (missing or mistyped field, bad timestamp, bad uuid).
    #[error("{0}")]
    Invalid(String),
    /// An empty batch.
    #[error("the request carries no events")]
    EmptyBatch,
    /// A configured limit was exceeded.
    #[error("{detail}")]
    Limit {
        limit: Limit,
        max: usize,
        detail: String,
    },
    /// No `api_key`/`token` in a capture request.
    #[error("no project token: send `api_key` or `token` in the body, or `?token=`")]
    NoToken,
    /// The capture token is not this project's.
    #[error("invalid project token")]
    BadToken,
    /// The query API needs `Authorization: Bearer <secret key>`.
    #[error("{0}")]
    Unauthorized(String),
    /// The project token was used where the secret key is needed.
    #[error("the project token is write-only: use the secret key to read data")]
    Forbidden,
    /// The query is invalid or unsupported.
    #[error("{0}")]
    Query(String),
    /// Not found (unknown route).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The store refuses writes until reopened; try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The disk holding the data is full: nothing of the request was
    /// stored; retry once space is freed.
    #[error("{0}")]
    DiskFull(String),
    /// Anything else on our side.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn limit(limit: Limit, max: usize, what: impl std::fmt::Display) -> ApiError {
        ApiError::Limit {
            limit,
            max,
            detail: format!("{what} exceeds {} ({max})", limit.name()),
        }
    }

    /// The HTTP status: the one place it is decided.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Decode(_)
            | ApiError::Invalid(_)
            | ApiError::EmptyBatch
            | ApiError::Query(_) => StatusCode::BAD_REQUEST,
            ApiError::Limit { limit, .. } => match limit {
                Limit::MaxPropertyDepth => StatusCode::BAD_REQUEST,
                _ => StatusCode::PAYLOAD_TOO_LARGE,
            },
            ApiError::NoToken | ApiError::BadToken | ApiError::Unauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code (also the `reason` label of the rejection
    /// metric).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Decode(_) => "invalid_payload",
            ApiError::Invalid(_) => "invalid_event",
            ApiError::EmptyBatch => "empty_batch",
            ApiError::Limit { limit, .. } => limit.name(),
            ApiError::NoToken => "missing_token",
            ApiError::BadToken => "invalid_token",
            ApiError::Unauthorized(_) => "not_authenticated",
            ApiError::Forbidden => "permission_denied",
            ApiError::Query(_) => "invalid_query",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::DiskFull(_) => "disk_full",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn kind(&self) -> &'static str {
        match self.status().as_u16() {
            401 | 403 => "authentication_error",
            500..=599 => "server_error",
            _ => "validation_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (limit, max) = match self {
            ApiError::Limit { limit, max, .. } => (Some(limit.name().to_string()), Some(*max)),
            _ => (None, None),
        };
        ErrorBody {
            kind: self.kind().to_string(),
            code: self.code().to_string(),
            detail: self.to_string(),
            attr: limit.clone(),
            limit,
            max,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// `validation_error`, `authentication_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Machine-readable reason, e.g. `invalid_payload`, `max_body_bytes`.
    pub code: String,
    /// Human-readable message naming the field or limit.
    pub detail: String,
    /// The field or limit concerned, when there is one.
    pub attr: Option<String>,
    /// For limit refusals: the limit's name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<String>,
    /// For limit refusals: the configured maximum.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), "{self}");
        } else {
            tracing::debug!(code = self.code(), status = status.as_u16(), "{self}");
        }
        (status, Json(self.body())).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        if e.is_user_error() {
            ApiError::Query(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WalFailed(_) | StoreError::Poisoned => ApiError::Unavailable(e.to_string()),
            StoreError::DiskFull { .. } => ApiError::DiskFull(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ApiError::Decode("x".into()).status(), 400);
        assert_eq!(ApiError::NoToken.status(), 401);
        assert_eq!(ApiError::BadToken.status(), 401);
        assert_eq!(ApiError::Forbidden.status(), 403);
        assert_eq!(
            ApiError::limit(Limit::MaxBodyBytes, 10, "body").status(),
            413
        );
        assert_eq!(
            ApiError::limit(Limit::MaxPropertyDepth, 3, "depth").status(),
            400
        );
        let full = ApiError::from(StoreError::DiskFull {
            path: "/data/wal-1.log".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
        assert_eq!((full.status().as_u16(), full.code()), (507, "disk_full"));
        assert!(full.to_string().contains("disk full"), "{full}");
        let b = ApiError::limit(Limit::MaxEventBytes, 10, "event 3").body();
        assert_eq!(b.limit.as_deref(), Some("max_event_bytes"));
        assert_eq!(b.detail, "event 3 exceeds max_event_bytes (10)");
    }
}
