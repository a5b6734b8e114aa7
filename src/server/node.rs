//! A running node's shared state, and what it reports about itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::database::Database;
use crate::cluster::meta::Meta;
use crate::error::Result;
use crate::protocol::NodeStatus;

/// A running node's shared state.
pub struct Node {
    pub name: String,
    pub db: Arc<Database>,
    pub rpc_addr: SocketAddr,
    pub sql_addr: SocketAddr,
    /// Asked to stop (by `ddb stop`).
    pub stop: tokio::sync::Notify,
    /// Serialises joining a cluster.
    pub join_lock: tokio::sync::Mutex<()>,
    /// Log shipping, when the node's shard has replicas.
    pub repl: super::repl::Runtime,
}

impl Node {
    /// The node's cluster membership, once it has joined one.
    pub fn meta(&self) -> Option<&Arc<Meta>> {
        self.db.meta()
    }

    /// The node's status.
    pub fn status(&self) -> Result<NodeStatus> {
        let meta = self.meta();
        let (prepared, oldest) = self.db.twopc.prepared_summary();
        let stats = &self.db.twopc.stats;
        let log = self.db.txns.store.log_state()?;
        Ok(NodeStatus {
            prepared,
            oldest_prepared_ms: oldest.as_millis() as u64,
            decisions: self.db.twopc.decision_count(),
            two_phase_commits: stats.distributed.load(Ordering::Relaxed),
            one_phase_commits: stats.single.load(Ordering::Relaxed),
            twopc_prepare_us: stats.prepare_us.load(Ordering::Relaxed),
            twopc_decide_us: stats.decide_us.load(Ordering::Relaxed),
            twopc_finish_us: stats.finish_us.load(Ordering::Relaxed),
            cluster: meta.map(|m| m.identity.cluster_name.clone()),
            raft: meta
                .map(|m| m.role().to_string())
                .unwrap_or_else(|| "none".into()),
            map_version: meta.and_then(|m| m.map()).map(|m| m.version).unwrap_or(0),
            pid: std::process::id(),
            name: self.name.clone(),
            rpc_addr: self.rpc_addr.to_string(),
            sql_addr: self.sql_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            lsn: log.last.lsn,
            log_start: log.first(),
            applied_lsn: self.db.txns.store.applied_lsn()?,
            write_refusal: self
                .db
                .txns
                .store
                .committer
                .refusal()
                .map(|e| e.to_string()),
            checksum: self.db.checksum()?,
            rolled_back: super::repl_replica::rolled_back(&self.db.txns.store)?,
            replicas: self.repl.progress(),
            keys: self.db.count_keys()?,
            locks: self.db.txns.locks.locked_resources() as u64,
            commits: self
                .db
                .txns
                .store
                .committer
                .stats
                .commits
                .load(Ordering::Relaxed),
            fsyncs: self
                .db
                .txns
                .store
                .committer
                .stats
                .groups
                .load(Ordering::Relaxed),
        })
    }
}
