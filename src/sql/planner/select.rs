//! SELECT planning.

use super::access::point_key;
use super::aggregate::{contains_aggregate, Grouping};
use super::bind::{err, Binder};
use super::plan::{Aggregate, SelectPlan, SortKey, Source};
use super::scope::Scope;
use crate::error::{sqlstate, Result};
use crate::sql::ast::{self, BinaryOp, Literal};
use crate::types::expr::Expr;
use crate::types::value::{DataType, Value};
use crate::types::OutputColumn;

/// The output name PostgreSQL gives an unaliased select item.
pub(super) fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Column(_, name) => name.clone(),
        ast::Expr::Function { name, .. } => name.clone(),
        ast::Expr::Cast(inner, ty) => match inner.as_ref() {
            ast::Expr::Literal(_) => match ty {
                DataType::Int => "int4".into(),
                DataType::BigInt => "int8".into(),
                DataType::SmallInt => "int2".into(),
                DataType::Bool => "bool".into(),
                DataType::Double => "float8".into(),
                DataType::Real => "float4".into(),
                DataType::Timestamp => "timestamp".into(),
                DataType::Varchar(_) => "varchar".into(),
                DataType::Char(_) => "bpchar".into(),
                _ => "text".into(),
            },
            other => output_name(other),
        },
        _ => "?column?".into(),
    }
}

impl Binder<'_> {
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
            Some(t) => {
                let filter = match &s.filter {
                    Some(f) => {
                        if contains_aggregate(f) {
                            return Err(err(
                                sqlstate::GROUPING_ERROR,
                                "aggregate functions are not allowed in WHERE",
                            ));
                        }
                        Some(self.condition(f, &scope, "WHERE")?)
                    }
                    None => None,
                };
                let key = filter.as_ref().and_then(|f| point_key(t, f));
                Some(Source {
                    table: t.clone(),
                    key,
                    filter,
                })
            }
            None => {
                if s.filter.is_some() {
                    // SELECT 1 WHERE false: filter on the single empty row.
                    None
                } else {
                    None
                }
            }
        };

        // Expand the select list.
        let mut items: Vec<(ast::Expr, String)> = Vec::new();
        for item in &s.projection {
            match item {
                ast::SelectItem::Wildcard => match &table {
                    Some(t) => {
                        for c in t.columns.iter().filter(|c| !c.hidden) {
                            items.push((ast::Expr::Column(None, c.name.clone()), c.name.clone()));
                        }
                    }
                    None => {
                        return Err(err(
                            sqlstate::SYNTAX_ERROR,
                            "SELECT * with no tables specified is not valid",
                        ))
                    }
                },
                ast::SelectItem::Expr { expr, alias } => {
                    items.push((
                        expr.clone(),
                        alias.clone().unwrap_or_else(|| output_name(expr)),
                    ));
                }
            }
        }

        let aggregated = !s.group_by.is_empty()
            || s.having.is_some()
            || items.iter().any(|(e, _)| contains_aggregate(e))
            || s.order_by.iter().any(|o| contains_aggregate(&o.expr));
        let mut grouping = None;
        if aggregated {
            let mut groups = Vec::new();
            for g in &s.group_by {
                let g = match g {
                    ast::Expr::Literal(Literal::Int(n)) => {
                        let idx = usize::try_from(*n)
                            .ok()
                            .filter(|n| *n >= 1 && *n <= items.len())
                            .ok_or_else(|| {
                                err(
                                    sqlstate::INVALID_COLUMN_REFERENCE,
                                    format!("GROUP BY position {n} is not in select list"),
                                )
                            })?;
                        items[idx - 1].0.clone()
                    }
                    // A bare name that is not a column of the table but an output alias.
                    ast::Expr::Column(None, name) if !matches!(&scope, Scope::Table { table, .. } if table.column_index(name).is_some()) => {
                        match items.iter().find(|(_, n)| n == name) {
                            Some((e, _)) => e.clone(),
                            None => g.clone(),
                        }
                    }
                    other => other.clone(),
                };
                if contains_aggregate(&g) {
                    return Err(err(
                        sqlstate::GROUPING_ERROR,
                        "aggregate functions are not allowed in GROUP BY",
                    ));
                }
                groups.push(self.expr(&g, &scope, &mut None)?);
            }
            grouping = Some(Grouping {
                groups,
                calls: Vec::new(),
            });
        }

        let mut projection = Vec::new();
        let mut columns = Vec::new();
        for (e, name) in &items {
            let (expr, ty) = self.expr(e, &scope, &mut grouping)?;
            projection.push(expr);
            columns.push(OutputColumn {
                name: name.clone(),
                data_type: ty,
            });
        }
        let having = match &s.having {
            Some(h) => Some(self.condition_grouped(h, &scope, &mut grouping, "HAVING")?),
            None => None,
        };
        let mut order_by = Vec::new();
        for o in &s.order_by {
            let nulls_first = o.nulls_first.unwrap_or(o.descending);
            let by_output = match &o.expr {
                ast::Expr::Literal(Literal::Int(n)) => {
                    let idx = usize::try_from(*n)
                        .ok()
                        .filter(|n| *n >= 1 && *n <= items.len())
                        .ok_or_else(|| {
                            err(
                                sqlstate::INVALID_COLUMN_REFERENCE,
                                format!("ORDER BY position {n} is not in select list"),
                            )
                        })?;
                    Some(idx - 1)
                }
                ast::Expr::Column(None, name) => items.iter().position(|(_, n)| n == name),
                _ => None,
            };
            let key = match by_output {
                Some(i) => SortKey {
                    expr: Expr::Column(i),
                    over_output: true,
                    descending: o.descending,
                    nulls_first,
                },
                None => {
                    let (expr, _) = self.expr(&o.expr, &scope, &mut grouping)?;
                    SortKey {
                        expr,
                        over_output: false,
                        descending: o.descending,
                        nulls_first,
                    }
                }
            };
            order_by.push(key);
        }
        let limit = s.limit.as_ref().map(|e| self.count_expr(e)).transpose()?;
        let offset = s.offset.as_ref().map(|e| self.count_expr(e)).transpose()?;

        // A SELECT without FROM but with WHERE filters its single row.
        let mut having = having;
        let mut aggregate = grouping.map(|g| Aggregate {
            group_by: g.groups.into_iter().map(|(e, _)| e).collect(),
            calls: g.calls.into_iter().map(|(c, _)| c).collect(),
        });
        if table.is_none() {
            if let Some(f) = &s.filter {
                let cond = self.condition(f, &Scope::Empty, "WHERE")?;
                if aggregate.is_none() {
                    aggregate = None;
                    having = Some(match having {
                        Some(h) => Expr::Binary(BinaryOp::And, Box::new(cond), Box::new(h)),
                        None => cond,
                    });
                }
            }
        }
        Ok(SelectPlan {
            source,
            aggregate,
            having,
            projection,
            columns,
            order_by,
            limit,
            offset,
        })
    }

    pub(super) fn count_expr(&mut self, e: &ast::Expr) -> Result<Expr> {
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
}
