//! Durable storage of one node: the engine, the key layout and the commit log.
//!
//! [`Store`] bundles an [`Engine`] with the group [`Committer`]; it is opened once per node on
//! its data directory, which it locks so that a second process cannot open it. The engine trait
//! (iterator scans, snapshots, range deletes) is in `engine`, its fjall implementation in `disk`
//! (which rotates memtables full of shadowed versions, counted in `shadowed`),
//! and the test suite that both engines pass in `suite`.

pub mod disk;
pub mod engine;
pub mod keycode;
pub mod log;
mod shadowed;
pub mod store;
#[cfg(test)]
mod suite;

pub use engine::{Engine, KeyValue, Scan, Snapshot, Space, Write, MAX_KEY, MAX_VALUE};
pub use log::{Committer, Lsn};
pub use store::Store;
