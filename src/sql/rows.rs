//! The executor's access to rows: [`RowTxn`], a transaction as the executor sees it.
//!
//! Two implementations: a node's own [`Transaction`] (a standalone node, and each shard's
//! participant in a cluster), and the gateway's [`crate::sql::router::ClusterTxn`], which sends
//! each row operation to the primary of the shard that owns the key and scatters scans to every
//! shard. The executor does not know which one it drives.

use async_trait::async_trait;

use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::sql::ast::Statement;
use crate::sql::execution::decode_row;
use crate::sql::execution::QueryResult;
use crate::sql::expr::{Context, Expr};
use crate::sql::pushdown::Pushdown;
use crate::sql::types::{DataType, Value};
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, Transaction};

/// Rows with their storage keys.
pub type KeyedRows = Vec<(Vec<u8>, Vec<Value>)>;

/// A transaction as the executor uses it.
#[async_trait]
pub trait RowTxn: Send {
    /// The wait-die age (kept when the work is retried).
    fn age(&self) -> u64;

    /// Whether the last failure allows retrying the same work (a wait-die loss, or a request
    /// routed with a stale map).
    fn retryable(&self) -> bool;

    /// Locks a table before it is used (where locking happens on this node).
    async fn lock_table(&mut self, table: u32, mode: LockMode) -> Result<()>;

    /// Reads one row by key, locking it.
    async fn get(&mut self, table: u32, key: &[u8], intent: Intent) -> Result<Option<Vec<u8>>>;

    /// Reads the rows of a table that pass `filter`, locking the table.
    async fn scan(
        &mut self,
        table: u32,
        intent: Intent,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
    ) -> Result<KeyedRows>;

    /// Whether scans fan out to several shards (so pushing work down to them pays).
    fn distributed(&self) -> bool {
        false
    }

    /// Runs a whole statement on one key of another shard, in that shard's part of this
    /// transaction: one round trip instead of one per row operation. Only a distributed
    /// transaction can. `now` is the statement's time.
    async fn execute_on(
        &mut self,
        shard: ShardId,
        stmt: &Statement,
        params: &[Value],
        param_types: &[DataType],
        now: i64,
    ) -> Result<QueryResult> {
        let _ = (shard, stmt, params, param_types, now);
        Err(Error::Internal(
            "a local transaction cannot run statements on other shards".into(),
        ))
    }

    /// Scans with work pushed down (partial aggregation or top-N), returning its output rows.
    async fn scan_pushdown(
        &mut self,
        table: u32,
        filter: Option<&Expr>,
        push: &Pushdown,
        ctx: &Context<'_>,
    ) -> Result<Vec<Vec<Value>>> {
        let rows = self.scan(table, Intent::Read, filter, ctx).await?;
        push.apply(rows.into_iter().map(|(_, r)| r).collect(), ctx)
    }

    /// Writes a row.
    async fn put(&mut self, table: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()>;

    /// Deletes a row.
    async fn delete(&mut self, table: u32, key: Vec<u8>) -> Result<()>;

    /// Commits; durable when this returns.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Rolls back.
    fn rollback(self: Box<Self>);
}

/// Scans a table on this node and applies the filter: the local half of every scan.
pub async fn scan_local(
    txn: &mut Transaction,
    table: u32,
    intent: Intent,
    filter: Option<&Expr>,
    ctx: &Context<'_>,
) -> Result<KeyedRows> {
    let mut out = Vec::new();
    for (key, bytes) in txn.scan(table, intent).await? {
        let row = decode_row(&bytes)?;
        if let Some(f) = filter {
            if !f.matches(&row, ctx)? {
                continue;
            }
        }
        out.push((key, row));
    }
    Ok(out)
}

#[async_trait]
impl RowTxn for Transaction {
    fn age(&self) -> u64 {
        Transaction::age(self)
    }

    fn retryable(&self) -> bool {
        self.died()
    }

    async fn lock_table(&mut self, table: u32, mode: LockMode) -> Result<()> {
        self.lock(Resource::Table(table), mode).await
    }

    async fn get(&mut self, table: u32, key: &[u8], intent: Intent) -> Result<Option<Vec<u8>>> {
        Transaction::get(self, table, key, intent).await
    }

    async fn scan(
        &mut self,
        table: u32,
        intent: Intent,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
    ) -> Result<KeyedRows> {
        scan_local(self, table, intent, filter, ctx).await
    }

    async fn put(&mut self, table: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        Transaction::put(self, table, key, value).await
    }

    async fn delete(&mut self, table: u32, key: Vec<u8>) -> Result<()> {
        Transaction::delete(self, table, key).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        Transaction::commit(*self).await
    }

    fn rollback(self: Box<Self>) {
        Transaction::rollback(*self)
    }
}
