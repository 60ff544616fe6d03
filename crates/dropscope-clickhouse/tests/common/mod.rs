//! Shared by the ClickHouse integration tests: starts the private server
//! through scripts/clickhouse.sh (installing it if missing) and hands out
//! fresh databases.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use dropscope_clickhouse::ClickHouse;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_core::QueryError;
use dropscope_store::Record;
use dropscope_testkit::Backend;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The server's URL, after starting it (once per test binary). Panics when
/// it cannot be started: a missing ClickHouse fails the tests.
pub fn server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CLICKHOUSE_URL") {
            return url;
        }
        let script = workspace().join("scripts/clickhouse.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/clickhouse.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::env::var("CH_HTTP_PORT").unwrap_or_else(|_| "18123".into());
        format!("http://127.0.0.1:{port}")
    })
}

/// A backend on a database of its own, dropped with it.
pub struct Fresh(pub ClickHouse);

impl Fresh {
    pub fn new(prefix: &str) -> Result<Fresh, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let db = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ch = ClickHouse::open(server(), &db)?;
        ch.drop_database()?;
        Ok(Fresh(ClickHouse::open(server(), &db)?))
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.0.drop_database();
    }
}

impl Backend for Fresh {
    fn load(&mut self, records: &[Record]) -> Result<(), String> {
        self.0.load(records)
    }

    fn query(&self, q: &FunnelQuery) -> Result<QueryResult, QueryError> {
        self.0.query(q)
    }
}
