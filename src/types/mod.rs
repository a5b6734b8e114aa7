//! The values every layer shares: data types and values, scalar expressions over them, table
//! schemas, and statement results.
//!
//! This is the bottom of the house: it depends on nothing of ddb but the error type, and
//! everything above may use it. A shard evaluates the filters a gateway pushes down, the cluster
//! map holds table schemas with their default expressions, and the key encoding orders values,
//! so these types cannot belong to any one of those layers.

pub mod expr;
pub mod nesting;
pub mod result;
pub mod schema;
pub mod value;

pub use expr::{BinaryOp, Context, Expr, Function};
pub use result::{OutputColumn, QueryResult};
pub use schema::{Column, Table, ROWID_COLUMN};
pub use value::{DataType, Value};
