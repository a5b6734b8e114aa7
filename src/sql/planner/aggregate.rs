//! Aggregates: binding aggregate calls and expressions over grouped rows.

use super::bind::{err, Binder};
use super::plan::{AggCall, AggFunc};
use super::scope::Scope;
use crate::error::{sqlstate, Result};
use crate::sql::ast;
use crate::types::expr::Expr;
use crate::types::value::DataType;

/// Grouping state while binding the select list, `HAVING` and `ORDER BY` of an aggregate query.
pub(super) struct Grouping {
    pub(super) groups: Vec<(Expr, DataType)>,
    pub(super) calls: Vec<(AggCall, DataType)>,
}

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

pub(super) fn contains_aggregate(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Function { name, args, .. } => {
            aggregate_func(name).is_some() || args.iter().any(contains_aggregate)
        }
        ast::Expr::Literal(_)
        | ast::Expr::Column(..)
        | ast::Expr::Param(_)
        | ast::Expr::Default => false,
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
    pub(super) fn aggregate(
        &mut self,
        func: AggFunc,
        args: &[ast::Expr],
        star: bool,
        distinct: bool,
        scope: &Scope,
    ) -> Result<(AggCall, DataType)> {
        if star {
            if func != AggFunc::Count || !args.is_empty() {
                return Err(err(sqlstate::SYNTAX_ERROR, "only count accepts *"));
            }
            return Ok((
                AggCall {
                    func,
                    arg: None,
                    distinct: false,
                },
                DataType::BigInt,
            ));
        }
        let [arg] = args else {
            return Err(err(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "function {func:?}() with {} arguments does not exist",
                    args.len()
                )
                .to_lowercase(),
            ));
        };
        if contains_aggregate(arg) {
            return Err(err(
                sqlstate::GROUPING_ERROR,
                "aggregate function calls cannot be nested",
            ));
        }
        let (x, ty) = self.expr(arg, scope, &mut None)?;
        let out = match func {
            AggFunc::Count => DataType::BigInt,
            AggFunc::Sum if ty.is_integer() => DataType::BigInt,
            AggFunc::Sum | AggFunc::Avg if ty.is_float() => DataType::Double,
            AggFunc::Avg if ty.is_integer() => DataType::Double,
            AggFunc::Sum | AggFunc::Avg => {
                return Err(err(
                    sqlstate::UNDEFINED_FUNCTION,
                    format!(
                        "function {}({ty}) does not exist",
                        format!("{func:?}").to_lowercase()
                    ),
                ))
            }
            AggFunc::Min | AggFunc::Max => ty.clone(),
        };
        Ok((
            AggCall {
                func,
                arg: Some(x),
                distinct,
            },
            out,
        ))
    }
}
