//! Access-path choice: how a statement's rows are found.
//!
//! A filter that fixes every primary key column with `=` addresses one row, so the statement is
//! a *point access*: one key read on the one shard that owns the key, which is what makes the
//! common OLTP statements (`SELECT … WHERE id = $1`, `UPDATE … WHERE id = $1`) single-shard.
//! Anything else scans the table (every shard, with the filter pushed down). The filter is kept
//! in both cases: the point read still checks it, so the key choice never changes the result,
//! only its cost.
//!
//! A key value must be row-independent (a constant, a parameter, `now()`…) and of the key
//! column's own kind: the executor converts a key value to the column's type before the read,
//! and `id = 1.5`, which compares as numbers and matches nothing, must not become a read of
//! key 2.

use std::sync::Arc;

use super::binder::Binder;
use super::binder::Scope;
use super::plan::Source;
use crate::error::Result;
use crate::sql::ast;
use crate::types::expr::{BinaryOp, Expr};
use crate::types::value::{DataType, Value};
use crate::types::Table;

impl Binder<'_> {
    /// The rows of `table` (seen through `scope`) that `filter` selects, with the access path.
    pub(super) fn source(
        &mut self,
        table: &Arc<Table>,
        scope: &Scope,
        filter: Option<&ast::Expr>,
    ) -> Result<Source> {
        let filter = match filter {
            None => None,
            Some(f) => Some(self.condition(f, scope, "WHERE")?),
        };
        let key = filter.as_ref().and_then(|f| point_key(table, f));
        Ok(Source {
            table: table.clone(),
            key,
            filter,
        })
    }
}

/// The primary key values fixed by `filter`'s `=` conjuncts, when it fixes all of them with
/// row-independent expressions of the key column's kind.
pub(super) fn point_key(table: &Table, filter: &Expr) -> Option<Vec<Expr>> {
    let mut conjuncts = Vec::new();
    split_and(filter, &mut conjuncts);
    let key_value = |&col: &usize| {
        let value = conjuncts.iter().find_map(|c| equated(c, col))?;
        fits_key(&table.columns[col].data_type, value).then(|| value.clone())
    };
    table.primary_key.iter().map(key_value).collect()
}

/// Appends the conjuncts of `e` (`a AND b AND c` → `a`, `b`, `c`) to `out`.
#[recursive::recursive]
fn split_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::Binary(BinaryOp::And, l, r) => {
            split_and(l, out);
            split_and(r, out);
        }
        other => out.push(other),
    }
}

/// The row-independent value `conjunct` equates column `col` with (`col = v` or `v = col`).
fn equated(conjunct: &Expr, col: usize) -> Option<&Expr> {
    let Expr::Binary(BinaryOp::Eq, l, r) = conjunct else {
        return None;
    };
    match (l.as_ref(), r.as_ref()) {
        (Expr::Column(i), v) | (v, Expr::Column(i)) if *i == col && v.is_row_independent() => {
            Some(v)
        }
        _ => None,
    }
}

/// Whether `value` can address a key column of type `ty`: only a value of the column's own
/// kind does (1.5 never equals an integer key). A parameter was given the column's type.
fn fits_key(ty: &DataType, value: &Expr) -> bool {
    match value {
        Expr::Const(v) => match v {
            Value::Int(_) => ty.is_integer(),
            Value::Float(_) => ty.is_float(),
            Value::Text(_) => ty.is_text(),
            Value::Bool(_) => *ty == DataType::Bool,
            Value::Timestamp(_) => *ty == DataType::Timestamp,
            Value::Uuid(_) => *ty == DataType::Uuid,
            Value::Null => true,
        },
        Expr::Param(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Column;

    /// `CREATE TABLE t (a INT, b TEXT, c INT, PRIMARY KEY (a, b))`.
    fn table() -> Table {
        let column = |name: &str, data_type| Column {
            name: name.into(),
            data_type,
            not_null: false,
            default: None,
            hidden: false,
        };
        Table {
            id: 1,
            name: "t".into(),
            columns: vec![
                column("a", DataType::Int),
                column("b", DataType::Text),
                column("c", DataType::Int),
            ],
            primary_key: vec![0, 1],
        }
    }

    fn eq(l: Expr, r: Expr) -> Expr {
        Expr::Binary(BinaryOp::Eq, Box::new(l), Box::new(r))
    }

    fn and(l: Expr, r: Expr) -> Expr {
        Expr::Binary(BinaryOp::And, Box::new(l), Box::new(r))
    }

    fn int(i: i64) -> Expr {
        Expr::Const(Value::Int(i))
    }

    fn text(s: &str) -> Expr {
        Expr::Const(Value::Text(s.into()))
    }

    #[test]
    fn a_filter_fixing_the_whole_key_is_a_point_access_in_key_order() {
        let filter = and(
            eq(Expr::Column(2), int(7)),
            and(
                eq(text("x"), Expr::Column(1)),
                eq(Expr::Column(0), Expr::Param(0)),
            ),
        );
        assert_eq!(
            point_key(&table(), &filter),
            Some(vec![Expr::Param(0), text("x")])
        );
    }

    #[test]
    fn a_filter_fixing_part_of_the_key_scans() {
        let filter = eq(Expr::Column(0), int(1));
        assert_eq!(point_key(&table(), &filter), None);
    }

    #[test]
    fn a_disjunction_scans() {
        let either = Expr::Binary(
            BinaryOp::Or,
            Box::new(eq(Expr::Column(0), int(1))),
            Box::new(eq(Expr::Column(1), text("x"))),
        );
        assert_eq!(point_key(&table(), &either), None);
    }

    #[test]
    fn a_value_of_another_kind_does_not_address_the_key() {
        let filter = and(
            eq(Expr::Column(0), Expr::Const(Value::Float(1.5))),
            eq(Expr::Column(1), text("x")),
        );
        assert_eq!(point_key(&table(), &filter), None);
    }

    #[test]
    fn a_row_dependent_value_does_not_address_the_key() {
        let filter = and(
            eq(Expr::Column(0), Expr::Column(2)),
            eq(Expr::Column(1), text("x")),
        );
        assert_eq!(point_key(&table(), &filter), None);
    }
}
