//! ddb: a distributed SQL database.
//!
//! One binary is both the storage daemon of a node (`ddb server`) and the operator's tool
//! (`ddb query`, …). This library holds everything; `main.rs` only parses arguments and maps
//! errors to exit codes. See `DESIGN.md` for the architecture; the modules follow its layout:
//! `storage` (engine, keys, log) ← `txn` (locks, transactions) ← `sql` (parse, plan, execute)
//! ← `server` (listeners: RPC and PostgreSQL) and `cli` (commands, output).

pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod deploy;
pub mod error;
pub mod failpoint;
pub mod gateway;
pub mod protocol;
pub mod server;
pub mod sql;
pub mod storage;
pub mod txn;
pub mod types;

/// The version string `SELECT version()` returns. Drivers parse the leading
/// `PostgreSQL <version>` to decide which features they may use, so ddb reports the PostgreSQL
/// protocol level it speaks first.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 15.0 (ddb {}) on {}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}
