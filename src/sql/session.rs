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
//! (the client decides), and a commit whose outcome is unknown is never retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::cluster::map::{Change, ClusterMap};
use crate::cluster::meta::Meta;

use crate::cluster::ring::ShardId;
use crate::error::{sqlstate, Error, Result};
use crate::protocol::{Request, Response};
use crate::sql::ast::Statement;
use crate::sql::catalog::Catalog;
use crate::sql::execution::{Executor, QueryResult};
use crate::sql::expr::Context;
use crate::sql::planner::{self, Plan, Planned};
use crate::sql::router::{key_token, ClusterTxn, Peers};
use crate::sql::rows::RowTxn;
use crate::sql::types::{DataType, Value};
use crate::storage::{keycode, Space};
use crate::txn::lock::{LockMode, Resource};
use crate::txn::{Intent, TwoPhase, TxnManager};

/// The SQL engine of a node: the catalog and the transaction manager, and the node's cluster
/// membership once it has one (then DDL goes through the cluster map).
pub struct Database {
    pub catalog: Catalog,
    pub txns: Arc<TxnManager>,
    pub cluster: OnceLock<Arc<Meta>>,
    /// Connections to the other nodes, for gateway transactions.
    pub peers: Peers,
    /// This node's part in two-phase commits.
    pub twopc: Arc<TwoPhase>,
    /// The map version the catalog reflects.
    pub catalog_version: AtomicU64,
    catalog_changed: tokio::sync::Notify,
}

impl Database {
    /// Opens the SQL layer over a transaction manager, loading the catalog.
    pub fn new(txns: Arc<TxnManager>) -> Result<Self> {
        let catalog = Catalog::load(txns.store.engine.as_ref())?;
        Ok(Self {
            catalog,
            cluster: OnceLock::new(),
            peers: Peers::default(),
            twopc: Arc::new(TwoPhase::new(txns.clone())),
            txns,
            catalog_version: AtomicU64::new(0),
            catalog_changed: tokio::sync::Notify::new(),
        })
    }

    /// Waits (briefly) until this node's map reaches `version`.
    pub async fn wait_for_map(&self, version: u64) {
        if let Some(meta) = self.cluster.get() {
            meta.wait_for_version(version, Duration::from_secs(2)).await;
        }
    }

    /// Begins a transaction: across the cluster's shards when the node is in a formed cluster,
    /// on this node otherwise. `age` keeps the wait-die age of retried work.
    pub fn begin(self: &Arc<Self>, age: Option<u64>) -> Box<dyn RowTxn> {
        if let Some(meta) = self.cluster.get() {
            if let Some(map) = meta.map() {
                let (cluster, me) = (
                    meta.identity.cluster_name.clone(),
                    meta.identity.node_name.clone(),
                );
                return Box::new(ClusterTxn::begin(self.clone(), map, cluster, &me, age));
            }
        }
        Box::new(self.txns.begin(age))
    }

    /// Makes the catalog follow a new cluster map: adds its new tables, and drops (with their
    /// rows on this node) the tables it no longer has.
    pub async fn follow_map(&self, map: &ClusterMap) -> Result<()> {
        for table in map.tables.values() {
            match self.catalog.get(&table.name)? {
                Some(t) if t.id == table.id => {}
                Some(old) => {
                    self.drop_local(&old).await?;
                    self.catalog.add(table.clone())?;
                }
                None => self.catalog.add(table.clone())?,
            }
        }
        for name in self.catalog.table_names()? {
            if !map.tables.contains_key(&name) {
                if let Some(t) = self.catalog.get(&name)? {
                    self.drop_local(&t).await?;
                }
            }
        }
        self.catalog_version.store(map.version, Ordering::Release);
        self.catalog_changed.notify_waiters();
        Ok(())
    }

    /// Deletes a table's rows on this node and removes it from the catalog.
    async fn drop_local(&self, table: &crate::sql::catalog::Table) -> Result<()> {
        // The oldest possible age: the drop waits for every user of the table instead of
        // losing wait-die to them (the map has already dropped it; this only catches up).
        let mut txn = self.txns.begin(Some(0));
        txn.lock(Resource::Table(table.id), LockMode::Exclusive)
            .await?;
        // With the table locked, take it out of the catalog first: a statement waiting for the
        // lock then finds it gone instead of writing rows that would outlive it.
        self.catalog.remove(&table.name)?;
        for (key, _) in txn.scan(table.id, Intent::Write).await? {
            txn.delete(table.id, key).await?;
        }
        txn.commit().await
    }

    /// Waits until the catalog reflects map `version` (a request from a node that is ahead);
    /// a retryable error if it does not within 10 s.
    pub async fn catch_up_catalog(&self, version: u64) -> Result<()> {
        if self.catalog_version.load(Ordering::Acquire) >= version
            || self.wait_for_catalog(version).await
        {
            return Ok(());
        }
        Err(Error::serialization(format!(
            "this node's catalog has not caught up with map version {version} yet; retry"
        )))
    }

    /// Waits until the catalog reflects map `version`; false if it did not within 10 s.
    pub async fn wait_for_catalog(&self, version: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.catalog_changed.notified();
            if self.catalog_version.load(Ordering::Acquire) >= version {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

/// The state of a session's transaction.
enum State {
    Idle,
    Open(Box<dyn RowTxn>),
    /// An error occurred in the block; waiting for ROLLBACK.
    Failed,
}

/// One client's session.
pub struct Session {
    db: Arc<Database>,
    state: State,
    /// Runs statements another gateway shipped here: never ships them on.
    shipped: bool,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Session {
    /// A new session in autocommit mode.
    pub fn new(db: Arc<Database>) -> Self {
        Self {
            db,
            state: State::Idle,
            shipped: false,
        }
    }

    /// A session for one statement shipped here by another gateway.
    pub fn shipped(db: Arc<Database>) -> Self {
        Self {
            db,
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
        planner::plan(&self.db.catalog, stmt, param_types)
    }

    /// Parses and runs a string of statements, stopping at the first error. Returns the
    /// results of the statements that ran, and the error with the failing statement's index.
    pub async fn execute_sql(
        &mut self,
        sql: &str,
    ) -> (Vec<QueryResult>, Option<(usize, String, Error)>) {
        let statements = match crate::sql::parser::parse(sql) {
            Ok(s) => s,
            Err(e) => {
                if matches!(self.state, State::Open(_)) {
                    self.fail();
                }
                return (Vec::new(), Some((0, sql.to_string(), e)));
            }
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

    /// Runs one statement with parameter values.
    pub async fn execute(
        &mut self,
        stmt: &Statement,
        params: &[Value],
        param_types: &[DataType],
    ) -> Result<QueryResult> {
        match stmt {
            Statement::Begin => {
                if let State::Idle = self.state {
                    self.state = State::Open(self.db.begin(None));
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
        let result = self.execute_in_transaction(stmt, params, param_types).await;
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
                return self.ddl(&planned.plan).await;
            }
            Plan::Begin | Plan::Commit | Plan::Rollback => {
                return Err(Error::Internal(
                    "transaction control reached execution".into(),
                ))
            }
            _ => {}
        }
        let db = self.db.clone();
        let executor = Executor {
            catalog: &db.catalog,
            store: &db.txns.store,
            ctx: Context {
                params,
                now: now_micros(),
            },
            node_tag: db.txns.node_tag(),
        };
        if let State::Open(txn) = &mut self.state {
            // A point statement on another shard runs there whole, in the transaction's part.
            if txn.distributed() {
                if let Some((shard, _, _)) = point_target(&db, &planned.plan, &executor.ctx) {
                    let now = executor.ctx.now;
                    let result = txn
                        .execute_on(shard, stmt, params, param_types, now)
                        .await?;
                    return Ok(result);
                }
            }
            return executor.execute(txn.as_mut(), &planned.plan).await;
        }
        // An autocommit statement on one key of another shard is shipped whole to that shard's
        // primary: one round trip instead of one per row operation and one for the commit.
        if !self.shipped {
            if let Some(target) = point_target(&db, &planned.plan, &executor.ctx) {
                return ship(&db, target, stmt, params, param_types, &planned.plan).await;
            }
        }
        // Autocommit: retry a wait-die victim with its original age until the lock timeout.
        let started = Instant::now();
        let mut age = None;
        let mut backoff = Duration::from_micros(200);
        loop {
            let mut txn = db.begin(age);
            match executor.execute(txn.as_mut(), &planned.plan).await {
                Ok(result) => {
                    txn.commit().await?;
                    return Ok(result);
                }
                Err(e) if txn.retryable() && started.elapsed() < db.txns.lock_timeout => {
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

    async fn ddl(&mut self, plan: &Plan) -> Result<QueryResult> {
        let db = self.db.clone();
        if let Some(meta) = db.cluster.get() {
            // In a cluster the schema is part of the map: change it through Raft.
            let (change, tag) = match plan {
                Plan::CreateTable {
                    table,
                    if_not_exists,
                } => (
                    Change::CreateTable {
                        table: table.clone(),
                        if_not_exists: *if_not_exists,
                    },
                    "CREATE TABLE",
                ),
                Plan::DropTable { names, if_exists } => (
                    Change::DropTable {
                        names: names.clone(),
                        if_exists: *if_exists,
                    },
                    "DROP TABLE",
                ),
                _ => return Err(Error::Internal("not DDL".into())),
            };
            let version = meta.propose(change).await?;
            if !db.wait_for_catalog(version).await {
                return Err(Error::Timeout(format!(
                    "{tag} is in the cluster map (version {version}) but this node has not applied it yet; check the node log"
                )));
            }
            return Ok(QueryResult::tag(tag));
        }
        let _ddl = db.catalog.ddl.lock().await;
        let store = &db.txns.store;
        match plan {
            Plan::CreateTable {
                table,
                if_not_exists,
            } => {
                if db.catalog.get(&table.name)?.is_some() {
                    if *if_not_exists {
                        return Ok(QueryResult::tag("CREATE TABLE"));
                    }
                    return Err(Error::sql(
                        sqlstate::DUPLICATE_TABLE,
                        format!("relation \"{}\" already exists", table.name),
                    ));
                }
                let mut table = table.clone();
                table.id = db.catalog.next_table_id(store.engine.as_ref())?;
                // epoch: 1 until shard epochs reach the committer.
                store
                    .committer
                    .commit(1, 0, db.catalog.create_writes(&table)?)
                    .await?;
                db.catalog.add(table)?;
                Ok(QueryResult::tag("CREATE TABLE"))
            }
            Plan::DropTable { names, if_exists } => {
                let mut tables = Vec::new();
                for name in names {
                    match db.catalog.get(name)? {
                        Some(t) => tables.push(t),
                        None if *if_exists => {}
                        None => {
                            return Err(Error::sql(
                                sqlstate::UNDEFINED_TABLE,
                                format!("table \"{name}\" does not exist"),
                            ))
                        }
                    }
                }
                let mut txn = db.txns.begin(None);
                for t in &tables {
                    // Waits for every transaction using the table to finish.
                    txn.lock(Resource::Table(t.id), LockMode::Exclusive).await?;
                    for (key, _) in txn.scan(t.id, Intent::Write).await? {
                        txn.delete(t.id, key).await?;
                    }
                    for w in db.catalog.drop_writes(t) {
                        txn.put_meta(w);
                    }
                }
                // The tables leave the catalog before the exclusive locks are released, so a
                // statement waiting on them finds them gone instead of writing orphan rows.
                let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
                let after = db.clone();
                txn.commit_then(move || {
                    for name in &names {
                        if let Err(e) = after.catalog.remove(name) {
                            tracing::error!(
                                "cannot remove dropped table {name} from the catalog: {e}"
                            );
                        }
                    }
                })
                .await?;
                Ok(QueryResult::tag("DROP TABLE"))
            }
            _ => Err(Error::Internal("not DDL".into())),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping an open transaction rolls it back and releases its locks.
        self.state = State::Idle;
    }
}

/// Counts the rows stored on this node (for status output).
pub fn count_keys(db: &Database) -> Result<u64> {
    let mut n = 0u64;
    for name in db.catalog.table_names()? {
        if let Some(t) = db.catalog.get(&name)? {
            n += db
                .txns
                .store
                .engine
                .scan_prefix(Space::Data, &keycode::table_prefix(t.id))
                .map(|kv| kv.map(|_| 1))
                .sum::<Result<u64>>()?;
        }
    }
    Ok(n)
}

/// Where a point statement must run: the shard, its primary's name and RPC address, when that
/// is another node. Anything that does not evaluate cleanly here runs the ordinary way.
fn point_target(db: &Database, plan: &Plan, ctx: &Context) -> Option<(ShardId, String, String)> {
    let meta = db.cluster.get()?;
    let map = meta.map()?;
    let me = map.node(&meta.identity.node_name).map(|n| n.shard);
    let key = point_key(plan, ctx)?;
    let shard = map.shard_of_token(key_token(&key)?)?;
    if Some(shard) == me {
        return None;
    }
    let (node, info) = map.primary(shard)?;
    Some((shard, node.to_string(), info.rpc_addr.clone()))
}

/// The one row key a statement touches, if it is a point statement: a `SELECT`, `UPDATE` or
/// `DELETE` that fixes the whole primary key, or a one-row `INSERT` into a table with a
/// primary key.
fn point_key(plan: &Plan, ctx: &Context) -> Option<Vec<u8>> {
    let key_of = |source: &crate::sql::planner::Source| -> Option<Vec<u8>> {
        let exprs = source.key.as_ref()?;
        let mut pk = Vec::with_capacity(exprs.len());
        for (e, &col) in exprs.iter().zip(&source.table.primary_key) {
            let v = e.eval(&[], ctx).ok()?;
            if v.is_null() {
                return None;
            }
            pk.push(v.cast(&source.table.columns[col].data_type).ok()?);
        }
        Some(source.table.key_of(&pk))
    };
    let key = match plan {
        Plan::Select(s) => key_of(s.source.as_ref()?)?,
        // An update that assigns a key column may move the row to another shard: not a
        // point statement (the gateway routes each of its row operations).
        Plan::Update { source, sets }
            if sets
                .iter()
                .any(|(col, _)| source.table.primary_key.contains(col)) =>
        {
            return None
        }
        Plan::Update { source, .. } | Plan::Delete { source } => key_of(source)?,
        Plan::Insert { table, rows } if rows.len() == 1 && !table.has_rowid() => {
            let mut pk = Vec::with_capacity(table.primary_key.len());
            for &i in &table.primary_key {
                let col = &table.columns[i];
                let v = rows[0][i].as_ref()?.eval(&[], ctx).ok()?;
                pk.push(v.coerce_to(&col.data_type, &col.name).ok()?);
            }
            table.key_of(&pk)
        }
        _ => return None,
    };
    Some(key)
}

/// Runs a point statement shipped by a gateway inside its transaction's part on this shard
/// ([`crate::sql::router::ShardOp::Execute`]). `owns` says whether this shard owns a key;
/// `Ok(None)` means the statement is not a point statement on a key owned here. Also returns
/// the table the statement wrote to, if it is a write.
pub async fn execute_point(
    db: &Database,
    txn: &mut dyn RowTxn,
    stmt: &Statement,
    params: &[Value],
    param_types: &[DataType],
    now: i64,
    owns: impl Fn(&[u8]) -> bool,
) -> Result<Option<(QueryResult, Option<u32>)>> {
    let planned = planner::plan(&db.catalog, stmt, param_types)?;
    if params.len() < planned.param_types.len() {
        return Err(Error::sql(
            sqlstate::PROTOCOL_VIOLATION,
            "a shipped statement came without its parameters",
        ));
    }
    let executor = Executor {
        catalog: &db.catalog,
        store: &db.txns.store,
        ctx: Context { params, now },
        node_tag: db.txns.node_tag(),
    };
    match point_key(&planned.plan, &executor.ctx) {
        Some(key) if owns(&key) => {}
        _ => return Ok(None),
    }
    let written = match &planned.plan {
        Plan::Insert { table, .. } => Some(table.id),
        Plan::Update { source, .. } | Plan::Delete { source } => Some(source.table.id),
        _ => None,
    };
    let result = executor.execute(txn, &planned.plan).await?;
    Ok(Some((result, written)))
}

/// Runs a statement on another node and returns its result.
async fn ship(
    db: &Database,
    (shard, node, addr): (ShardId, String, String),
    stmt: &Statement,
    params: &[Value],
    param_types: &[DataType],
    plan: &Plan,
) -> Result<QueryResult> {
    let cluster = db
        .cluster
        .get()
        .map(|m| m.identity.cluster_name.clone())
        .unwrap_or_default();
    let unavailable =
        |e: Error| Error::Unreachable(format!("shard {shard} is unavailable (node {node}): {e}"));
    let client = db.peers.get(&addr, &cluster).await.map_err(unavailable)?;
    let request = Request::Execute {
        stmt: stmt.clone(),
        params: params.to_vec(),
        param_types: param_types.to_vec(),
        catalog_version: db.catalog_version.load(Ordering::Acquire),
    };
    let reply = match tokio::time::timeout(Duration::from_secs(30), client.call(request)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unreachable("no answer within 30 s".into())),
    };
    match reply {
        Ok(Response::Executed(result)) => Ok(result),
        Ok(other) => Err(Error::Corrupt(format!(
            "unexpected answer to a shipped statement: {other:?}"
        ))),
        Err(Error::Unreachable(e)) => {
            db.peers.forget(&addr).await;
            if matches!(plan, Plan::Select(_)) {
                Err(unavailable(Error::Unreachable(e)))
            } else {
                // The statement was sent: it may have committed there.
                Err(Error::sql(
                    sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
                    format!("lost shard {shard} (node {node}) while it ran the statement; its outcome is unknown: {e}"),
                ))
            }
        }
        Err(e) => Err(e),
    }
}
