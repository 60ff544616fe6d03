//! The store's front door: open, append, snapshot.

use std::sync::Mutex;

use crate::error::StoreError;
use crate::snapshot::Snapshot;
use crate::state::{Applied, Record, State};

/// Counts of what an append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendStats {
    pub stored: u64,
    pub duplicates: u64,
}

/// An event store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
}

impl Store {
    /// A store that lives only in memory (tests, acceptance cases).
    pub fn in_memory() -> Store {
        Store {
            state: Mutex::new(State::new()),
        }
    }

    /// Appends records; returns once they are applied.
    pub fn append(&self, records: &[Record]) -> Result<AppendStats, StoreError> {
        let mut st = self.state.lock().map_err(|_| StoreError::Poisoned)?;
        let mut stats = AppendStats::default();
        for r in records {
            match st.apply(r) {
                Applied::Stored => stats.stored += 1,
                Applied::Duplicate => stats.duplicates += 1,
            }
        }
        Ok(stats)
    }

    /// A consistent read view of everything appended so far.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut st = self.state.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(st.snapshot())
    }

    /// Merges runs so each person's events are in one sorted run.
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut st = self.state.lock().map_err(|_| StoreError::Poisoned)?;
        st.compact_in_memory();
        Ok(())
    }
}
