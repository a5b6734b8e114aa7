//! Access-path choice.

use crate::types::expr::{BinaryOp, Expr};
use crate::types::value::{DataType, Value};
use crate::types::Table;

/// The primary key values fixed by `filter`'s `=` conjuncts, when it fixes all of them with
/// row-independent expressions of the key column's kind.
pub(super) fn point_key(table: &Table, filter: &Expr) -> Option<Vec<Expr>> {
    let mut conjuncts = Vec::new();
    fn split<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
        match e {
            Expr::Binary(BinaryOp::And, l, r) => {
                split(l, out);
                split(r, out);
            }
            other => out.push(other),
        }
    }
    split(filter, &mut conjuncts);
    let mut key = Vec::new();
    for &col in &table.primary_key {
        let ty = &table.columns[col].data_type;
        let found = conjuncts.iter().find_map(|c| match c {
            Expr::Binary(BinaryOp::Eq, l, r) => match (l.as_ref(), r.as_ref()) {
                (Expr::Column(i), v) | (v, Expr::Column(i))
                    if *i == col && v.is_row_independent() =>
                {
                    Some(v.clone())
                }
                _ => None,
            },
            _ => None,
        })?;
        // Only a value of the column's own kind addresses its key (1.5 never equals an integer key).
        let fits = match &found {
            Expr::Const(v) => match v {
                Value::Int(_) => ty.is_integer(),
                Value::Float(_) => ty.is_float(),
                Value::Text(_) => ty.is_text(),
                Value::Bool(_) => *ty == DataType::Bool,
                Value::Timestamp(_) => *ty == DataType::Timestamp,
                Value::Null => true,
            },
            Expr::Param(_) => true,
            _ => false,
        };
        if !fits {
            return None;
        }
        key.push(found);
    }
    Some(key)
}
