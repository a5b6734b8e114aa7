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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::protocol::frame::{self, FrameWriter};
use crate::protocol::{Caller, Envelope, Request, Response, PROTOCOL_VERSION};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

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
                let waiter = reader_pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&env.id));
                if let Some(w) = waiter {
                    let _ = w.send(env.body);
                }
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

    /// Sends a request and waits for its response. A [`Response::Error`] becomes `Err`.
    pub async fn call(&self, body: Request) -> Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| Error::Internal("client lock poisoned".into()))?
            .insert(id, tx);
        if self.is_closed() {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(Error::Unreachable(format!(
                "the connection to node at {} is closed",
                self.addr
            )));
        }
        {
            let mut sink = self.sink.lock().await;
            if let Err(e) = sink.write(&Envelope { id, body }).await {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                return Err(e);
            }
        }
        match rx.await {
            Ok(Response::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(_) => Err(Error::Unreachable(format!(
                "lost the connection to node at {} before it answered",
                self.addr
            ))),
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
