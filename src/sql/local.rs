//! A node's own transaction as the SQL layer drives it: on a standalone node, and as a shard's
//! part of a gateway's transaction.
//!
//! [`Transaction`] belongs to the layer below (locks, buffered writes, the commit); these two
//! wrappers give it the SQL layer's interfaces: [`Local`] the executor's row access
//! ([`RowTxn`]), [`LocalTxn`] a session's statement-by-statement transaction ([`SqlTxn`]).
//!
//! On a standalone node a [`LocalTxn`] also carries the DDL of its block (`sql::ddl`): the
//! catalog changes it has made, which its own statements see and which reach the node's
//! catalog only when it commits.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::sql::backend::{Prepared, SqlTxn};
use crate::sql::catalog::Catalog;
use crate::sql::ddl::{self, Pending};
use crate::sql::execution::Executor;
use crate::sql::output::Output;
use crate::sql::planner::Plan;
use crate::sql::rows::{scan_local, RowSink, RowTxn};
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, Transaction};
use crate::types::{Context, Expr, QueryResult};

/// A node's transaction, borrowed for the executor's row operations.
pub struct Local<'a>(pub &'a mut Transaction);

/// A node's transaction, owned by a session.
pub struct LocalTxn {
    txn: Transaction,
    /// The node's catalog, when this transaction may carry DDL (a standalone node's).
    catalog: Option<Arc<Catalog>>,
    /// Its DDL not committed yet, in order.
    pending: Vec<Pending>,
    /// Savepoints: number, and how many DDL changes there were when it was taken.
    marks: Vec<(u64, usize)>,
}

impl LocalTxn {
    /// A session's transaction over `txn`; with `catalog` it may run DDL inside a block,
    /// committed with it into that catalog.
    pub fn new(txn: Transaction, catalog: Option<Arc<Catalog>>) -> Self {
        Self {
            txn,
            catalog,
            pending: Vec::new(),
            marks: Vec::new(),
        }
    }
}

#[async_trait]
impl SqlTxn for LocalTxn {
    fn age(&self) -> u64 {
        self.txn.age()
    }

    fn retryable(&self) -> bool {
        self.txn.died()
    }

    fn catalog(&self) -> Result<Option<Arc<Catalog>>> {
        match (&self.catalog, self.pending.is_empty()) {
            (Some(base), false) => Ok(Some(Arc::new(ddl::overlay(base, &self.pending)?))),
            _ => Ok(None),
        }
    }

    async fn ddl(&mut self, plan: &Plan) -> Result<QueryResult> {
        let Some(base) = self.catalog.clone() else {
            return Err(Error::unsupported(
                "DDL inside a transaction block on a node that is joining a cluster",
            ));
        };
        ddl::run_in_txn(&base, &mut self.txn, &mut self.pending, plan).await
    }

    async fn execute(
        &mut self,
        stmt: &Prepared<'_>,
        exec: &Executor<'_>,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        exec.execute_to(&mut Local(&mut self.txn), stmt.plan, out)
            .await
    }

    fn set_lock_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.txn.set_lock_timeout(timeout);
    }

    async fn savepoint(&mut self, id: u64) -> Result<()> {
        self.txn.savepoint(id);
        self.marks.push((id, self.pending.len()));
        Ok(())
    }

    async fn rollback_to(&mut self, id: u64) -> Result<()> {
        self.txn.rollback_to(Some(id))?;
        if let Some(at) = self.marks.iter().rposition(|(m, _)| *m == id) {
            self.pending.truncate(self.marks[at].1);
            self.marks.truncate(at + 1);
        }
        Ok(())
    }

    fn release(&mut self, id: u64) -> Result<()> {
        self.txn.release(id)?;
        if let Some(at) = self.marks.iter().rposition(|(m, _)| *m == id) {
            self.marks.truncate(at);
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let LocalTxn {
            txn,
            catalog,
            pending,
            ..
        } = *self;
        match catalog {
            // The node's catalog changes once the commit is durable, before the locks go: a
            // statement waiting for a dropped table then finds it gone.
            Some(base) if !pending.is_empty() => {
                txn.commit_then(move || ddl::apply(&base, &pending)).await
            }
            _ => txn.commit().await,
        }
    }

    fn rollback(self: Box<Self>) {
        self.txn.rollback()
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
