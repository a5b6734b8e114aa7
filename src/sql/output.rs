//! Where a statement's result rows go: [`Output`], a receiver that takes them a batch at a time.
//!
//! A `SELECT` does not build its whole result before answering. The executor hands its output
//! rows to an [`Output`] as they are produced, in bounded batches, and waits while the
//! receiver is not ready for more: the PostgreSQL front end's receiver writes each batch to the
//! client's socket, so a client that stops reading stops the scan behind it, on this node and
//! on every shard it reads from (each shard serves one batch per request, and the next
//! request waits for this one to be taken). [`Collect`] is the receiver for callers that want
//! the rows in memory (a statement shipped from another gateway, the RPC's `ddb query`).
//!
//! Work that must see every row before it can answer (sorting, grouping, aggregation) keeps
//! what it must, and then hands its rows out the same way.

use async_trait::async_trait;

use crate::error::Result;
use crate::types::value::Value;
use crate::types::OutputColumn;

/// How many output rows the executor hands over at once, at most.
pub const OUTPUT_BATCH: usize = 1024;

/// The receiver of a statement's result rows.
#[async_trait]
pub trait Output: Send {
    /// Says that the statement returns rows with these columns, before any of them (and
    /// before it runs). Statements without a result set never call it.
    async fn start(&mut self, _columns: &[OutputColumn]) -> Result<()> {
        Ok(())
    }

    /// Takes the next rows of the result, in order. Returns once the receiver has taken them,
    /// which may be after a wait (back-pressure), or fails when it cannot take them (the
    /// client is gone, or stopped reading for longer than the send timeout); the statement
    /// then fails with that error.
    async fn rows(&mut self, rows: Vec<Vec<Value>>) -> Result<()>;

    /// Returns once the rows handed over so far have reached their reader (the client), not
    /// only a buffer on the way. A statement that fails after some rows waits for this before
    /// it fails, so that its error (which ends its transaction block) comes after those rows,
    /// when the client has asked for more: a cursor fails at the fetch that reaches the bad
    /// row, and the block is still open until then.
    async fn delivered(&mut self) -> Result<()> {
        Ok(())
    }

    /// How many rows it has taken so far.
    fn taken(&self) -> u64;
}

/// An output that keeps the rows in memory.
#[derive(Debug, Default)]
pub struct Collect(pub Vec<Vec<Value>>);

#[async_trait]
impl Output for Collect {
    async fn rows(&mut self, rows: Vec<Vec<Value>>) -> Result<()> {
        self.0.extend(rows);
        Ok(())
    }

    fn taken(&self) -> u64 {
        self.0.len() as u64
    }
}

/// Hands `rows` to `out` in batches of at most [`OUTPUT_BATCH`] rows.
pub async fn send_all(out: &mut dyn Output, rows: Vec<Vec<Value>>) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        out.rows(rows.by_ref().take(OUTPUT_BATCH).collect()).await?;
    }
    Ok(())
}
