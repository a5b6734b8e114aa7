//! What a node needs to act as gateway: its membership, its own shard's transactions, its part
//! in two-phase commits, its connections to the others, and its catalog.

use std::sync::Arc;
use std::time::Duration;

use super::peers::Peers;
use crate::cluster::meta::Meta;
use crate::sql::catalog::Catalog;
use crate::txn::{TwoPhase, TxnManager};

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
    /// Waits (briefly) until this node's map reaches `version`.
    pub async fn wait_for_map(&self, version: u64) {
        self.meta
            .wait_for_version(version, Duration::from_secs(2))
            .await;
    }
}
