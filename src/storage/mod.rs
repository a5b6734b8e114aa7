//! Durable storage of one node: the engine, the key layout and the commit log.
//!
//! [`Store`] bundles an [`Engine`] with the group [`Committer`]; it is opened once per node on
//! its data directory, which it locks so that a second process cannot open it. The engine trait
//! (iterator scans, snapshots, range deletes) is in `engine`, its fjall implementation in `disk`
//! (which rotates memtables full of shadowed versions, counted in `shadowed`),
//! and the test suite that both engines pass in `suite`.
//!
//! The log: its stored form and recovered state in `record`, the committer in `log` (Direct
//! mode, one copy) and `wal` (WAL mode, the log as a replicated shard's write-ahead log), what
//! both modes share in `group`, and the read side of a replication snapshot in `snapshot`. Their
//! tests, on both engines, are in `wal_tests`.

pub mod disk;
pub mod engine;
mod group;
pub mod keycode;
pub mod log;
pub mod record;
mod shadowed;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod suite;
mod wal;
#[cfg(test)]
mod wal_tests;

pub use engine::{Engine, KeyValue, Scan, Snapshot, Space, Write, MAX_KEY, MAX_VALUE};
pub use log::{Committer, Lsn};
pub use record::{log_id_at, LogEntry, LogId, LogRead, WalState};
pub use snapshot::{Cursor, ShardSnapshot, SnapshotBatch};
pub use store::{Mode, Store};
