//! `ddb completions SHELL`: prints a completion script generated from the argument definitions.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Arguments of `ddb completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script for `shell` to `out`.
pub fn generate(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ddb", out);
}

/// Runs `ddb completions`.
pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    generate(args.shell, &mut std::io::stdout().lock());
    Ok(())
}
