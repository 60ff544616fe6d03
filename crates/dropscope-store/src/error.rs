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
    /// The file system holding the data directory is full (ENOSPC, or a
    /// quota: EDQUOT). Nothing of the failed operation was acknowledged; the
    /// store stays usable and later writes succeed once space is freed.
    #[error(
        "disk full: no space left writing {path} ({source}); nothing of this write was stored"
    )]
    DiskFull {
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

/// Whether an I/O error means the file system is out of space (or quota).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl StoreError {
    /// An I/O error on `path`, typed [`StoreError::DiskFull`] when the file
    /// system is out of space.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        let path = path.into();
        if is_disk_full(&source) {
            StoreError::DiskFull { path, source }
        } else {
            StoreError::Io { path, source }
        }
    }

    /// Whether this is [`StoreError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}
