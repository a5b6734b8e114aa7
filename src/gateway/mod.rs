//! The gateway: a statement's route from the node that received it to the shards.
//!
//! Every node of a cluster is a gateway. A session on a cluster node runs its statements on the
//! [`Gateway`] (through `sql::Backend`, wired by the server): each transaction is a
//! [`ClusterTxn`] that holds a participant on every shard it touches. Point operations go to the
//! shard that owns the key; point statements are shipped whole to it (`ship.rs`); scans scatter
//! to every shard with their filter and, where possible, partial aggregation or top-N
//! (`pushdown.rs`), and the gateway merges; the commit is one-phase on a single written shard,
//! and two-phase commit across several (`commit.rs`). The gateway keeps no state of its own that
//! a crash could lose: the map says where keys live, and the anchor shard's record says how a
//! two-phase commit ended.

mod commit;
pub mod peers;
mod pushdown;
mod ship;
mod txn;

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::meta::Meta;
use crate::sql::catalog::Catalog;
use crate::txn::{TwoPhase, TxnManager};

pub use peers::Peers;
pub use pushdown::{choose, merge_partials};
pub use txn::ClusterTxn;

/// What a node needs to act as gateway: its membership (identity and map), its own shard's
/// transactions, its part in two-phase commits, and connections to the others.
pub struct Gateway {
    pub meta: Arc<Meta>,
    pub txns: Arc<TxnManager>,
    pub twopc: Arc<TwoPhase>,
    pub peers: Arc<Peers>,
    /// The node's catalog: its version is the map version shards must reach before they run a
    /// statement planned here.
    pub catalog: Arc<Catalog>,
}

impl Gateway {
    /// Begins a transaction across the cluster, or `None` while the node has no map yet.
    pub fn begin(self: &Arc<Self>, age: Option<u64>) -> Option<ClusterTxn> {
        let map = self.meta.map()?;
        Some(ClusterTxn::begin(self.clone(), map, age))
    }

    /// Waits (briefly) until this node's map reaches `version`.
    pub async fn wait_for_map(&self, version: u64) {
        self.meta
            .wait_for_version(version, Duration::from_secs(2))
            .await;
    }
}
