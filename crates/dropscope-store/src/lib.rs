//! dropscope-store: the embedded event store.
//!
//! Records (events, persons, groups, cohorts) go through [`Store::append`]
//! (durably, with [`Store::open`]: WAL with group commit, immutable
//! segments, a manifest; see `store.rs`, `wal.rs`, `segment.rs`, `meta.rs`);
//! queries read a [`Snapshot`]: per canonical person, events sorted by
//! (timestamp, ingest order), as columns of dictionary ids.
//!
//! ```
//! use dropscope_store::{Store, Record};
//! use dropscope_core::event::Event;
//! let store = Store::in_memory();
//! store.append(&[Record::Event(Event {
//!     uuid: 1, event: "$pageview".into(), distinct_id: "u1".into(),
//!     timestamp: 1_600_000_000_000, properties: Default::default(),
//! })]).unwrap();
//! let snap = store.snapshot().unwrap();
//! assert_eq!(snap.actor_count(), 1);
//! ```

// Segment columns are mapped in place (segment.rs): their bytes are
// little-endian values.
#[cfg(target_endian = "big")]
compile_error!("dropscope's store maps little-endian segment files in place");

pub mod codec;
pub mod columns;
pub mod dict;
pub mod dictlog;
pub mod error;
pub mod identity;
pub mod meta;
pub mod segment;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod wal;

pub use columns::{EventColumns, EventsView};
pub use dict::Dicts;
pub use error::StoreError;
pub use snapshot::Snapshot;
pub use state::Record;
pub use store::{AppendStats, OpenReport, Store, StoreOptions, StoreStats};
