//! A node's life: open the store, serve the two listeners, shut down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::database::Database;
use super::listener::{self, Limits, SHUTDOWN_GRACE};
use super::node::Node;
use super::{cluster, pg, pg_limits, recovery, rpc};
use crate::error::{Error, Result};
use crate::storage::Store;
use crate::txn::TxnManager;

/// The settings of a node.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sql_listen: SocketAddr,
    pub lock_timeout: Duration,
    /// How long a transaction may stay prepared before this node asks its anchor.
    pub prepared_timeout: Duration,
    /// What connections may cost: how many, how long to start, how large a frame.
    pub limits: Limits,
    /// How long one write of a result to a SQL client may wait for the client to read; past
    /// it the connection is closed and its transaction rolled back.
    pub send_timeout: Duration,
    /// How many log entries behind the head a replicated shard's primary keeps for lagging
    /// replicas.
    pub log_retention: u64,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::InvalidInput(format!("cannot listen for {what} on {addr}: {e}")))
}

/// Runs a node until `shutdown` completes, then shuts it down cleanly.
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    // Tests make a node slow to start with `FAILPOINTS=server-before-listen=sleep(MS)`.
    crate::failpoint::crash_point("server-before-listen");
    // Every RPC connection of this process, the ones it dials to its peers too, reads with
    // the node's frame limits.
    crate::protocol::frame::configure(config.limits.frames);
    let rpc_listener = bind(config.listen, "RPC").await?;
    let sql_listener = bind(config.sql_listen, "SQL").await?;
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| Error::Internal(format!("store open task: {e}")))??;
    let store = Arc::new(store);
    let txns = Arc::new(TxnManager::new(store.clone(), config.lock_timeout));
    let db = Arc::new(Database::new(txns)?);
    // Prepared transactions take their locks back before anything is served.
    db.twopc.load().await?;
    let node = Arc::new(Node {
        name: config.name.clone(),
        db: db.clone(),
        rpc_addr: rpc_listener.local_addr()?,
        sql_addr: sql_listener.local_addr()?,
        stop: tokio::sync::Notify::new(),
        join_lock: tokio::sync::Mutex::new(()),
        repl: super::repl::Runtime::new(&store, config.log_retention),
    });
    let pid_file = config.data_dir.join("ddb.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", pid_file.display())))?;
    if let Some(identity) = crate::cluster::meta::Identity::load(store.engine.as_ref())? {
        cluster::start_member(&node, identity).await?;
    }
    tracing::info!(
        name = %node.name,
        rpc = %node.rpc_addr,
        sql = %node.sql_addr,
        data_dir = %config.data_dir.display(),
        lsn = store.applied_lsn()?,
        "ddb node ready"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = JoinSet::new();
    listeners.spawn(serve_sql(
        sql_listener,
        db.clone(),
        config.limits,
        config.send_timeout,
        stop_rx.clone(),
    ));
    listeners.spawn(rpc::serve(
        rpc_listener,
        node.clone(),
        config.limits,
        config.send_timeout,
        stop_rx.clone(),
    ));
    listeners.spawn(recovery::run(
        node.clone(),
        config.prepared_timeout,
        stop_rx.clone(),
    ));

    tokio::select! {
        _ = shutdown => {}
        _ = node.stop.notified() => {}
    }
    tracing::info!("shutting down: no new connections; waiting for running statements");
    let _ = stop_tx.send(true);
    while listeners.join_next().await.is_some() {}
    // Commits already answered are still being sent to their participants: let them finish.
    db.twopc.drain(SHUTDOWN_GRACE).await;
    if let Some(meta) = node.meta() {
        meta.shutdown().await;
    }
    drop(node);
    store.committer.shutdown();
    store.engine.persist()?;
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Accepts PostgreSQL connections until stopped, then drains them. A connection that has not
/// finished its startup within the startup timeout is closed; one past `max_connections` is
/// told so with SQLSTATE 53300 ([`super::pg_limits`]).
async fn serve_sql(
    listener: TcpListener,
    db: Arc<dyn crate::sql::Backend>,
    limits: Limits,
    send_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    let serve = move |socket, peer: SocketAddr, mut stop: watch::Receiver<bool>| {
        let conn = pg::PgConnection::new(db.clone(), send_timeout);
        async move {
            let (busy, closed) = (conn.busy.clone(), conn.closed.clone());
            let serve = pg::serve(socket, conn, limits.startup_timeout);
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "SQL connection ended: {e}");
                    }
                    return;
                }
                // The client stopped reading for longer than the send timeout: dropping the
                // connection drops its session, which rolls its transaction back.
                _ = closed.notified() => {
                    tracing::info!(%peer, "closed a SQL connection whose client stopped reading its result");
                    return;
                }
                _ = stop.changed() => {}
            }
            // Shutting down: let a running statement finish, then drop the connection (an
            // open transaction is rolled back with its session).
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            while busy.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = &mut serve => return,
                    _ = closed.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        }
    };
    let reject = move |socket| {
        pg_limits::reject_too_many(socket, limits.startup_timeout, limits.max_connections)
    };
    listener::accept_loop(
        listener,
        "SQL",
        limits.max_connections,
        stop,
        serve,
        Some(reject),
    )
    .await;
}
