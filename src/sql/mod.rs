//! The SQL layer: parse → plan → execute.
//!
//! [`parser`] turns text into ddb's [`ast`]; [`planner`] binds it against the [`catalog`] into a
//! plan with typed expressions ([`expr`]); [`execution`] runs the plan in a transaction; and
//! [`session`] holds one client's transaction state and is what the PostgreSQL and RPC front
//! ends call.

pub mod ast;
pub mod catalog;
pub mod execution;
pub mod expr;
pub mod nesting;
pub mod parser;
pub mod planner;
pub mod pushdown;
pub mod router;
pub mod rows;
pub mod session;
pub mod types;

pub use execution::QueryResult;
pub use session::{Database, Session};
