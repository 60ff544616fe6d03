//! dropscope-core: the shared vocabulary of dropscope.
//!
//! - [`event`]: events, persons, groups and cohorts as they arrive;
//! - [`query`]: the one query spec used by CLI, HTTP API, web page and cases;
//! - [`result`]: what queries answer;
//! - [`time`]: date ranges in the project timezone, PostHog's rules;
//! - [`error`]: why a query is refused.
//!
//! No I/O lives here; every other crate depends on this one.
//!
//! ```
//! use dropscope_core::query::FunnelQuery;
//! let q = FunnelQuery::from_json(serde_json::json!({
//!     "steps": [{"event": "$pageview"}, {"event": "signup"}],
//!     "window": {"value": 7, "unit": "day"}
//! })).unwrap();
//! assert_eq!(q.steps.len(), 2);
//! ```

pub mod error;
pub mod event;
pub mod query;
pub mod result;
pub mod time;

pub use error::QueryError;
