//! The RPC client, used by the CLI (and later by nodes to reach their peers).
//!
//! One TCP connection carries many requests at once: each request gets an id, a reader task
//! routes each response to the caller waiting for that id, and a dead connection fails every
//! waiting call with [`Error::Unreachable`]. Connecting has a timeout, so an unreachable node is
//! reported quickly instead of hanging.
//!
//! The handshake says who is calling ([`Caller`]): the CLI ([`Client::connect`],
//! [`Client::connect_to`]) or a peer node ([`Client::connect_peer`]), and each side learns the
//! other's largest frame, so a message of any size crosses in frames the node accepts
//! ([`crate::protocol::frame`]).
//!
//! Most requests get one response. A [`Request::Sql`] gets a stream of them ([`Client::sql`]
//! gives a [`SqlStream`]): the reader hands them over through a bounded channel, and while the
//! caller does not take them the reader waits, stops reading the socket, and so the node's
//! writes stop too and its statement waits. That is the back-pressure that keeps a large
//! result out of memory on both ends; the price is that, while a stream is not read, the other
//! responses of the same connection wait behind it (use one connection per stream for that).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::protocol::frame::{self, FrameWriter};
use crate::protocol::{Caller, Envelope, Request, Response, StatementError, PROTOCOL_VERSION};
use crate::types::value::Value;
use crate::types::{OutputColumn, QueryResult};

/// Who waits for the responses of a request.
enum Waiter {
    /// One response.
    One(oneshot::Sender<Response>),
    /// A stream of them, ended by `SqlEnd` or `Error`.
    Stream(mpsc::Sender<Response>),
}

type Pending = Arc<Mutex<HashMap<u64, Waiter>>>;

/// How many responses of a stream the reader hands over before it waits for the caller.
const STREAM_BUFFER: usize = 2;

/// What a [`SqlStream`] gives, in order: per statement `Columns` (if it returns rows), `Rows`
/// batches, `Done`; then one `End`.
#[derive(Debug)]
pub enum SqlEvent {
    Columns {
        statement: usize,
        columns: Vec<OutputColumn>,
    },
    Rows {
        statement: usize,
        rows: Vec<Vec<Value>>,
    },
    Done {
        statement: usize,
        result: QueryResult,
    },
    /// The end: the error that stopped the request, if one did.
    End(Option<StatementError>),
}

/// The answer to a [`Request::Sql`] as it arrives ([`Client::sql`]).
pub struct SqlStream {
    rx: mpsc::Receiver<Response>,
    addr: String,
    ended: bool,
}

impl SqlStream {
    /// The next part of the answer. After [`SqlEvent::End`] there is nothing more (an error).
    pub async fn next(&mut self) -> Result<SqlEvent> {
        if self.ended {
            return Err(Error::Internal("the SQL answer has ended".into()));
        }
        let Some(response) = self.rx.recv().await else {
            self.ended = true;
            return Err(Error::Unreachable(format!(
                "lost the connection to node at {} before it finished answering",
                self.addr
            )));
        };
        match response {
            Response::SqlColumns { statement, columns } => {
                Ok(SqlEvent::Columns { statement, columns })
            }
            Response::SqlRows { statement, rows } => Ok(SqlEvent::Rows { statement, rows }),
            Response::SqlDone { statement, result } => Ok(SqlEvent::Done { statement, result }),
            Response::SqlEnd { error } => {
                self.ended = true;
                Ok(SqlEvent::End(error))
            }
            Response::Error(e) => {
                self.ended = true;
                Err(e)
            }
            other => {
                self.ended = true;
                Err(Error::Corrupt(format!(
                    "unexpected answer to a SQL request: {other:?}"
                )))
            }
        }
    }

    /// Gathers the rest of the answer: every statement's result with its rows (so memory grows
    /// with the result), and the error.
    pub async fn gather(mut self) -> Result<(Vec<QueryResult>, Option<StatementError>)> {
        let mut results = Vec::new();
        let mut rows = Vec::new();
        loop {
            match self.next().await? {
                SqlEvent::Columns { .. } => {}
                SqlEvent::Rows { rows: batch, .. } => rows.extend(batch),
                SqlEvent::Done { mut result, .. } => {
                    result.rows = std::mem::take(&mut rows);
                    results.push(result);
                }
                SqlEvent::End(error) => return Ok((results, error)),
            }
        }
    }
}

/// A connection to one node's RPC port.
pub struct Client {
    addr: String,
    /// Held for the whole of one message, so the frames of two messages never interleave.
    sink: tokio::sync::Mutex<FrameWriter<OwnedWriteHalf>>,
    pending: Pending,
    /// Set by the reader when the connection ends; calls after that fail at once.
    closed: Arc<AtomicBool>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    /// The name the node reported in the handshake.
    pub node_name: String,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`) as the CLI expecting no particular cluster (`--addr`),
    /// and performs the handshake, within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self> {
        Self::connect_to(addr, timeout, None).await
    }

    /// Connects as the CLI to a node that must belong to the cluster named `cluster` (when
    /// given): a node of another cluster refuses the handshake.
    pub async fn connect_to(
        addr: &str,
        timeout: Duration,
        cluster: Option<String>,
    ) -> Result<Self> {
        Self::connect_as(addr, timeout, Caller::Cli { cluster }).await
    }

    /// Connects as a peer node of the cluster with id `cluster_id`: refused by any node that
    /// is not a member of that cluster.
    pub async fn connect_peer(addr: &str, timeout: Duration, cluster_id: &str) -> Result<Self> {
        let caller = Caller::Peer {
            cluster_id: cluster_id.to_string(),
        };
        Self::connect_as(addr, timeout, caller).await
    }

    async fn connect_as(addr: &str, timeout: Duration, caller: Caller) -> Result<Self> {
        let unreachable =
            |why: String| Error::Unreachable(format!("cannot reach node at {addr}: {why}"));
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream);
        let (mut stream, mut sink) = frame::split(stream, frame::process_limits());
        sink.write(&Envelope {
            id: 0,
            body: Request::Hello {
                protocol: PROTOCOL_VERSION,
                caller,
                max_frame: stream.max_frame() as u64,
            },
        })
        .await?;
        let hello = match tokio::time::timeout(timeout, stream.read::<Envelope<Response>>()).await {
            Ok(Ok(Some(env))) => env.body,
            Ok(Ok(None)) => return Err(unreachable("connection closed during handshake".into())),
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("no handshake answer".into())),
        };
        let node_name = match hello {
            Response::Hello {
                node, max_frame, ..
            } => {
                sink.set_peer_max_frame(usize::try_from(max_frame).unwrap_or(usize::MAX));
                stream.handshake_done();
                node
            }
            Response::Error(e) => return Err(e),
            other => {
                return Err(Error::Corrupt(format!(
                    "unexpected handshake answer {other:?}"
                )))
            }
        };
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(env)) = stream.read::<Envelope<Response>>().await {
                route(&reader_pending, env).await;
            }
            // Mark the connection closed first, then drop the senders: a call that registered
            // before the mark is failed here, and one that registers after sees the mark.
            reader_closed.store(true, Ordering::SeqCst);
            if let Ok(mut p) = reader_pending.lock() {
                p.clear();
            }
        });
        Ok(Self {
            addr: addr.to_string(),
            sink: tokio::sync::Mutex::new(sink),
            pending,
            closed,
            next_id: AtomicU64::new(1),
            reader,
            node_name,
        })
    }

    /// Sends a request and waits for its response. A [`Response::Error`] becomes `Err`. A
    /// [`Request::Sql`] is answered with its whole answer gathered ([`Response::Sql`]); use
    /// [`Self::sql`] to take the rows as they come.
    pub async fn call(&self, body: Request) -> Result<Response> {
        if let Request::Sql { session, sql } = body {
            let (results, error) = self.sql(session, sql).await?.gather().await?;
            return Ok(Response::Sql { results, error });
        }
        let (tx, rx) = oneshot::channel();
        self.send(Waiter::One(tx), body).await?;
        match rx.await {
            Ok(Response::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(_) => Err(Error::Unreachable(format!(
                "lost the connection to node at {} before it answered",
                self.addr
            ))),
        }
    }

    /// Sends a request now and returns the receiver of its response, without waiting for it:
    /// requests started one after another from one task are written in that order, so a
    /// caller can keep many in flight on one connection and still have them read in order
    /// (log shipping does). The receiver fails if the connection ends first.
    pub async fn start(&self, body: Request) -> Result<oneshot::Receiver<Response>> {
        let (tx, rx) = oneshot::channel();
        self.send(Waiter::One(tx), body).await?;
        Ok(rx)
    }

    /// Runs SQL text in `session` of this connection; its answer streams.
    pub async fn sql(&self, session: u64, sql: String) -> Result<SqlStream> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.send(Waiter::Stream(tx), Request::Sql { session, sql })
            .await?;
        Ok(SqlStream {
            rx,
            addr: self.addr.clone(),
            ended: false,
        })
    }

    /// Registers `waiter` for a new request id and sends the request.
    async fn send(&self, waiter: Waiter, body: Request) -> Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .map_err(|_| Error::Internal("client lock poisoned".into()))?
            .insert(id, waiter);
        if self.is_closed() {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(Error::Unreachable(format!(
                "the connection to node at {} is closed",
                self.addr
            )));
        }
        let mut sink = self.sink.lock().await;
        if let Err(e) = sink.write(&Envelope { id, body }).await {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Hands a response to whoever waits for its id. A stream's response waits for room in the
/// stream's channel (that is the back-pressure); a stream whose caller has gone is forgotten.
async fn route(pending: &Pending, env: Envelope<Response>) {
    let ends = matches!(env.body, Response::SqlEnd { .. } | Response::Error(_));
    let stream = {
        let Ok(mut p) = pending.lock() else { return };
        match p.get(&env.id) {
            Some(Waiter::Stream(tx)) if !ends => Some(tx.clone()),
            Some(Waiter::Stream(_)) | Some(Waiter::One(_)) => match p.remove(&env.id) {
                Some(Waiter::One(tx)) => {
                    let _ = tx.send(env.body);
                    return;
                }
                Some(Waiter::Stream(tx)) => Some(tx),
                None => None,
            },
            None => None,
        }
    };
    if let Some(tx) = stream {
        if tx.send(env.body).await.is_err() {
            if let Ok(mut p) = pending.lock() {
                p.remove(&env.id);
            }
        }
    }
}

impl Client {
    /// Whether the connection has ended (the node closed it or went away).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How long a connection may be idle before TCP probes the peer, and how often it probes.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Turns TCP keepalive on for `stream`, so a peer that vanished without closing (crashed
/// machine, partition) ends the connection after a few probes instead of leaving it open for
/// good. Best effort: a socket that refuses keeps working without it.
pub fn set_keepalive(stream: &TcpStream) {
    let params = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE)
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&params) {
        tracing::debug!("cannot turn TCP keepalive on: {e}");
    }
}
