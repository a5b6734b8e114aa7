//! The binder's state, and the small types every binding step shares.
//!
//! Binding is split by what it binds (statements, expressions, functions, aggregates, `SELECT`,
//! access paths), each file adding methods to one [`Binder`]. They all share what is here, and
//! this file uses none of them, so the steps never import each other in a circle.

use crate::error::Error;
use crate::sql::catalog::Catalog;
use crate::types::expr::Expr;
use crate::types::value::DataType;

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
