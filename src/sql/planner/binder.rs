//! The binder's state, and the small types every binding step shares.
//!
//! Binding is split by what it binds (statements, expressions, functions, aggregates, `SELECT`,
//! access paths), each file adding methods to one [`Binder`]. They all share what is here (the
//! binder, the typed expression, the grouping of an aggregate query, the scope of names, a
//! select-list item), and this file uses none of them, so the steps never depend on each other
//! in a circle.
//!
//! A scope is either empty (`SELECT 1`, `INSERT` values, column defaults) or one table, seen
//! under its alias when the `FROM` clause gives one (then only the alias qualifies its columns,
//! as in PostgreSQL). Resolving a name yields the column's position in the input row and its
//! type.

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast;
use crate::sql::catalog::Catalog;
use crate::types::expr::Expr;
use crate::types::value::DataType;
use crate::types::Table;

use super::plan::{AggCall, Aggregate};

/// A bound expression and its inferred type.
pub(super) type Typed = (Expr, DataType);

/// Binding state for one statement.
pub(super) struct Binder<'a> {
    pub(super) catalog: &'a Catalog,
    /// The type of each parameter: declared by the client, inferred so far, or `None` yet.
    pub(super) params: Vec<Option<DataType>>,
}

/// An error with SQLSTATE `code`, as the binder reports bad input.
pub(super) fn err(code: &str, msg: impl Into<String>) -> Error {
    Error::sql(code, msg)
}

/// Grouping state while binding the select list, `HAVING` and `ORDER BY` of an aggregate query.
pub(super) struct Grouping {
    /// The bound `GROUP BY` expressions: columns `0..groups.len()` of a grouped row.
    pub(super) groups: Vec<Typed>,
    /// The aggregate calls met so far: the columns after the groups.
    pub(super) calls: Vec<(AggCall, DataType)>,
}

impl Grouping {
    /// The grouping of `groups`, before any aggregate call has been met.
    pub(super) fn new(groups: Vec<Typed>) -> Self {
        Grouping {
            groups,
            calls: Vec::new(),
        }
    }

    /// The plan's aggregation step.
    pub(super) fn into_aggregate(self) -> Aggregate {
        Aggregate {
            group_by: self.groups.into_iter().map(|(e, _)| e).collect(),
            calls: self.calls.into_iter().map(|(c, _)| c).collect(),
        }
    }

    /// The grouped-row column of `call`; an identical call made twice is computed once.
    pub(super) fn call_column(&mut self, (call, ty): (AggCall, DataType)) -> Typed {
        let first = self.groups.len();
        if let Some(pos) = self.calls.iter().position(|(c, _)| *c == call) {
            return (Expr::Column(first + pos), ty);
        }
        self.calls.push((call, ty.clone()));
        (Expr::Column(first + self.calls.len() - 1), ty)
    }
}

/// One expanded select-list item: its expression and the name of its output column.
pub(super) struct Item {
    pub(super) expr: ast::Expr,
    pub(super) name: String,
}

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
