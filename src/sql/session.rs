//! A SQL session: one client connection's transaction state.
//!
//! Every statement runs in a transaction. Outside `BEGIN … COMMIT` a statement is its own
//! transaction (autocommit). Inside a block, an error leaves the session *failed*: every
//! statement but `ROLLBACK`/`COMMIT`/`ROLLBACK TO SAVEPOINT` is refused with 25P02 until the
//! block ends or returns to a savepoint, as in PostgreSQL.
//!
//! Savepoints (`SAVEPOINT`, `ROLLBACK TO SAVEPOINT`, `RELEASE SAVEPOINT`) are a stack of names
//! here, each with a number that the transaction knows its mark by (numbers are never reused in
//! a block, names may be: the newest wins). `ROLLBACK TO` undoes the writes after the savepoint
//! and keeps it, and makes a failed block usable again; `RELEASE` drops it and the newer ones.
//! A failed block with no savepoint can only end, so its transaction is rolled back at once and
//! its locks go; one with savepoints keeps its transaction (and its locks) for a `ROLLBACK TO`.
//! No lock is released by `ROLLBACK TO` (see [`crate::txn::transaction`]). Session parameters
//! set after a savepoint are not restored by `ROLLBACK TO` (PostgreSQL restores them).
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
//! The session also owns the connection's parameters ([`Settings`]) and carries out the
//! statements about itself (`SET`, `SHOW`, `RESET`, `DISCARD`, `DEALLOCATE`, `CLOSE`,
//! `UNLISTEN`, `SET TRANSACTION`), and it enforces the parameters that bound work:
//!
//! * `statement_timeout`: a statement that runs longer is cancelled with 57014 (its
//!   transaction rolled back, as any error does). What is bounded is the statement's execution;
//!   a commit (`COMMIT`, or an autocommit statement's own) and DDL are not cancelled, because
//!   cancelling a commit in flight would leave its outcome unknown. A statement that would be
//!   shipped whole to another node (which commits it there in one request) runs through a
//!   transaction of this node instead while a timeout is set, so that it can be cancelled.
//! * A **cancel request** (PostgreSQL's `CancelRequest`, sent on another connection with the
//!   key the client got at startup) cancels the statement running when it arrives with 57014
//!   `canceling statement due to user request`, bounded as `statement_timeout` is (its
//!   transaction rolled back; a commit is not cancelled). One that arrives while nothing runs
//!   does nothing, as in PostgreSQL. An autocommit statement shipped whole to another node
//!   (no `statement_timeout` set) is not cancelled: it runs there in one request.
//! * `lock_timeout`: the bound on each lock wait of the session's transactions, 55P03
//!   (0: the node's own bound, `--lock-timeout-ms`). It also bounds how long an autocommit
//!   statement is retried: a wait-die victim, and a statement refused before anything was
//!   done because its node is not ready or its shard's primary is moving (57P03), which is
//!   routed anew on each try (so a switchover does not reach the client).
//! * `idle_in_transaction_session_timeout`: read by the front end, which waits for the next
//!   message no longer than that while a block is open ([`Session::idle_timeout`]).
//! * `READ ONLY` transactions (`BEGIN READ ONLY`, `SET TRANSACTION READ ONLY`,
//!   `default_transaction_read_only`) refuse writes and DDL with 25006.
//!
//! `current_user`, `current_schema()` and `current_database()` are the session's values: they
//! are filled into the statement before it is planned or shipped ([`Statement::fill_session_values`]).
//!
//! A panic while a statement is parsed, planned or run is caught here and fails that statement
//! with XX000, as any other error would (its transaction is rolled back and its locks released),
//! so one bug hit by one statement costs neither the connection nor the node.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::{Literal, SessionStatement, Statement, TransactionModes};
use crate::sql::backend::{Backend, Prepared, SqlTxn};
use crate::sql::execution::{emit, Executor};
use crate::sql::output::{Collect, Output};
use crate::sql::planner::{self, Plan, Planned};
use crate::sql::settings::Settings;
use crate::types::expr::Sequences;
use crate::types::{Context, DataType, OutputColumn, QueryResult, Value};

/// The state of a session's transaction.
enum State {
    Idle,
    Open(Box<dyn SqlTxn>),
    /// An error occurred in the block; waiting for ROLLBACK, or for ROLLBACK TO a savepoint,
    /// which the transaction is kept for (only while the block has savepoints).
    Failed(Option<Box<dyn SqlTxn>>),
}

/// The signal a cancel request gives a session: it cancels the statement running when it
/// comes (a statement waits on it while it runs), and nothing later.
#[derive(Debug, Default)]
pub struct CancelSignal(tokio::sync::Notify);

impl CancelSignal {
    /// Cancels the session's running statement, if one runs.
    pub fn cancel(&self) {
        self.0.notify_waiters();
    }
}

/// One client's session.
pub struct Session {
    backend: Arc<dyn Backend>,
    state: State,
    /// Runs statements another gateway shipped here: never ships them on.
    shipped: bool,
    settings: Settings,
    user: String,
    database: String,
    /// Whether the open block is `READ ONLY`.
    read_only: bool,
    /// The last generation handed to a prepared statement ([`Session::prepare_generation`]).
    generation: u64,
    /// `DEALLOCATE ALL` dropped every named statement of an older generation than this.
    dropped_all: u64,
    /// `DEALLOCATE name` dropped the statements named so of an older generation.
    dropped: std::collections::HashMap<String, u64>,
    /// The open block's savepoints, oldest first: name and number.
    savepoints: Vec<(String, u64)>,
    /// The last savepoint number handed out in this session.
    last_savepoint: u64,
    /// The value `nextval` last gave this session, by sequence (`currval`).
    currvals: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// What a cancel request for this session signals.
    cancel: Arc<CancelSignal>,
}

/// The sequences as one session sees them: the node's, with the session's `currval`s.
struct SessionSequences {
    backend: Arc<dyn Backend>,
    current: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

impl SessionSequences {
    fn here(&self) -> Result<()> {
        if self.backend.in_cluster() {
            return Err(Error::not_built_yet("sequences in a cluster"));
        }
        Ok(())
    }

    fn remember(&self, name: &str, value: i64) -> Result<()> {
        self.current
            .lock()
            .map_err(|_| Error::Internal("currval lock poisoned".into()))?
            .insert(name.to_string(), value);
        Ok(())
    }
}

/// Waits for a sequence's write to be durable. Expressions are evaluated synchronously, so the
/// wait leaves the runtime's worker to the others meanwhile (it happens once per block).
fn durable(written: crate::storage::log::CommitReceiver) -> Result<()> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {}
        _ => {
            return Err(Error::Internal(
                "sequence values are handed out only on a multi-threaded runtime".into(),
            ))
        }
    }
    tokio::task::block_in_place(|| written.blocking_recv())
        .map_err(|_| Error::Io("the committer stopped".into()))??;
    Ok(())
}

impl Sequences for SessionSequences {
    fn nextval(&self, name: &str) -> Result<i64> {
        self.here()?;
        let store = self.backend.store();
        let (value, reserved) = self.backend.catalog().next_sequence_value(
            store.engine.as_ref(),
            &store.committer,
            name,
        )?;
        if let Some(written) = reserved {
            durable(written)?;
        }
        self.remember(name, value)?;
        Ok(value)
    }

    fn currval(&self, name: &str) -> Result<i64> {
        self.here()?;
        if self.backend.catalog().sequence_owner(name)?.is_none() {
            return Err(Error::sql(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            ));
        }
        let current = self
            .current
            .lock()
            .map_err(|_| Error::Internal("currval lock poisoned".into()))?;
        current.get(name).copied().ok_or_else(|| {
            Error::sql(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("currval of sequence \"{name}\" is not yet defined in this session"),
            )
        })
    }

    fn setval(&self, name: &str, value: i64, called: bool) -> Result<i64> {
        self.here()?;
        let next = if called {
            value.checked_add(1).ok_or_else(|| {
                Error::sql(
                    sqlstate::SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
                    format!("setval: value {value} is out of bounds for sequence \"{name}\""),
                )
            })?
        } else {
            value
        };
        let store = self.backend.store();
        durable(
            self.backend
                .catalog()
                .set_sequence_value(&store.committer, name, value, next)?,
        )?;
        if called {
            self.remember(name, value)?;
        }
        Ok(value)
    }
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
            settings: Settings::new("ddb"),
            user: "ddb".into(),
            database: "ddb".into(),
            read_only: false,
            generation: 0,
            dropped_all: 0,
            dropped: Default::default(),
            savepoints: Vec::new(),
            last_savepoint: 0,
            currvals: Default::default(),
            cancel: Arc::default(),
        }
    }

    /// The signal that cancels this session's running statement (for the front end's cancel
    /// requests).
    pub fn cancel_signal(&self) -> Arc<CancelSignal> {
        self.cancel.clone()
    }

    /// A session for one statement shipped here by another gateway.
    pub fn shipped(backend: Arc<dyn Backend>) -> Self {
        let mut session = Self::new(backend);
        session.shipped = true;
        session
    }

    /// Sets who the client is and applies the parameters of its startup packet (everything
    /// but `user`, `database` and the protocol's own `_pq_.` options); an unknown or invalid
    /// one is the error PostgreSQL gives (42704, 22023), which fails the connection.
    pub fn start<'a>(
        &mut self,
        user: &str,
        database: &str,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        self.user = user.to_string();
        self.database = database.to_string();
        self.settings = Settings::new(user);
        for (name, value) in params {
            match name {
                "user" | "database" | "replication" => {}
                _ if name.starts_with("_pq_.") => {}
                "options" => {
                    for (k, v) in command_line_options(value)? {
                        self.settings.set_startup(&k, &v)?;
                    }
                }
                _ => self.settings.set_startup(name, value)?,
            }
        }
        Ok(())
    }

    /// The reported parameters (`ParameterStatus`) whose values the client has not been told:
    /// all of them the first time, then the ones that changed. The front end sends them
    /// before `ReadyForQuery`.
    pub fn parameter_changes(&mut self) -> Vec<(String, String)> {
        self.settings.reported_changes()
    }

    /// How long the client may stay idle before its next message: the
    /// `idle_in_transaction_session_timeout` while a block is open, else no bound.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.state {
            State::Idle => None,
            _ => self.settings.idle_in_transaction_timeout(),
        }
    }

    /// Ends the session's transaction because the connection is closing (rolled back, its
    /// locks released).
    pub fn terminate(&mut self) {
        self.end_block();
        self.settings.end(false);
    }

    /// Ends the block as an explicit `ROLLBACK` does: rolled back, and its participants have
    /// let go of it before the client hears.
    async fn end_block_settled(&mut self) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Open(txn) | State::Failed(Some(txn)) => txn.rollback_settled().await,
            State::Idle | State::Failed(None) => {}
        }
        self.savepoints.clear();
    }

    /// Ends the block (rolling back a transaction it still holds) and forgets its savepoints.
    fn end_block(&mut self) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Open(txn) | State::Failed(Some(txn)) => txn.rollback(),
            State::Idle | State::Failed(None) => {}
        }
        self.savepoints.clear();
    }

    /// A new generation for a statement being prepared: `DEALLOCATE` drops the statements of
    /// older generations ([`Session::check_prepared`]).
    pub fn prepare_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Whether the prepared statement `name` (`None`: the unnamed one, which `DEALLOCATE`
    /// never drops) of `generation` still exists; 26000 if `DEALLOCATE` dropped it.
    pub fn check_prepared(&self, name: Option<&str>, generation: u64) -> Result<()> {
        let Some(name) = name else { return Ok(()) };
        let dropped = generation <= self.dropped_all
            || self.dropped.get(name).is_some_and(|g| generation <= *g);
        match dropped {
            true => Err(Error::sql(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            )),
            false => Ok(()),
        }
    }

    /// Whether the session is inside a transaction block (open or failed).
    pub fn in_transaction(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Whether the session's block has failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// Plans a statement (for describing it, or to execute it), with the session's values
    /// filled in.
    pub fn plan(&self, stmt: &Statement, param_types: &[DataType]) -> Result<Planned> {
        let own = self.txn_catalog()?;
        let catalog = own.as_deref().unwrap_or(self.backend.catalog());
        plan(catalog, &self.filled(stmt), param_types)
    }

    /// The open block's own catalog, when its DDL (not committed yet) makes it differ from
    /// the node's.
    fn txn_catalog(&self) -> Result<Option<Arc<crate::sql::catalog::Catalog>>> {
        match &self.state {
            State::Open(txn) => txn.catalog(),
            _ => Ok(None),
        }
    }

    /// `stmt` with the session's values (`current_user`, …) filled in.
    fn filled(&self, stmt: &Statement) -> Statement {
        let mut stmt = stmt.clone();
        stmt.fill_session_values(&|name| self.session_value(name));
        stmt
    }

    fn session_value(&self, name: &str) -> Literal {
        match name {
            "current_schema" => match self.settings.current_schema() {
                Some(s) => Literal::String(s),
                None => Literal::Null,
            },
            "current_database" | "current_catalog" => Literal::String(self.database.clone()),
            _ => Literal::String(self.user.clone()),
        }
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
            Statement::Begin(modes) => {
                // Inside a block PostgreSQL only warns, and the block keeps its modes.
                if let State::Idle = self.state {
                    self.state = State::Open(self.begin_txn(None));
                    self.settings.begin();
                    self.read_only = self.settings.default_read_only();
                    self.set_modes(modes);
                }
                return Ok(QueryResult::tag("BEGIN"));
            }
            Statement::Commit => {
                self.savepoints.clear();
                let (result, committed) = match std::mem::replace(&mut self.state, State::Idle) {
                    State::Idle => (Ok(QueryResult::tag("COMMIT")), true),
                    State::Failed(txn) => {
                        if let Some(txn) = txn {
                            txn.rollback_settled().await;
                        }
                        (Ok(QueryResult::tag("ROLLBACK")), false)
                    }
                    State::Open(txn) => {
                        let r = txn.commit().await.map(|()| QueryResult::tag("COMMIT"));
                        let ok = r.is_ok();
                        (r, ok)
                    }
                };
                self.settings.end(committed);
                return result;
            }
            Statement::Rollback => {
                self.end_block_settled().await;
                self.settings.end(false);
                return Ok(QueryResult::tag("ROLLBACK"));
            }
            Statement::Session(SessionStatement::RollbackTo(name)) => {
                return self.rollback_to(name).await;
            }
            _ => {}
        }
        if self.is_failed() {
            return Err(Error::sql(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let result = match stmt {
            Statement::Session(s) => self.session_statement(s, out).await,
            _ => {
                let stmt = self.filled(stmt);
                AssertUnwindSafe(self.execute_in_transaction(&stmt, params, param_types, out))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(Error::from_panic(panic.as_ref())))
            }
        };
        if result.is_err() && matches!(self.state, State::Open(_)) {
            self.fail();
        }
        result
    }

    /// `ROLLBACK TO SAVEPOINT name`: undoes the writes after the savepoint, keeps it, and
    /// makes a failed block usable again. If the transaction cannot return to the savepoint
    /// (a participant was lost), it is rolled back whole and the block stays failed.
    async fn rollback_to(&mut self, name: &str) -> Result<QueryResult> {
        if !self.in_transaction() {
            return Err(no_block("ROLLBACK TO SAVEPOINT"));
        }
        let Some(at) = self.savepoints.iter().rposition(|(n, _)| n == name) else {
            self.fail_block();
            return Err(no_savepoint(name));
        };
        let id = self.savepoints[at].1;
        let mut txn = match std::mem::replace(&mut self.state, State::Failed(None)) {
            State::Open(txn) | State::Failed(Some(txn)) => txn,
            State::Idle | State::Failed(None) => {
                return Err(Error::Internal(
                    "a block with savepoints has no transaction".into(),
                ))
            }
        };
        match txn.rollback_to(id).await {
            Ok(()) => {
                self.savepoints.truncate(at + 1);
                self.state = State::Open(txn);
                Ok(QueryResult::tag("ROLLBACK"))
            }
            Err(e) => {
                txn.rollback();
                self.savepoints.clear();
                Err(e)
            }
        }
    }

    /// `SAVEPOINT name` and `RELEASE SAVEPOINT name` (the block is open: a failed one refuses
    /// them before they get here).
    async fn savepoint_statement(&mut self, stmt: &SessionStatement) -> Result<&'static str> {
        let State::Open(txn) = &mut self.state else {
            let what = match stmt {
                SessionStatement::Savepoint(_) => "SAVEPOINT",
                _ => "RELEASE SAVEPOINT",
            };
            return Err(no_block(what));
        };
        match stmt {
            SessionStatement::Savepoint(name) => {
                self.last_savepoint += 1;
                let id = self.last_savepoint;
                txn.savepoint(id).await?;
                self.savepoints.push((name.clone(), id));
                Ok("SAVEPOINT")
            }
            SessionStatement::Release(name) => {
                let Some(at) = self.savepoints.iter().rposition(|(n, _)| n == name) else {
                    return Err(no_savepoint(name));
                };
                txn.release(self.savepoints[at].1)?;
                self.savepoints.truncate(at);
                Ok("RELEASE")
            }
            _ => Err(Error::Internal("not a savepoint statement".into())),
        }
    }

    /// Begins a transaction with the session's lock timeout.
    fn begin_txn(&self, age: Option<u64>) -> Box<dyn SqlTxn> {
        let mut txn = self.backend.begin(age);
        txn.set_lock_timeout(self.settings.lock_timeout());
        txn
    }

    /// Applies `BEGIN`'s or `SET TRANSACTION`'s modes to the open block. Every isolation level
    /// is accepted: the block runs serializable, which is stronger than each.
    fn set_modes(&mut self, modes: &TransactionModes) {
        if let (State::Open(_), Some(read_only)) = (&self.state, modes.read_only) {
            self.read_only = read_only;
        }
    }

    /// Carries out a statement about the session.
    async fn session_statement(
        &mut self,
        stmt: &SessionStatement,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        let in_block = matches!(self.state, State::Open(_));
        let tag = match stmt {
            SessionStatement::Set { name, value, local } => {
                let key = crate::sql::settings::column_name(name);
                match (key.as_str(), value) {
                    // The open transaction's own modes.
                    ("transaction_read_only", Some(v)) => {
                        let (_, v) = self.settings.check(name, v)?;
                        if in_block {
                            self.read_only = v == "on";
                        }
                    }
                    ("transaction_isolation", Some(v)) => {
                        self.settings.check(name, v)?;
                    }
                    _ => self
                        .settings
                        .set(name, value.as_deref(), *local, in_block)?,
                }
                "SET"
            }
            SessionStatement::Reset(Some(name)) => {
                self.settings.reset(name)?;
                "RESET"
            }
            SessionStatement::Reset(None) => {
                self.settings.reset_all();
                "RESET"
            }
            SessionStatement::Show(name) => {
                let (columns, rows) = self.show(name.as_deref())?;
                out.start(&columns).await?;
                out.rows(rows).await?;
                // PostgreSQL's command tag of SHOW has no row count.
                return Ok(QueryResult {
                    columns,
                    rows: Vec::new(),
                    tag: "SHOW".into(),
                });
            }
            SessionStatement::SetTransaction { modes, session } => {
                if *session {
                    use crate::sql::ast::SetValue;
                    let word = |s: &str| {
                        vec![SetValue::Word {
                            text: s.to_string(),
                            quoted: false,
                        }]
                    };
                    if let Some(ro) = modes.read_only {
                        let v = word(if ro { "on" } else { "off" });
                        self.settings.set(
                            "default_transaction_read_only",
                            Some(&v),
                            false,
                            in_block,
                        )?;
                    }
                    if let Some(level) = &modes.isolation {
                        self.settings.set(
                            "default_transaction_isolation",
                            Some(&[SetValue::String(level.clone())]),
                            false,
                            in_block,
                        )?;
                    }
                } else {
                    // Outside a block PostgreSQL only warns: there is no transaction to set.
                    self.set_modes(modes);
                }
                "SET"
            }
            SessionStatement::Discard(what) => {
                if what == "ALL" {
                    if self.in_transaction() {
                        return Err(Error::sql(
                            sqlstate::ACTIVE_SQL_TRANSACTION,
                            "DISCARD ALL cannot run inside a transaction block",
                        ));
                    }
                    // RESET ALL, DEALLOCATE ALL, CLOSE ALL, UNLISTEN *: ddb has no cursors,
                    // listeners, advisory locks, temporary tables or cached plans to drop.
                    self.settings.reset_all();
                    self.dropped_all = self.generation;
                }
                // The session forgets the values nextval gave it (currval is undefined again).
                if what == "ALL" || what == "SEQUENCES" {
                    self.currvals
                        .lock()
                        .map_err(|_| Error::Internal("currval lock poisoned".into()))?
                        .clear();
                }
                return Ok(QueryResult::tag(format!("DISCARD {what}")));
            }
            SessionStatement::Deallocate(None) => {
                self.dropped_all = self.generation;
                "DEALLOCATE ALL"
            }
            SessionStatement::Deallocate(Some(name)) => {
                self.dropped.insert(name.clone(), self.generation);
                "DEALLOCATE"
            }
            // ddb has no cursors (DECLARE is not supported): there is none to close.
            SessionStatement::Close(None) => "CLOSE CURSOR ALL",
            SessionStatement::Close(Some(name)) => {
                return Err(Error::sql(
                    sqlstate::INVALID_CURSOR_NAME,
                    format!("cursor \"{name}\" does not exist"),
                ))
            }
            // Nor listeners (LISTEN is not supported): unlistening changes nothing.
            SessionStatement::Unlisten(_) => "UNLISTEN",
            SessionStatement::Savepoint(_) | SessionStatement::Release(_) => {
                self.savepoint_statement(stmt).await?
            }
            SessionStatement::RollbackTo(name) => return self.rollback_to(name).await,
        };
        Ok(QueryResult::tag(tag))
    }

    /// `SHOW name` or `SHOW ALL`: columns and rows of text, as PostgreSQL's.
    #[allow(clippy::type_complexity)]
    fn show(&self, name: Option<&str>) -> Result<(Vec<OutputColumn>, Vec<Vec<Value>>)> {
        let text = |name: &str| OutputColumn {
            name: name.to_string(),
            data_type: DataType::Text,
        };
        let (columns, rows) = match name {
            Some(name) => {
                let (key, value) = match crate::sql::settings::column_name(name).as_str() {
                    "transaction_read_only" => {
                        let ro = match self.state {
                            State::Open(_) => self.read_only,
                            _ => self.settings.default_read_only(),
                        };
                        (
                            "transaction_read_only".into(),
                            if ro { "on" } else { "off" }.into(),
                        )
                    }
                    _ => self.settings.show(name)?,
                };
                (vec![text(&key)], vec![vec![Value::Text(value)]])
            }
            None => (
                vec![text("name"), text("setting"), text("description")],
                self.settings
                    .show_all()
                    .into_iter()
                    .map(|(n, v, d)| vec![Value::Text(n), Value::Text(v), Value::Text(d)])
                    .collect(),
            ),
        };
        Ok((columns, rows))
    }

    /// Fails an open transaction block (an error happened outside execution, e.g. while a
    /// statement was prepared); outside a block this does nothing.
    pub fn fail_block(&mut self) {
        if matches!(self.state, State::Open(_)) {
            self.fail();
        }
    }

    /// Fails the open block: its transaction is kept for a `ROLLBACK TO` while there are
    /// savepoints, and rolled back at once (its locks released) when there are none.
    fn fail(&mut self) {
        match std::mem::replace(&mut self.state, State::Failed(None)) {
            State::Open(txn) if !self.savepoints.is_empty() => {
                self.state = State::Failed(Some(txn));
            }
            State::Open(txn) => txn.rollback(),
            other => self.state = other,
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
        if let Some(kind) = writes(&planned.plan) {
            let read_only = match self.state {
                State::Open(_) => self.read_only,
                _ => self.settings.default_read_only(),
            };
            if read_only {
                return Err(Error::sql(
                    sqlstate::READ_ONLY_SQL_TRANSACTION,
                    format!("cannot execute {kind} in a read-only transaction"),
                ));
            }
        }
        match &planned.plan {
            Plan::CreateTable { .. } | Plan::DropTable { .. } => {
                // Inside a block the DDL is the transaction's, committed or rolled back with it.
                if let State::Open(txn) = &mut self.state {
                    return txn.ddl(&planned.plan).await;
                }
                return self.backend.ddl(&planned.plan).await;
            }
            Plan::Begin | Plan::Commit | Plan::Rollback | Plan::Session { .. } => {
                return Err(Error::Internal(
                    "transaction control reached execution".into(),
                ))
            }
            _ => {}
        }
        let backend = self.backend.clone();
        let own = self.txn_catalog()?;
        let sequences = SessionSequences {
            backend: backend.clone(),
            current: self.currvals.clone(),
        };
        let executor = Executor {
            catalog: own.as_deref().unwrap_or(backend.catalog()),
            store: backend.store(),
            ctx: Context {
                params,
                now: now_micros(),
                sequences: Some(&sequences),
            },
            node_tag: backend.node_tag(),
        };
        // A query, or a write with RETURNING.
        if !planned.plan.columns().is_empty() {
            out.start(planned.plan.columns()).await?;
        }
        let prepared = Prepared {
            stmt,
            plan: &planned.plan,
            param_types,
            in_block: matches!(self.state, State::Open(_)),
        };
        let deadline = self
            .settings
            .statement_timeout()
            .map(|t| (tokio::time::Instant::now() + t, t));
        let lock_timeout = self.settings.lock_timeout();
        // Made before the statement runs, so a cancel request at any point of it counts.
        let cancel = self.cancel.clone();
        let cancelled = cancel.0.notified();
        tokio::pin!(cancelled);
        if let State::Open(txn) = &mut self.state {
            // The session's lock_timeout as it is now (a SET inside the block counts).
            txn.set_lock_timeout(lock_timeout);
            let work = txn.execute(&prepared, &executor, out);
            return timed(deadline, cancelled.as_mut(), work).await;
        }
        // Autocommit: retry a wait-die victim with its original age, and a statement its shard
        // refused before doing anything because the shard's primary is moving (57P03), until
        // the lock timeout. The route is looked up again on each try: after a switchover the
        // statement goes to the new primary.
        let started = Instant::now();
        let lock_timeout = lock_timeout.unwrap_or_else(|| backend.lock_timeout());
        let mut age = None;
        let mut backoff = Duration::from_micros(200);
        loop {
            let taken = out.taken();
            let (failed, wait_die) = 'attempt: {
                // An autocommit statement that belongs whole to another node runs there
                // (unless it must be cancellable: see the module notes).
                if !self.shipped && deadline.is_none() {
                    if let Some(result) = backend.ship(&prepared, &executor).await {
                        match result {
                            Ok(result) => return emit(result, out).await,
                            Err(e) => break 'attempt (e, false),
                        }
                    }
                }
                let mut txn = self.begin_txn(age);
                let work = txn.execute(&prepared, &executor, out);
                match timed(deadline, cancelled.as_mut(), work).await {
                    Ok(result) => match txn.commit().await {
                        Ok(()) => return Ok(result),
                        Err(e) => break 'attempt (e, false),
                    },
                    Err(e) if txn.retryable() && e.sqlstate() != sqlstate::QUERY_CANCELED => {
                        age = Some(txn.age());
                        txn.rollback();
                        (e, true)
                    }
                    Err(e) => {
                        txn.rollback();
                        (e, false)
                    }
                }
            };
            // A wait-die victim is retried; so is a statement refused because its primary is
            // moving, or by a replica the map named primary (promoted, its role not switched
            // yet; or the map here is stale), unless this session runs a statement shipped here
            // (its gateway retries, and routes it anew). Only while the client has seen nothing
            // of it.
            let moving = failed.is_not_ready() || failed.is_replica_refusal();
            let retry = wait_die || (moving && !self.shipped);
            if !retry || out.taken() != taken || started.elapsed() >= lock_timeout {
                return Err(failed);
            }
            tracing::debug!("retrying statement: {failed}");
            if let Some((at, t)) = deadline {
                if tokio::time::Instant::now() + backoff >= at {
                    return Err(statement_timed_out(t));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = cancelled.as_mut() => return Err(canceled_by_user()),
            }
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }
}
/// The kind of write a plan is, for the read-only error; `None` for a query.
fn writes(plan: &Plan) -> Option<&'static str> {
    Some(match plan {
        Plan::Insert { .. } => "INSERT",
        Plan::Update { .. } => "UPDATE",
        Plan::Delete { .. } => "DELETE",
        Plan::CreateTable { .. } => "CREATE TABLE",
        Plan::DropTable { .. } => "DROP TABLE",
        _ => return None,
    })
}

/// A savepoint statement outside a transaction block (25P01, PostgreSQL's words).
fn no_block(what: &str) -> Error {
    Error::sql(
        sqlstate::NO_ACTIVE_SQL_TRANSACTION,
        format!("{what} can only be used in transaction blocks"),
    )
}

/// An unknown savepoint (3B001, PostgreSQL's words).
fn no_savepoint(name: &str) -> Error {
    Error::sql(
        sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
        format!("savepoint \"{name}\" does not exist"),
    )
}

fn statement_timed_out(timeout: Duration) -> Error {
    Error::sql(
        sqlstate::QUERY_CANCELED,
        format!(
            "canceling statement due to statement timeout ({} ms)",
            timeout.as_millis()
        ),
    )
}

/// Runs a statement's execution until the deadline of `statement_timeout`, if there is one,
/// or until a cancel request comes; past it, or then, the execution is dropped (the caller
/// rolls its transaction back) and the error is 57014.
async fn timed<F>(
    deadline: Option<(tokio::time::Instant, Duration)>,
    cancelled: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    work: F,
) -> Result<QueryResult>
where
    F: std::future::Future<Output = Result<QueryResult>>,
{
    let bounded = async {
        match deadline {
            None => work.await,
            Some((at, timeout)) => tokio::time::timeout_at(at, work)
                .await
                .unwrap_or_else(|_| Err(statement_timed_out(timeout))),
        }
    };
    tokio::select! {
        result = bounded => result,
        () = cancelled => Err(canceled_by_user()),
    }
}

fn canceled_by_user() -> Error {
    Error::sql(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to user request",
    )
}

/// The settings in a startup packet's `options` (`-c name=value` and `--name=value`, as
/// PostgreSQL reads them; `\ ` is an escaped space). Other switches are refused (0A000).
fn command_line_options(options: &str) -> Result<Vec<(String, String)>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next().unwrap_or_default()
        } else if let Some(rest) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            rest.to_string()
        } else {
            return Err(Error::unsupported(format!("the startup option {w}")));
        };
        match setting.split_once('=') {
            Some((k, v)) => out.push((k.replace('-', "_"), v.to_string())),
            None => {
                return Err(Error::sql(
                    sqlstate::SYNTAX_ERROR,
                    format!("-c {setting} requires a value"),
                ))
            }
        }
    }
    Ok(out)
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
        self.end_block();
    }
}
