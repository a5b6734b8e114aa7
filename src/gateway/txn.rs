//! A transaction that spans the shards of a cluster, driven by this node as gateway.
//!
//! A statement is planned here, and its row operations go to the primary of the shard that owns
//! each key. This node's own shard is served in-process, and other shards over RPC as
//! [`ShardRequest`](crate::protocol::ShardRequest)s. A point operation goes to one shard; a scan
//! goes to every shard with its filter pushed down, and the rows are merged here (sorting,
//! grouping, aggregation and limits run on the merged rows, or on the shards: `pushdown.rs`).
//!
//! A scan runs in rounds: each round asks every shard that has rows left for its next batch
//! (all at once), and hands the batches to the statement's sink before it asks again. So the
//! gateway holds at most one batch per shard, a client that stops reading stops the rounds,
//! and a `LIMIT` that is satisfied asks for nothing more.
//!
//! Each shard that a transaction touches holds a participant transaction with the locks of what
//! it read or wrote; all of them use the gateway transaction's age, so wait-die orders them the
//! same way on every shard. The commit (`commit.rs`) is one-phase on the single shard that was
//! written, and the read-only participants release their locks after it; a transaction that
//! wrote to several shards commits by two-phase commit ([`crate::txn::twopc`]).
//!
//! Every request carries the map version, placement and epoch the gateway routed with. A shard
//! that does not own the key under its map, or routes under another placement or epoch,
//! answers `WrongShard`; the statement then fails as retryable, and an autocommit statement is
//! retried with the fresh map. A newer map version alone (DDL, an in-sync change) only makes the
//! shard wait to have it: it refuses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::context::Gateway;
use super::peers::{call, unreachable};
use crate::client::Client;
use crate::cluster::map::ClusterMap;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::{ShardOp, ShardReply, ShardRequest};
use crate::sql::rows::{scan_batch_local, Flow, KeyedRows, RowSink, RowTxn};
use crate::storage::keycode::token_of_key;
use crate::txn::lock::LockMode;
use crate::txn::{BatchLimit, Intent, Transaction};
use crate::types::{Context, Expr};

impl Gateway {
    /// Begins a transaction across the cluster, or `None` while the node has no map yet.
    pub fn begin(self: &Arc<Self>, age: Option<u64>) -> Option<ClusterTxn> {
        let map = self.meta.map()?;
        Some(ClusterTxn::begin(self.clone(), map, age))
    }
}

/// A shard's participant as the gateway holds it.
pub(super) enum Part {
    Local(Transaction),
    Remote {
        node: String,
        addr: String,
        client: Arc<Client>,
    },
}

/// A transaction across the shards of a cluster, driven by this node as gateway.
pub struct ClusterTxn {
    pub(super) gw: Arc<Gateway>,
    pub(super) map: Arc<ClusterMap>,
    pub(super) cluster: String,
    pub(super) my_shard: Option<ShardId>,
    pub(super) id: u64,
    pub(super) age: u64,
    pub(super) parts: BTreeMap<ShardId, Part>,
    /// Written shards, in the order of their first write (the first is the anchor).
    pub(super) written: Vec<ShardId>,
    pub(super) retry: bool,
    pub(super) finished: bool,
    /// The session's bound on lock waits: set on this node's own participant, and sent with
    /// every request to the others.
    pub(super) lock_timeout: Option<std::time::Duration>,
    /// The transaction's savepoints, oldest first (`savepoint.rs`).
    pub(super) savepoints: Vec<Mark>,
    /// Set while a statement runs: still set after it means the statement was cut short (its
    /// future dropped by a timeout, or a panic) with requests possibly still in flight.
    pub(super) in_statement: bool,
    /// Why the participants can no longer be trusted to be where the gateway believes (a lost
    /// connection, a statement cut short): the transaction can then only be rolled back.
    pub(super) broken: Option<String>,
}

impl ClusterTxn {
    /// Begins a gateway transaction under `map`.
    pub fn begin(gw: Arc<Gateway>, map: Arc<ClusterMap>, age: Option<u64>) -> Self {
        // Only a primary serves its shard's keys in-process; a replica's gateway goes to the
        // primary like any other.
        let my_shard = map.served_shard(&gw.meta.identity.node_name);
        let cluster = gw.meta.identity.cluster_id.clone();
        let age = age.unwrap_or_else(|| gw.txns.new_age());
        // A fresh timestamp: unique in the cluster (it carries this node's tag), even for a
        // retried statement that keeps its age.
        let id = gw.txns.new_age();
        Self {
            gw,
            map,
            cluster,
            my_shard,
            id,
            age,
            parts: BTreeMap::new(),
            written: Vec::new(),
            retry: false,
            finished: false,
            lock_timeout: None,
            savepoints: Vec::new(),
            in_statement: false,
            broken: None,
        }
    }

    /// Bounds the lock waits of every participant (see the field), from the next statement on.
    pub fn set_lock_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.lock_timeout = timeout;
        for part in self.parts.values_mut() {
            if let Part::Local(txn) = part {
                txn.set_lock_timeout(timeout);
            }
        }
    }

    pub(super) fn shard_of(&self, key: &[u8]) -> Result<ShardId> {
        let token =
            token_of_key(key).ok_or_else(|| Error::Internal("row key without a token".into()))?;
        self.map
            .shard_of_token(token)
            .ok_or_else(|| Error::Internal("the ring is empty".into()))
    }

    /// The participant of `shard`, opened on first use.
    pub(super) async fn part(&mut self, shard: ShardId) -> Result<&mut Part> {
        if !self.parts.contains_key(&shard) {
            let part = if Some(shard) == self.my_shard {
                // As a participant would (server::participant): no reads of a restarted
                // primary's shard before its log tail is applied again.
                if let Some(refusal) = self.gw.txns.store.committer.read_refusal() {
                    self.retry = true;
                    return Err(refusal);
                }
                let mut txn = self.gw.txns.begin(Some(self.age));
                txn.set_lock_timeout(self.lock_timeout);
                Part::Local(txn)
            } else {
                let (node, info) = self.map.primary(shard).ok_or_else(|| {
                    Error::Internal(format!("shard {shard} has no primary in the map"))
                })?;
                let (node, addr) = (node.to_string(), info.rpc_addr.clone());
                let client = self
                    .gw
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

    pub(super) fn request(&self, shard: ShardId, op: ShardOp) -> ShardRequest {
        ShardRequest {
            txn: self.id,
            age: self.age,
            shard,
            map_version: self.map.version,
            placement: self.map.placement,
            epoch: self.map.shards.get(&shard).map_or(0, |s| s.epoch),
            lock_timeout_ms: self.lock_timeout.map(|t| t.as_millis() as u64),
            op,
        }
    }

    /// Sends one operation to a remote participant.
    pub(super) async fn remote(&mut self, shard: ShardId, op: ShardOp) -> Result<ShardReply> {
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
    pub(super) async fn settle(
        &mut self,
        shard: ShardId,
        node: &str,
        addr: &str,
        reply: Result<ShardReply>,
    ) -> Result<ShardReply> {
        match reply {
            Ok(ShardReply::WrongShard { version }) => {
                self.retry = true;
                self.gw.wait_for_map(version).await;
                Err(Error::serialization(format!(
                    "shard {shard} moved (routed with map version {}, placement {}; the shard has map version {version}); retry the transaction",
                    self.map.version, self.map.placement
                )))
            }
            Ok(reply) => Ok(reply),
            Err(e) => {
                if e.is_retryable() {
                    self.retry = true;
                }
                if matches!(e, Error::Unreachable(_)) {
                    self.gw.peers.forget(addr).await;
                }
                Err(unreachable(shard, node, e))
            }
        }
    }

    /// One round of a scan: the next batch of every shard in `pending` (shard, resume key),
    /// asked of all of them at once, this node's own shard read while the others answer.
    /// Returns each shard's rows and where its scan resumes (`None`: it is done).
    async fn scan_round(
        &mut self,
        table: u32,
        intent: Intent,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
        pending: &[(ShardId, Option<Vec<u8>>)],
    ) -> Result<Vec<(ShardId, KeyedRows, Option<Vec<u8>>)>> {
        let mut remote = Vec::new();
        let mut local_after = None;
        for (s, after) in pending {
            match self.parts.get(s) {
                Some(Part::Remote { node, addr, client }) => {
                    let op = ShardOp::Scan {
                        table,
                        intent,
                        filter: filter.cloned(),
                        params: ctx.params.to_vec(),
                        now: ctx.now,
                        after: after.clone(),
                        limit: BatchLimit::DEFAULT,
                    };
                    let (req, client, node, addr) = (
                        self.request(*s, op),
                        client.clone(),
                        node.clone(),
                        addr.clone(),
                    );
                    let shard = *s;
                    remote.push(async move { (shard, node, addr, call(&client, req).await) });
                }
                Some(Part::Local(_)) => local_after = Some((*s, after.clone())),
                None => return Err(Error::Internal("participant vanished".into())),
            }
        }
        let local = match (
            local_after,
            self.my_shard.and_then(|s| self.parts.get_mut(&s)),
        ) {
            (Some((shard, after)), Some(Part::Local(t))) => Some((shard, t, after)),
            _ => None,
        };
        let local = async move {
            match local {
                Some((shard, t, after)) => {
                    let (rows, resume) = scan_batch_local(
                        t,
                        table,
                        intent,
                        filter,
                        ctx,
                        after.as_deref(),
                        BatchLimit::DEFAULT,
                    )
                    .await?;
                    Ok(Some((shard, rows, resume)))
                }
                None => Ok::<_, Error>(None),
            }
        };
        let (local, replies) = futures::join!(local, futures::future::join_all(remote));
        let mut batches = Vec::with_capacity(replies.len() + 1);
        batches.extend(local?);
        for (shard, node, addr, reply) in replies {
            match self.settle(shard, &node, &addr, reply).await? {
                ShardReply::Rows { rows, resume } => batches.push((shard, rows, resume)),
                other => return Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
            }
        }
        Ok(batches)
    }

    pub(super) fn note_write(&mut self, shard: ShardId) {
        if !self.written.contains(&shard) {
            self.written.push(shard);
        }
    }

    /// Releases every participant (rollback), remote ones in tasks of their own, whose
    /// handles it returns for a caller that waits for them.
    pub(super) fn release_all(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        self.finished = true;
        let mut released = Vec::new();
        for (shard, part) in std::mem::take(&mut self.parts) {
            match part {
                Part::Local(t) => t.rollback(),
                Part::Remote { client, .. } => {
                    let req = self.request(shard, ShardOp::Rollback);
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        released.push(handle.spawn(async move {
                            let _ = call(&client, req).await;
                        }));
                    }
                }
            }
        }
        released
    }
}

#[async_trait]
impl RowTxn for ClusterTxn {
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
        out: &mut dyn RowSink,
    ) -> Result<()> {
        let shards: Vec<ShardId> = self.map.shards.keys().copied().collect();
        for &s in &shards {
            self.part(s).await?;
        }
        // Where each shard's scan resumes; a shard leaves the list when it has no more rows.
        let mut pending: Vec<(ShardId, Option<Vec<u8>>)> =
            shards.into_iter().map(|s| (s, None)).collect();
        while !pending.is_empty() {
            let batches = self
                .scan_round(table, intent, filter, ctx, &pending)
                .await?;
            let mut next = Vec::with_capacity(batches.len());
            for (shard, rows, resume) in batches {
                if !rows.is_empty() && out.take(rows).await? == Flow::Stop {
                    return Ok(());
                }
                if let Some(k) = resume {
                    next.push((shard, Some(k)));
                }
            }
            pending = next;
        }
        Ok(())
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
}

impl Drop for ClusterTxn {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.release_all());
        }
    }
}

/// One savepoint of a cluster transaction.
pub(super) struct Mark {
    pub(super) id: u64,
    /// The participants that existed when it was taken.
    pub(super) parts: Vec<ShardId>,
    /// How many shards had been written (a prefix of `ClusterTxn::written`).
    pub(super) written: usize,
}
