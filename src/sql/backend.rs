//! What a session runs on: the catalog it plans against, and where its transactions come from.
//!
//! A [`Session`](crate::sql::Session) knows the SQL state machine of one connection (autocommit,
//! blocks, failed blocks, retries) and nothing of the cluster. The server wires in a
//! [`Backend`]: a standalone node's own transactions, or a gateway's transactions across the
//! shards once the node is in a cluster. The backend also decides what the session cannot:
//! whether an autocommit statement belongs whole to another node ([`Backend::ship`]), and how
//! DDL is carried out (in the local catalog, or through the cluster map).
//!
//! A transaction, as the session drives it, is a [`SqlTxn`]: it runs one planned statement at a
//! time. A node's own transaction ([`crate::sql::local::LocalTxn`]) runs each statement with the
//! executor; a gateway's may send a statement whole to a shard, or push work down with a scan.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::sql::ast::Statement;
use crate::sql::catalog::Catalog;
use crate::sql::execution::Executor;
use crate::sql::output::Output;
use crate::sql::planner::Plan;
use crate::storage::Store;
use crate::types::{DataType, QueryResult};

/// One statement ready to run: its syntax (what is shipped), its plan, and the declared types
/// of its parameters.
pub struct Prepared<'a> {
    pub stmt: &'a Statement,
    pub plan: &'a Plan,
    pub param_types: &'a [DataType],
    /// Whether it runs inside a transaction block (`BEGIN … COMMIT`). Only there may a
    /// transaction send a point statement whole to another shard: an autocommit statement is
    /// shipped (or not) by [`Backend::ship`] before its transaction begins, and one that another
    /// gateway shipped here must never be sent on.
    pub in_block: bool,
}

/// What a session runs its statements on.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The schema statements are planned against.
    fn catalog(&self) -> &Catalog;

    /// The node's store (the executor reserves row ids in it).
    fn store(&self) -> &Store;

    /// The node's tag, which makes generated row ids unique across gateways.
    fn node_tag(&self) -> u64;

    /// Whether the node serves a cluster (its schema follows the cluster map).
    fn in_cluster(&self) -> bool {
        false
    }

    /// How long an autocommit statement that loses wait-die keeps being retried.
    fn lock_timeout(&self) -> Duration;

    /// Begins a transaction. `age` keeps the wait-die age of retried work.
    fn begin(&self, age: Option<u64>) -> Box<dyn SqlTxn>;

    /// Runs an autocommit statement whole on another node when it belongs there (one key on
    /// another shard): its result, or `None` to run it here.
    async fn ship(&self, stmt: &Prepared<'_>, exec: &Executor<'_>) -> Option<Result<QueryResult>>;

    /// Carries out a `CREATE TABLE` or `DROP TABLE` (outside a transaction block).
    async fn ddl(&self, plan: &Plan) -> Result<QueryResult>;
}

/// A transaction as a session drives it: one planned statement at a time.
#[async_trait]
pub trait SqlTxn: Send {
    /// The wait-die age (kept when the work is retried).
    fn age(&self) -> u64;

    /// Whether the last failure allows retrying the same work (a wait-die loss, or a request
    /// routed with a stale map).
    fn retryable(&self) -> bool;

    /// The catalog this transaction's statements are planned against when it is not the
    /// node's: the transaction has DDL of its own that is not committed yet.
    fn catalog(&self) -> Result<Option<Arc<Catalog>>>;

    /// Carries out a `CREATE TABLE` or `DROP TABLE` inside the block: committed or rolled back
    /// with the transaction, and seen by no other session before it commits.
    async fn ddl(&mut self, plan: &Plan) -> Result<QueryResult>;

    /// Runs one data statement in this transaction. A query's rows go to `out` as they are
    /// produced; the result returned carries its columns and tag, and no rows.
    async fn execute(
        &mut self,
        stmt: &Prepared<'_>,
        exec: &Executor<'_>,
        out: &mut dyn Output,
    ) -> Result<QueryResult>;

    /// Bounds the lock waits of the statements that follow by `timeout` instead of the node's
    /// bound (a session's `lock_timeout`; `None`: the node's).
    fn set_lock_timeout(&mut self, timeout: Option<Duration>);

    /// Takes savepoint `id` (the session numbers them; a number is never reused within a
    /// transaction): a mark that [`SqlTxn::rollback_to`] returns the transaction's writes to.
    async fn savepoint(&mut self, id: u64) -> Result<()>;

    /// Undoes every write after savepoint `id`, keeping the savepoint and every lock. An error
    /// means the transaction could not be returned to the savepoint: the session then rolls
    /// it back whole.
    async fn rollback_to(&mut self, id: u64) -> Result<()>;

    /// Drops savepoint `id` and the ones after it; the writes stay.
    fn release(&mut self, id: u64) -> Result<()>;

    /// Commits; durable when this returns.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Rolls back.
    fn rollback(self: Box<Self>);

    /// Rolls back, and returns once the participants have let go of the transaction (or a
    /// bound passed), so that the session's next transaction does not meet its locks: what an
    /// explicit `ROLLBACK` runs.
    async fn rollback_settled(self: Box<Self>) {
        self.rollback()
    }
}
