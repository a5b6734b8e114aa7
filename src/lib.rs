//! ddb: a distributed SQL database.
//!
//! One binary is both the storage daemon of a node (`ddb server`) and the operator's tool
//! (`ddb init`, `ddb query`, …). This library holds everything; `main.rs` only parses arguments
//! and maps errors to exit codes. See `DESIGN.md` for the architecture.
//!
//! The modules are layers, each using only the ones below it (`tests/layering.rs` checks this,
//! and that no files import each other in a circle):
//!
//! | layer | what it is |
//! | --- | --- |
//! | `cli` | one file per command, one printer |
//! | `deploy` | starting nodes (local processes) |
//! | `config` | `cluster.yaml`: decoding and validation |
//! | `server` | the daemon: listeners, the wiring of the SQL backend, shard participants, recovery |
//! | `gateway` | a statement's route to the shards: routing, pushdown, shipping, the distributed commit |
//! | `client` | the RPC client used by the CLI, gateways and peers |
//! | `protocol` | framing and the messages, shard messages included (they carry SQL statements and expressions) |
//! | `sql` | parse → plan → execute, and the session on a backend |
//! | `replication` | log shipping as pure cores: primary progress and the in-sync set, replica append and apply, catch-up |
//! | `txn` | locks, transactions, two-phase commit cores and a node's part in them |
//! | `cluster` | the map, the ring, the map's Raft group |
//! | `storage` | the engine trait, disk and memory engines, key encoding, the log and group commit |
//! | `types` | values, data types, expressions, schemas, results |
//! | `failpoint`, `version`, `error` | crash points for tests; the version string; the one error type |

pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod deploy;
pub mod error;
pub mod failpoint;
pub mod gateway;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod sql;
pub mod storage;
pub mod txn;
pub mod types;
pub mod version;
