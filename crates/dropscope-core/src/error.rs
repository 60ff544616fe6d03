//! Errors a query can be refused with.

use thiserror::Error;

/// Why a query was refused. Always names the field and what was wrong.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum QueryError {
    /// The query is malformed or asks for something impossible.
    #[error("invalid query: `{field}`: {message}")]
    Invalid { field: String, message: String },
    /// The query is valid but this backend cannot answer it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Something went wrong underneath (storage, a remote engine).
    #[error("backend error: {0}")]
    Backend(String),
}

impl QueryError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        QueryError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// True when the caller sent something wrong (HTTP 400).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            QueryError::Invalid { .. } | QueryError::Unsupported(_)
        )
    }
}
