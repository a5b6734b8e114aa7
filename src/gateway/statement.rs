//! A cluster transaction as a session drives it: one statement at a time, then the commit.
//!
//! This is where the gateway's ways of running a statement meet: a point statement inside a
//! block goes whole to the shard that owns its key (`ship.rs`), a scan across shards takes its
//! aggregation or top-N along (`pushdown.rs`), and anything else runs in the executor over the
//! transaction's row operations (`txn.rs`). The commit is the distributed commit (`commit.rs`).

use async_trait::async_trait;

use super::commit::Commit;
use super::txn::{ClusterTxn, Part};
use crate::error::{Error, Result};
use crate::sql::backend::{Prepared, SqlTxn};
use crate::sql::execution::{emit, Executor};
use crate::sql::output::Output;
use crate::sql::planner::Plan;
use crate::types::QueryResult;

#[async_trait]
impl SqlTxn for ClusterTxn {
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

    async fn execute(
        &mut self,
        stmt: &Prepared<'_>,
        exec: &Executor<'_>,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        self.in_statement = true;
        let result = self.execute_statement(stmt, exec, out).await;
        self.in_statement = false;
        if let Err(e) = &result {
            self.note_failure(e);
        }
        result
    }

    fn catalog(&self) -> Result<Option<std::sync::Arc<crate::sql::catalog::Catalog>>> {
        Ok(None)
    }

    async fn ddl(&mut self, _plan: &Plan) -> Result<QueryResult> {
        Err(Error::unsupported(
            "DDL inside a transaction block on a cluster (proposing it to the cluster map at COMMIT, after the participants prepare, is not built yet); run it outside BEGIN … COMMIT",
        ))
    }

    fn set_lock_timeout(&mut self, timeout: Option<std::time::Duration>) {
        ClusterTxn::set_lock_timeout(self, timeout);
    }

    async fn savepoint(&mut self, id: u64) -> Result<()> {
        ClusterTxn::savepoint(self, id).await
    }

    async fn rollback_to(&mut self, id: u64) -> Result<()> {
        ClusterTxn::rollback_to(self, id).await
    }

    fn release(&mut self, id: u64) -> Result<()> {
        ClusterTxn::release(self, id)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        // The commit runs to its end in its own task: a client that goes away mid-commit must
        // not cut the protocol short (dropping the transaction would roll back a part that may
        // already be committed).
        tokio::spawn(Commit::new(self).run())
            .await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))?
    }

    fn rollback(mut self: Box<Self>) {
        drop(self.release_all());
    }

    async fn rollback_settled(mut self: Box<Self>) {
        let released = self.release_all();
        super::commit::settle(released, None).await;
    }
}

impl ClusterTxn {
    /// Runs one statement (see [`SqlTxn::execute`]).
    async fn execute_statement(
        &mut self,
        stmt: &Prepared<'_>,
        exec: &Executor<'_>,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        // Inside a block, a point statement on another shard runs there whole, in the
        // transaction's part (an autocommit one was shipped before the transaction began).
        if stmt.in_block {
            if let Some(shard) = self.gw.point_shard(stmt.plan, &exec.ctx) {
                if Some(shard) != self.my_shard {
                    let result = self.execute_on(shard, stmt, &exec.ctx).await?;
                    return emit(result, out).await;
                }
            }
        }
        // A scan across shards takes its aggregation or top-N along when it can.
        if let Plan::Select(select) = stmt.plan {
            if let Some(result) = self.select_pushed_down(select, exec).await? {
                return emit(result, out).await;
            }
        }
        exec.execute_to(self, stmt.plan, out).await
    }
}
