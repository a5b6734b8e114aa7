//! The internal RPC listener: peers and the CLI talk to a node here.
//!
//! A connection starts with a [`Request::Hello`] handshake, within the startup timeout, that
//! checks the protocol version and who is calling: a peer must name this node's cluster id (a
//! node outside any cluster has no peers), the CLI may name the cluster it expects or nothing
//! (`--addr`). Until the handshake is done a frame may be at most 64 KiB; after it, the
//! node's frame and message limits apply ([`crate::protocol::frame`]), so whatever a caller
//! announces, a connection costs a bounded amount of memory for a bounded time.
//! After it, every frame is an [`Envelope`] with a request id; requests on one connection run
//! concurrently and their responses go back as they finish, tagged with the same id. SQL
//! requests name a session of the connection, created on first use, so a CLI can run a
//! transaction across several requests; the sessions end (rolling back open transactions) when
//! the connection closes.
//!
//! **Replication requests keep their order.** A [`Request::Replicate`] (a primary's append to
//! this replica) is handed to the node's one replica driver when its frame is read, through a
//! bounded channel, so appends with many in flight are taken in the order they were sent; the
//! answer comes back through the same in-flight set as any other.
//!
//! **SQL answers stream.** A [`Request::Sql`] is answered with many frames of its id as its
//! statements run (columns, batches of rows, each statement's end, the end of the request),
//! not with one response holding every row. The frames go through one bounded channel per
//! connection ([`FRAMES_IN_FLIGHT`] frames) to the task that writes the socket, so a client
//! that reads slowly makes the statement wait in its output, and with it the scans behind it,
//! on this node and on the shards: the node holds a few batches per connection, never the
//! result. When the connection ends, the channel closes, and a statement still handing over
//! rows fails at its next batch and stops (its transaction rolls back with the session).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Mutex};

use super::listener::{accept_loop, Limits};
use super::node::Node;
use crate::error::Error;
use crate::protocol::frame;
use crate::protocol::{
    Caller, Envelope, RaftRequest, RaftResponse, Request, Response, StatementError,
    PROTOCOL_VERSION,
};
use crate::sql::output::Output;
use crate::sql::Session;
use crate::types::value::Value;
use crate::types::OutputColumn;

/// How many streamed frames (each at most one batch of rows) may wait for the socket, for all
/// the requests of one connection together.
pub const FRAMES_IN_FLIGHT: usize = 4;

/// The channel from the requests of a connection to the task that writes its socket.
type Frames = mpsc::Sender<Envelope<Response>>;

/// Accepts RPC connections until stopped, then drains them.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    limits: Limits,
    send_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    let serve = move |socket, peer: SocketAddr, stop| {
        let node = node.clone();
        async move {
            if let Err(e) = connection(socket, node, limits, send_timeout, stop).await {
                tracing::debug!(%peer, "RPC connection ended: {e}");
            }
        }
    };
    accept_loop(
        listener,
        "RPC",
        limits.max_connections,
        stop,
        serve,
        None::<fn(TcpStream) -> std::future::Ready<()>>,
    )
    .await;
}

type Sessions = Arc<Mutex<HashMap<u64, Arc<Mutex<Session>>>>>;

async fn connection(
    socket: TcpStream,
    node: Arc<Node>,
    limits: Limits,
    send_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (mut stream, mut sink) = frame::split(socket, limits.frames);
    let hello: Envelope<Request> =
        match tokio::time::timeout(limits.startup_timeout, stream.read()).await {
            Ok(Ok(Some(env))) => env,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "no handshake within {} ms",
                    limits.startup_timeout.as_millis()
                )))
            }
        };
    match greet(&node, hello.body, limits.frames.max_frame) {
        Ok((body, peer_max_frame)) => {
            sink.set_peer_max_frame(usize::try_from(peer_max_frame).unwrap_or(usize::MAX));
            stream.handshake_done();
            sink.write(&Envelope { id: hello.id, body }).await?
        }
        Err(err) => {
            let body = Response::Error(err.clone());
            sink.write(&Envelope { id: hello.id, body }).await?;
            return Err(err);
        }
    }

    let sessions: Sessions = Arc::default();
    let participants = super::participant::Conn::new(node.db.twopc.clone());
    let (frames, mut streamed) = mpsc::channel::<Envelope<Response>>(FRAMES_IN_FLIGHT);
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            frame = stream.read::<Envelope<Request>>() => match frame {
                Ok(Some(env)) => {
                    let id = env.id;
                    // Replication requests go to the replica driver now, in frame order.
                    let (request, routed) = match env.body {
                        Request::Replicate(req) => (None, Some(replicate(req, &node).await)),
                        other => (Some(other), None),
                    };
                    let (node, sessions, participants, frames) =
                        (node.clone(), sessions.clone(), participants.clone(), frames.clone());
                    inflight.push(async move {
                        if let Some(routed) = routed {
                            return Some(Envelope { id, body: replicated(routed).await });
                        }
                        let body = match request? {
                            Request::Shard(req) => super::participant::handle(&node, &participants, req).await,
                            // Streamed through `frames`: nothing left to answer here.
                            Request::Sql { session, sql } => {
                                sql_request(env.id, session, &sql, &node, &sessions, &frames).await;
                                return None;
                            }
                            other => handle(other, &node, &sessions).await,
                        };
                        Some(Envelope { id, body })
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    // A frame that does not decode, or a broken connection: answer once (if we
                    // can) and stop reading; what is running still finishes below.
                    let _ = sink.write(&Envelope { id: 0, body: Response::Error(e.clone()) }).await;
                    tracing::debug!("RPC connection: {e}");
                    break;
                }
            },
            Some(frame) = streamed.recv() => {
                if let Err(e) = send(&mut sink, &frame, send_timeout).await {
                    tracing::debug!("RPC connection: cannot answer: {e}");
                    break;
                }
            }
            Some(reply) = inflight.next(), if !inflight.is_empty() => {
                let Some(reply) = reply else { continue };
                if let Err(e) = send(&mut sink, &reply, send_timeout).await {
                    tracing::debug!("RPC connection: cannot answer: {e}");
                    break;
                }
            }
            _ = stop.changed() => {
                // Shutting down: finish what is running, answer it, then close.
                let deadline = tokio::time::sleep(super::listener::SHUTDOWN_GRACE);
                tokio::pin!(deadline);
                while !inflight.is_empty() {
                    tokio::select! {
                        Some(reply) = inflight.next() => {
                            if let Some(reply) = reply {
                                send(&mut sink, &reply, send_timeout).await?;
                            }
                        }
                        Some(frame) = streamed.recv() => { send(&mut sink, &frame, send_timeout).await?; }
                        _ = &mut deadline => break,
                    }
                }
                while let Ok(frame) = streamed.try_recv() {
                    send(&mut sink, &frame, send_timeout).await?;
                }
                return Ok(());
            }
        }
    }
    // The connection ended: finish in-flight work (it may hold commits) before dropping the
    // sessions and participants, which rolls back whatever is still open. Streamed answers
    // have nowhere to go: closing their channel stops their statements at the next batch.
    drop(streamed);
    let mut writable = true;
    while let Some(reply) = inflight.next().await {
        if let (Some(reply), true) = (reply, writable) {
            writable = send(&mut sink, &reply, send_timeout).await.is_ok();
        }
    }
    Ok(())
}

/// The receiver of a replication request's answer from the replica driver.
type Routed = Result<
    tokio::sync::oneshot::Receiver<crate::error::Result<crate::protocol::ReplicateReply>>,
    Error,
>;

/// Hands a replication request to the replica driver now, in frame order, and returns the
/// receiver of its answer. Waits while the driver's inbox is full (reading the connection
/// waits with it).
async fn replicate(req: crate::protocol::Replicate, node: &Node) -> Routed {
    let inbox = node.repl.replica_inbox()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    inbox
        .send((req, tx))
        .await
        .map_err(|_| Error::ShuttingDown("the replica driver has stopped".into()))?;
    Ok(rx)
}

/// The answer to a routed replication request, once the driver gives it.
async fn replicated(routed: Routed) -> Response {
    match routed {
        Ok(rx) => match rx.await {
            Ok(Ok(reply)) => Response::Replicated(reply),
            Ok(Err(e)) => Response::Error(e),
            Err(_) => Response::Error(Error::ShuttingDown(
                "the replica driver stopped before answering".into(),
            )),
        },
        Err(e) => Response::Error(e),
    }
}

/// Writes one answer, waiting at most `timeout` for the caller to read: a caller that stopped
/// reading (a `ddb query` suspended with Ctrl-Z, a frozen peer) loses its connection, which
/// rolls back its sessions' transactions and releases their locks, instead of holding them for
/// as long as it stays stopped.
async fn send<W>(
    sink: &mut frame::FrameWriter<W>,
    frame: &Envelope<Response>,
    timeout: Duration,
) -> Result<(), Error>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, sink.write(frame)).await {
        Ok(result) => result,
        Err(_) => {
            let e = Error::Timeout(format!(
                "the caller read nothing for {} ms; closing its connection",
                timeout.as_millis()
            ));
            tracing::warn!("RPC connection: {e}");
            Err(e)
        }
    }
}

/// Where a [`Request::Sql`] statement's rows go: frames of the request's id, into the
/// connection's bounded channel, waiting while it is full.
struct FrameOutput<'a> {
    id: u64,
    statement: usize,
    frames: &'a Frames,
    taken: u64,
}

impl FrameOutput<'_> {
    async fn send(&self, body: Response) -> Result<(), Error> {
        self.frames
            .send(Envelope { id: self.id, body })
            .await
            .map_err(|_| Error::Unreachable("the client's connection closed".into()))
    }
}

#[async_trait::async_trait]
impl Output for FrameOutput<'_> {
    async fn start(&mut self, columns: &[OutputColumn]) -> Result<(), Error> {
        let columns = columns.to_vec();
        let statement = self.statement;
        self.send(Response::SqlColumns { statement, columns }).await
    }

    async fn rows(&mut self, rows: Vec<Vec<Value>>) -> Result<(), Error> {
        let n = rows.len() as u64;
        let statement = self.statement;
        self.send(Response::SqlRows { statement, rows }).await?;
        self.taken += n;
        Ok(())
    }

    fn taken(&self) -> u64 {
        self.taken
    }
}

/// Runs the statements of a [`Request::Sql`] in order in its session, streaming each one's
/// rows and end, and then the end of the request, as frames of request `id`. Stops at the
/// first error; stops quietly when the connection has gone (nobody is left to tell).
async fn sql_request(
    id: u64,
    session: u64,
    sql: &str,
    node: &Arc<Node>,
    sessions: &Sessions,
    frames: &Frames,
) {
    let s = sessions
        .lock()
        .await
        .entry(session)
        .or_insert_with(|| Arc::new(Mutex::new(Session::new(node.db.clone()))))
        .clone();
    let mut s = s.lock().await;
    let end = |error| Envelope {
        id,
        body: Response::SqlEnd { error },
    };
    let statements = match s.parse(sql) {
        Ok(statements) => statements,
        Err(error) => {
            let error = StatementError {
                index: 0,
                statement: sql.to_string(),
                error,
            };
            let _ = frames.send(end(Some(error))).await;
            return;
        }
    };
    for (index, (stmt, text)) in statements.iter().enumerate() {
        let mut out = FrameOutput {
            id,
            statement: index,
            frames,
            taken: 0,
        };
        match s.execute_to(stmt, &[], &[], &mut out).await {
            Ok(result) => {
                let done = Response::SqlDone {
                    statement: index,
                    result,
                };
                if out.send(done).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let error = StatementError {
                    index,
                    statement: text.clone(),
                    error,
                };
                let _ = frames.send(end(Some(error))).await;
                return;
            }
        }
    }
    let _ = frames.send(end(None)).await;
}

/// Answers the handshake with the node's largest frame, and returns the caller's; or refuses
/// it: another protocol version, a peer of another cluster (or any peer, for a node outside a
/// cluster), a CLI that expects another cluster, or a first request that is not a handshake.
fn greet(node: &Node, first: Request, max_frame: usize) -> Result<(Response, u64), Error> {
    let Request::Hello {
        protocol,
        caller,
        max_frame: peer_max_frame,
    } = first
    else {
        return Err(Error::InvalidInput(
            "the first request must be the handshake".into(),
        ));
    };
    if protocol != PROTOCOL_VERSION {
        return Err(Error::Refused(format!(
            "protocol version {protocol} is not supported; this node speaks {PROTOCOL_VERSION}"
        )));
    }
    let identity = node.meta().map(|m| &m.identity);
    match (&caller, identity) {
        (Caller::Peer { cluster_id }, Some(id)) if *cluster_id == id.cluster_id => {}
        (Caller::Peer { cluster_id }, Some(id)) => {
            return Err(Error::Refused(format!(
                "node {} belongs to cluster '{}' (id {}), not to the caller's cluster id {cluster_id}",
                node.name, id.cluster_name, id.cluster_id
            )))
        }
        (Caller::Peer { cluster_id }, None) => {
            return Err(Error::Refused(format!(
                "node {} is not part of a cluster, so it has no peers (the caller names cluster id {cluster_id})",
                node.name
            )))
        }
        (Caller::Cli { cluster: Some(expected) }, Some(id)) if id.cluster_name != *expected => {
            return Err(Error::Refused(format!(
                "node {} belongs to cluster '{}', not '{expected}'",
                node.name, id.cluster_name
            )))
        }
        (Caller::Cli { .. }, _) => {}
    }
    Ok((
        Response::Hello {
            protocol: PROTOCOL_VERSION,
            node: node.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            max_frame: max_frame as u64,
        },
        peer_max_frame,
    ))
}

async fn handle(request: Request, node: &Arc<Node>, sessions: &Sessions) -> Response {
    match request {
        Request::Hello { .. } => {
            Response::Error(Error::InvalidInput("handshake sent twice".into()))
        }
        Request::Sql { .. } => Response::Error(Error::Internal(
            "a SQL request reached the one-answer path (it streams)".into(),
        )),
        Request::EndSession { session } => {
            sessions.lock().await.remove(&session);
            Response::Done
        }
        // The status reads every row (its count and checksum): off the runtime's workers.
        Request::Status => {
            let node = node.clone();
            match tokio::task::spawn_blocking(move || node.status()).await {
                Ok(Ok(s)) => Response::Status(s),
                Ok(Err(e)) => Response::Error(e),
                Err(e) => Response::Error(Error::Internal(format!("status task: {e}"))),
            }
        }
        Request::Join(identity) => done(super::cluster::join(node, identity).await),
        Request::Initialize(map) => done(super::cluster::initialize(node, *map).await),
        Request::GetMap => Response::Map(
            node.meta()
                .and_then(|m| m.map())
                .map(|m| Box::new((*m).clone())),
        ),
        Request::Propose(change) => match node.meta() {
            Some(meta) => match meta.propose_forwarded(change).await {
                Ok(v) => Response::Proposed(v),
                Err(e) => Response::Error(e),
            },
            None => Response::Error(not_member(node)),
        },
        Request::Raft(req) => match node.meta() {
            Some(meta) => Response::Raft(match req {
                RaftRequest::Append(r) => RaftResponse::Append(meta.raft.append_entries(r).await),
                RaftRequest::Vote(r) => RaftResponse::Vote(meta.raft.vote(r).await),
                RaftRequest::Snapshot(r) => {
                    RaftResponse::Snapshot(meta.raft.install_snapshot(r).await)
                }
            }),
            None => Response::Error(not_member(node)),
        },
        Request::Shutdown => {
            node.stop.notify_one();
            Response::Done
        }
        Request::Shard(_) => {
            Response::Error(Error::Internal("shard request outside a connection".into()))
        }
        Request::Replicate(_) => Response::Error(Error::Internal(
            "a replication request reached the one-answer path (it goes to the replica driver)"
                .into(),
        )),
        Request::Execute {
            stmt,
            params,
            param_types,
            catalog_version,
        } => {
            // The gateway planned with this catalog; this node may be a moment behind it.
            if let Err(e) = node.db.catch_up_catalog(catalog_version).await {
                return Response::Error(e);
            }
            let mut session = Session::shipped(node.db.clone());
            match session.execute(&stmt, &params, &param_types).await {
                Ok(result) => Response::Executed(result),
                Err(e) => Response::Error(e),
            }
        }
        Request::HandOver {
            shard,
            epoch,
            to,
            drain_ms,
        } => {
            // The CLI bounds it too; a peer's request is not trusted to.
            let drain = Duration::from_millis(drain_ms.min(MAX_DRAIN_MS));
            match node.repl.hand_over(shard, epoch, &to, drain).await {
                Ok(done) => Response::HandedOver(done),
                Err(e) => Response::Error(e),
            }
        }
        Request::FirstTxnRecord { shard, after, upto } => {
            let me = &node.name;
            let holds = node
                .meta()
                .and_then(|m| m.map())
                .and_then(|map| map.shard_of_node(me).map(|(id, _)| id))
                == Some(shard);
            if !holds {
                return Response::Error(Error::Refused(format!(
                    "node {me} holds no copy of shard {shard}"
                )));
            }
            let engine = node.db.txns.store.engine.clone();
            match tokio::task::spawn_blocking(move || {
                crate::storage::log::first_txn_record(engine.as_ref(), after, upto)
            })
            .await
            {
                Ok(Ok(lsn)) => Response::TxnRecord(lsn),
                Ok(Err(e)) => Response::Error(e),
                Err(e) => Response::Error(Error::Internal(format!("log scan task: {e}"))),
            }
        }
    }
}

/// The longest drain of a switchover: writes are refused meanwhile.
const MAX_DRAIN_MS: u64 = 60_000;

fn done(r: crate::error::Result<()>) -> Response {
    match r {
        Ok(()) => Response::Done,
        Err(e) => Response::Error(e),
    }
}

fn not_member(node: &Node) -> Error {
    Error::Refused(format!(
        "node {} is not part of a cluster (run ddb init)",
        node.name
    ))
}
