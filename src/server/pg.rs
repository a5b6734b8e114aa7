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

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{stream, Sink};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::pg_frames::{Checked, Verdicts};
use crate::error::{sqlstate, Error};
use crate::sql::ast::Statement;
use crate::sql::{session, Backend, Session};
use crate::types::value::{timestamp_to_naive, DataType, Value};
use crate::types::OutputColumn;
use crate::types::QueryResult;

/// The pgwire type of a ddb type.
pub fn pg_type(ty: &DataType) -> Type {
    match ty {
        DataType::Bool => Type::BOOL,
        DataType::SmallInt => Type::INT2,
        DataType::Int => Type::INT4,
        DataType::BigInt => Type::INT8,
        DataType::Real => Type::FLOAT4,
        DataType::Double => Type::FLOAT8,
        DataType::Text | DataType::Unknown => Type::TEXT,
        DataType::Varchar(_) => Type::VARCHAR,
        DataType::Char(_) => Type::BPCHAR,
        DataType::Timestamp => Type::TIMESTAMP,
    }
}

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
        _ => DataType::Unknown,
    }
}

fn error_info(e: &Error) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_owned(), e.sqlstate().to_owned(), e.to_string())
}

fn user_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

fn fields(columns: &[OutputColumn], format: Option<&Format>) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format.map(|f| f.format_for(i)).unwrap_or(FieldFormat::Text);
            FieldInfo::new(c.name.clone(), None, None, pg_type(&c.data_type), f)
        })
        .collect()
}

fn encode_value(
    enc: &mut DataRowEncoder,
    v: &Value,
    ty: &Type,
    format: FieldFormat,
) -> PgWireResult<()> {
    let opts = Default::default();
    let put_text = |enc: &mut DataRowEncoder, s: String| {
        enc.encode_field_with_type_and_format(&s, ty, format, &opts)
    };
    match (v, ty) {
        (Value::Null, _) => enc.encode_field_with_type_and_format(&None::<i32>, ty, format, &opts),
        (Value::Bool(b), &Type::BOOL) => {
            enc.encode_field_with_type_and_format(b, ty, format, &opts)
        }
        (Value::Int(i), &Type::INT2) => {
            enc.encode_field_with_type_and_format(&(*i as i16), ty, format, &opts)
        }
        (Value::Int(i), &Type::INT4) => {
            enc.encode_field_with_type_and_format(&(*i as i32), ty, format, &opts)
        }
        (Value::Int(i), &Type::INT8) => enc.encode_field_with_type_and_format(i, ty, format, &opts),
        (Value::Int(i), &Type::FLOAT8) => {
            enc.encode_field_with_type_and_format(&(*i as f64), ty, format, &opts)
        }
        (Value::Int(i), &Type::FLOAT4) => {
            enc.encode_field_with_type_and_format(&(*i as f32), ty, format, &opts)
        }
        (Value::Float(f), &Type::FLOAT8) if format == FieldFormat::Binary => {
            enc.encode_field_with_type_and_format(f, ty, format, &opts)
        }
        (Value::Float(f), &Type::FLOAT4) if format == FieldFormat::Binary => {
            enc.encode_field_with_type_and_format(&(*f as f32), ty, format, &opts)
        }
        (Value::Float(f), &Type::FLOAT4) => {
            put_text(enc, crate::types::value::format_real(*f as f32))
        }
        (Value::Timestamp(t), &Type::TIMESTAMP) if format == FieldFormat::Binary => {
            match timestamp_to_naive(*t) {
                Some(dt) => enc.encode_field_with_type_and_format(&dt, ty, format, &opts),
                None => put_text(enc, v.to_string()),
            }
        }
        // Text format: PostgreSQL's own text output of the value.
        (v, _) => put_text(enc, v.to_string()),
    }
}

/// Builds the pgwire response for a statement result.
fn to_response(result: QueryResult, format: Option<&Format>) -> PgWireResult<Response> {
    let tag = result.tag.clone();
    let mut words = tag.split_whitespace();
    let command = words.next().unwrap_or("");
    if command == "SELECT" && !result.columns.is_empty() {
        let schema = Arc::new(fields(&result.columns, format));
        let types: Vec<Type> = schema.iter().map(|f| f.datatype().clone()).collect();
        let formats: Vec<FieldFormat> = schema.iter().map(|f| f.format()).collect();
        let mut rows = Vec::with_capacity(result.rows.len());
        let mut enc = DataRowEncoder::new(schema.clone());
        for row in &result.rows {
            for (i, v) in row.iter().enumerate() {
                encode_value(&mut enc, v, &types[i], formats[i])?;
            }
            rows.push(Ok(enc.take_row()));
        }
        return Ok(Response::Query(QueryResponse::new(
            schema,
            stream::iter(rows),
        )));
    }
    let numbers: Vec<usize> = words.filter_map(|w| w.parse().ok()).collect();
    Ok(match (command, numbers.as_slice()) {
        ("BEGIN", _) => Response::TransactionStart(Tag::new("BEGIN")),
        ("COMMIT" | "ROLLBACK", _) => Response::TransactionEnd(Tag::new(command)),
        ("INSERT", [oid, rows]) => {
            Response::Execution(Tag::new("INSERT").with_oid(*oid as u32).with_rows(*rows))
        }
        (_, [rows]) => Response::Execution(Tag::new(command).with_rows(*rows)),
        _ => Response::Execution(Tag::new(&tag)),
    })
}

/// A prepared statement: the parsed statement, its parameter types and its result columns.
#[derive(Clone, Debug)]
pub struct Prepared {
    stmt: Statement,
    param_types: Vec<DataType>,
    columns: Vec<OutputColumn>,
}

/// Parses and plans statements of the extended protocol.
pub struct Parser {
    db: Arc<dyn Backend>,
    verdicts: Verdicts,
    /// The connection's session: an error while preparing fails its open transaction block,
    /// as any other error in a block does.
    session: Arc<tokio::sync::Mutex<Session>>,
}

impl Parser {
    async fn fail(&self, e: Error) -> PgWireError {
        self.session.lock().await.fail_block();
        user_error(e)
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
        let planned = match session::plan(self.db.catalog(), &stmt, &declared) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e).await),
        };
        Ok(Some(Prepared {
            columns: planned.plan.columns().to_vec(),
            param_types: planned.param_types,
            stmt,
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
        let v = match ty {
            Type::BOOL => portal
                .parameter::<bool>(i, &ty)
                .map_err(bad)?
                .map(Value::Bool),
            Type::INT2 => portal
                .parameter::<i16>(i, &ty)
                .map_err(bad)?
                .map(|v| Value::Int(v.into())),
            Type::INT4 => portal
                .parameter::<i32>(i, &ty)
                .map_err(bad)?
                .map(|v| Value::Int(v.into())),
            Type::INT8 => portal
                .parameter::<i64>(i, &ty)
                .map_err(bad)?
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
            // Text must be valid UTF-8 without NUL, as PostgreSQL's server encoding requires.
            _ => portal
                .parameter::<String>(i, &Type::TEXT)
                .map_err(|_| not_utf8(i))?
                .map(|s| text_value(s, i))
                .transpose()?,
        };
        let dt = ddb_type(&ty);
        let v = v.unwrap_or(Value::Null);
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
}

impl PgConnection {
    /// A handler with a fresh session.
    pub fn new(db: Arc<dyn Backend>) -> Arc<Self> {
        let session = Arc::new(tokio::sync::Mutex::new(Session::new(db.clone())));
        let verdicts = Verdicts::default();
        Arc::new(Self {
            session: session.clone(),
            verdicts: verdicts.clone(),
            parser: Arc::new(Parser {
                db,
                session,
                verdicts,
            }),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }
}

struct Busy<'a>(&'a AtomicBool);
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[async_trait]
impl SimpleQueryHandler for PgConnection {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.busy.store(true, Ordering::Release);
        let _busy = Busy(&self.busy);
        let mut session = self.session.lock().await;
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

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.busy.store(true, Ordering::Release);
        let _busy = Busy(&self.busy);
        let mut session = self.session.lock().await;
        let (params, types) = match decode_params(portal) {
            Ok(p) => p,
            Err(e) => {
                session.fail_block();
                return Ok(Response::Error(Box::new(error_info(&e))));
            }
        };
        match session
            .execute(&portal.statement.statement.stmt, &params, &types)
            .await
        {
            Ok(result) => to_response(result, Some(&portal.result_column_format)),
            Err(e) => Ok(Response::Error(Box::new(error_info(&e)))),
        }
    }
}

impl NoopStartupHandler for PgConnection {}

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
}

/// Serves one PostgreSQL connection until the client leaves or breaks the protocol.
///
/// This is pgwire's `process_socket` (no TLS on this port yet) with two differences: the
/// stream is [`Checked`], and a message that does not decode gets a FATAL `ErrorResponse` 08P01
/// before the connection closes.
pub async fn serve(socket: tokio::net::TcpStream, conn: Arc<PgConnection>) -> std::io::Result<()> {
    use futures::{SinkExt, StreamExt};
    use pgwire::api::{ClientInfo, PgWireConnectionState};
    use pgwire::messages::PgWireFrontendMessage;
    use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
    use tokio_util::codec::{Framed, FramedParts};

    let handlers = PgHandlers(conn.clone());
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
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
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                msg = socket.next() => msg,
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
                let info = ErrorInfo::new(
                    "FATAL".to_owned(),
                    sqlstate::PROTOCOL_VIOLATION.to_owned(),
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

/// How long a client has to finish its startup (pgwire's own bound).
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
