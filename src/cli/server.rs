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
}

fn parse_addr(s: &str, flag: &str) -> Result<SocketAddr, Error> {
    s.parse().map_err(|_| {
        Error::InvalidInput(format!(
            "{flag}: '{s}' is not a HOST:PORT address (e.g. 127.0.0.1:7071)"
        ))
    })
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
    let config = ServerConfig {
        name: args.name.clone().unwrap_or_else(|| args.listen.clone()),
        data_dir: args.data_dir.clone(),
        listen,
        sql_listen,
        lock_timeout: Duration::from_millis(args.lock_timeout_ms),
        prepared_timeout: Duration::from_millis(args.prepared_timeout_ms),
    };
    server::run(config, shutdown_signal()).await?;
    Ok(())
}
