//! The gateway: a statement's route from the node that received it to the shards.
//!
//! Every node of a cluster is a gateway. A session on a cluster node runs its statements on the
//! [`Gateway`] (through `sql::Backend`, wired by the server): each transaction is a
//! [`ClusterTxn`] that holds a participant on every shard it touches. Point operations go to the
//! shard that owns the key; point statements are shipped whole to it (`ship.rs`); scans scatter
//! to every shard with their filter and, where possible, partial aggregation or top-N
//! (`pushdown.rs`), and the gateway merges; the commit is one-phase on a single written shard,
//! and two-phase commit across several (`commit.rs`); savepoints mark and roll back every
//! participant (`savepoint.rs`). The gateway keeps no state of its own that
//! a crash could lose: the map says where keys live, and the anchor shard's record says how a
//! two-phase commit ended.

mod commit;
mod context;
pub mod peers;
mod pushdown;
mod savepoint;
mod ship;
mod statement;
mod txn;

pub use context::Gateway;
pub use peers::Peers;
pub use pushdown::{choose, merge_partials};
pub use txn::ClusterTxn;
