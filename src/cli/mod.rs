//! The command line: the `ddb` argument structure and one module per command.
//!
//! Arguments are parsed once with clap (derive, [`args`]); global options ([`global`]) have
//! environment variables; each command returns `anyhow::Result<()>` and errors carry a
//! [`crate::error::Error`] inside, which `main` maps to the documented exit code. Output goes
//! through one printer ([`output`]) for every format, and never panics when stdout or stderr is
//! closed ([`console`]).

pub mod args;
pub mod completions;
pub mod console;
pub mod global;
pub mod init;
pub mod nodes;
pub mod output;
pub mod promote;
pub mod query;
pub mod ring;
pub mod server;
pub mod status;
pub mod stop;

pub use args::{Cli, Command, EXIT_CODES};
pub use global::GlobalArgs;
pub use output::Format;
