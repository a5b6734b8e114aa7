//! `ddb completions SHELL`: prints a completion script generated from the argument definitions.

use clap::Args;
use clap_complete::Shell;

/// Arguments of `ddb completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script of the command line `cmd` for `shell` to `out`.
pub fn generate(mut cmd: clap::Command, shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut cmd, "ddb", out);
}

/// Runs `ddb completions` for the command line `cmd` (the binary's whole argument structure).
pub fn run(args: &CompletionsArgs, cmd: clap::Command) -> anyhow::Result<()> {
    // clap_complete panics when its writer fails: it writes to memory, the CLI writes that out
    // (a closed stdout is then an error, not a panic).
    let mut script = Vec::new();
    generate(cmd, args.shell, &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
    Ok(())
}
