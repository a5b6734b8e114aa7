//! The SQL layer: parse → plan → execute, and the session that runs statements.
//!
//! [`parser`] turns text into ddb's [`ast`]; [`planner`] binds it against the [`catalog`] into a
//! plan with typed expressions (`types::Expr`); [`execution`] runs the plan in a transaction
//! through [`rows::RowTxn`], whose scans deliver batches to a [`rows::RowSink`], and hands a
//! query's rows to an [`output::Output`] as they come ([`aggregate`] and [`order`] are the
//! grouping and the sort order it uses); and [`session`] holds one client's transaction state
//! and is what the PostgreSQL and RPC front ends call. The session runs on a [`backend::Backend`] that the
//! server wires in: a node's own transactions, or the gateway's across the cluster. This layer
//! never names the gateway: [`partial`] is the half of a scan that a shard runs for one, and
//! [`point`] the statements a gateway may send whole to a shard.

pub mod aggregate;
pub mod ast;
pub mod backend;
pub mod catalog;
pub mod ddl;
pub mod execution;
pub mod limits;
pub mod local;
pub mod order;
pub mod output;
pub mod parser;
pub mod partial;
pub mod planner;
pub mod point;
pub mod rows;
pub mod session;
pub mod settings;

pub use backend::{Backend, Prepared, SqlTxn};
pub use session::Session;
