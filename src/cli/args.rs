//! The argument structure of `ddb`: the commands and their exit codes, parsed once with clap.

use clap::{Parser, Subcommand};

use super::global::GlobalArgs;
use super::{completions, init, promote, query, ring, server, status, stop};

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
    /// Make a replica the primary of its shard (--force: the primary is down)
    Promote(promote::PromoteArgs),
    /// Stop the named nodes (default: all) and wait for them to exit
    Stop(stop::StopArgs),
    /// Run SQL statements and print their results
    Query(query::QueryArgs),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
}
