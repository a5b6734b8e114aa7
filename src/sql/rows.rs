//! The executor's access to rows: [`RowTxn`], a transaction as the executor sees it.
//!
//! Two implementations: a node's own transaction (`sql::local::Local`: a standalone node, and each shard's
//! participant in a cluster), and the gateway's cluster transaction (`gateway::ClusterTxn`),
//! which sends each row operation to the primary of the shard that owns the key and scatters
//! scans to every shard. The executor does not know which one it drives. Rows are stored as
//! their values encoded with postcard ([`encode_row`]); the key is the primary key's
//! order-preserving encoding (`storage::keycode`).
//!
//! A scan never returns a table whole. It delivers the rows that pass its filter to a
//! [`RowSink`] in bounded batches ([`BatchLimit`]) and reads the next batch only once the sink
//! has taken the last one, so what a scan holds at a time is one batch (per shard, at a
//! gateway), however large the table; a sink that has seen enough (a `LIMIT`) stops it. Each
//! batch starts after the last key of the previous one ([`scan_batch_local`]), which is
//! consistent because the transaction holds the table lock throughout (strict 2PL).

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::txn::lock::LockMode;
use crate::txn::{BatchLimit, Intent, Transaction};
use crate::types::expr::{Context, Expr};
use crate::types::value::Value;

/// Rows with their storage keys.
pub type KeyedRows = Vec<(Vec<u8>, Vec<Value>)>;

/// Whether a scan goes on after its sink took a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Deliver the next batch.
    More,
    /// The sink has what it needs: stop reading.
    Stop,
}

/// Where a scan delivers its rows, a batch at a time, in the scan's order.
#[async_trait]
pub trait RowSink: Send {
    /// Takes one batch. A sink that is slow to return slows the scan: nothing more is read
    /// until it does.
    async fn take(&mut self, batch: KeyedRows) -> Result<Flow>;
}

/// A sink that keeps every row (for statements that need them all: `UPDATE`, `DELETE`).
#[derive(Debug, Default)]
pub struct KeepAll(pub KeyedRows);

#[async_trait]
impl RowSink for KeepAll {
    async fn take(&mut self, batch: KeyedRows) -> Result<Flow> {
        self.0.extend(batch);
        Ok(Flow::More)
    }
}

/// A transaction as the executor uses it.
#[async_trait]
pub trait RowTxn: Send {
    /// Locks a table before it is used (where locking happens on this node).
    async fn lock_table(&mut self, table: u32, mode: LockMode) -> Result<()>;

    /// Reads one row by key, locking it.
    async fn get(&mut self, table: u32, key: &[u8], intent: Intent) -> Result<Option<Vec<u8>>>;

    /// Reads the rows of a table that pass `filter`, locking the table, and delivers them to
    /// `out` in batches until the table ends or `out` says stop.
    async fn scan(
        &mut self,
        table: u32,
        intent: Intent,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
        out: &mut dyn RowSink,
    ) -> Result<()>;

    /// Writes a row.
    async fn put(&mut self, table: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()>;

    /// Deletes a row.
    async fn delete(&mut self, table: u32, key: Vec<u8>) -> Result<()>;
}

/// Encodes a row for storage.
pub fn encode_row(row: &[Value]) -> Result<Vec<u8>> {
    postcard::to_stdvec(row).map_err(|e| Error::Internal(format!("encode row: {e}")))
}

/// Decodes a stored row.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Reads one batch of a table on this node, after `after`, and applies the filter: the rows
/// that pass, and the key the next batch starts after (`None` at the end of the table). A
/// batch may pass no rows and still not be the last.
pub async fn scan_batch_local(
    txn: &mut Transaction,
    table: u32,
    intent: Intent,
    filter: Option<&Expr>,
    ctx: &Context<'_>,
    after: Option<&[u8]>,
    limit: BatchLimit,
) -> Result<(KeyedRows, Option<Vec<u8>>)> {
    let (stored, resume) = txn.scan_batch(table, intent, after, limit).await?;
    let mut out = Vec::with_capacity(stored.len());
    for (key, bytes) in stored {
        let row = decode_row(&bytes)?;
        if let Some(f) = filter {
            if !f.matches(&row, ctx)? {
                continue;
            }
        }
        out.push((key, row));
    }
    Ok((out, resume))
}

/// Scans a table on this node in batches, applies the filter, and delivers the rows to `out`:
/// the local half of every scan.
pub async fn scan_local(
    txn: &mut Transaction,
    table: u32,
    intent: Intent,
    filter: Option<&Expr>,
    ctx: &Context<'_>,
    out: &mut dyn RowSink,
) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (rows, resume) = scan_batch_local(
            txn,
            table,
            intent,
            filter,
            ctx,
            after.as_deref(),
            BatchLimit::DEFAULT,
        )
        .await?;
        if !rows.is_empty() && out.take(rows).await? == Flow::Stop {
            return Ok(());
        }
        match resume {
            Some(k) => after = Some(k),
            None => return Ok(()),
        }
    }
}
