//! Table schemas: the columns, their types and defaults, and the primary key.
//!
//! A table has an id (the first part of its row keys), columns, and a primary key. A table
//! declared without a primary key gets a hidden `BIGINT` row id as its key, generated on insert
//! and never shown by `SELECT *`. Schemas live in the cluster map and in each node's catalog;
//! how a row's key is laid out in storage is `storage::keycode`'s business, not the schema's.

use serde::{Deserialize, Serialize};

use super::expr::Expr;
use super::value::DataType;

/// The name of the hidden row id column of tables without a primary key.
pub const ROWID_COLUMN: &str = "ddb_rowid";

/// A column of a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub not_null: bool,
    /// Evaluated (without a row) when an insert gives no value.
    pub default: Option<Expr>,
    /// Hidden columns (the generated row id) are not visible to SQL.
    pub hidden: bool,
}

/// The sequence of a `SERIAL` or `GENERATED … AS IDENTITY` column: owned by the column, named
/// as PostgreSQL names it (`table_column_seq`), counting from 1 by 1 up to the maximum of the
/// column's type, and gone with its table. It is the column's default
/// ([`Expr::Identity`]), so a stored schema keeps the layout it had before identity columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Identity<'a> {
    pub sequence: &'a str,
    /// `GENERATED ALWAYS`: an `INSERT` may not give the column a value (428C9).
    pub always: bool,
}

impl Column {
    /// The column's sequence, if it is a `SERIAL` or identity column.
    pub fn identity(&self) -> Option<Identity<'_>> {
        match &self.default {
            Some(Expr::Identity { sequence, always }) => Some(Identity {
                sequence,
                always: *always,
            }),
            _ => None,
        }
    }
}

/// A table's schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub id: u32,
    pub name: String,
    pub columns: Vec<Column>,
    /// Positions of the primary key columns, in key order.
    pub primary_key: Vec<usize>,
}

impl Table {
    /// Whether the key is a generated hidden row id.
    pub fn has_rowid(&self) -> bool {
        self.primary_key.len() == 1 && self.columns[self.primary_key[0]].hidden
    }

    /// Finds a visible column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| !c.hidden && c.name == name)
    }

    /// The name of the primary key constraint, as PostgreSQL names it.
    pub fn pkey_name(&self) -> String {
        format!("{}_pkey", self.name)
    }
}
