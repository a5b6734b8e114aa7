//! The `ddb` binary: parses the command line, runs the command, maps errors to exit codes.

use clap::{CommandFactory, Parser};
use ddb::cli::{self, Cli, Command};
use ddb::error::Error;
use tracing_subscriber::EnvFilter;

fn init_logging(command: &Command, verbose: u8) {
    let default = match (command, verbose) {
        (_, 2..) => "trace",
        (_, 1) => "debug",
        (Command::Server(_), 0) => "info,fjall=warn,lsm_tree=warn",
        (_, 0) => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The exit code of a failed command: from the ddb error inside it, else 1.
fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(r) = err.downcast_ref::<cli::query::Reported>() {
        return r.0.exit_code();
    }
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map(Error::exit_code)
        .unwrap_or(1)
}

fn main() {
    // Before anything opens a file: a closed stdout must not become a socket's descriptor.
    cli::console::reserve_std_streams();
    let cli = Cli::parse();
    init_logging(&cli.command, cli.global.verbose);
    // Test builds only: crash points named in the FAILPOINTS environment variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let result = match &cli.command {
        Command::Completions(args) => cli::completions::run(args, Cli::command()),
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            // Room for the derived passes over the deepest expression (types/nesting.rs).
            .thread_stack_size(ddb::types::nesting::WORKER_STACK)
            .build()
        {
            Ok(rt) => rt.block_on(async {
                match command {
                    Command::Server(args) => cli::server::run(args).await,
                    Command::Query(args) => cli::query::run(args, &cli.global).await,
                    Command::Init(args) => cli::init::run(args, &cli.global).await,
                    Command::Status(args) => cli::status::run(args, &cli.global).await,
                    Command::Ring(args) => cli::ring::run(args, &cli.global).await,
                    Command::Stop(args) => cli::stop::run(args, &cli.global).await,
                    Command::Promote(args) => cli::promote::run(args, &cli.global).await,
                    Command::Completions(_) => Ok(()),
                }
            }),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    if let Err(err) = result {
        // The reader of stdout went away (`ddb status | head -1`): it wanted no more.
        if cli::console::is_closed_output(&err) {
            std::process::exit(0);
        }
        // A failed statement is already reported in full on stderr.
        if err.downcast_ref::<cli::query::Reported>().is_none() {
            cli::console::note(format_args!("error: {err:#}"));
        }
        std::process::exit(exit_code(&err));
    }
}
