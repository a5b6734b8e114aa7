//! The gateway: a transaction that spans the shards of a cluster.
//!
//! Every node is a gateway. A statement is planned here, and its row operations go to the
//! primary of the shard that owns each key. This node's own shard is served in-process, and
//! other shards over RPC as [`ShardRequest`]s. A point operation goes to one shard; a scan goes
//! to every shard with its filter pushed down, and the rows are merged here (sorting, grouping,
//! aggregation and limits run on the merged rows).
//!
//! Each shard that a transaction touches holds a participant transaction with the locks of what
//! it read or wrote; all of them use the gateway transaction's age, so wait-die orders them the
//! same way on every shard. The commit (`router/commit.rs`) is one-phase on the single shard that was
//! written, and the read-only participants release their locks after it; a transaction that
//! wrote to several shards commits by two-phase commit ([`crate::txn::twopc`]).
//!
//! Every request carries the map version the gateway routed with. A shard that does not own the
//! key under its (newer) map answers `WrongShard`; the statement then fails as retryable, and an
//! autocommit statement is retried with the fresh map.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::cluster::map::ClusterMap;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::{Request, Response};

use crate::sql::ast::Statement;
use crate::sql::execution::QueryResult;
use crate::sql::expr::{Context, Expr};
use crate::sql::pushdown::Pushdown;
use crate::sql::rows::{KeyedRows, RowTxn};
use crate::sql::session::Database;
use crate::sql::types::{DataType, Value};
use crate::txn::lock::LockMode;
use crate::txn::twopc::Outcome;
use crate::txn::{Intent, Transaction};

mod commit;

/// How long the gateway waits to connect to another shard's primary.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A row operation for one shard's participant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardOp {
    Get {
        table: u32,
        key: Vec<u8>,
        intent: Intent,
    },
    Scan {
        table: u32,
        intent: Intent,
        filter: Option<Expr>,
        params: Vec<Value>,
        now: i64,
    },
    /// A scan with work pushed down (partial aggregation, top-N).
    ScanPushdown {
        table: u32,
        filter: Option<Expr>,
        push: Pushdown,
        params: Vec<Value>,
        now: i64,
    },
    Put {
        table: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: u32,
        key: Vec<u8>,
    },
    /// A whole statement on one key of this shard, run in the transaction's part here.
    Execute {
        stmt: Statement,
        params: Vec<Value>,
        param_types: Vec<DataType>,
        /// The statement's time at the gateway, so `now()` means the same on both sides.
        now: i64,
        /// The catalog version the gateway planned with; the shard waits to have it.
        catalog_version: u64,
    },
    /// One-phase commit: this is the only shard the transaction wrote.
    Commit,
    /// Rolls back an open part, or aborts a prepared one.
    Rollback,
    /// Phase one: log the write set and lock set, keep the locks, vote.
    Prepare {
        anchor: ShardId,
        participants: Vec<ShardId>,
    },
    /// The commit point: the anchor commits its writes with the `COMMITTED` record.
    CommitAnchor {
        participants: Vec<ShardId>,
    },
    /// Phase two at a prepared participant.
    CommitPrepared,
    /// Recovery asks the anchor for the outcome.
    Resolve,
    /// Garbage collection asks whether the transaction is still prepared here.
    IsPrepared,
    /// Every participant applied the commit: the anchor drops its record.
    Forget,
}

/// A request to a shard's primary on behalf of a gateway transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRequest {
    /// The gateway's transaction id: unique in the cluster (a fresh timestamp carrying the
    /// gateway's node tag).
    pub txn: u64,
    /// The wait-die age of the transaction.
    pub age: u64,
    /// The shard the gateway believes it is talking to.
    pub shard: ShardId,
    /// The map version the gateway routed with.
    pub map_version: u64,
    /// The shard's epoch under that map: a message for an older primary is refused.
    pub epoch: u64,
    pub op: ShardOp,
}

/// A participant's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardReply {
    Row(Option<Vec<u8>>),
    Rows(KeyedRows),
    /// Output rows of a pushed-down scan.
    Values(Vec<Vec<Value>>),
    /// The result of a statement run by [`ShardOp::Execute`], and whether the transaction has
    /// written anything on this shard so far.
    Executed {
        result: QueryResult,
        wrote: bool,
    },
    Done,
    /// The outcome of a transaction anchored here; `None` while it is being decided.
    Outcome(Option<Outcome>),
    /// Whether the transaction is prepared here.
    Prepared(bool),
    /// This node does not own the key (or is not the shard's primary) under map `version`.
    WrongShard {
        version: u64,
    },
}

/// The ring token stored in a row key (bytes 4..12, after the table id).
pub fn key_token(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(4..12)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// RPC connections to the other nodes, one per node, reopened after a failure.
#[derive(Default)]
pub struct Peers {
    clients: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
}

impl Peers {
    /// The connection to `addr`, opened (and kept) on first use.
    pub async fn get(&self, addr: &str, cluster: &str) -> Result<Arc<Client>> {
        if let Some(c) = self.clients.lock().await.get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        // Connect without holding the pool: a dead node must not stall connections to others.
        let c = Arc::new(
            Client::connect_to(addr, PEER_CONNECT_TIMEOUT, Some(cluster.to_string())).await?,
        );
        let mut clients = self.clients.lock().await;
        match clients.get(addr) {
            // Another task connected meanwhile: use one connection.
            Some(existing) if !existing.is_closed() => Ok(existing.clone()),
            _ => {
                clients.insert(addr.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    /// Drops the connection to `addr` (it failed); the next use reconnects.
    pub async fn forget(&self, addr: &str) {
        self.clients.lock().await.remove(addr);
    }
}

/// A shard's participant as the gateway holds it.
enum Part {
    Local(Transaction),
    Remote {
        node: String,
        addr: String,
        client: Arc<Client>,
    },
}

/// A transaction across the shards of a cluster, driven by this node as gateway.
pub struct ClusterTxn {
    db: Arc<Database>,
    map: Arc<ClusterMap>,
    cluster: String,
    my_shard: Option<ShardId>,
    id: u64,
    age: u64,
    parts: BTreeMap<ShardId, Part>,
    /// Written shards, in the order of their first write (the first is the anchor).
    written: Vec<ShardId>,
    retry: bool,
    finished: bool,
}

impl ClusterTxn {
    /// Begins a gateway transaction under `map`.
    pub fn begin(
        db: Arc<Database>,
        map: Arc<ClusterMap>,
        cluster: String,
        me: &str,
        age: Option<u64>,
    ) -> Self {
        let my_shard = map.node(me).map(|n| n.shard);
        let age = age.unwrap_or_else(|| db.txns.new_age());
        // A fresh timestamp: unique in the cluster (it carries this node's tag), even for a
        // retried statement that keeps its age.
        let id = db.txns.new_age();
        Self {
            db,
            map,
            cluster,
            my_shard,
            id,
            age,
            parts: BTreeMap::new(),
            written: Vec::new(),
            retry: false,
            finished: false,
        }
    }

    fn shard_of(&self, key: &[u8]) -> Result<ShardId> {
        let token =
            key_token(key).ok_or_else(|| Error::Internal("row key without a token".into()))?;
        self.map
            .shard_of_token(token)
            .ok_or_else(|| Error::Internal("the ring is empty".into()))
    }

    /// The participant of `shard`, opened on first use.
    async fn part(&mut self, shard: ShardId) -> Result<&mut Part> {
        if !self.parts.contains_key(&shard) {
            let part = if Some(shard) == self.my_shard {
                Part::Local(self.db.txns.begin(Some(self.age)))
            } else {
                let (node, info) = self.map.primary(shard).ok_or_else(|| {
                    Error::Internal(format!("shard {shard} has no primary in the map"))
                })?;
                let (node, addr) = (node.to_string(), info.rpc_addr.clone());
                let client = self
                    .db
                    .peers
                    .get(&addr, &self.cluster)
                    .await
                    .map_err(|e| unreachable(shard, &node, e))?;
                Part::Remote { node, addr, client }
            };
            self.parts.insert(shard, part);
        }
        self.parts
            .get_mut(&shard)
            .ok_or_else(|| Error::Internal("participant vanished".into()))
    }

    fn request(&self, shard: ShardId, op: ShardOp) -> ShardRequest {
        ShardRequest {
            txn: self.id,
            age: self.age,
            shard,
            map_version: self.map.version,
            epoch: self.map.shards.get(&shard).map_or(0, |s| s.epoch),
            op,
        }
    }

    /// Sends one operation to a remote participant.
    async fn remote(&mut self, shard: ShardId, op: ShardOp) -> Result<ShardReply> {
        let req = self.request(shard, op);
        let Some(Part::Remote { node, addr, client }) = self.parts.get(&shard) else {
            return Err(Error::Internal("not a remote participant".into()));
        };
        let (node, addr, client) = (node.clone(), addr.clone(), client.clone());
        let reply = call(&client, req).await;
        self.settle(shard, &node, &addr, reply).await
    }

    /// Interprets a participant's answer: a stale map or a wait-die loss makes the transaction
    /// retryable, and an unreachable node is dropped from the pool and named in the error.
    async fn settle(
        &mut self,
        shard: ShardId,
        node: &str,
        addr: &str,
        reply: Result<ShardReply>,
    ) -> Result<ShardReply> {
        match reply {
            Ok(ShardReply::WrongShard { version }) => {
                self.retry = true;
                self.db.wait_for_map(version).await;
                Err(Error::serialization(format!(
                    "shard {shard} moved (map version {} → {version}); retry the transaction",
                    self.map.version
                )))
            }
            Ok(reply) => Ok(reply),
            Err(e) => {
                if e.is_retryable() {
                    self.retry = true;
                }
                if matches!(e, Error::Unreachable(_)) {
                    self.db.peers.forget(addr).await;
                }
                Err(unreachable(shard, node, e))
            }
        }
    }

    /// Sends `op` to every other shard's participant at once and gathers the replies. Returns
    /// this node's own participant (if its shard is in the cluster) for the caller to run the
    /// local half, after the remote halves have been answered. Remote shards work in parallel
    /// with each other; the local half runs while nothing else is waiting on this task.
    async fn scatter(
        &mut self,
        op: ShardOp,
    ) -> Result<(Option<&mut Transaction>, Vec<ShardReply>)> {
        let shards: Vec<ShardId> = self.map.shards.keys().copied().collect();
        for &s in &shards {
            self.part(s).await?;
        }
        let mut remote = Vec::new();
        for &s in &shards {
            if let Some(Part::Remote { node, addr, client }) = self.parts.get(&s) {
                let (req, client, node, addr) = (
                    self.request(s, op.clone()),
                    client.clone(),
                    node.clone(),
                    addr.clone(),
                );
                remote.push(async move { (s, node, addr, call(&client, req).await) });
            }
        }
        let mut replies = Vec::with_capacity(remote.len());
        for (shard, node, addr, reply) in futures::future::join_all(remote).await {
            replies.push(self.settle(shard, &node, &addr, reply).await?);
        }
        let local = match self.my_shard.and_then(|s| self.parts.get_mut(&s)) {
            Some(Part::Local(t)) => Some(t),
            _ => None,
        };
        Ok((local, replies))
    }

    fn note_write(&mut self, shard: ShardId) {
        if !self.written.contains(&shard) {
            self.written.push(shard);
        }
    }

    /// Releases every participant (rollback), remote ones in the background.
    fn release_all(&mut self) {
        self.finished = true;
        for (shard, part) in std::mem::take(&mut self.parts) {
            match part {
                Part::Local(t) => t.rollback(),
                Part::Remote { client, .. } => {
                    let req = self.request(shard, ShardOp::Rollback);
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        handle.spawn(async move {
                            let _ = call(&client, req).await;
                        });
                    }
                }
            }
        }
    }
}

fn unreachable(shard: ShardId, node: &str, e: Error) -> Error {
    match e {
        Error::Unreachable(msg) => {
            Error::Unreachable(format!("shard {shard} is unavailable (node {node}): {msg}"))
        }
        other => other,
    }
}

/// How long a shard may take to answer one row operation before the statement gives up.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one shard request and waits (at most `PEER_CALL_TIMEOUT`, 30 s) for the answer.
pub async fn call(client: &Client, req: ShardRequest) -> Result<ShardReply> {
    let reply = tokio::time::timeout(PEER_CALL_TIMEOUT, client.call(Request::Shard(req)))
        .await
        .map_err(|_| {
            Error::Unreachable(format!(
                "no answer within {} s",
                PEER_CALL_TIMEOUT.as_secs()
            ))
        })?;
    match reply? {
        Response::Shard(r) => Ok(r),
        other => Err(Error::Corrupt(format!(
            "unexpected answer from a shard: {other:?}"
        ))),
    }
}

#[async_trait]
impl RowTxn for ClusterTxn {
    fn age(&self) -> u64 {
        self.age
    }

    fn retryable(&self) -> bool {
        self.retry
            || self
                .parts
                .values()
                .any(|p| matches!(p, Part::Local(t) if t.died()))
    }

    async fn lock_table(&mut self, _table: u32, _mode: LockMode) -> Result<()> {
        // Each participant locks its own part of the table with its first operation.
        Ok(())
    }

    async fn get(&mut self, table: u32, key: &[u8], intent: Intent) -> Result<Option<Vec<u8>>> {
        let shard = self.shard_of(key)?;
        if let Part::Local(t) = self.part(shard).await? {
            return t.get(table, key, intent).await;
        }
        match self
            .remote(
                shard,
                ShardOp::Get {
                    table,
                    key: key.to_vec(),
                    intent,
                },
            )
            .await?
        {
            ShardReply::Row(r) => Ok(r),
            other => Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
        }
    }

    async fn scan(
        &mut self,
        table: u32,
        intent: Intent,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
    ) -> Result<KeyedRows> {
        let op = ShardOp::Scan {
            table,
            intent,
            filter: filter.cloned(),
            params: ctx.params.to_vec(),
            now: ctx.now,
        };
        let (local, remote) = self.scatter(op).await?;
        let mut rows = match local {
            Some(t) => crate::sql::rows::scan_local(t, table, intent, filter, ctx).await?,
            None => Vec::new(),
        };
        for reply in remote {
            match reply {
                ShardReply::Rows(r) => rows.extend(r),
                other => return Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
            }
        }
        Ok(rows)
    }

    fn distributed(&self) -> bool {
        true
    }

    async fn scan_pushdown(
        &mut self,
        table: u32,
        filter: Option<&Expr>,
        push: &Pushdown,
        ctx: &Context<'_>,
    ) -> Result<Vec<Vec<Value>>> {
        let op = ShardOp::ScanPushdown {
            table,
            filter: filter.cloned(),
            push: push.clone(),
            params: ctx.params.to_vec(),
            now: ctx.now,
        };
        let (local, remote) = self.scatter(op).await?;
        let mut rows = match local {
            Some(t) => {
                let r = crate::sql::rows::scan_local(t, table, Intent::Read, filter, ctx).await?;
                push.apply(r.into_iter().map(|(_, r)| r).collect(), ctx)?
            }
            None => Vec::new(),
        };
        for reply in remote {
            match reply {
                ShardReply::Values(r) => rows.extend(r),
                other => return Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
            }
        }
        Ok(rows)
    }

    async fn execute_on(
        &mut self,
        shard: ShardId,
        stmt: &Statement,
        params: &[Value],
        param_types: &[DataType],
        now: i64,
    ) -> Result<QueryResult> {
        if let Part::Local(_) = self.part(shard).await? {
            return Err(Error::Internal(
                "a statement for this node's own shard was sent to execute_on".into(),
            ));
        }
        let op = ShardOp::Execute {
            stmt: stmt.clone(),
            params: params.to_vec(),
            param_types: param_types.to_vec(),
            now,
            catalog_version: self.db.catalog_version.load(Ordering::Acquire),
        };
        match self.remote(shard, op).await? {
            ShardReply::Executed { result, wrote } => {
                // A shard where nothing was written stays a reader: it is released at prepare
                // time instead of preparing an empty write set.
                if wrote {
                    self.note_write(shard);
                }
                Ok(result)
            }
            other => Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
        }
    }

    async fn put(&mut self, table: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let shard = self.shard_of(&key)?;
        self.note_write(shard);
        if let Part::Local(t) = self.part(shard).await? {
            return t.put(table, key, value).await;
        }
        self.remote(shard, ShardOp::Put { table, key, value })
            .await
            .map(|_| ())
    }

    async fn delete(&mut self, table: u32, key: Vec<u8>) -> Result<()> {
        let shard = self.shard_of(&key)?;
        self.note_write(shard);
        if let Part::Local(t) = self.part(shard).await? {
            return t.delete(table, key).await;
        }
        self.remote(shard, ShardOp::Delete { table, key })
            .await
            .map(|_| ())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        // The commit runs to its end in its own task: a client that goes away mid-commit must
        // not cut the protocol short (dropping the transaction would roll back a part that may
        // already be committed).
        tokio::spawn(self.commit_all())
            .await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))?
    }

    fn rollback(mut self: Box<Self>) {
        self.release_all();
    }
}

impl Drop for ClusterTxn {
    fn drop(&mut self) {
        if !self.finished {
            self.release_all();
        }
    }
}
