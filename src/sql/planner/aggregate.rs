//! Aggregates: aggregate calls and expressions over grouped rows.
//!
//! An aggregate query (one with `GROUP BY`, `HAVING`, or an aggregate call anywhere in its select
//! list or `ORDER BY`) is evaluated in two stages: the input rows are grouped into rows of
//! `[group values…, aggregate values…]` (the plan's [`Aggregate`]), and the select list, `HAVING`
//! and `ORDER BY` are then evaluated over those grouped rows. So while they are bound, a
//! [`Grouping`] collects the group expressions and the aggregate calls, and every expression is
//! first tried against it ([`Binder::over_groups`]): an aggregate call becomes the column of its
//! (deduplicated) call, an expression equal to a group expression becomes that group's column,
//! and a bare column that is neither is PostgreSQL's 42803.

use super::binder::Scope;
use super::binder::Typed;
use super::binder::{err, Binder, Grouping};
use super::plan::{AggCall, AggFunc};
use crate::error::{sqlstate, Result};
use crate::sql::ast;
use crate::types::expr::Expr;
use crate::types::value::DataType;

/// The aggregate function called `name`, if it is one.
pub(super) fn aggregate_func(name: &str) -> Option<AggFunc> {
    Some(match name {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "avg" => AggFunc::Avg,
        _ => return None,
    })
}

/// The SQL name of an aggregate function, for errors.
fn sql_name(func: AggFunc) -> String {
    format!("{func:?}").to_lowercase()
}

/// Whether `e` calls an aggregate anywhere.
#[recursive::recursive]
pub(super) fn contains_aggregate(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Function { name, args, .. } => {
            aggregate_func(name).is_some() || args.iter().any(contains_aggregate)
        }
        ast::Expr::Literal(_)
        | ast::Expr::Column(..)
        | ast::Expr::Param(_)
        | ast::Expr::Default
        | ast::Expr::SessionValue { .. } => false,
        ast::Expr::Unary(_, e)
        | ast::Expr::IsNull { expr: e, .. }
        | ast::Expr::IsBool { expr: e, .. }
        | ast::Expr::Cast(e, _) => contains_aggregate(e),
        ast::Expr::Binary(_, l, r) => contains_aggregate(l) || contains_aggregate(r),
        ast::Expr::InList { expr, list, .. } => {
            contains_aggregate(expr) || list.iter().any(contains_aggregate)
        }
        ast::Expr::Between {
            expr, low, high, ..
        } => contains_aggregate(expr) || contains_aggregate(low) || contains_aggregate(high),
        ast::Expr::Like { expr, pattern, .. } => {
            contains_aggregate(expr) || contains_aggregate(pattern)
        }
    }
}

impl Binder<'_> {
    /// Binds `e` against the grouping, when there is one. `Some` is the binding over grouped
    /// rows (an aggregate call, a group expression, a constant); `None` leaves `e` to be bound
    /// piecewise by [`Binder::expr`], whose sub-expressions come back here.
    pub(super) fn over_groups(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<Option<Typed>> {
        let aggregate = match e {
            ast::Expr::Function {
                name,
                args,
                star,
                distinct,
            } => aggregate_func(name).map(|f| (name, f, args, *star, *distinct)),
            _ => None,
        };
        let Some(g) = grouping.as_mut() else {
            return match aggregate {
                Some((name, ..)) => Err(err(
                    sqlstate::GROUPING_ERROR,
                    format!("aggregate function {name} is not allowed here"),
                )),
                None => Ok(None),
            };
        };
        if let Some((_, func, args, star, distinct)) = aggregate {
            // The call's argument is bound over input rows.
            let call = self.aggregate(func, args, star, distinct, scope)?;
            return Ok(Some(g.call_column(call)));
        }
        if contains_aggregate(e) {
            return Ok(None);
        }
        self.grouped(e, scope, g)
    }

    /// Binds an aggregate-free `e` over grouped rows: it must be a group expression or not
    /// depend on the row. A bare column that is neither is an error; for anything else `None`
    /// lets its parts be tried one by one (`a + 1` with `a` grouped).
    fn grouped(&mut self, e: &ast::Expr, scope: &Scope, g: &Grouping) -> Result<Option<Typed>> {
        // An error here is not the answer yet: binding `e` part by part over the groups
        // reports it, or the grouping error, where PostgreSQL would.
        if let Ok((bound, ty)) = self.expr(e, scope, &mut None) {
            if let Some(i) = g.groups.iter().position(|(x, _)| *x == bound) {
                return Ok(Some((Expr::Column(i), ty)));
            }
            if bound.is_row_independent() {
                return Ok(Some((bound, ty)));
            }
        }
        match e {
            ast::Expr::Column(_, name) => Err(err(
                sqlstate::GROUPING_ERROR,
                format!(
                    "column \"{name}\" must appear in the GROUP BY clause or be used in an \
                     aggregate function"
                ),
            )),
            _ => Ok(None),
        }
    }

    /// Binds the call `func(args)`, its argument over input rows.
    pub(super) fn aggregate(
        &mut self,
        func: AggFunc,
        args: &[ast::Expr],
        star: bool,
        distinct: bool,
        scope: &Scope,
    ) -> Result<(AggCall, DataType)> {
        if star {
            return count_star(func, args);
        }
        let [arg] = args else {
            return Err(err(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "function {}() with {} arguments does not exist",
                    sql_name(func),
                    args.len()
                ),
            ));
        };
        if contains_aggregate(arg) {
            return Err(err(
                sqlstate::GROUPING_ERROR,
                "aggregate function calls cannot be nested",
            ));
        }
        let (x, ty) = self.expr(arg, scope, &mut None)?;
        let out = result_type(func, &ty)?;
        let arg = Some(x);
        Ok((
            AggCall {
                func,
                arg,
                distinct,
            },
            out,
        ))
    }
}

/// `count(*)`, the one aggregate that takes `*`.
fn count_star(func: AggFunc, args: &[ast::Expr]) -> Result<(AggCall, DataType)> {
    if func != AggFunc::Count || !args.is_empty() {
        return Err(err(sqlstate::SYNTAX_ERROR, "only count accepts *"));
    }
    let call = AggCall {
        func,
        arg: None,
        distinct: false,
    };
    Ok((call, DataType::BigInt))
}

/// The type of `func` over an argument of type `ty`, as in PostgreSQL: integer sums are
/// `bigint`, averages `double precision`, `min`/`max` keep the argument's type.
fn result_type(func: AggFunc, ty: &DataType) -> Result<DataType> {
    Ok(match func {
        AggFunc::Count => DataType::BigInt,
        AggFunc::Sum if ty.is_integer() => DataType::BigInt,
        AggFunc::Sum | AggFunc::Avg if ty.is_float() => DataType::Double,
        AggFunc::Avg if ty.is_integer() => DataType::Double,
        AggFunc::Sum | AggFunc::Avg => {
            return Err(err(
                sqlstate::UNDEFINED_FUNCTION,
                format!("function {}({ty}) does not exist", sql_name(func)),
            ))
        }
        AggFunc::Min | AggFunc::Max => ty.clone(),
    })
}
