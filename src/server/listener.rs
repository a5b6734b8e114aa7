//! The one accept loop of a node, shared by its RPC and SQL listeners, and the limits that
//! bound what connections can cost.
//!
//! Each connection runs in its own task; a semaphore bounds how many run at once
//! (`--max-connections`, 1,024 by default, per listener). What happens to one more depends on
//! the port. On the RPC port the accept waits for a free permit, so a flood queues in the
//! kernel's backlog instead of costing memory here, and peers and the CLI time out on their
//! own. On the SQL port a client must be told: the connection is accepted and handed to a
//! `reject` handler, which answers PostgreSQL's way (SQLSTATE 53300 after the startup message,
//! [`super::pg_limits`]); at most [`MAX_REJECTING`] such answers run at once, and beyond that
//! the connection is closed at once.
//!
//! When the stop signal fires the loop stops accepting and waits for the connections it
//! spawned: each one watches the same signal and decides how to wind down (the SQL port lets a
//! running statement finish, the RPC port lets in-flight requests finish).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Most connections served at once per listener, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long a new connection has, by default, to finish its startup (SQL) or handshake (RPC).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections being told "too many connections" at once.
pub const MAX_REJECTING: usize = 64;

/// What the connections of one node may cost, from `ddb server`'s flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections served at once, per listener.
    pub max_connections: usize,
    /// How long a new connection has to finish its startup (SQL) or handshake (RPC).
    pub startup_timeout: Duration,
    /// Frame and message bounds of the RPC port.
    pub frames: crate::protocol::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            frames: crate::protocol::Limits::default(),
        }
    }
}

/// How long shutdown waits for running statements to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the loop pauses after a failed accept (out of file descriptors, say) before it
/// tries again, so that it does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `stop` fires, serving each with `serve` in its own
/// task, at most `max_connections` at once; then waits for the connections to end. Without
/// `reject`, an accept waits for a free place; with it, a connection beyond the limit is
/// accepted and given to `reject` (at most [`MAX_REJECTING`] at once).
pub async fn accept_loop<F, Fut, R, RFut>(
    listener: TcpListener,
    what: &'static str,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
    serve: F,
    reject: Option<R>,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RFut,
    RFut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let mut conns = JoinSet::new();
    let mut refusals = JoinSet::new();
    loop {
        // Without a reject handler, wait for a free place before accepting.
        let waited = match reject {
            Some(_) => None,
            None => tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => break },
                _ = stop.changed() => break,
            },
        };
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{what} accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = socket.set_nodelay(true);
        crate::client::set_keepalive(&socket);
        let permit = match (waited, &reject) {
            (Some(p), _) => p,
            (None, Some(reject)) => match limit.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    tracing::debug!(%peer, "{what}: {max_connections} connections already; refusing one more");
                    if let Ok(slot) = rejecting.clone().try_acquire_owned() {
                        let refusal = reject(socket);
                        refusals.spawn(async move {
                            let _slot = slot;
                            refusal.await;
                        });
                    }
                    while refusals.try_join_next().is_some() {}
                    continue;
                }
            },
            (None, None) => continue,
        };
        let conn = serve(socket, peer, stop.clone());
        conns.spawn(async move {
            let _permit = permit;
            conn.await;
        });
        while conns.try_join_next().is_some() {}
    }
    refusals.abort_all();
    while conns.join_next().await.is_some() {}
}
