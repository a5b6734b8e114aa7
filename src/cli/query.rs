//! `ddb query`: runs SQL statements on a node and prints every result.
//!
//! The SQL comes from the argument, from `-f FILE`, or from standard input. All of it is sent in
//! one request; the node runs the statements in order in one session (so `BEGIN … COMMIT`
//! works) and stops at the first failing statement, which is named on stderr with its SQLSTATE.
//!
//! Rows are printed as they arrive, a batch at a time (all formats but `table`, which gathers
//! its result to size the columns), so a large result costs this process and the node a few
//! batches. A statement that fails after some of its rows were printed leaves them printed and
//! then reports the error (exit 6). When stdout closes (`ddb query … | head`), the command ends
//! quietly with exit 0, and the connection closes with it, which stops the statement on the
//! node at its next batch.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::global::GlobalArgs;
use super::output::{Format, Printer};
use crate::client::{Client, SqlEvent};
use crate::error::Error;

/// Arguments of `ddb query`.
#[derive(Debug, Args)]
#[command(
    after_help = "Rows are printed as they arrive with --format tsv, csv, ndjson and json, so a large result \
                  streams through a bounded amount of memory; --format table gathers each result \
                  before drawing it. A statement that fails after printing some rows exits 6 with \
                  its SQLSTATE on stderr; a closed stdout (| head) ends the command with exit 0."
)]
pub struct QueryArgs {
    /// SQL to run (several statements separated by `;`); read from stdin when neither SQL nor -f is given
    pub sql: Option<String>,
    /// Read the SQL from a file
    #[arg(short, long, value_name = "FILE", conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// Omit the header line of csv/tsv output
    #[arg(long)]
    pub no_header: bool,
    /// How long to wait for the node to answer when connecting
    #[arg(
        long,
        value_name = "MS",
        env = "DDB_CONNECT_TIMEOUT_MS",
        default_value_t = 3000
    )]
    pub connect_timeout_ms: u64,
}

/// A statement failed: the error is already printed; the exit code follows the error (6, or 5
/// for an unknown outcome).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub Error);

/// Connects to the first node of the cluster file that answers.
async fn connect_any(global: &GlobalArgs, timeout: Duration) -> Result<Client, Error> {
    if !global.config.exists() {
        return Err(Error::InvalidInput(format!(
            "no node to connect to: pass --addr HOST:PORT (or DDB_ADDR), or a cluster file with -c (no {} here)",
            global.config.display()
        )));
    }
    let config = crate::config::ClusterConfig::load(&global.config)?;
    let mut last = None;
    for node in &config.nodes {
        match Client::connect_to(&node.rpc_addr(), timeout, Some(config.name.clone())).await {
            Ok(c) => return Ok(c),
            Err(e @ Error::Refused(_)) => return Err(e),
            Err(e) => {
                tracing::debug!("{} is not answering: {e}", node.name);
                last = Some(e);
            }
        }
    }
    Err(Error::Unreachable(format!(
        "no node of cluster '{}' answered{}",
        config.name,
        last.map(|e| format!(" (last error: {e})"))
            .unwrap_or_default()
    )))
}

/// Runs `ddb query`.
pub async fn run(args: &QueryArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?,
        (None, None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::InvalidInput(format!("cannot read SQL from stdin: {e}")))?;
            s
        }
    };
    if sql.trim().trim_matches(';').trim().is_empty() {
        return Err(Error::InvalidInput(
            "no SQL given: pass it as an argument, with -f FILE, or on stdin".into(),
        )
        .into());
    }
    let timeout = Duration::from_millis(args.connect_timeout_ms);
    let client = match &global.addr {
        Some(addr) => Client::connect(addr, timeout).await?,
        None => connect_any(global, timeout).await?,
    };
    let mut stream = client.sql(1, sql).await?;
    let mut printer = Printer::new(
        Format::resolve(global.format),
        global.quiet,
        !args.no_header,
    );
    // Written out after every batch: rows show as they come, and a closed stdout is noticed.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut err = std::io::stderr().lock();
    let error = loop {
        match stream.next().await? {
            SqlEvent::Columns { columns, .. } => printer.start(&columns, &mut out)?,
            SqlEvent::Rows { rows, .. } => {
                printer.rows(&rows, &mut out)?;
                out.flush()?;
            }
            SqlEvent::Done { result, .. } => {
                printer.finish(&result, &mut out, &mut err)?;
                out.flush()?;
            }
            SqlEvent::End(error) => break error,
        }
    };
    out.flush()?;
    if let Some(e) = error {
        let statement: String = e.statement.chars().take(200).collect();
        super::console::note(format_args!(
            "error: statement {} failed: {statement}\n  SQLSTATE {}: {}",
            e.index + 1,
            e.error.sqlstate(),
            e.error
        ));
        return Err(Reported(e.error).into());
    }
    Ok(())
}
