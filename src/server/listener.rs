//! The one accept loop of a node, shared by its RPC and SQL listeners.
//!
//! Each connection runs in its own task; a semaphore bounds how many run at once (an accept
//! waits for a free permit, so a flood of connections queues in the kernel's backlog instead of
//! costing memory here). When the stop signal fires the loop stops accepting and waits for the
//! connections it spawned: each one watches the same signal and decides how to wind down (the
//! SQL port lets a running statement finish, the RPC port lets in-flight requests finish).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Most connections served at once per listener.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long shutdown waits for running statements to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the loop pauses after a failed accept (out of file descriptors, say) before it
/// tries again, so that it does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `stop` fires, serving each with `serve` in its own
/// task, at most `max_connections` at once; then waits for the connections to end.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
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
        let conn = serve(socket, peer, stop.clone());
        conns.spawn(async move {
            let _permit = permit;
            conn.await;
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}
