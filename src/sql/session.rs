//! A SQL session: one client connection's transaction state.
//!
//! Every statement runs in a transaction. Outside `BEGIN … COMMIT` a statement is its own
//! transaction (autocommit). Inside a block, an error rolls the transaction back at once and
//! leaves the session *failed*: every statement but `ROLLBACK`/`COMMIT` is refused with 25P02
//! until the block ends, as in PostgreSQL.
//!
//! An autocommit statement that loses a wait-die conflict is retried here with its original
//! age, so it eventually becomes the oldest and wins: it has had no effect and its client has
//! seen nothing, so the retry is invisible. Statements inside an explicit block are never retried
//! (the client decides), and a commit whose outcome is unknown is never retried; nor is a query
//! that has already handed rows to its client.
//!
//! A query's rows stream: [`Session::execute_to`] hands them to an [`Output`] while the
//! statement runs, inside its transaction, and returns once the last row is taken (an
//! autocommit statement commits after that). The session is borrowed for the whole time, so the
//! next statement of the connection cannot start before this one's rows are out.
//!
//! A panic while a statement is parsed, planned or run is caught here and fails that statement
//! with XX000, as any other error would (its transaction is rolled back and its locks released),
//! so one bug hit by one statement costs neither the connection nor the node.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::Statement;
use crate::sql::backend::{Backend, Prepared, SqlTxn};
use crate::sql::execution::{emit, Executor};
use crate::sql::output::{Collect, Output};
use crate::sql::planner::{self, Plan, Planned};
use crate::types::{Context, DataType, QueryResult, Value};

/// The state of a session's transaction.
enum State {
    Idle,
    Open(Box<dyn SqlTxn>),
    /// An error occurred in the block; waiting for ROLLBACK.
    Failed,
}

/// One client's session.
pub struct Session {
    backend: Arc<dyn Backend>,
    state: State,
    /// Runs statements another gateway shipped here: never ships them on.
    shipped: bool,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Session {
    /// A new session in autocommit mode.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            state: State::Idle,
            shipped: false,
        }
    }

    /// A session for one statement shipped here by another gateway.
    pub fn shipped(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            state: State::Idle,
            shipped: true,
        }
    }

    /// Whether the session is inside a transaction block (open or failed).
    pub fn in_transaction(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Whether the session's block has failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Plans a statement (for describing it, or to execute it).
    pub fn plan(&self, stmt: &Statement, param_types: &[DataType]) -> Result<Planned> {
        plan(self.backend.catalog(), stmt, param_types)
    }

    /// Parses a string of statements (each with its text). A syntax error fails an open
    /// transaction block, as any error in a block does.
    pub fn parse(&mut self, sql: &str) -> Result<Vec<(Statement, String)>> {
        parse(sql).inspect_err(|_| self.fail_block())
    }

    /// Parses and runs a string of statements, stopping at the first error. Returns the
    /// results of the statements that ran (rows included), and the error with the failing
    /// statement's index.
    pub async fn execute_sql(
        &mut self,
        sql: &str,
    ) -> (Vec<QueryResult>, Option<(usize, String, Error)>) {
        let statements = match self.parse(sql) {
            Ok(s) => s,
            Err(e) => return (Vec::new(), Some((0, sql.to_string(), e))),
        };
        let mut results = Vec::new();
        for (i, (stmt, text)) in statements.iter().enumerate() {
            match self.execute(stmt, &[], &[]).await {
                Ok(r) => results.push(r),
                Err(e) => return (results, Some((i, text.clone(), e))),
            }
        }
        (results, None)
    }

    /// Runs one statement with parameter values and returns its whole result, rows included.
    pub async fn execute(
        &mut self,
        stmt: &Statement,
        params: &[Value],
        param_types: &[DataType],
    ) -> Result<QueryResult> {
        let mut rows = Collect::default();
        let mut result = self
            .execute_to(stmt, params, param_types, &mut rows)
            .await?;
        result.rows = rows.0;
        Ok(result)
    }

    /// Runs one statement with parameter values, handing a query's rows to `out` as they are
    /// produced. The result carries the columns and the tag, and no rows.
    pub async fn execute_to(
        &mut self,
        stmt: &Statement,
        params: &[Value],
        param_types: &[DataType],
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        match stmt {
            Statement::Begin => {
                if let State::Idle = self.state {
                    self.state = State::Open(self.backend.begin(None));
                }
                return Ok(QueryResult::tag("BEGIN"));
            }
            Statement::Commit => {
                return match std::mem::replace(&mut self.state, State::Idle) {
                    State::Idle => Ok(QueryResult::tag("COMMIT")),
                    State::Failed => Ok(QueryResult::tag("ROLLBACK")),
                    State::Open(txn) => txn.commit().await.map(|()| QueryResult::tag("COMMIT")),
                };
            }
            Statement::Rollback => {
                if let State::Open(txn) = std::mem::replace(&mut self.state, State::Idle) {
                    txn.rollback();
                }
                return Ok(QueryResult::tag("ROLLBACK"));
            }
            _ => {}
        }
        if self.is_failed() {
            return Err(Error::sql(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let result = AssertUnwindSafe(self.execute_in_transaction(stmt, params, param_types, out))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(Error::from_panic(panic.as_ref())));
        if result.is_err() && matches!(self.state, State::Open(_)) {
            self.fail();
        }
        result
    }

    /// Fails an open transaction block (an error happened outside execution, e.g. while a
    /// statement was prepared); outside a block this does nothing.
    pub fn fail_block(&mut self) {
        if matches!(self.state, State::Open(_)) {
            self.fail();
        }
    }

    fn fail(&mut self) {
        if let State::Open(txn) = std::mem::replace(&mut self.state, State::Failed) {
            txn.rollback();
        }
    }

    async fn execute_in_transaction(
        &mut self,
        stmt: &Statement,
        params: &[Value],
        param_types: &[DataType],
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        let planned = self.plan(stmt, param_types)?;
        if params.len() < planned.param_types.len() {
            return Err(Error::sql(
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "the statement has {} parameters but {} were given",
                    planned.param_types.len(),
                    params.len()
                ),
            ));
        }
        match &planned.plan {
            Plan::CreateTable { .. } | Plan::DropTable { .. } => {
                if self.in_transaction() {
                    return Err(Error::unsupported(
                        "DDL inside a transaction block (run it outside BEGIN … COMMIT)",
                    ));
                }
                return self.backend.ddl(&planned.plan).await;
            }
            Plan::Begin | Plan::Commit | Plan::Rollback => {
                return Err(Error::Internal(
                    "transaction control reached execution".into(),
                ))
            }
            _ => {}
        }
        let backend = self.backend.clone();
        let executor = Executor {
            catalog: backend.catalog(),
            store: backend.store(),
            ctx: Context {
                params,
                now: now_micros(),
            },
            node_tag: backend.node_tag(),
        };
        if let Plan::Select(select) = &planned.plan {
            if !select.columns.is_empty() {
                out.start(&select.columns).await?;
            }
        }
        let prepared = Prepared {
            stmt,
            plan: &planned.plan,
            param_types,
            in_block: matches!(self.state, State::Open(_)),
        };
        if let State::Open(txn) = &mut self.state {
            return txn.execute(&prepared, &executor, out).await;
        }
        // An autocommit statement that belongs whole to another node runs there.
        if !self.shipped {
            if let Some(result) = backend.ship(&prepared, &executor).await {
                return emit(result?, out).await;
            }
        }
        // Autocommit: retry a wait-die victim with its original age until the lock timeout.
        let started = Instant::now();
        let mut age = None;
        let mut backoff = Duration::from_micros(200);
        loop {
            let mut txn = backend.begin(age);
            let taken = out.taken();
            match txn.execute(&prepared, &executor, out).await {
                Ok(result) => {
                    txn.commit().await?;
                    return Ok(result);
                }
                // Retried only while its client has seen nothing of it.
                Err(e)
                    if txn.retryable()
                        && out.taken() == taken
                        && started.elapsed() < backend.lock_timeout() =>
                {
                    age = Some(txn.age());
                    txn.rollback();
                    tracing::debug!("retrying statement after wait-die: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
/// Parses SQL text; a panic in the parser is the statement's error (XX000).
pub fn parse(sql: &str) -> Result<Vec<(Statement, String)>> {
    std::panic::catch_unwind(|| crate::sql::parser::parse(sql))
        .unwrap_or_else(|panic| Err(Error::from_panic(panic.as_ref())))
}

/// Plans a statement; a panic in the planner is the statement's error (XX000).
pub fn plan(
    catalog: &crate::sql::catalog::Catalog,
    stmt: &Statement,
    param_types: &[DataType],
) -> Result<Planned> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        planner::plan(catalog, stmt, param_types)
    }))
    .unwrap_or_else(|panic| Err(Error::from_panic(panic.as_ref())))
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping an open transaction rolls it back and releases its locks.
        self.state = State::Idle;
    }
}
