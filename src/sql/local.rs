//! A node's own transaction as the SQL layer drives it: on a standalone node, and as a shard's
//! part of a gateway's transaction.
//!
//! [`Transaction`] belongs to the layer below (locks, buffered writes, the commit); these two
//! wrappers give it the SQL layer's interfaces: [`Local`] the executor's row access
//! ([`RowTxn`]), [`LocalTxn`] a session's statement-by-statement transaction ([`SqlTxn`]).

use async_trait::async_trait;

use crate::error::Result;
use crate::sql::backend::{Prepared, SqlTxn};
use crate::sql::execution::Executor;
use crate::sql::output::Output;
use crate::sql::rows::{scan_local, RowSink, RowTxn};
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, Transaction};
use crate::types::{Context, Expr, QueryResult};

/// A node's transaction, borrowed for the executor's row operations.
pub struct Local<'a>(pub &'a mut Transaction);

/// A node's transaction, owned by a session.
pub struct LocalTxn(pub Transaction);

#[async_trait]
impl SqlTxn for LocalTxn {
    fn age(&self) -> u64 {
        self.0.age()
    }

    fn retryable(&self) -> bool {
        self.0.died()
    }

    async fn execute(
        &mut self,
        stmt: &Prepared<'_>,
        exec: &Executor<'_>,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        exec.execute_to(&mut Local(&mut self.0), stmt.plan, out)
            .await
    }

    fn set_lock_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.0.set_lock_timeout(timeout);
    }

    async fn savepoint(&mut self, id: u64) -> Result<()> {
        self.0.savepoint(id);
        Ok(())
    }

    async fn rollback_to(&mut self, id: u64) -> Result<()> {
        self.0.rollback_to(Some(id))
    }

    fn release(&mut self, id: u64) -> Result<()> {
        self.0.release(id)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.0.commit().await
    }

    fn rollback(self: Box<Self>) {
        self.0.rollback()
    }
}

#[async_trait]
impl RowTxn for Local<'_> {
    async fn lock_table(&mut self, table: u32, mode: LockMode) -> Result<()> {
        self.0.lock(Resource::Table(table), mode).await
    }

    async fn get(&mut self, table: u32, key: &[u8], intent: Intent) -> Result<Option<Vec<u8>>> {
        self.0.get(table, key, intent).await
    }

    async fn scan(
        &mut self,
        table: u32,
        intent: Intent,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
        out: &mut dyn RowSink,
    ) -> Result<()> {
        scan_local(self.0, table, intent, filter, ctx, out).await
    }

    async fn put(&mut self, table: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.0.put(table, key, value).await
    }

    async fn delete(&mut self, table: u32, key: Vec<u8>) -> Result<()> {
        self.0.delete(table, key).await
    }
}
