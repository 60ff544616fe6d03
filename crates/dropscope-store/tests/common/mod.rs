//! Shared by the store's integration tests.

use dropscope_store::StoreOptions;

/// A durable store without fsync (tests) that flushes only when asked and
/// never compacts in the background.
pub fn opts() -> StoreOptions {
    StoreOptions {
        fsync: false,
        background_compaction: false,
        ..Default::default()
    }
}
