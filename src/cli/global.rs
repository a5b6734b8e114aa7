//! The options every command takes, each also an environment variable (DESIGN §10.1).

use clap::Args;

use super::output::Format;

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
