//! The result of a statement: its columns and rows, and the command tag.
//!
//! A result is what every layer hands up: the executor to the session, a shard to a gateway
//! (a shipped statement), a node to the CLI. It holds values only, so it crosses the RPC as is.

use serde::{Deserialize, Serialize};

use super::value::{DataType, Value};

/// A result column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputColumn {
    pub name: String,
    pub data_type: DataType,
}

/// The result of one statement: columns and rows for queries, and the command tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    pub columns: Vec<OutputColumn>,
    pub rows: Vec<Vec<Value>>,
    /// The PostgreSQL command tag: `SELECT 3`, `INSERT 0 2`, `UPDATE 1`, `BEGIN`, …
    pub tag: String,
}

impl QueryResult {
    /// A result with a tag and no rows.
    pub fn tag(tag: impl Into<String>) -> Self {
        Self {
            columns: Vec::new(),
            rows: Vec::new(),
            tag: tag.into(),
        }
    }
}
