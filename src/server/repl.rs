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
//! **Roles change with the map** (DESIGN §6.2). When a map names a replica the shard's primary
//! (a promotion), the node stops its replica driver and waits until everything it handed the
//! committer is done, takes its log as its own again, re-acquires the locks of the prepared
//! transactions its log holds ([`crate::txn::distributed::TwoPhase::load`]) before it serves
//! anything, and starts the primary driver, which commits the log's tail of the old epoch
//! (with the in-sync members that stay, the old primary out) before it lets writes and
//! reads in. When a map
//! names another node the primary of a newer epoch (this node was deposed), the primary
//! driver steps down (its entries in flight are answered 40003) and stops, after sealing the
//! log ([`crate::storage::Committer::seal`]: entries the core never heard were durable are
//! answered 40003 too, and submits that got past the gate are refused), writes are refused
//! as on any replica (25006), the node forgets its 2PC state (the new primary's now), and the
//! replica driver starts: the new primary's stream cuts whatever tail this log has past the
//! entries the two share. Until the change is done, writes and reads are refused as not ready
//! (retryable).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::database::Database;
use super::repl_primary::{self, PrimaryDriver, Setup};
use super::repl_replica::{self, Inbound, ReplicaDriver};
use crate::cluster::map::ClusterMap;
use crate::error::{Error, Result};
use crate::protocol::ReplicaProgress;
use crate::storage::Store;

/// The log retention by default (`--log-retention`): how many entries behind its head a
/// primary's log keeps at most for a lagging replica, and how many behind its applied LSN a
/// replica's log keeps (for the replicas it would serve once promoted).
pub const DEFAULT_RETENTION: u64 = 100_000;

/// The driver a node runs.
enum Role {
    /// None yet: not replicated, not a member, or not started.
    Idle,
    Primary(Arc<PrimaryDriver>),
    Replica(Arc<ReplicaDriver>),
}

/// A node's replication runtime.
pub struct Runtime {
    /// Why a submit is refused now, if it is.
    refusal: Arc<Mutex<Option<Error>>>,
    /// Why reading the shard is refused now, if it is.
    read_refusal: Arc<Mutex<Option<Error>>>,
    role: Mutex<Role>,
    /// Serialises role changes (a promotion waits for the replica driver to stop).
    changing: tokio::sync::Mutex<()>,
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
            role: Mutex::new(Role::Idle),
            changing: tokio::sync::Mutex::new(()),
            retention,
        }
    }

    fn refuse(&self, why: Option<Error>) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = why;
        }
    }

    fn refuse_reads(&self, why: Option<Error>) {
        if let Ok(mut r) = self.read_refusal.lock() {
            *r = why;
        }
    }

    fn primary(&self) -> Option<Arc<PrimaryDriver>> {
        match &*self.role.lock().ok()? {
            Role::Primary(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn replica(&self) -> Option<Arc<ReplicaDriver>> {
        match &*self.role.lock().ok()? {
            Role::Replica(r) => Some(r.clone()),
            _ => None,
        }
    }

    fn set_role(&self, role: Role) {
        if let Ok(mut r) = self.role.lock() {
            *r = role;
        }
    }

    /// Follows a map: switches the store to WAL mode and starts the driver of the node's role,
    /// the first time the map says the node's shard is replicated; changes the role when the
    /// map does (a promotion); tells a running primary driver about every map. Called before
    /// the catalog follows the map. If it cannot (the node has commits of its own, a driver
    /// cannot start), writes stay refused with the reason: a node of a replicated shard never
    /// commits alone.
    pub async fn follow(&self, db: &Database, map: &Arc<ClusterMap>) -> Result<()> {
        let result = self.start(db, map).await;
        if let Err(e) = &result {
            if self.primary().is_none() && map.replication.factor >= 2 {
                self.refuse(Some(e.clone()));
            }
        }
        result
    }

    async fn start(&self, db: &Database, map: &Arc<ClusterMap>) -> Result<()> {
        if map.replication.factor < 2 {
            return Ok(());
        }
        let Some(meta) = db.meta() else {
            return Ok(());
        };
        let me = &meta.identity.node_name;
        let Some((shard, info)) = map.shard_of_node(me) else {
            return Ok(());
        };
        let _guard = self.changing.lock().await;
        let primary = info.primary == *me;
        match (self.primary(), self.replica()) {
            (Some(driver), _) if primary => {
                driver.map(map.clone());
                return Ok(());
            }
            (Some(driver), _) => {
                // Deposed: another node is the primary of a newer epoch.
                self.refuse(Some(Error::not_ready(format!(
                    "node {me} is no longer the primary of shard {shard}: it becomes a replica \
                     of {}; retry",
                    info.primary
                ))));
                driver.stop(map.clone()).await;
                self.set_role(Role::Idle);
                let open = db.twopc.abort_all_open();
                tracing::warn!(
                    shard,
                    epoch = info.epoch,
                    primary = %info.primary,
                    open,
                    "replication: deposed; this node becomes a replica (its open participant \
                     transactions rolled back)"
                );
            }
            (None, Some(_)) if !primary => return Ok(()),
            (None, Some(driver)) => {
                self.refuse(Some(Error::not_ready(format!(
                    "node {me} is being promoted to primary of shard {shard}; retry"
                ))));
                self.refuse_reads(Some(Error::not_ready(format!(
                    "node {me} is being promoted to primary of shard {shard}; retry"
                ))));
                driver.stop().await;
                self.set_role(Role::Idle);
                crate::failpoint::crash_point("promote-before-take-over");
                self.take_over(db, shard, info).await?;
            }
            // A promotion that failed part way (its error refuses writes), or one this node
            // did not finish before it restarted: its log holds nothing of the epoch it is
            // the primary of yet, so the epoch may not begin where its log ends. Decided from
            // the durable log, not from memory a restart loses.
            (None, None)
                if primary
                    && (db.txns.store.committer.is_foreign()
                        || (db.txns.store.committer.is_wal()
                            && db.txns.store.log_state()?.last.epoch < info.epoch)) =>
            {
                self.take_over(db, shard, info).await?;
            }
            (None, None) => {}
        }
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
        if primary {
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
            self.set_role(Role::Primary(driver));
        } else {
            // As a PostgreSQL hot standby answers a write: 25006.
            self.refuse(Some(Error::replica_refusal(format!(
                "node {me} is a replica of shard {shard}: writes go to its primary {}",
                info.primary
            ))));
            store.committer.set_foreign(true);
            // A replica serves no keys (shard requests are fenced): nothing to refuse reads for.
            self.refuse_reads(None);
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
            let driver = repl_replica::start(shard, store, self.retention)?;
            self.set_role(Role::Replica(Arc::new(driver)));
            tracing::info!(shard, primary = %info.primary, "replication: replica driver started");
        }
        Ok(())
    }

    /// Takes the log over from the stopped replica driver: cuts it back to where the new
    /// epoch begins, takes up the prepared 2PC state it holds, and only then counts it as this
    /// node's own (so a promotion that fails here is tried again on the next map).
    async fn take_over(
        &self,
        db: &Database,
        shard: crate::cluster::ring::ShardId,
        info: &crate::cluster::map::ShardInfo,
    ) -> Result<()> {
        let store = &db.txns.store;
        // The fence made the log end where the new epoch begins; a log that ends elsewhere is
        // cut back to it (entries after it are the old epoch's and never committed) or,
        // shorter (an append the fence counted did not become durable), cannot serve the
        // epoch.
        let first = info.epochs.last().map_or(1, |&(_, first)| first);
        let mut state = store.log_state()?;
        if state.last.lsn >= first {
            store.committer.truncate_after(first - 1).await?;
            state = store.log_state()?;
        }
        if state.last.lsn + 1 < first {
            return Err(Error::Corrupt(format!(
                "the log ends at {} but epoch {} begins at {first}: entries the promotion \
                 counted on are missing",
                state.last, info.epoch
            )));
        }
        // The prepared transactions in its log are this node's to resolve now: their locks
        // are taken before the primary driver lets anything in (after forgetting what a
        // failed try took up, so no transaction waits for its own earlier copy's locks).
        db.twopc.forget_loaded();
        db.twopc.load().await?;
        store.committer.set_foreign(false);
        tracing::info!(
            shard,
            epoch = info.epoch,
            last = %state.last,
            applied = %state.applied,
            "replication: promoted; this node becomes the primary"
        );
        Ok(())
    }

    /// Where the RPC listener hands replication requests, if this node runs as a replica.
    pub fn replica_inbox(&self) -> Result<mpsc::Sender<Inbound>> {
        self.replica().map(|r| r.inbox()).ok_or_else(|| {
            Error::Refused(
                "this node does not run as a replica (yet): no replication stream is taken".into(),
            )
        })
    }

    /// A switchover of `shard` from this node, its primary in `epoch`, to `to` (see
    /// [`PrimaryDriver::hand_over`]).
    pub async fn hand_over(
        &self,
        shard: crate::cluster::ring::ShardId,
        epoch: u64,
        to: &str,
        drain: std::time::Duration,
    ) -> Result<crate::protocol::HandedOver> {
        let Some(driver) = self.primary() else {
            return Err(Error::Refused(format!(
                "this node is not the primary of shard {shard}: a switchover is sent to the \
                 shard's primary"
            )));
        };
        driver.hand_over(shard, epoch, to, drain).await
    }

    /// On a primary, its replicas' progress.
    pub fn progress(&self) -> Vec<ReplicaProgress> {
        self.primary().map(|p| p.progress()).unwrap_or_default()
    }
}

fn starting_refusal() -> Error {
    Error::not_ready(
        "replication on this node is starting (its store keeps a replicated log); retry",
    )
}
