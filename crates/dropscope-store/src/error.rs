//! Store errors.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("unsupported format version {version} in {path}")]
    Version { path: PathBuf, version: u32 },
    #[error("store lock poisoned by an earlier panic")]
    Poisoned,
    #[error("the write-ahead log failed earlier ({0}); reopen the store")]
    WalFailed(String),
    #[error("background compaction failed: {0}")]
    Background(String),
    #[error("data directory {path} is in use by another open store")]
    Locked { path: PathBuf },
}
