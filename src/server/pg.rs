//! The PostgreSQL wire protocol front end (simple and extended query), on `pgwire`.
//!
//! Each accepted connection gets its own [`PgConnection`] handler owning one [`Session`], so
//! the transaction state of a connection lives exactly as long as the connection: when the
//! client goes away, the session is dropped and any open transaction rolled back.
//!
//! [`serve`] runs a connection: pgwire's message loop, over a stream that checks every frontend
//! message's structure first ([`super::pg_frames`]). A message that breaks the protocol gets a
//! FATAL `ErrorResponse` with SQLSTATE 08P01 before the connection closes, as in PostgreSQL,
//! instead of a silent close (pgwire's own loop) or a panic in pgwire's decoder.
//!
//! Authentication is not built yet: any user and database name is accepted (one database per
//! cluster). Result columns carry the PostgreSQL type OIDs of their ddb types, so drivers decode
//! values natively in text and binary formats.
//!
//! **Results stream.** A query's rows are written to the socket as the statement produces
//! them (`PgOutput`), a batch at a time, through pgwire's framed sink, which flushes to the
//! socket whenever its buffer passes 8 KiB and waits while the socket is full. So a client
//! that stops reading stops the statement (and the scans behind it, on every shard), and the
//! connection holds one batch, not the result. Each batch of rows (and each other message)
//! must be taken within the **send timeout** (`ddb server --send-timeout-ms`, 30 s by
//! default): a client that stays stopped longer loses its connection, which drops its session, rolling back its transaction and releasing its
//! locks, so it cannot block writers forever. The simple query protocol is served by
//! [`PgConnection`]'s own `on_query`, so that each statement of a multi-statement string
//! streams its rows before the next one runs. In the extended protocol, `Execute` is served by
//! [`PgConnection`]'s own `on_execute`: without a row limit the statement streams the same way;
//! with one (a cursor-style fetch, answered with `PortalSuspended`), the statement is left
//! running in an open portal between `Execute`s, holding one batch ([`super::pg_portal`]).
//! `Sync` and `Close` are ours too, because they end open portals.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt};
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type, DEFAULT_NAME,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Notify;

use super::pg_frames::{Checked, Verdicts};
use super::pg_portal::{OpenPortal, Portals, FETCH_BATCH};
pub use super::pg_rows::pg_type;
use super::pg_rows::{fields, RowEncoder};
use crate::error::{sqlstate, Error};
use crate::sql::ast::Statement;
use crate::sql::output::Output;
use crate::sql::session::CancelSignal;
use crate::sql::{session, Backend, Session};
use crate::types::value::{DataType, Value};
use crate::types::OutputColumn;
use crate::types::QueryResult;

/// The ddb type of a pgwire parameter type the client declared.
fn ddb_type(ty: &Type) -> DataType {
    match *ty {
        Type::BOOL => DataType::Bool,
        Type::INT2 => DataType::SmallInt,
        Type::INT4 => DataType::Int,
        Type::INT8 => DataType::BigInt,
        Type::FLOAT4 => DataType::Real,
        Type::FLOAT8 => DataType::Double,
        Type::TEXT => DataType::Text,
        Type::VARCHAR => DataType::Varchar(None),
        Type::BPCHAR => DataType::Text,
        Type::TIMESTAMP => DataType::Timestamp,
        Type::UUID => DataType::Uuid,
        _ => DataType::Unknown,
    }
}

/// The fields of an error's `ErrorResponse`: severity (localised `S` and never-localised `V`,
/// which ddb spells the same), SQLSTATE and message, and for a constraint violation the
/// detail, schema, table, column and constraint, as PostgreSQL fills them.
fn error_info(e: &Error) -> ErrorInfo {
    let mut info = severe("ERROR", e.sqlstate(), e.to_string());
    if let Error::Constraint(v) = e {
        info.detail = v.detail.clone();
        info.schema = v.schema.clone();
        info.table = v.table.clone();
        info.column = v.column.clone();
        info.constraint = v.constraint.clone();
    }
    info
}

fn severe(severity: &str, code: &str, message: String) -> ErrorInfo {
    let mut info = ErrorInfo::new(severity.to_owned(), code.to_owned(), message);
    info.severity_nonlocalized = Some(severity.to_owned());
    info
}

fn user_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

/// Builds the pgwire response for a statement's whole result.
fn to_response(result: QueryResult, format: Option<&Format>) -> PgWireResult<Response> {
    let tag = result.tag.clone();
    let mut words = tag.split_whitespace();
    let command = words.next().unwrap_or("");
    // Any result with columns is rows (`SELECT`, `SHOW`).
    if !result.columns.is_empty() {
        let (mut encoder, schema) = RowEncoder::new(&result.columns, format);
        let rows = encoder.encode(&result.rows).map_err(user_error)?;
        return Ok(Response::Query(QueryResponse::new(
            schema,
            stream::iter(rows.into_iter().map(Ok)),
        )));
    }
    Ok(match command {
        "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
        "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(command)),
        _ => Response::Execution(command_tag(&tag)),
    })
}

/// The tag of a statement that returned `taken` rows: a write's own (`INSERT 0 2` for an
/// `INSERT … RETURNING`), `SHOW` without a count as in PostgreSQL, else `SELECT taken`.
fn rows_tag(tag: Option<&str>, taken: u64) -> Tag {
    match tag {
        Some(t)
            if ["INSERT ", "UPDATE ", "DELETE "]
                .iter()
                .any(|w| t.starts_with(w)) =>
        {
            command_tag(t)
        }
        Some("SHOW") => Tag::new("SHOW"),
        _ => Tag::new("SELECT").with_rows(taken as usize),
    }
}

/// The pgwire tag of a ddb command tag (`INSERT 0 2`, `SELECT 3`, `CREATE TABLE`).
fn command_tag(tag: &str) -> Tag {
    let mut words = tag.split_whitespace();
    let command = words.next().unwrap_or("");
    let numbers: Vec<usize> = words.filter_map(|w| w.parse().ok()).collect();
    match (command, numbers.as_slice()) {
        ("INSERT", [oid, rows]) => Tag::new("INSERT").with_oid(*oid as u32).with_rows(*rows),
        (_, [rows]) => Tag::new(command).with_rows(*rows),
        _ => Tag::new(tag),
    }
}

/// The error of a write to the client that did not finish within the send timeout.
fn send_timed_out(timeout: Duration) -> Error {
    Error::Timeout(format!(
        "the client read nothing of its result for {} ms (the send timeout); closing the connection",
        timeout.as_millis()
    ))
}

/// Writes to a client within the send timeout: a message at a time, or a batch of rows whose
/// messages share one deadline ([`Writer::batch`]), so a client must take a whole batch per
/// send timeout; the few bytes a kernel may still let through to a client that reads nothing
/// (zero-window probes) do not keep its connection alive. A write that times out asks the
/// connection's task to close the connection (`closed`): the socket is full, so not even an
/// error message could reach the client.
struct Writer<'c, C> {
    client: &'c mut C,
    conn: &'c PgConnection,
    /// The deadline of the batch being written, if one is.
    deadline: Option<tokio::time::Instant>,
}

impl<C> Writer<'_, C>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
{
    /// Queues a message; it waits (at most the send timeout) while the client's buffer is
    /// full, which is what stops a producer whose client does not read.
    async fn feed(&mut self, msg: PgWireBackendMessage) -> Result<(), Error> {
        self.timed(|c| c.feed(msg)).await
    }

    /// Sends a message and flushes everything queued.
    async fn send(&mut self, msg: PgWireBackendMessage) -> Result<(), Error> {
        self.timed(|c| c.send(msg)).await
    }

    /// Starts (`true`) or ends a batch: the writes in between share one send timeout.
    fn batch(&mut self, start: bool) {
        self.deadline = start.then(|| tokio::time::Instant::now() + self.conn.send_timeout);
    }

    async fn timed<'a, F, Fut>(&'a mut self, op: F) -> Result<(), Error>
    where
        F: FnOnce(&'a mut C) -> Fut,
        Fut: std::future::Future<Output = Result<(), C::Error>>,
    {
        let timeout = self.conn.send_timeout;
        let deadline = self
            .deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + timeout);
        match tokio::time::timeout_at(deadline, op(&mut *self.client)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Io(format!("cannot write to the client: {e:?}"))),
            Err(_) => {
                self.conn.timed_out.store(true, Ordering::Release);
                self.conn.closed.notify_one();
                Err(send_timed_out(timeout))
            }
        }
    }
}

/// A statement's rows on their way to the client: encoded and written as they come.
struct PgOutput<'w, 'c, C> {
    writer: &'w mut Writer<'c, C>,
    /// Whether a `RowDescription` goes first (the simple protocol; the extended one describes
    /// at `Describe`).
    describe: bool,
    format: Option<&'w Format>,
    /// The row encoder, once the statement said it returns rows.
    encoder: Option<RowEncoder>,
    taken: u64,
}

#[async_trait]
impl<C> Output for PgOutput<'_, '_, C>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
{
    async fn start(&mut self, columns: &[OutputColumn]) -> Result<(), Error> {
        let (encoder, schema) = RowEncoder::new(columns, self.format);
        if self.describe {
            let desc = RowDescription::new(schema.iter().map(Into::into).collect());
            self.writer
                .feed(PgWireBackendMessage::RowDescription(desc))
                .await?;
        }
        self.encoder = Some(encoder);
        Ok(())
    }

    async fn rows(&mut self, rows: Vec<Vec<Value>>) -> Result<(), Error> {
        let Some(encoder) = &mut self.encoder else {
            return Err(Error::Internal("rows before the result's columns".into()));
        };
        let encoded = encoder.encode(&rows)?;
        drop(rows);
        self.writer.batch(true);
        for row in encoded {
            self.writer.feed(PgWireBackendMessage::DataRow(row)).await?;
            self.taken += 1;
        }
        self.writer.batch(false);
        Ok(())
    }

    fn taken(&self) -> u64 {
        self.taken
    }
}

/// A prepared statement: the parsed statement, its parameter types and its result columns.
#[derive(Clone, Debug)]
pub struct Prepared {
    stmt: Statement,
    param_types: Vec<DataType>,
    columns: Vec<OutputColumn>,
    /// The session's generation when it was prepared: `DEALLOCATE` drops older ones.
    generation: u64,
}

/// Parses and plans statements of the extended protocol.
pub struct Parser {
    verdicts: Verdicts,
    /// The connection's session: an error while preparing fails its open transaction block,
    /// as any other error in a block does.
    session: Arc<tokio::sync::Mutex<Session>>,
    /// The connection's open portals: they let go of the session before a failure ends their
    /// block.
    portals: Arc<Portals<Portal<Prepared>>>,
}

impl Parser {
    async fn fail(&self, e: Error) -> PgWireError {
        self.fail_block().await;
        user_error(e)
    }

    /// Fails the open transaction block after an error, as every error in a block does in
    /// PostgreSQL (its portals are dropped; their names stay until the block ends, so that
    /// an `Execute` of one is refused with 25P02). Outside a block this drops nothing.
    async fn fail_block(&self) {
        match self.portals.holding_session().await {
            // An open portal runs outside a block: there is no block to fail.
            Some(false) => {}
            // The block fails, and its portals with it: dropped, not gathered.
            Some(true) => {
                self.portals.settle(true).await;
                self.session.lock().await.fail_block();
            }
            None => {
                let mut session = self.session.lock().await;
                session.fail_block();
                let (in_block, failed) = (session.in_transaction(), session.is_failed());
                drop(session);
                self.portals.after_statement(in_block, failed).await;
            }
        }
    }

    /// The session, once no open portal holds it.
    async fn session_after(
        &self,
        portals: &Portals<Portal<Prepared>>,
    ) -> tokio::sync::MutexGuard<'_, Session> {
        portals.settle(false).await;
        self.session.lock().await
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if !self.verdicts.parse_was_utf8(sql) {
            return Err(self.fail(invalid_utf8()).await);
        }
        let mut stmts = match session::parse(sql) {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e).await),
        };
        if stmts.len() > 1 {
            let e = Error::sql(
                sqlstate::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            );
            return Err(self.fail(e).await);
        }
        let Some((stmt, _)) = stmts.pop() else {
            return Ok(None);
        };
        let declared: Vec<DataType> = types
            .iter()
            .map(|t| t.as_ref().map(ddb_type).unwrap_or(DataType::Unknown))
            .collect();
        // Planning reads the session's values; an open portal lets go of the session first.
        let mut session = self.session_after(&self.portals).await;
        let generation = session.prepare_generation();
        let planned = match session.plan(&stmt, &declared) {
            Ok(p) => p,
            Err(e) => {
                session.fail_block();
                return Err(user_error(e));
            }
        };
        Ok(Some(Prepared {
            columns: planned.plan.columns().to_vec(),
            param_types: planned.param_types,
            stmt,
            generation,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.iter().map(pg_type).collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(&stmt.columns, format))
    }
}

/// A statement's or portal's name as PostgreSQL prints it: `""` for the unnamed one.
fn shown(name: &str) -> &str {
    if name == DEFAULT_NAME {
        ""
    } else {
        name
    }
}

/// An `Execute`, `Describe` or `Close` of a portal that does not exist: 34000.
fn no_portal(name: &str) -> Error {
    Error::sql(
        sqlstate::INVALID_CURSOR_NAME,
        format!("portal \"{}\" does not exist", shown(name)),
    )
}

/// A `Bind` or `Describe` of a prepared statement that does not exist: 26000.
fn no_statement(name: &str) -> Error {
    Error::sql(
        sqlstate::INVALID_SQL_STATEMENT_NAME,
        format!("prepared statement \"{}\" does not exist", shown(name)),
    )
}

fn not_utf8(i: usize) -> Error {
    Error::sql(
        sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        format!(
            "invalid byte sequence for encoding \"UTF8\" in parameter ${}",
            i + 1
        ),
    )
}

/// A text parameter's value; NUL cannot be stored in text (22021), as in PostgreSQL.
fn text_value(s: String, i: usize) -> Result<Value, Error> {
    if s.contains('\0') {
        return Err(Error::sql(
            sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            format!(
                "invalid byte sequence for encoding \"UTF8\": 0x00 in parameter ${}",
                i + 1
            ),
        ));
    }
    Ok(Value::Text(s))
}

/// Decodes the bound parameters of a portal into values of the statement's parameter types.
fn decode_params(portal: &Portal<Prepared>) -> Result<(Vec<Value>, Vec<DataType>), Error> {
    let declared = &portal.statement.parameter_types;
    let wanted = declared
        .len()
        .max(portal.statement.statement.param_types.len());
    if portal.parameter_len() > wanted {
        return Err(Error::sql(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "bind message supplies {} parameters, but prepared statement requires {wanted}",
                portal.parameter_len()
            ),
        ));
    }
    let mut values = Vec::with_capacity(portal.parameter_len());
    let mut types = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let ty = declared
            .get(i)
            .cloned()
            .flatten()
            .filter(|t| *t != Type::UNKNOWN)
            .unwrap_or_else(|| {
                pg_type(
                    portal
                        .statement
                        .statement
                        .param_types
                        .get(i)
                        .unwrap_or(&DataType::Text),
                )
            });
        let bad = |e: PgWireError| {
            Error::sql(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("invalid value for parameter ${}: {e}", i + 1),
            )
        };
        // An integer in text that does not fit its type is out of range (22003), anything
        // else that is not an integer is bad syntax (22P02), with PostgreSQL's messages.
        let bad_int = |e: PgWireError, type_name: &str| {
            let text = portal
                .parameters
                .get(i)
                .cloned()
                .flatten()
                .filter(|_| portal.parameter_format.is_text(i))
                .and_then(|b| String::from_utf8(b.to_vec()).ok());
            match text {
                Some(t) if t.trim().parse::<i128>().is_ok() => Error::sql(
                    sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!("value \"{t}\" is out of range for type {type_name}"),
                ),
                Some(t) => Error::sql(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("invalid input syntax for type {type_name}: \"{t}\""),
                ),
                None => bad(e),
            }
        };
        let v = match ty {
            Type::BOOL => portal
                .parameter::<bool>(i, &ty)
                .map_err(bad)?
                .map(Value::Bool),
            Type::INT2 => portal
                .parameter::<i16>(i, &ty)
                .map_err(|e| bad_int(e, "smallint"))?
                .map(|v| Value::Int(v.into())),
            Type::INT4 => portal
                .parameter::<i32>(i, &ty)
                .map_err(|e| bad_int(e, "integer"))?
                .map(|v| Value::Int(v.into())),
            Type::INT8 => portal
                .parameter::<i64>(i, &ty)
                .map_err(|e| bad_int(e, "bigint"))?
                .map(Value::Int),
            Type::FLOAT4 => portal
                .parameter::<f32>(i, &ty)
                .map_err(bad)?
                .map(|v| Value::Float(v.into())),
            Type::FLOAT8 => portal
                .parameter::<f64>(i, &ty)
                .map_err(bad)?
                .map(Value::Float),
            Type::TIMESTAMP => portal
                .parameter::<chrono::NaiveDateTime>(i, &ty)
                .map_err(bad)?
                .map(|v| Value::Timestamp(v.and_utc().timestamp_micros())),
            // A binary UUID is its 16 bytes; a text one is parsed below, as a literal would be.
            Type::UUID if portal.parameter_format.is_binary(i) => {
                match portal.parameters.get(i).cloned().flatten() {
                    None => None,
                    Some(b) => Some(Value::Uuid(<[u8; 16]>::try_from(&b[..]).map_err(|_| {
                        Error::sql(
                            sqlstate::INVALID_BINARY_REPRESENTATION,
                            format!(
                                "invalid value for parameter ${}: a binary uuid is 16 bytes, not {}",
                                i + 1,
                                b.len()
                            ),
                        )
                    })?)),
                }
            }
            // Text must be valid UTF-8 without NUL, as PostgreSQL's server encoding requires.
            _ => portal
                .parameter::<String>(i, &Type::TEXT)
                .map_err(|_| not_utf8(i))?
                .map(|s| text_value(s, i))
                .transpose()?,
        };
        let dt = ddb_type(&ty);
        let v = v.unwrap_or(Value::Null);
        // A UUID sent as text is parsed as its literal would be.
        let v = match (&dt, v) {
            (DataType::Uuid, Value::Text(s)) => Value::Text(s).cast(&DataType::Uuid)?,
            (_, v) => v,
        };
        // Text parameters given for typed slots convert as a literal would.
        let target = portal
            .statement
            .statement
            .param_types
            .get(i)
            .cloned()
            .unwrap_or(DataType::Text);
        let v = if dt.is_text() && !target.is_text() && target != DataType::Unknown {
            v.cast(&target)?
        } else {
            v
        };
        values.push(v);
        types.push(dt);
    }
    Ok((values, types))
}

fn invalid_utf8() -> Error {
    Error::sql(
        sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        "invalid byte sequence for encoding \"UTF8\"",
    )
}

/// The handler of one PostgreSQL connection.
pub struct PgConnection {
    session: Arc<tokio::sync::Mutex<Session>>,
    verdicts: Verdicts,
    parser: Arc<Parser>,
    /// True while a statement runs; shutdown waits for it to clear.
    pub busy: Arc<AtomicBool>,
    /// How long one write to the client may wait for it to read.
    send_timeout: Duration,
    /// Notified when a write timed out: the connection's task then closes the connection.
    pub closed: Arc<Notify>,
    /// Set when a write timed out: nothing more is written to this connection.
    timed_out: AtomicBool,
    /// Portals whose statement has started ([`super::pg_portal`]).
    portals: Arc<Portals<Portal<Prepared>>>,
    /// Whether a transaction block was open after the last statement: when one ends, every
    /// portal goes with it, as PostgreSQL destroys a transaction's portals at its end.
    block_open: AtomicBool,
    /// The backend id a cancel request names this connection by, once it started.
    cancel_pid: std::sync::Mutex<Option<i32>>,
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        let pid = self.cancel_pid.get_mut().map(|p| p.take());
        if let Ok(Some(pid)) = pid {
            cancel_keys().remove(&pid);
        }
    }
}

impl PgConnection {
    /// A handler with a fresh session.
    pub fn new(db: Arc<dyn Backend>, send_timeout: Duration) -> Arc<Self> {
        let session = Arc::new(tokio::sync::Mutex::new(Session::new(db.clone())));
        let verdicts = Verdicts::default();
        let portals = Arc::new(Portals::default());
        Arc::new(Self {
            session: session.clone(),
            verdicts: verdicts.clone(),
            parser: Arc::new(Parser {
                session,
                verdicts,
                portals: portals.clone(),
            }),
            busy: Arc::new(AtomicBool::new(false)),
            send_timeout,
            closed: Arc::new(Notify::new()),
            timed_out: AtomicBool::new(false),
            portals,
            block_open: AtomicBool::new(false),
            cancel_pid: std::sync::Mutex::new(None),
        })
    }

    /// The session, once no open portal holds it (see [`Portals::settle`]).
    async fn session(&self) -> tokio::sync::MutexGuard<'_, Session> {
        self.parser.session_after(&self.portals).await
    }

    /// After a statement ran: the portals of a block that ended (or failed) go, in pgwire's
    /// store too, so an `Execute` of one is refused as PostgreSQL refuses it.
    async fn end_portals<C>(&self, client: &C)
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        // A portal still running holds the session: then the statement that just ran ended
        // nothing (every portal let go of the session before it ran, and that one is open).
        let (in_block, failed) = match self.session.try_lock() {
            Ok(session) => (session.in_transaction(), session.is_failed()),
            Err(_) => return,
        };
        let dropped = self.portals.after_statement(in_block, failed).await;
        if self.block_open.swap(in_block, Ordering::AcqRel) && !in_block {
            client.portal_store().clear_portals();
            return;
        }
        // A failed block keeps its portals' names until it ends: an `Execute` of one is
        // refused with 25P02, as in PostgreSQL, not with "does not exist".
        if !failed {
            for name in dropped {
                client.portal_store().rm_portal(&name);
            }
        }
    }

    /// Fails the open transaction block after an error of the extended protocol, as every error
    /// in a block does in PostgreSQL: its portals are dropped, their names kept until the
    /// block ends.
    pub async fn fail_block(&self) {
        self.parser.fail_block().await;
    }

    fn writer<'c, C>(&'c self, client: &'c mut C) -> Writer<'c, C> {
        Writer {
            client,
            conn: self,
            deadline: None,
        }
    }

    /// Runs the statements of a simple query one after another, each streaming its rows and
    /// its completion to the client before the next one starts; stops at the first error.
    async fn run_simple<C>(&self, writer: &mut Writer<'_, C>, sql: &str) -> Result<(), Error>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
    {
        let mut session = self.session().await;
        if !self.verdicts.query_was_utf8(sql) {
            session.fail_block();
            return writer.feed(error_message(&invalid_utf8())).await;
        }
        let statements = match session.parse(sql) {
            Ok(s) => s,
            Err(e) => return writer.feed(error_message(&e)).await,
        };
        // A query of only comments or semicolons is an empty query, as in PostgreSQL.
        if statements.is_empty() {
            return writer
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await;
        }
        for (stmt, _) in &statements {
            let mut out = PgOutput {
                writer: &mut *writer,
                describe: true,
                format: None,
                encoder: None,
                taken: 0,
            };
            let result = session.execute_to(stmt, &[], &[], &mut out).await;
            let described = out.encoder.is_some();
            match result {
                Ok(result) => {
                    let tag = if described {
                        rows_tag(Some(&result.tag), out.taken)
                    } else {
                        command_tag(&result.tag)
                    };
                    writer
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                }
                Err(e) if self.timed_out() => return Err(e),
                Err(e) => return writer.feed(error_message(&e)).await,
            }
        }
        Ok(())
    }

    /// Whether a write to this connection timed out (it is closing: nothing more can be
    /// written).
    fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// The transaction status the client is told with `ReadyForQuery`.
    async fn status(&self) -> TransactionStatus {
        // An open portal's statement holds the session; it knows where it runs.
        match self.portals.holding_session().await {
            Some(true) => return TransactionStatus::Transaction,
            Some(false) => return TransactionStatus::Idle,
            None => {}
        }
        let session = self.session.lock().await;
        if session.is_failed() {
            TransactionStatus::Error
        } else if session.in_transaction() {
            TransactionStatus::Transaction
        } else {
            TransactionStatus::Idle
        }
    }
}

fn error_message(e: &Error) -> PgWireBackendMessage {
    PgWireBackendMessage::ErrorResponse(error_info(e).into())
}

struct Busy<'a>(&'a AtomicBool);
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[async_trait]
impl SimpleQueryHandler for PgConnection {
    /// Runs a simple query, streaming each statement's rows (see the module notes). This
    /// replaces pgwire's default, which would run every statement before sending anything.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        self.busy.store(true, Ordering::Release);
        let _busy = Busy(&self.busy);
        let mut writer = self.writer(client);
        let ran = if query.query.chars().all(|c| c == ';' || c.is_whitespace()) {
            writer
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await
        } else {
            self.run_simple(&mut writer, &query.query).await
        };
        self.end_portals(&*client).await;
        let status = self.status().await;
        // A query that ran nothing (only `;`) leaves an open portal holding the session; it
        // changed no parameter either.
        let changes = match self.portals.holding_session().await {
            Some(_) => Vec::new(),
            None => parameter_status(&mut *self.session.lock().await),
        };
        let mut writer = self.writer(client);
        let ready = match ran {
            Ok(()) => {
                let mut fed = Ok(());
                for msg in changes {
                    fed = fed.and(writer.feed(msg).await);
                }
                match fed {
                    Ok(()) => {
                        writer
                            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                                status,
                            )))
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        ready.map_err(|e| {
            tracing::info!("SQL connection: {e}");
            PgWireError::IoError(std::io::Error::other(e.to_string()))
        })
    }

    /// The whole result of every statement at once. pgwire calls [`Self::on_query`] instead,
    /// which streams; this serves callers of the trait's `do_query` itself.
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.busy.store(true, Ordering::Release);
        let _busy = Busy(&self.busy);
        let mut session = self.session().await;
        if !self.verdicts.query_was_utf8(query) {
            session.fail_block();
            return Ok(vec![Response::Error(Box::new(error_info(&invalid_utf8())))]);
        }
        let (results, error) = session.execute_sql(query).await;
        let mut responses = Vec::with_capacity(results.len() + 1);
        for r in results {
            responses.push(to_response(r, None)?);
        }
        match error {
            Some((_, _, e)) => responses.push(Response::Error(Box::new(error_info(&e)))),
            // A query of only comments or semicolons is an empty query, as in PostgreSQL.
            None if responses.is_empty() => responses.push(Response::EmptyQuery),
            None => {}
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgConnection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// Parses a statement into the connection's store. A named statement cannot be parsed
    /// again under its name before it is closed (42P05), as in PostgreSQL; the unnamed one is
    /// replaced. A statement `DEALLOCATE` dropped is gone, so its name is free.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let parsed = StoredStatement::parse(client, &message, self.query_parser()).await?;
        if name != DEFAULT_NAME {
            if let Some(Entry::Value(old)) = client.portal_store().get_statement(&name) {
                let live = self
                    .session()
                    .await
                    .check_prepared(Some(&name), old.statement.generation)
                    .is_ok();
                if live {
                    return Err(user_error(Error::sql(
                        sqlstate::DUPLICATE_PREPARED_STATEMENT,
                        format!("prepared statement \"{name}\" already exists"),
                    )));
                }
            }
        }
        match parsed {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Binds a portal, as PostgreSQL does: an unknown statement is 26000, a named portal
    /// that exists already 42P03 (the unnamed one is replaced), and the parameters are
    /// decoded now, so a bad one fails the `Bind` before `BindComplete`. A statement that
    /// returns rows starts here ([`OpenPortal::start`]): the portal's rows are those of its
    /// statement as of the `Bind`, not changed by what runs in the transaction before its
    /// first `Execute` (ddb has no snapshot reads; see [`super::pg_portal`]).
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        let statement = match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => Some(statement),
            Some(Entry::Empty) => None,
            None => return Err(user_error(no_statement(statement_name))),
        };
        if portal_name != DEFAULT_NAME && client.portal_store().get_portal(portal_name).is_some() {
            return Err(user_error(Error::sql(
                sqlstate::DUPLICATE_CURSOR,
                format!("cursor \"{portal_name}\" already exists"),
            )));
        }
        let Some(statement) = statement else {
            if !message.parameters.is_empty() {
                return Err(user_error(Error::sql(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "bind message supplies {} parameters, but prepared statement \"{}\" requires 0",
                        message.parameters.len(),
                        shown(statement_name)
                    ),
                )));
            }
            client.portal_store().put_empty_portal(portal_name);
            return self.bind_complete(client).await;
        };
        let portal = Arc::new(Portal::try_new(&message, statement)?);
        let (params, types) = decode_params(&portal).map_err(user_error)?;
        let prepared = &portal.statement.statement;
        let name = Some(portal.statement.id.as_str()).filter(|n| *n != DEFAULT_NAME);
        // The portal this one replaces (the unnamed one) goes first: nothing gathers its rows.
        self.portals.close(portal_name).await;
        for gone in self.portals.settle(false).await {
            client.portal_store().rm_portal(&gone);
        }
        let session = self.session.clone().lock_owned().await;
        session
            .check_prepared(name, prepared.generation)
            .map_err(user_error)?;
        // In a failed block nothing starts: its `Execute` is refused with 25P02.
        let start = !prepared.columns.is_empty() && !session.is_failed();
        client.portal_store().put_portal(portal.clone());
        if start {
            let open = OpenPortal::start(
                Arc::downgrade(&portal),
                session,
                prepared.stmt.clone(),
                params,
                types,
                portal.result_column_format.clone(),
            );
            self.portals.put(portal_name.to_owned(), open).await;
        }
        self.bind_complete(client).await
    }

    /// Answers `Describe` of a statement that returns no rows with its `ParameterDescription`
    /// and `NoData`, as PostgreSQL does. pgwire answers one that has parameters with an empty
    /// `RowDescription` instead, which pgjdbc takes for a result (from the fifth execution of
    /// a prepared `INSERT` on, "A result was returned when none was expected"). An unknown
    /// statement is 26000 and an unknown portal 34000.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                None => return Err(user_error(no_statement(name))),
                Some(Entry::Value(stmt)) if stmt.statement.columns.is_empty() => {
                    let described = self.do_describe_statement(client, &stmt).await?;
                    let oids = described.parameters.iter().map(|t| t.oid()).collect();
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(oids),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
                Some(_) => {}
            },
            TARGET_TYPE_BYTE_PORTAL if client.portal_store().get_portal(name).is_none() => {
                return Err(user_error(no_portal(name)));
            }
            _ => {}
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.busy.store(true, Ordering::Release);
        let _busy = Busy(&self.busy);
        let mut session = self.session().await;
        let (params, types) = match decode_params(portal) {
            Ok(p) => p,
            Err(e) => {
                session.fail_block();
                return Ok(Response::Error(Box::new(error_info(&e))));
            }
        };
        let stmt = &portal.statement.statement.stmt;
        let name = Some(portal.statement.id.as_str()).filter(|n| *n != DEFAULT_NAME);
        if let Err(e) = session.check_prepared(name, portal.statement.statement.generation) {
            session.fail_block();
            return Ok(Response::Error(Box::new(error_info(&e))));
        }
        if max_rows > 0 {
            // pgwire's portal pages through a whole result; `on_execute` never comes here
            // with a row limit (it keeps the statement running instead), other callers may.
            let result = session.execute(stmt, &params, &types).await;
            for msg in parameter_status(&mut session) {
                client.feed(msg).await?;
            }
            return match result {
                Ok(result) => to_response(result, Some(&portal.result_column_format)),
                Err(e) => Ok(Response::Error(Box::new(error_info(&e)))),
            };
        }
        let mut writer = self.writer(client);
        let mut out = PgOutput {
            writer: &mut writer,
            describe: false,
            format: Some(&portal.result_column_format),
            encoder: None,
            taken: 0,
        };
        let result = session.execute_to(stmt, &params, &types, &mut out).await;
        let (described, taken) = (out.encoder.is_some(), out.taken);
        for msg in parameter_status(&mut session) {
            if !self.timed_out() {
                writer
                    .feed(msg)
                    .await
                    .map_err(|e| PgWireError::IoError(std::io::Error::other(e.to_string())))?;
            }
        }
        match result {
            // The rows are out; what remains is the completion.
            Ok(result) if described => Ok(Response::Execution(rows_tag(Some(&result.tag), taken))),
            Ok(result) => to_response(result, None),
            Err(e) if self.timed_out() => {
                tracing::info!("SQL connection: {e}");
                Err(PgWireError::IoError(std::io::Error::other(e.to_string())))
            }
            Err(e) => Ok(Response::Error(Box::new(error_info(&e)))),
        }
    }

    /// Runs or continues a portal (see [`super::pg_portal`]): without a row limit the
    /// statement streams all its rows now; with one, it sends that many and then
    /// `PortalSuspended`, leaving the statement open for the next `Execute`.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let name = message.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let portal = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => return Err(user_error(no_portal(&name))),
        };
        client.set_state(PgWireConnectionState::QueryInProgress);
        self.busy.store(true, Ordering::Release);
        let _busy = Busy(&self.busy);
        // A negative limit is no limit, as in PostgreSQL.
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let ran = self.execute_portal(client, name, portal, max_rows).await;
        let status = self.status().await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        ran
    }

    /// Ends the implicit transaction: the portals opened outside a block go (and the unnamed
    /// one, as pgwire drops it at every `Sync`); then `ReadyForQuery` with the session's status.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        for name in self.portals.end_implicit(DEFAULT_NAME).await {
            client.portal_store().rm_portal(&name);
        }
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = self.status().await;
        // Outside a block the implicit transaction has ended, and every portal with it.
        if matches!(status, TransactionStatus::Idle) {
            client.portal_store().clear_portals();
        }
        client.set_transaction_status(status);
        let ready = PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status));
        self.writer(client).send(ready).await.map_err(write_error)
    }

    /// Closes a statement or a portal; an open portal's statement is dropped with it.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => {
                self.portals.close(name).await;
                client.portal_store().rm_portal(name);
            }
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }
}

impl PgConnection {
    async fn bind_complete<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }
}

/// A failed write to the client, as pgwire's error (the connection is closing).
fn write_error(e: Error) -> PgWireError {
    tracing::info!("SQL connection: {e}");
    PgWireError::IoError(std::io::Error::other(e.to_string()))
}

impl PgConnection {
    /// The body of `Execute`: continues the open portal started for `portal`, or starts its
    /// statement.
    async fn execute_portal<C>(
        &self,
        client: &mut C,
        name: String,
        portal: Arc<Portal<Prepared>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(open) = self.portals.take(&name, &portal).await {
            return self.fetch(client, name, open, max_rows).await;
        }
        // A new statement: the open portals let go of the session first (dropped when this
        // ends their transaction).
        let stmt = &portal.statement.statement.stmt;
        let ending = matches!(stmt, Statement::Commit | Statement::Rollback);
        for gone in self.portals.settle(ending).await {
            client.portal_store().rm_portal(&gone);
        }
        if max_rows > 0 && !portal.statement.statement.columns.is_empty() {
            let mut session = self.session.clone().lock_owned().await;
            let (params, types) = match decode_params(&portal) {
                Ok(p) => p,
                Err(e) => {
                    session.fail_block();
                    drop(session);
                    self.end_portals(&*client).await;
                    return Err(user_error(e));
                }
            };
            let format = portal.result_column_format.clone();
            let open = OpenPortal::start(
                Arc::downgrade(&portal),
                session,
                stmt.clone(),
                params,
                types,
                format,
            );
            return self.fetch(client, name, open, max_rows).await;
        }
        let response = ExtendedQueryHandler::do_query(self, client, &portal, 0).await?;
        self.end_portals(&*client).await;
        let mut writer = self.writer(client);
        let done = |tag: Tag| PgWireBackendMessage::CommandComplete(tag.into());
        match response {
            Response::Execution(tag) | Response::TransactionStart(tag) => {
                writer.feed(done(tag)).await.map_err(write_error)
            }
            Response::TransactionEnd(tag) => writer.feed(done(tag)).await.map_err(write_error),
            Response::EmptyQuery => writer
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await
                .map_err(write_error),
            Response::Query(mut rows) => {
                let tag = rows.command_tag().to_owned();
                let mut n = 0;
                let data = rows.data_rows();
                while let Some(row) = futures::StreamExt::next(data).await {
                    writer
                        .feed(PgWireBackendMessage::DataRow(row?))
                        .await
                        .map_err(write_error)?;
                    n += 1;
                }
                writer
                    .feed(done(Tag::new(&tag).with_rows(n)))
                    .await
                    .map_err(write_error)
            }
            Response::Error(e) => Err(PgWireError::UserError(e)),
            Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                Err(user_error(Error::unsupported("COPY")))
            }
        }
    }

    /// Sends up to `max_rows` rows of an open portal (all of them with 0), then
    /// `PortalSuspended` (keeping it open) or its completion. Rows are written under one send
    /// deadline per [`FETCH_BATCH`] of them, so a fetch of any size is held to the send
    /// timeout as a streamed result is.
    async fn fetch<C>(
        &self,
        client: &mut C,
        name: String,
        mut open: OpenPortal<Portal<Prepared>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut writer = self.writer(client);
        let mut sent = 0usize;
        let end = loop {
            if max_rows > 0 && sent == max_rows {
                break None;
            }
            if sent.is_multiple_of(FETCH_BATCH) {
                writer.batch(true);
            }
            match open.next().await {
                Some(Ok(row)) => {
                    writer
                        .feed(PgWireBackendMessage::DataRow(row))
                        .await
                        .map_err(write_error)?;
                    sent += 1;
                }
                Some(Err(e)) => break Some(Err(e)),
                None => break Some(Ok(())),
            }
        };
        writer.batch(false);
        match end {
            None => {
                writer
                    .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                    .await
                    .map_err(write_error)?;
                self.portals.put(name, open).await;
                Ok(())
            }
            Some(Ok(())) => {
                let tag = rows_tag(open.command_tag(), sent as u64);
                writer
                    .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await
                    .map_err(write_error)?;
                // Kept (ended): another `Execute` of it gets no rows, as in PostgreSQL.
                self.portals.put(name, open).await;
                Ok(())
            }
            Some(Err(e)) if self.timed_out() => Err(write_error(e)),
            Some(Err(e)) => {
                self.end_portals(&*client).await;
                Err(user_error(e))
            }
        }
    }
}

/// Process-wide backend ids and cancel keys for `BackendKeyData`.
static BACKEND_KEYS: std::sync::LazyLock<RandomPidSecretKeyGenerator> =
    std::sync::LazyLock::new(RandomPidSecretKeyGenerator::default);

/// The connections a cancel request can reach: by backend id, its secret key and the signal
/// that cancels its session's running statement. A connection is in it from its startup until
/// it ends.
type CancelKeys = std::collections::HashMap<i32, (SecretKey, std::sync::Weak<CancelSignal>)>;
static CANCEL_KEYS: std::sync::LazyLock<std::sync::Mutex<CancelKeys>> =
    std::sync::LazyLock::new(Default::default);

fn cancel_keys() -> std::sync::MutexGuard<'static, CancelKeys> {
    // The map holds no invariant a panicking holder could break: use it as it is.
    CANCEL_KEYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers `CancelRequest`s, as PostgreSQL does: the request names a backend id and its
/// secret key (from `BackendKeyData`); when both match a connection, the statement running
/// on it is cancelled with 57014. Anything else does nothing, and nothing is answered (the
/// request's connection is closed either way).
pub struct PgCancel;

#[async_trait]
impl CancelHandler for PgCancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let signal = match cancel_keys().get(&request.pid) {
            Some((secret, signal)) if secret.eq_value(&request.secret_key) => signal.upgrade(),
            _ => None,
        };
        match signal {
            Some(signal) => {
                tracing::debug!("cancel request for backend {}", request.pid);
                signal.cancel();
            }
            None => tracing::debug!("cancel request with a wrong key ignored"),
        }
    }
}

/// The startup without authentication (not built yet), as pgwire's no-op handler does it, but
/// with ddb's parameters: the startup packet's settings go into the session (an unknown or
/// invalid one fails the connection with FATAL, as in PostgreSQL), and the `ParameterStatus`
/// messages are the session's, so `server_version` is ddb's one version (see
/// [`crate::version`]).
#[async_trait]
impl StartupHandler for PgConnection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let (pid, secret_key) = BACKEND_KEYS.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let params = &startup.parameters;
        let user = params.get("user").map(String::as_str).unwrap_or("ddb");
        let database = params.get("database").map(String::as_str).unwrap_or(user);
        let mut session = self.session.lock().await;
        let started = session.start(
            user,
            database,
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if let Err(e) = started {
            let info = severe("FATAL", e.sqlstate(), e.to_string());
            return Err(PgWireError::UserError(Box::new(info)));
        }
        let signal = Arc::downgrade(&session.cancel_signal());
        cancel_keys().insert(pid, (secret_key, signal));
        *self.cancel_pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        client
            .feed(PgWireBackendMessage::Authentication(Authentication::Ok))
            .await?;
        for (name, value) in session.parameter_changes() {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name, value,
                )))
                .await?;
        }
        drop(session);
        let (pid, secret_key) = client.pid_and_secret_key();
        client
            .feed(PgWireBackendMessage::BackendKeyData(BackendKeyData::new(
                pid, secret_key,
            )))
            .await?;
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                TransactionStatus::Idle,
            )))
            .await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }
}

/// The `ParameterStatus` messages for the session's reported parameters that changed (after
/// `SET`, `RESET`, or a block's end), sent before `ReadyForQuery` as PostgreSQL sends them.
fn parameter_status(session: &mut Session) -> Vec<PgWireBackendMessage> {
    session
        .parameter_changes()
        .into_iter()
        .map(|(k, v)| PgWireBackendMessage::ParameterStatus(ParameterStatus::new(k, v)))
        .collect()
}

/// Hands pgwire the handlers of one connection (all of them are the connection itself).
pub struct PgHandlers(pub Arc<PgConnection>);

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(PgCancel)
    }
}

/// Ends a connection that stayed idle inside a transaction block longer than its
/// `idle_in_transaction_session_timeout`: the transaction is rolled back (its locks released)
/// and the client told why with a FATAL 25P03, as PostgreSQL does.
async fn idle_in_transaction_timed_out<S>(socket: &mut S, conn: &PgConnection)
where
    S: Sink<PgWireBackendMessage> + Unpin,
{
    // A portal left open in the block holds the session: it ends with the block, dropped.
    conn.portals.settle(true).await;
    conn.session.lock().await.terminate();
    let info = severe(
        "FATAL",
        sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        "terminating connection due to idle-in-transaction timeout".to_owned(),
    );
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
    let _ = socket.close().await;
}

/// Serves one PostgreSQL connection until the client leaves or breaks the protocol.
///
/// This is pgwire's `process_socket` (no TLS on this port yet) with three differences: the
/// stream is [`Checked`], a message that does not decode gets a FATAL `ErrorResponse` 08P01
/// before the connection closes, and the startup (up to ReadyForQuery) must finish within
/// `startup_timeout` (`--startup-timeout-ms`; pgwire's own bound is a fixed 60 s), so a client
/// that trickles bytes cannot hold a connection slot.
pub async fn serve(
    socket: tokio::net::TcpStream,
    conn: Arc<PgConnection>,
    startup_timeout: std::time::Duration,
) -> std::io::Result<()> {
    use futures::{SinkExt, StreamExt};
    use pgwire::api::{ClientInfo, PgWireConnectionState};
    use pgwire::messages::PgWireFrontendMessage;
    use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
    use tokio_util::codec::{Framed, FramedParts};

    let handlers = PgHandlers(conn.clone());
    let startup_timeout = tokio::time::sleep(startup_timeout);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        s = negotiate_tls::<Prepared>(socket, None) => s?,
    };
    let Some(negotiated) = negotiated else {
        return Ok(());
    };
    // Everything read so far goes through the check too.
    let mut old = negotiated.into_parts();
    let already_read = std::mem::take(&mut old.read_buf);
    let checked = Checked::new(old.io, already_read, conn.verdicts.clone());
    let mut parts = FramedParts::new(checked, old.codec);
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    // The connection is all three handlers (its concrete type names the statement type).
    let (startup, simple, extended) = (conn.clone(), conn.clone(), conn.clone());
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let mut idle_known = None;
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        // Between messages only an open portal holds the session (a row-limited Execute left
        // it suspended); the timeout then is the one read after the last message, since
        // nothing can have changed it while the portal held the session.
        let idle = match (starting, conn.session.try_lock()) {
            (true, _) => None,
            (false, Ok(session)) => {
                idle_known = session.idle_timeout();
                idle_known
            }
            (false, Err(_)) => idle_known,
        };
        let msg = if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                msg = socket.next() => msg,
            }
        } else if let Some(idle) = idle {
            match tokio::time::timeout(idle, socket.next()).await {
                Ok(msg) => msg,
                Err(_) => {
                    idle_in_transaction_timed_out(&mut socket, &conn).await;
                    break;
                }
            }
        } else {
            socket.next().await
        };
        let msg = match msg {
            None => break,
            Some(Ok(PgWireFrontendMessage::Terminate(_))) => break,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                // A message that breaks the protocol: say so, then close, as PostgreSQL does.
                let info = severe(
                    "FATAL",
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("protocol violation: {e}"),
                );
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                let _ = socket.close().await;
                break;
            }
        };
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        let is_cancel = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        let result = process_message(
            msg,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(e) = result {
            let fatal = e.is_fatal();
            // Any error of the extended protocol fails an open block (an unknown portal or
            // statement too), as in PostgreSQL; the handlers fail it for their own errors.
            if is_extended && !fatal {
                conn.fail_block().await;
            }
            process_error(&mut socket, e, is_extended).await?;
            if fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    Ok(())
}
