//! Shared by the ClickHouse integration tests: starts the private server
//! through scripts/clickhouse.sh (installing it if missing) and hands out
//! fresh databases.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use dropscope_clickhouse::ClickHouse;
use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_core::QueryError;
use dropscope_store::Record;
use dropscope_testkit::Backend;

pub fn workspace() -> PathBuf {
    dropscope_testkit::clickhouse_server::workspace()
}

/// The server's URL, after starting it (once per test binary). Panics when
/// it cannot be started: a missing ClickHouse fails the tests.
pub fn server() -> &'static str {
    dropscope_testkit::clickhouse_server::url()
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
