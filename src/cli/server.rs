//! `ddb server`: runs a node in the foreground until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::Error;
use crate::server::{self, ServerConfig};

/// Arguments of `ddb server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The node's data directory (created if missing; locked while the node runs)
    #[arg(long, value_name = "DIR", default_value = "ddb-data")]
    pub data_dir: PathBuf,
    /// Address of the internal RPC listener (peers and the CLI)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7071")]
    pub listen: String,
    /// Address of the PostgreSQL protocol listener
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5441")]
    pub sql_listen: String,
    /// The node's name [default: the RPC address]
    #[arg(long)]
    pub name: Option<String>,
    /// How long a transaction waits for a lock before it fails with SQLSTATE 55P03
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 5000,
        env = "DDB_LOCK_TIMEOUT_MS"
    )]
    pub lock_timeout_ms: u64,
    /// How long a transaction may stay prepared (two-phase commit) before the node asks its
    /// anchor for the outcome
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 3000,
        env = "DDB_PREPARED_TIMEOUT_MS"
    )]
    pub prepared_timeout_ms: u64,
    /// On a replicated shard: how many log entries a primary keeps behind its head at most for
    /// a lagging replica (one further behind is sent a snapshot), and how many a replica keeps
    /// behind its applied LSN (it never drops one it has not applied)
    #[arg(
        long,
        value_name = "ENTRIES",
        default_value_t = crate::server::repl::DEFAULT_RETENTION,
        env = "DDB_LOG_RETENTION"
    )]
    pub log_retention: u64,
    /// Most connections served at once, on each of the two ports. On the SQL port one more is
    /// told SQLSTATE 53300 (too_many_connections) after its startup message; on the RPC port
    /// it waits in the backlog for a free place
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::server::listener::DEFAULT_MAX_CONNECTIONS,
        env = "DDB_MAX_CONNECTIONS"
    )]
    pub max_connections: usize,
    /// How long a new connection has to finish its startup (SQL port: startup message and
    /// authentication) or its handshake (RPC port) before it is closed
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        env = "DDB_STARTUP_TIMEOUT_MS"
    )]
    pub startup_timeout_ms: u64,
    /// The largest frame read on the RPC port, in bytes (at least 1024). Larger messages travel
    /// as several frames; a frame announced larger is refused before it is read
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::protocol::frame::DEFAULT_MAX_FRAME,
        env = "DDB_MAX_FRAME"
    )]
    pub max_frame: usize,
    /// The largest message read on the RPC port, joined from its frames, in bytes
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::protocol::frame::DEFAULT_MAX_MESSAGE,
        env = "DDB_MAX_MESSAGE"
    )]
    pub max_message: usize,
    /// The most bytes of messages being joined from frames that the node holds at once, over
    /// all its RPC connections (at least --max-message). A connection whose next piece does
    /// not fit waits for room at most --frame-timeout-ms, then is closed
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::protocol::frame::DEFAULT_MAX_JOINED,
        env = "DDB_MAX_JOINED"
    )]
    pub max_joined: usize,
    /// How long a frame (or a message of several) begun on the RPC port may take to arrive in
    /// full before the connection is closed
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 30_000,
        env = "DDB_FRAME_TIMEOUT_MS"
    )]
    pub frame_timeout_ms: u64,
    /// How long one write of a query's result may wait for a client that does not read it (a
    /// SQL client, or an RPC caller such as `ddb query`); past it the connection is closed,
    /// rolling back its transaction and releasing its locks
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 30_000,
        env = "DDB_SEND_TIMEOUT_MS"
    )]
    pub send_timeout_ms: u64,
}

/// A listen address: an IP and port, or a host name (`localhost:7071`) resolved to its first
/// address, as the cluster file's `host:` may be either.
fn parse_addr(s: &str, flag: &str) -> Result<SocketAddr, Error> {
    use std::net::ToSocketAddrs;
    let bad = || {
        Error::InvalidInput(format!(
            "{flag}: '{s}' is not a HOST:PORT address (e.g. 127.0.0.1:7071)"
        ))
    };
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// Resolves when the process receives SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs `ddb server`.
pub async fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let listen = parse_addr(&args.listen, "--listen")?;
    let sql_listen = parse_addr(&args.sql_listen, "--sql-listen")?;
    if args.lock_timeout_ms == 0 {
        return Err(Error::InvalidInput("--lock-timeout-ms must be at least 1".into()).into());
    }
    if args.prepared_timeout_ms == 0 {
        return Err(Error::InvalidInput("--prepared-timeout-ms must be at least 1".into()).into());
    }
    for (value, flag) in [
        (args.startup_timeout_ms, "--startup-timeout-ms"),
        (args.frame_timeout_ms, "--frame-timeout-ms"),
        (args.max_connections as u64, "--max-connections"),
    ] {
        if value == 0 {
            return Err(Error::InvalidInput(format!("{flag} must be at least 1")).into());
        }
    }
    let min = crate::protocol::frame::MIN_MAX_FRAME;
    if args.max_frame < min {
        return Err(Error::InvalidInput(format!("--max-frame must be at least {min}")).into());
    }
    if args.max_message < args.max_frame {
        return Err(Error::InvalidInput(format!(
            "--max-message ({}) must be at least --max-frame ({})",
            args.max_message, args.max_frame
        ))
        .into());
    }
    if args.max_joined < args.max_message {
        return Err(Error::InvalidInput(format!(
            "--max-joined ({}) must be at least --max-message ({})",
            args.max_joined, args.max_message
        ))
        .into());
    }
    let limits = crate::server::listener::Limits {
        max_connections: args.max_connections,
        startup_timeout: Duration::from_millis(args.startup_timeout_ms),
        frames: crate::protocol::Limits {
            max_frame: args.max_frame,
            max_message: args.max_message,
            max_joined: args.max_joined,
            frame_timeout: Duration::from_millis(args.frame_timeout_ms),
        },
    };
    if args.send_timeout_ms == 0 {
        return Err(Error::InvalidInput("--send-timeout-ms must be at least 1".into()).into());
    }
    let config = ServerConfig {
        name: args.name.clone().unwrap_or_else(|| args.listen.clone()),
        data_dir: args.data_dir.clone(),
        listen,
        sql_listen,
        lock_timeout: Duration::from_millis(args.lock_timeout_ms),
        prepared_timeout: Duration::from_millis(args.prepared_timeout_ms),
        limits,
        send_timeout: Duration::from_millis(args.send_timeout_ms),
        log_retention: args.log_retention,
    };
    server::run(config, shutdown_signal()).await?;
    Ok(())
}
