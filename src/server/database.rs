//! The node's SQL backend: the wiring that gives every session its catalog and transactions.
//!
//! A node starts standalone: its sessions run on its own transactions and DDL changes its own
//! catalog. Once it is a member of a cluster (its identity is saved and the map's Raft member
//! runs), it is a gateway: sessions run on [`Gateway`] transactions across the shards, DDL is a
//! change of the cluster map, and the catalog follows the map ([`Database::follow_map`]). The
//! SQL layer sees only the [`Backend`] trait; this is the one place that knows both sides.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::cluster::map::{Change, ClusterMap};
use crate::cluster::meta::Meta;
use crate::error::{Error, Result};
use crate::gateway::{Gateway, Peers};
use crate::sql::backend::{Backend, Prepared, SqlTxn};
use crate::sql::catalog::Catalog;
use crate::sql::execution::Executor;
use crate::sql::local::LocalTxn;
use crate::sql::planner::Plan;
use crate::storage::{Space, Store};
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, TwoPhase, TxnManager};
use crate::types::{QueryResult, Table};

/// How long a node waits for its catalog to reach a map version a request names.
const CATALOG_CATCH_UP: Duration = Duration::from_secs(10);

/// The SQL side of a node: the catalog and the transaction manager, and the node's gateway once
/// it is in a cluster.
pub struct Database {
    pub catalog: Arc<Catalog>,
    pub txns: Arc<TxnManager>,
    /// This node's part in two-phase commits.
    pub twopc: Arc<TwoPhase>,
    /// Connections to the other nodes.
    pub peers: Arc<Peers>,
    gateway: OnceLock<Arc<Gateway>>,
}

impl Database {
    /// Opens the SQL side over a transaction manager, loading the catalog.
    pub fn new(txns: Arc<TxnManager>) -> Result<Self> {
        let catalog = Arc::new(Catalog::load(txns.store.engine.as_ref())?);
        Ok(Self {
            catalog,
            twopc: Arc::new(TwoPhase::new(txns.clone())),
            peers: Arc::new(Peers::default()),
            txns,
            gateway: OnceLock::new(),
        })
    }

    /// Makes this node a gateway of the cluster `meta` belongs to.
    pub fn join_cluster(&self, meta: Arc<Meta>) -> Result<()> {
        let gateway = Arc::new(Gateway {
            meta,
            txns: self.txns.clone(),
            twopc: self.twopc.clone(),
            peers: self.peers.clone(),
            catalog: self.catalog.clone(),
        });
        self.gateway
            .set(gateway)
            .map_err(|_| Error::Internal("cluster membership started twice".into()))
    }

    /// The node's cluster membership, once it has one.
    pub fn meta(&self) -> Option<&Arc<Meta>> {
        self.gateway.get().map(|g| &g.meta)
    }

    /// Waits (briefly) until this node's map reaches `version`.
    pub async fn wait_for_map(&self, version: u64) {
        if let Some(gateway) = self.gateway.get() {
            gateway.wait_for_map(version).await;
        }
    }

    /// Makes the catalog follow a new cluster map: adds its new tables, and drops (with their
    /// rows on this node) the tables it no longer has.
    pub async fn follow_map(&self, map: &ClusterMap) -> Result<()> {
        for table in map.tables.values() {
            match self.catalog.get(&table.name)? {
                Some(t) if t.id == table.id => {}
                Some(old) => {
                    self.drop_local(&old).await?;
                    self.catalog.add(table.clone())?;
                }
                None => self.catalog.add(table.clone())?,
            }
        }
        for name in self.catalog.table_names()? {
            if !map.tables.contains_key(&name) {
                if let Some(t) = self.catalog.get(&name)? {
                    self.drop_local(&t).await?;
                }
            }
        }
        self.catalog.set_version(map.version);
        Ok(())
    }

    /// Deletes a table's rows on this node and removes it from the catalog.
    async fn drop_local(&self, table: &Table) -> Result<()> {
        if self.is_replica() {
            // A replica's rows are its primary's: the primary's deletes reach it through the
            // log, and it commits nothing of its own.
            return self.catalog.remove(&table.name);
        }
        // The oldest possible age: the drop waits for every user of the table instead of
        // losing wait-die to them (the map has already dropped it; this only catches up).
        let mut txn = self.txns.begin(Some(0));
        txn.lock(Resource::Table(table.id), LockMode::Exclusive)
            .await?;
        // With the table locked, take it out of the catalog first: a statement waiting for the
        // lock then finds it gone instead of writing rows that would outlive it.
        self.catalog.remove(&table.name)?;
        for (key, _) in txn.scan(table.id, Intent::Write).await? {
            txn.delete(table.id, key).await?;
        }
        txn.commit().await
    }

    /// Whether this node is a replica of a replicated shard (it serves no keys of its own).
    fn is_replica(&self) -> bool {
        let Some(meta) = self.meta() else {
            return false;
        };
        let me = &meta.identity.node_name;
        self.txns.store.committer.is_wal()
            && meta
                .map()
                .is_some_and(|m| m.shard_of_node(me).is_some() && m.served_shard(me).is_none())
    }

    /// Waits until the catalog reflects map `version` (a request from a node that is ahead);
    /// a retryable error if it does not within 10 s.
    pub async fn catch_up_catalog(&self, version: u64) -> Result<()> {
        if self
            .catalog
            .wait_for_version(version, CATALOG_CATCH_UP)
            .await
        {
            return Ok(());
        }
        Err(Error::serialization(format!(
            "this node's catalog has not caught up with map version {version} yet; retry"
        )))
    }

    /// A checksum of the rows stored on this node: xxh3 of every key and value of the data
    /// space, in key order (for comparing the copies of a shard).
    pub fn checksum(&self) -> Result<u64> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for pair in self.txns.store.engine.scan_prefix(Space::Data, &[]) {
            let (key, value) = pair?;
            hasher.update(&(key.len() as u64).to_be_bytes());
            hasher.update(&key);
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(&value);
        }
        Ok(hasher.digest())
    }

    /// Counts the rows stored on this node (for status output).
    pub fn count_keys(&self) -> Result<u64> {
        self.txns.store.engine.count(Space::Data)
    }

    /// DDL in a cluster: the schema is part of the map, so it changes through Raft; the
    /// statement returns once this node's catalog has applied the change.
    async fn cluster_ddl(&self, meta: &Meta, plan: &Plan) -> Result<QueryResult> {
        let (change, tag) = match plan {
            Plan::CreateTable { table, .. }
                if table.columns.iter().any(|c| c.identity().is_some()) =>
            {
                return Err(Error::not_built_yet(
                    "SERIAL and identity columns in a cluster (sequences allocated through the cluster map)",
                ))
            }
            Plan::CreateTable {
                table,
                if_not_exists,
            } => (
                Change::CreateTable {
                    table: table.clone(),
                    if_not_exists: *if_not_exists,
                },
                "CREATE TABLE",
            ),
            Plan::DropTable { names, if_exists } => (
                Change::DropTable {
                    names: names.clone(),
                    if_exists: *if_exists,
                },
                "DROP TABLE",
            ),
            _ => return Err(Error::Internal("not DDL".into())),
        };
        let version = meta.propose(change).await?;
        if !self
            .catalog
            .wait_for_version(version, CATALOG_CATCH_UP)
            .await
        {
            return Err(Error::Timeout(format!(
                "{tag} is in the cluster map (version {version}) but this node has not applied it yet; check the node log"
            )));
        }
        Ok(QueryResult::tag(tag))
    }
}

#[async_trait]
impl Backend for Database {
    fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn store(&self) -> &Store {
        &self.txns.store
    }

    fn node_tag(&self) -> u64 {
        self.txns.node_tag()
    }

    fn lock_timeout(&self) -> Duration {
        self.txns.lock_timeout
    }

    fn in_cluster(&self) -> bool {
        self.meta().is_some()
    }

    fn begin(&self, age: Option<u64>) -> Box<dyn SqlTxn> {
        if let Some(txn) = self.gateway.get().and_then(|g| g.begin(age)) {
            return Box::new(txn);
        }
        // A standalone node's transactions may carry DDL; a node with a cluster identity but
        // no map yet has no catalog of its own to commit it to.
        let catalog = self.meta().is_none().then(|| self.catalog.clone());
        Box::new(LocalTxn::new(self.txns.begin(age), catalog))
    }

    async fn ship(&self, stmt: &Prepared<'_>, exec: &Executor<'_>) -> Option<Result<QueryResult>> {
        self.gateway.get()?.ship(stmt, &exec.ctx).await
    }

    async fn ddl(&self, plan: &Plan) -> Result<QueryResult> {
        match self.meta() {
            Some(meta) => self.cluster_ddl(meta, plan).await,
            None => crate::sql::ddl::run_local(&self.catalog, &self.txns, plan).await,
        }
    }
}
