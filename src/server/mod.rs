//! The daemon: a node's listeners, connection handling and shutdown.
//!
//! A node opens its store (which locks the data directory), loads the catalog, and serves two
//! listeners: the internal RPC port ([`rpc`]) for peers and the CLI, and the SQL port ([`pg`]) for
//! PostgreSQL clients. Each connection runs in its own task; a semaphore bounds how many run at
//! once. On shutdown (SIGTERM/SIGINT) the listeners stop accepting, every connection is given a
//! grace period to finish the statement it is running (an open transaction that does not finish
//! is rolled back when its connection is dropped), the committer writes and persists what is
//! queued, and the process exits 0.

pub mod cluster;
pub mod database;
pub mod listener;
pub mod node;
pub mod participant;
pub mod pg;
pub mod pg_frames;
pub mod pg_limits;
pub mod pg_portal;
pub mod pg_rows;
pub mod raft_network;
pub mod recovery;
pub mod repl;
pub mod repl_primary;
pub mod repl_replica;
pub mod rpc;
pub mod run;

pub use database::Database;
pub use node::Node;
pub use run::{run, ServerConfig};
