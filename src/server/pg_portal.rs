//! Open portals: a query that goes on where it stopped.
//!
//! A portal of a statement that returns rows is opened at its `Bind` (so that its rows are
//! those of the transaction as of the `Bind`, as PostgreSQL's snapshot makes them). An
//! `Execute` with a row limit (`max_rows > 0`, what JDBC's `setFetchSize` and tokio-postgres's
//! `query_portal` send) asks for that many rows of a portal and then `PortalSuspended`; the
//! next `Execute` of the same portal asks for more (one without a limit takes the rest).
//! PostgreSQL keeps the portal's executor between the two, so a cursor over a large result
//! costs the server what one fetch costs. So does ddb: an [`OpenPortal`] keeps the statement
//! itself running, paused in the middle of handing over its rows. A statement that fails on
//! a row fails after the rows before it have been taken
//! ([`crate::sql::output::Output::delivered`]): the fetch that reaches the bad row fails, not
//! an earlier one, and the block stays open until then. The statement writes its rows, encoded, into a
//! channel that holds one batch ([`OUTPUT_BATCH`] rows); when the channel is full the statement
//! waits, and with it the scans behind it on every shard. An `Execute` takes rows out of the
//! channel until it has sent `max_rows`; the statement runs only while an `Execute` is taking
//! rows (it is a future polled by the connection's own task, not a task of its own), so between
//! two fetches the portal holds one batch and nothing runs.
//!
//! A running statement holds the connection's session (its transaction) for as long as it
//! runs: Rust will not let two statements borrow one transaction at once. Another statement on
//! the same connection, in the same transaction (a second portal, a simple query, a failing
//! `Parse`), first makes every open portal let go of it ([`Portals::settle`]): the rest of each
//! open portal's rows are gathered into memory, and later `Execute`s are served from there.
//! That is the one case in which a portal's memory is its result rather than a batch. It also
//! keeps PostgreSQL's meaning: a portal's rows are those of its statement when it started, not
//! changed by what runs after it in the transaction (ddb has no snapshot reads yet, so a
//! statement still scanning would see the later writes). Where the transaction ends instead
//! (`COMMIT`, `ROLLBACK`, an error in a block), the open portals are dropped, as PostgreSQL
//! destroys them at the end of their transaction, without gathering anything.
//!
//! A portal ends when it is closed (`Close`), replaced (a `Bind` of the unnamed portal replaces
//! pgwire's portal, and the open one is known to be stale because it holds a weak reference to
//! the portal it was started for; a named one cannot be bound again while it exists), at `Sync` when it was opened outside a transaction block
//! (the end of its implicit transaction; pgwire also drops the unnamed portal at every
//! `Sync`), or with its transaction. Dropping an open portal drops the statement's future,
//! which releases the session; an autocommit statement's transaction is rolled back with it
//! (a query has nothing to commit).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;

use async_trait::async_trait;
use pgwire::api::portal::Format;
use pgwire::messages::data::DataRow;
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};

use super::pg_rows::RowEncoder;
use crate::error::{Error, Result};
use crate::sql::ast::Statement;
use crate::sql::output::{Output, OUTPUT_BATCH};
use crate::sql::Session;
use crate::types::value::{DataType, Value};
use crate::types::{OutputColumn, QueryResult};

/// How many rows an `Execute` writes under one send deadline.
pub const FETCH_BATCH: usize = OUTPUT_BATCH;

/// A statement running for a portal: it owns the session while it runs.
type Run = Pin<Box<dyn Future<Output = Result<QueryResult>> + Send>>;

/// Where an open portal's statement writes its rows: encoded, a batch at a time, into a
/// channel of one batch, waiting while it is full.
struct PortalOutput {
    tx: mpsc::Sender<Vec<DataRow>>,
    format: Format,
    encoder: Option<RowEncoder>,
    taken: u64,
}

#[async_trait]
impl Output for PortalOutput {
    async fn start(&mut self, columns: &[OutputColumn]) -> Result<()> {
        self.encoder = Some(RowEncoder::new(columns, Some(&self.format)).0);
        Ok(())
    }

    async fn rows(&mut self, rows: Vec<Vec<Value>>) -> Result<()> {
        let Some(encoder) = &mut self.encoder else {
            return Err(Error::Internal("rows before the result's columns".into()));
        };
        let n = rows.len() as u64;
        let encoded = encoder.encode(&rows)?;
        drop(rows);
        self.tx.send(encoded).await.map_err(|_| {
            Error::Internal("the portal was closed while its rows were sent".into())
        })?;
        self.taken += n;
        Ok(())
    }

    /// The channel holds one batch: once there is room again, the `Execute` that fetches has
    /// taken the last batch sent; the statement goes on only when a fetch asks for more rows
    /// than the ones it took (see [`OpenPortal::next`]).
    async fn delivered(&mut self) -> Result<()> {
        self.tx
            .reserve()
            .await
            .map(drop)
            .map_err(|_| Error::Internal("the portal was closed while its rows were sent".into()))
    }

    fn taken(&self) -> u64 {
        self.taken
    }
}

/// Where an open portal's rows come from.
enum Source {
    /// The statement is running (paused while nobody takes its rows).
    Live {
        run: Run,
        rx: mpsc::Receiver<Vec<DataRow>>,
    },
    /// The statement has ended: its rows (if any are left) are in `pending`; then this (its
    /// command tag, or its error until the error is given).
    Ended(Option<Error>, Option<String>),
}

/// A portal whose statement has started and not been fully fetched (or was fetched to its end
/// and not closed: another `Execute` gets no rows, as in PostgreSQL).
pub struct OpenPortal<P> {
    /// The pgwire portal this was started for: gone (or replaced) once it is closed or bound
    /// again.
    portal: Weak<P>,
    /// Whether it was started inside a transaction block (else it ends at the next `Sync`).
    in_block: bool,
    /// Rows taken from the statement and not yet sent.
    pending: VecDeque<DataRow>,
    source: Source,
}

/// What one step of a live statement gave.
enum Step {
    Batch(Vec<DataRow>),
    Ended(Result<QueryResult>),
}

impl<P> OpenPortal<P> {
    /// Starts `stmt` for `portal`, in `session` (which it holds until the statement ends),
    /// with its rows encoded in `format`. Nothing runs until the first [`Self::next`].
    pub fn start(
        portal: Weak<P>,
        session: OwnedMutexGuard<Session>,
        stmt: Statement,
        params: Vec<Value>,
        types: Vec<DataType>,
        format: Format,
    ) -> Self {
        let in_block = session.in_transaction();
        let (tx, rx) = mpsc::channel(1);
        let mut out = PortalOutput {
            tx,
            format,
            encoder: None,
            taken: 0,
        };
        let run: Run = Box::pin(async move {
            let mut session = session;
            session.execute_to(&stmt, &params, &types, &mut out).await
        });
        Self {
            portal,
            in_block,
            pending: VecDeque::new(),
            source: Source::Live { run, rx },
        }
    }

    /// Whether this was started for `portal` (and not for one of the same name bound before).
    pub fn is_for(&self, portal: &std::sync::Arc<P>) -> bool {
        std::ptr::eq(self.portal.as_ptr(), std::sync::Arc::as_ptr(portal))
    }

    /// The command tag its statement ended with (`SHOW`, `SELECT 3`), once it has ended.
    pub fn command_tag(&self) -> Option<&str> {
        match &self.source {
            Source::Ended(_, tag) => tag.as_deref(),
            Source::Live { .. } => None,
        }
    }

    /// Whether its pgwire portal is gone (closed, or replaced by a new `Bind`).
    fn is_stale(&self) -> bool {
        self.portal.strong_count() == 0
    }

    /// Whether its statement still runs (and so holds the session).
    fn is_live(&self) -> bool {
        matches!(self.source, Source::Live { .. })
    }

    /// The next row: `None` at the end of the result, or the error that ended the statement
    /// (given once).
    pub async fn next(&mut self) -> Option<Result<DataRow>> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Some(Ok(row));
            }
            if let Source::Ended(error, _) = &mut self.source {
                return error.take().map(Err);
            }
            self.step().await;
        }
    }

    /// Runs the statement until it hands over its next batch (kept in `pending`) or ends.
    /// Returns whether it was still running.
    async fn step(&mut self) -> bool {
        let Source::Live { run, rx } = &mut self.source else {
            return false;
        };
        let step = tokio::select! {
            biased;
            batch = rx.recv() => match batch {
                Some(batch) => Step::Batch(batch),
                // The statement's output is gone, so it has ended: this is ready now.
                None => Step::Ended(run.as_mut().await),
            },
            result = run.as_mut() => Step::Ended(result),
        };
        match step {
            Step::Batch(batch) => self.pending.extend(batch),
            Step::Ended(result) => {
                // The statement may have ended with a batch still in the channel.
                while let Ok(batch) = rx.try_recv() {
                    self.pending.extend(batch);
                }
                self.source = match result {
                    Ok(result) => Source::Ended(None, Some(result.tag)),
                    Err(e) => Source::Ended(Some(e), None),
                };
            }
        }
        true
    }

    /// Runs the statement to its end, keeping the rest of its rows in memory, so that it lets
    /// go of the session.
    async fn gather(&mut self) {
        while self.step().await {}
    }
}

/// The open portals of one connection, by name.
pub struct Portals<P> {
    open: Mutex<HashMap<String, OpenPortal<P>>>,
}

impl<P> Default for Portals<P> {
    fn default() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<P> Portals<P> {
    /// Takes the open portal started for `portal` under `name`, if there is one; a stale one of
    /// that name is dropped.
    pub async fn take(&self, name: &str, portal: &std::sync::Arc<P>) -> Option<OpenPortal<P>> {
        let mut open = self.open.lock().await;
        let found = open.remove(name)?;
        found.is_for(portal).then_some(found)
    }

    /// Keeps `portal` open under `name` for the next `Execute`.
    pub async fn put(&self, name: String, portal: OpenPortal<P>) {
        self.open.lock().await.insert(name, portal);
    }

    /// Makes every open portal let go of the session before another statement uses it: drops
    /// the stale ones, then either gathers the rest of each one's rows (`ending` false) or, when
    /// the transaction is ending, drops them all. Returns the names of the portals dropped.
    pub async fn settle(&self, ending: bool) -> Vec<String> {
        let mut open = self.open.lock().await;
        let mut dropped = drop_where(&mut open, |p| ending || p.is_stale());
        for portal in open.values_mut() {
            portal.gather().await;
        }
        dropped.sort();
        dropped
    }

    /// After a statement: drops the portals of a transaction block that is no longer open
    /// (`in_block` false: it committed, rolled back or failed); a failed block loses every
    /// portal, as none of them can run in it. Returns the names of the portals dropped.
    pub async fn after_statement(&self, in_block: bool, failed: bool) -> Vec<String> {
        if in_block && !failed {
            return Vec::new();
        }
        let mut open = self.open.lock().await;
        drop_where(&mut open, |p| failed || p.in_block || p.is_stale())
    }

    /// At `Sync`: the implicit transaction ends, and with it the portals opened outside a
    /// block, the unnamed portal (`unnamed`, which pgwire drops at every `Sync`) and the stale
    /// ones. Returns the names of the portals dropped.
    pub async fn end_implicit(&self, unnamed: &str) -> Vec<String> {
        let mut open = self.open.lock().await;
        let mut dropped = drop_where(&mut open, |p| !p.in_block || p.is_stale());
        if open.remove(unnamed).is_some() {
            dropped.push(unnamed.to_string());
        }
        dropped
    }

    /// Drops the open portal `name` (a `Close`).
    pub async fn close(&self, name: &str) {
        self.open.lock().await.remove(name);
    }

    /// Whether an open portal's statement holds the session, and if so whether it runs in a
    /// transaction block: the status a `ReadyForQuery` reports without taking the session.
    /// Stale portals are dropped first, so they never answer for the session.
    pub async fn holding_session(&self) -> Option<bool> {
        let mut open = self.open.lock().await;
        drop_where(&mut open, OpenPortal::is_stale);
        open.values().find(|p| p.is_live()).map(|p| p.in_block)
    }
}

fn drop_where<P>(
    open: &mut HashMap<String, OpenPortal<P>>,
    doomed: impl Fn(&OpenPortal<P>) -> bool,
) -> Vec<String> {
    let names: Vec<String> = open
        .iter()
        .filter(|(_, p)| doomed(p))
        .map(|(n, _)| n.clone())
        .collect();
    for n in &names {
        open.remove(n);
    }
    names
}
