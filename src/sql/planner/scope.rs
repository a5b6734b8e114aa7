//! Scopes: the names an expression may refer to.
//!
//! A scope is either empty (`SELECT 1`, `INSERT` values, column defaults) or one table, seen
//! under its alias when the `FROM` clause gives one (then only the alias qualifies its columns,
//! as in PostgreSQL). Resolving a name yields the column's position in the input row and its
//! type.

use super::binder::err;
use super::binder::Typed;
use crate::error::{sqlstate, Error, Result};
use crate::types::expr::Expr;
use crate::types::Table;

/// The names a scope resolves.
pub(super) enum Scope<'a> {
    /// No table: `SELECT 1`, `INSERT` values, defaults.
    Empty,
    Table {
        table: &'a Table,
        alias: Option<&'a str>,
    },
}

impl Scope<'_> {
    /// The column `qualifier.name` (or plain `name`) as a reference into the input row.
    pub(super) fn column(&self, qualifier: Option<&str>, name: &str) -> Result<Typed> {
        let Scope::Table { table, alias } = self else {
            return Err(match qualifier {
                Some(q) => missing_table(q),
                None => missing_column(name),
            });
        };
        if let Some(q) = qualifier {
            if q != alias.unwrap_or(&table.name) {
                return Err(missing_table(q));
            }
        }
        match table.column_index(name) {
            Some(i) => Ok((Expr::Column(i), table.columns[i].data_type.clone())),
            None => Err(missing_column(name)),
        }
    }

    /// Whether `name` is a column of the scope's table (rather than, say, an output alias).
    pub(super) fn has_column(&self, name: &str) -> bool {
        matches!(self, Scope::Table { table, .. } if table.column_index(name).is_some())
    }
}

fn missing_table(q: &str) -> Error {
    err(
        sqlstate::UNDEFINED_TABLE,
        format!("missing FROM-clause entry for table \"{q}\""),
    )
}

fn missing_column(name: &str) -> Error {
    err(
        sqlstate::UNDEFINED_COLUMN,
        format!("column \"{name}\" does not exist"),
    )
}
