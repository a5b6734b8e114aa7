//! The command line: the `ddb` argument structure and one module per command.
//!
//! Arguments are parsed once with clap (derive); global options have environment variables;
//! each command returns `anyhow::Result<()>` and errors carry a [`crate::error::Error`] inside,
//! which `main` maps to the documented exit code.

pub mod completions;
pub mod init;
pub mod nodes;
pub mod output;
pub mod query;
pub mod ring;
pub mod server;
pub mod status;
pub mod stop;

use clap::{Args, Parser, Subcommand};

pub use output::Format;

/// The exit codes, shown in `ddb --help` and documented in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error not covered below
  2  bad usage: unknown flag, invalid argument, invalid cluster file
  3  cannot reach the cluster or a node it needed
  4  refused: a safety check failed
  5  timed out: the outcome is unknown
  6  the SQL statement failed (syntax, constraint, serialization failure); stderr has the SQLSTATE";

/// ddb: a distributed SQL database that speaks the PostgreSQL protocol.
#[derive(Debug, Parser)]
#[command(name = "ddb", version, about, long_about = None, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The cluster file
    #[arg(
        short = 'c',
        long,
        env = "DDB_CONFIG",
        global = true,
        value_name = "FILE",
        default_value = "cluster.yaml"
    )]
    pub config: std::path::PathBuf,
    /// A node's RPC address (HOST:PORT)
    #[arg(long, env = "DDB_ADDR", global = true, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Output format [default: table on a terminal, tsv when piped]
    #[arg(long, env = "DDB_FORMAT", global = true, value_enum)]
    pub format: Option<Format>,
    /// Print only data: no row counts or command tags
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (storage daemon) in the foreground
    Server(server::ServerArgs),
    /// Start every node of the cluster file and form the cluster
    Init(init::InitArgs),
    /// Show every node: addresses, shard, role, state, map version, keys
    Status(status::StatusArgs),
    /// Show how the hash ring divides keys among shards, or which shard owns a key
    Ring(ring::RingArgs),
    /// Stop the named nodes (default: all) and wait for them to exit
    Stop(stop::StopArgs),
    /// Run SQL statements and print their results
    Query(query::QueryArgs),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
}
