//! The executor's access to rows: [`RowTxn`], a transaction as the executor sees it.
//!
//! Two implementations: a node's own transaction (`sql::local::Local`: a standalone node, and each shard's
//! participant in a cluster), and the gateway's cluster transaction (`gateway::ClusterTxn`),
//! which sends each row operation to the primary of the shard that owns the key and scatters
//! scans to every shard. The executor does not know which one it drives. Rows are stored as
//! their values encoded with postcard ([`encode_row`]); the key is the primary key's
//! order-preserving encoding (`storage::keycode`).

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::txn::lock::LockMode;
use crate::txn::{Intent, Transaction};
use crate::types::expr::{Context, Expr};
use crate::types::value::Value;

/// Rows with their storage keys.
pub type KeyedRows = Vec<(Vec<u8>, Vec<Value>)>;

/// A transaction as the executor uses it.
#[async_trait]
pub trait RowTxn: Send {
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
