//! SELECT planning, one step per clause.
//!
//! The steps run in the order PostgreSQL resolves the clauses, which is also the order in which
//! errors are reported and parameter types are inferred:
//!
//! 1. `FROM`: the table and the scope its columns are seen in;
//! 2. `WHERE`: bound over input rows, and the access path chosen ([`super::access`]);
//! 3. the select list expanded (`*` into the visible columns) and each item named;
//! 4. `GROUP BY`, when the query aggregates at all ([`super::aggregate`]);
//! 5. the select list bound, over grouped rows in an aggregate query;
//! 6. `HAVING`;
//! 7. `ORDER BY`: a position or an output name sorts by the output row, anything else by the
//!    input (or grouped) row;
//! 8. `LIMIT` / `OFFSET`, which must be integers known before any row is read.

use super::aggregate::contains_aggregate;
use super::binder::Scope;
use super::binder::{err, Binder};
use super::binder::{Grouping, Item};
use super::plan::{SelectPlan, SortKey, Source};
use crate::error::{sqlstate, Result};
use crate::sql::ast::{self, Literal};
use crate::types::expr::Expr;
use crate::types::value::{DataType, Value};
use crate::types::{OutputColumn, Table};

impl Binder<'_> {
    /// Plans a `SELECT`.
    pub(super) fn select(&mut self, s: &ast::Select) -> Result<SelectPlan> {
        let table = match &s.from {
            Some((name, _)) => Some(self.table(name)?),
            None => None,
        };
        let scope = match (&table, &s.from) {
            (Some(t), Some((_, alias))) => Scope::Table {
                table: t,
                alias: alias.as_deref(),
            },
            _ => Scope::Empty,
        };
        let source = match &table {
            Some(t) => Some(self.select_source(t, &scope, s.filter.as_ref())?),
            None => None,
        };
        let items = expand(&s.projection, table.as_deref())?;
        let mut grouping = match aggregated(s, &items) {
            true => Some(self.group_by(&s.group_by, &items, &scope)?),
            false => None,
        };
        let (projection, columns) = self.projection(&items, &scope, &mut grouping)?;
        let having = match &s.having {
            Some(h) => Some(self.condition_grouped(h, &scope, &mut grouping, "HAVING")?),
            None => None,
        };
        let order_by = self.order_by(&s.order_by, &items, &scope, &mut grouping)?;
        let limit = s.limit.as_ref().map(|e| self.count_expr(e)).transpose()?;
        let offset = s.offset.as_ref().map(|e| self.count_expr(e)).transpose()?;
        let aggregate = grouping.map(Grouping::into_aggregate);
        let (having, input_filter) = match (&table, &s.filter) {
            (None, Some(f)) => self.fromless_filter(f, aggregate.is_some(), having)?,
            _ => (having, None),
        };
        Ok(SelectPlan {
            source,
            input_filter,
            aggregate,
            having,
            projection,
            columns,
            order_by,
            limit,
            offset,
        })
    }

    /// The rows of `FROM table WHERE filter`.
    fn select_source(
        &mut self,
        table: &std::sync::Arc<Table>,
        scope: &Scope,
        filter: Option<&ast::Expr>,
    ) -> Result<Source> {
        if let Some(f) = filter {
            no_aggregate(f, "WHERE")?;
        }
        self.source(table, scope, filter)
    }

    /// Binds the `GROUP BY` expressions over input rows.
    fn group_by(
        &mut self,
        group_by: &[ast::Expr],
        items: &[Item],
        scope: &Scope,
    ) -> Result<Grouping> {
        let mut groups = Vec::new();
        for g in group_by {
            let g = group_expr(g, items, scope)?;
            no_aggregate(&g, "GROUP BY")?;
            groups.push(self.expr(&g, scope, &mut None)?);
        }
        Ok(Grouping::new(groups))
    }

    /// Binds the select list: the output row's expressions and its described columns.
    pub(super) fn projection(
        &mut self,
        items: &[Item],
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<(Vec<Expr>, Vec<OutputColumn>)> {
        let mut projection = Vec::new();
        let mut columns = Vec::new();
        for item in items {
            let (expr, ty) = self.expr(&item.expr, scope, grouping)?;
            projection.push(expr);
            columns.push(OutputColumn {
                name: item.name.clone(),
                data_type: ty,
            });
        }
        Ok((projection, columns))
    }

    fn order_by(
        &mut self,
        order_by: &[ast::OrderItem],
        items: &[Item],
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<Vec<SortKey>> {
        order_by
            .iter()
            .map(|o| self.sort_key(o, items, scope, grouping))
            .collect()
    }

    /// One `ORDER BY` key. `ORDER BY 2` and `ORDER BY alias` sort by an output column; any other
    /// expression is evaluated over the input (or grouped) row.
    fn sort_key(
        &mut self,
        o: &ast::OrderItem,
        items: &[Item],
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<SortKey> {
        let by_output = match &o.expr {
            ast::Expr::Literal(Literal::Int(n)) => Some(position(*n, items, "ORDER BY")?),
            ast::Expr::Column(None, name) => items.iter().position(|i| i.name == *name),
            _ => None,
        };
        let (expr, over_output) = match by_output {
            Some(i) => (Expr::Column(i), true),
            None => (self.expr(&o.expr, scope, grouping)?.0, false),
        };
        Ok(SortKey {
            expr,
            over_output,
            descending: o.descending,
            // NULLs sort as larger than any value, as in PostgreSQL.
            nulls_first: o.nulls_first.unwrap_or(o.descending),
        })
    }

    /// Binds a `LIMIT` or `OFFSET` count: an integer, or a parameter that becomes `bigint`.
    fn count_expr(&mut self, e: &ast::Expr) -> Result<Expr> {
        if let ast::Expr::Literal(Literal::String(s)) = e {
            return Ok(Expr::Const(Value::Text(s.clone()).cast(&DataType::BigInt)?));
        }
        let (expr, ty) = self.expr(e, &Scope::Empty, &mut None)?;
        if ty == DataType::Unknown {
            self.hint(&expr, &DataType::BigInt);
        } else if !ty.is_integer() {
            return Err(err(
                sqlstate::DATATYPE_MISMATCH,
                format!("argument of LIMIT/OFFSET must be type bigint, not type {ty}"),
            ));
        }
        Ok(expr)
    }

    /// The `WHERE` of a `SELECT` without `FROM`, which filters its single row: with no
    /// aggregate it becomes the `HAVING` condition (such a query has no `HAVING` of its own),
    /// and with one it decides whether the row is aggregated at all, as in PostgreSQL (so
    /// `SELECT count(*) WHERE false` is 0). Returns the `HAVING` and the input filter.
    fn fromless_filter(
        &mut self,
        filter: &ast::Expr,
        aggregated: bool,
        having: Option<Expr>,
    ) -> Result<(Option<Expr>, Option<Expr>)> {
        let cond = self.condition(filter, &Scope::Empty, "WHERE")?;
        match aggregated {
            true => Ok((having, Some(cond))),
            false => Ok((Some(cond), None)),
        }
    }
}

/// The select list with `*` expanded into the table's visible columns, each item named.
pub(super) fn expand(projection: &[ast::SelectItem], table: Option<&Table>) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for item in projection {
        match item {
            ast::SelectItem::Wildcard => items.extend(wildcard(table)?),
            ast::SelectItem::Expr { expr, alias } => items.push(Item {
                expr: expr.clone(),
                name: alias.clone().unwrap_or_else(|| output_name(expr)),
            }),
        }
    }
    Ok(items)
}

/// `*`: the table's columns that are not hidden (the implicit row id is).
fn wildcard(table: Option<&Table>) -> Result<Vec<Item>> {
    let Some(t) = table else {
        return Err(err(
            sqlstate::SYNTAX_ERROR,
            "SELECT * with no tables specified is not valid",
        ));
    };
    let visible = t.columns.iter().filter(|c| !c.hidden);
    let items = visible.map(|c| Item {
        expr: ast::Expr::Column(None, c.name.clone()),
        name: c.name.clone(),
    });
    Ok(items.collect())
}

/// Whether the query aggregates: it groups, has `HAVING`, or calls an aggregate in its select
/// list or `ORDER BY`.
fn aggregated(s: &ast::Select, items: &[Item]) -> bool {
    !s.group_by.is_empty()
        || s.having.is_some()
        || items.iter().any(|i| contains_aggregate(&i.expr))
        || s.order_by.iter().any(|o| contains_aggregate(&o.expr))
}

/// What a `GROUP BY` item groups by: `GROUP BY 2` is the second select item, and a bare name
/// that is not a column of the table but an output name is that item's expression.
fn group_expr(g: &ast::Expr, items: &[Item], scope: &Scope) -> Result<ast::Expr> {
    Ok(match g {
        ast::Expr::Literal(Literal::Int(n)) => items[position(*n, items, "GROUP BY")?].expr.clone(),
        ast::Expr::Column(None, name) if !scope.has_column(name) => {
            match items.iter().find(|i| i.name == *name) {
                Some(item) => item.expr.clone(),
                None => g.clone(),
            }
        }
        other => other.clone(),
    })
}

/// The 0-based select item a 1-based position in `clause` refers to.
fn position(n: i64, items: &[Item], clause: &str) -> Result<usize> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 1 && *n <= items.len())
        .map(|n| n - 1)
        .ok_or_else(|| {
            err(
                sqlstate::INVALID_COLUMN_REFERENCE,
                format!("{clause} position {n} is not in select list"),
            )
        })
}

/// Refuses an aggregate call in `clause`, which is evaluated before rows are grouped.
pub(super) fn no_aggregate(e: &ast::Expr, clause: &str) -> Result<()> {
    if contains_aggregate(e) {
        return Err(err(
            sqlstate::GROUPING_ERROR,
            format!("aggregate functions are not allowed in {clause}"),
        ));
    }
    Ok(())
}

/// The output name PostgreSQL gives an unaliased select item.
fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Column(_, name) => name.clone(),
        ast::Expr::Function { name, .. } | ast::Expr::SessionValue { name, .. } => name.clone(),
        ast::Expr::Cast(inner, ty) => match inner.as_ref() {
            ast::Expr::Literal(_) => type_name(ty).into(),
            other => output_name(other),
        },
        _ => "?column?".into(),
    }
}

/// The internal name of `ty`, which names a cast literal's column (`SELECT 1::bigint` → `int8`).
fn type_name(ty: &DataType) -> &'static str {
    match ty {
        DataType::Int => "int4",
        DataType::BigInt => "int8",
        DataType::SmallInt => "int2",
        DataType::Bool => "bool",
        DataType::Double => "float8",
        DataType::Real => "float4",
        DataType::Timestamp => "timestamp",
        DataType::Varchar(_) => "varchar",
        DataType::Char(_) => "bpchar",
        DataType::Uuid => "uuid",
        _ => "text",
    }
}
