//! The replication runtime of a node (DESIGN §6.1): which driver runs, the store's mode, and
//! the gate in front of the committer.
//!
//! A node of a shard with `replication.factor` of 2 or more keeps its log as the shard's
//! write-ahead log (WAL mode); with factor 1, and standalone, it stays in Direct mode,
//! unchanged. The mode is fixed when the store opens; the first map of factor ≥ 2 that a
//! member sees switches its empty store to WAL mode and records that durably
//! ([`crate::storage::Store::use_wal`]) before the node commits anything in the cluster, so a
//! restart opens the store in WAL mode again.
//!
//! Then, by the node's role in the map:
//!
//! * the shard's **primary** runs the primary driver ([`super::repl_primary`]): it streams the
//!   log to the replicas, moves the commit LSN, and proposes in-sync changes;
//! * a **replica** runs the replica driver ([`super::repl_replica`]), which the RPC listener
//!   feeds with the primary's requests in the order they arrive ([`Runtime::replica_inbox`]).
//!   A replica serves no keys: shard requests are answered `WrongShard` (it is not the
//!   primary), and it commits nothing of its own.
//!
//! **The gate.** In WAL mode nothing applies a submitted entry until a driver commits it, so
//! every submit is first asked the runtime's refusal: until a driver runs, on a replica, below
//! `min_in_sync` (53000), and while a restarted primary's old tail is not committed yet, a
//! write fails at once with a clear, retryable error instead of waiting. Reads of the shard
//! have a gate too: until a driver runs on a restarted node, and while a restarted primary's
//! old tail is not committed (its apply was not fsynced, so rows of acknowledged commits may
//! be missing until the tail is applied again), a transaction is refused at its first
//! operation on the shard with 57P03, retryable.
//!
//! Roles are read once, when the drivers start: promotion (a replica becoming primary) is the
//! next issue's work.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use super::database::Database;
use super::repl_primary::{self, PrimaryDriver, Setup};
use super::repl_replica::{self, Inbound};
use crate::cluster::map::ClusterMap;
use crate::error::{Error, Result};
use crate::protocol::ReplicaProgress;
use crate::storage::Store;

/// The log retention by default (`--log-retention`): how many entries behind its head a
/// primary's log keeps at most for a lagging replica, and how many behind its applied LSN a
/// replica's log keeps (for the replicas it would serve once promoted).
pub const DEFAULT_RETENTION: u64 = 100_000;

/// A node's replication runtime.
pub struct Runtime {
    /// Why a submit is refused now, if it is.
    refusal: Arc<Mutex<Option<Error>>>,
    /// Why reading the shard is refused now, if it is.
    read_refusal: Arc<Mutex<Option<Error>>>,
    primary: OnceLock<Arc<PrimaryDriver>>,
    replica: OnceLock<mpsc::Sender<Inbound>>,
    /// Serialises starting the drivers.
    starting: Mutex<()>,
    /// The log retention: entries behind its head a primary keeps at most for lagging
    /// replicas, and entries behind its applied LSN a replica keeps.
    retention: u64,
}

impl Runtime {
    /// The runtime of a node whose store is `store`: puts the gate in front of its committer.
    /// A store already in WAL mode (a restart) refuses writes until a driver runs.
    pub fn new(store: &Store, retention: u64) -> Self {
        let refusal = Arc::new(Mutex::new(store.committer.is_wal().then(starting_refusal)));
        let gate = refusal.clone();
        store
            .committer
            .set_gate(Arc::new(move || gate.lock().ok().and_then(|r| r.clone())));
        let read_refusal = Arc::new(Mutex::new(store.committer.is_wal().then(starting_refusal)));
        let read_gate = read_refusal.clone();
        store.committer.set_read_gate(Arc::new(move || {
            read_gate.lock().ok().and_then(|r| r.clone())
        }));
        Self {
            refusal,
            read_refusal,
            primary: OnceLock::new(),
            replica: OnceLock::new(),
            starting: Mutex::new(()),
            retention,
        }
    }

    fn refuse(&self, why: Option<Error>) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = why;
        }
    }

    /// Follows a map: switches the store to WAL mode and starts the driver of the node's role,
    /// the first time the map says the node's shard is replicated; tells a running primary
    /// driver about every map. Called before the catalog follows the map. If it cannot (the
    /// node has commits of its own, a driver cannot start), writes stay refused with the
    /// reason: a node of a replicated shard never commits alone.
    pub fn follow(&self, db: &Database, map: &Arc<ClusterMap>) -> Result<()> {
        let result = self.start(db, map);
        if let Err(e) = &result {
            if self.primary.get().is_none() && map.replication.factor >= 2 {
                self.refuse(Some(e.clone()));
            }
        }
        result
    }

    fn start(&self, db: &Database, map: &Arc<ClusterMap>) -> Result<()> {
        if let Some(primary) = self.primary.get() {
            primary.map(map.clone());
            return Ok(());
        }
        if self.replica.get().is_some() || map.replication.factor < 2 {
            return Ok(());
        }
        let Some(meta) = db.meta() else {
            return Ok(());
        };
        let me = &meta.identity.node_name;
        let Some((shard, info)) = map.shard_of_node(me) else {
            return Ok(());
        };
        let _guard = self
            .starting
            .lock()
            .map_err(|_| Error::Internal("replication start lock".into()))?;
        let store = db.txns.store.clone();
        if !store.committer.is_wal() {
            let state = store.log_state()?;
            if state.last.lsn > 0 {
                return Err(Error::Refused(format!(
                    "node {me} has {} commits of its own in Direct mode; a node of a \
                     replicated shard needs an empty data directory",
                    state.last.lsn
                )));
            }
            self.refuse(Some(starting_refusal()));
            store.use_wal()?;
            tracing::info!(
                "replication: the store is in WAL mode (factor {})",
                map.replication.factor
            );
        }
        if info.primary == *me {
            let setup = Setup {
                shard,
                me: me.clone(),
                store,
                meta: meta.clone(),
                refusal: self.refusal.clone(),
                read_refusal: self.read_refusal.clone(),
                retention: self.retention,
            };
            let driver = repl_primary::start(setup, map)?;
            let _ = self.primary.set(driver);
        } else {
            // As a PostgreSQL hot standby answers a write: 25006.
            self.refuse(Some(Error::sql(
                crate::error::sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!(
                    "node {me} is a replica of shard {shard}: writes go to its primary {}",
                    info.primary
                ),
            )));
            store.committer.set_foreign(true);
            // A replica serves no keys (shard requests are fenced): nothing to refuse reads for.
            if let Ok(mut r) = self.read_refusal.lock() {
                *r = None;
            }
            // Its copy of the primary's in-doubt transactions is the primary's to resolve.
            let (prepared, decisions) = db.twopc.forget_loaded();
            if prepared + decisions > 0 {
                tracing::info!(
                    shard,
                    prepared,
                    decisions,
                    "replication: left the copied 2PC state to the primary"
                );
            }
            let inbox = repl_replica::start(shard, store, &info.epochs, self.retention)?;
            let _ = self.replica.set(inbox);
            tracing::info!(shard, primary = %info.primary, "replication: replica driver started");
        }
        Ok(())
    }

    /// Where the RPC listener hands replication requests, if this node runs as a replica.
    pub fn replica_inbox(&self) -> Result<mpsc::Sender<Inbound>> {
        self.replica.get().cloned().ok_or_else(|| {
            Error::Refused(
                "this node does not run as a replica (yet): no replication stream is taken".into(),
            )
        })
    }

    /// On a primary, its replicas' progress.
    pub fn progress(&self) -> Vec<ReplicaProgress> {
        self.primary.get().map(|p| p.progress()).unwrap_or_default()
    }
}

fn starting_refusal() -> Error {
    Error::not_ready(
        "replication on this node is starting (its store keeps a replicated log); retry",
    )
}
