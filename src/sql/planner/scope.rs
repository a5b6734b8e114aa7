//! Scopes: the names an expression may refer to.
//!
//! A scope is either empty (`SELECT 1`, `INSERT` values, column defaults) or one table, seen
//! under its alias when the `FROM` clause gives one. Resolving a name yields the column's
//! position in the input row and its type.

use super::bind::{err, Binder};
use crate::error::{sqlstate, Result};
use crate::types::expr::Expr;
use crate::types::value::DataType;
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

impl Binder<'_> {
    pub(super) fn column(
        &self,
        scope: &Scope,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<(Expr, DataType)> {
        match scope {
            Scope::Table { table, alias } => {
                if let Some(q) = qualifier {
                    let visible = alias.unwrap_or(&table.name);
                    if q != visible {
                        return Err(err(
                            sqlstate::UNDEFINED_TABLE,
                            format!("missing FROM-clause entry for table \"{q}\""),
                        ));
                    }
                }
                match table.column_index(name) {
                    Some(i) => Ok((Expr::Column(i), table.columns[i].data_type.clone())),
                    None => Err(err(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{name}\" does not exist"),
                    )),
                }
            }
            Scope::Empty => match qualifier {
                Some(q) => Err(err(
                    sqlstate::UNDEFINED_TABLE,
                    format!("missing FROM-clause entry for table \"{q}\""),
                )),
                None => Err(err(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{name}\" does not exist"),
                )),
            },
        }
    }
}
