//! Expression binding and type inference.

use super::aggregate::{aggregate_func, contains_aggregate, Grouping};
use super::bind::{err, Binder};
use super::scope::Scope;
use crate::error::{sqlstate, Result};
use crate::sql::ast::{self, BinaryOp, Literal, UnaryOp};
use crate::types::expr::{Expr, Function};
use crate::types::value::{DataType, Value};

impl Binder<'_> {
    /// Binds an expression. With `grouping`, the expression is evaluated over grouped rows:
    /// aggregate calls and grouped expressions become columns of the grouped row, and any other
    /// column reference is an error.
    pub(super) fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<(Expr, DataType)> {
        if let Some(g) = grouping.as_mut() {
            // An aggregate call: bind its argument over input rows.
            if let ast::Expr::Function {
                name,
                args,
                star,
                distinct,
            } = e
            {
                if let Some(func) = aggregate_func(name) {
                    let call = self.aggregate(func, args, *star, *distinct, scope)?;
                    let idx = g.groups.len() + g.calls.len();
                    let ty = call.1.clone();
                    // Reuse an identical call.
                    if let Some(pos) = g.calls.iter().position(|(c, _)| *c == call.0) {
                        return Ok((Expr::Column(g.groups.len() + pos), ty));
                    }
                    g.calls.push(call);
                    return Ok((Expr::Column(idx), ty));
                }
            }
            if !contains_aggregate(e) {
                // A grouped expression?
                if let Ok((bound, ty)) = self.expr(e, scope, &mut None) {
                    if let Some(i) = g.groups.iter().position(|(x, _)| *x == bound) {
                        return Ok((Expr::Column(i), ty));
                    }
                    if bound.is_row_independent() {
                        return Ok((bound, ty));
                    }
                }
                if let ast::Expr::Column(_, name) = e {
                    return Err(err(
                        sqlstate::GROUPING_ERROR,
                        format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"),
                    ));
                }
            }
        } else if let ast::Expr::Function { name, .. } = e {
            if aggregate_func(name).is_some() {
                return Err(err(
                    sqlstate::GROUPING_ERROR,
                    format!("aggregate function {name} is not allowed here"),
                ));
            }
        }

        let sub = |b: &mut Self, x: &ast::Expr, g: &mut Option<Grouping>| b.expr(x, scope, g);
        Ok(match e {
            ast::Expr::Literal(l) => match l {
                Literal::Null => (Expr::Const(Value::Null), DataType::Unknown),
                Literal::Bool(b) => (Expr::Const(Value::Bool(*b)), DataType::Bool),
                Literal::Int(i) => {
                    let ty = if i32::try_from(*i).is_ok() {
                        DataType::Int
                    } else {
                        DataType::BigInt
                    };
                    (Expr::Const(Value::Int(*i)), ty)
                }
                Literal::Float(f) => (Expr::Const(Value::Float(*f)), DataType::Double),
                Literal::String(s) => (Expr::Const(Value::Text(s.clone())), DataType::Text),
            },
            ast::Expr::Column(q, name) => self.column(scope, q.as_deref(), name)?,
            ast::Expr::Param(i) => {
                if *i >= 65535 {
                    return Err(err(
                        sqlstate::UNDEFINED_PARAMETER,
                        format!("there is no parameter ${}", i + 1),
                    ));
                }
                if self.params.len() <= *i {
                    self.params.resize(*i + 1, None);
                }
                let ty = self.params[*i].clone().unwrap_or(DataType::Unknown);
                (Expr::Param(*i), ty)
            }
            ast::Expr::Default => {
                return Err(err(
                    sqlstate::SYNTAX_ERROR,
                    "DEFAULT is not allowed in this context",
                ))
            }
            ast::Expr::Unary(op, x) => {
                let (x, ty) = sub(self, x, grouping)?;
                match op {
                    UnaryOp::Not => {
                        if !matches!(ty, DataType::Bool | DataType::Unknown) {
                            return Err(err(
                                sqlstate::DATATYPE_MISMATCH,
                                format!("argument of NOT must be type boolean, not type {ty}"),
                            ));
                        }
                        self.hint(&x, &DataType::Bool);
                        (Expr::Not(Box::new(x)), DataType::Bool)
                    }
                    UnaryOp::Neg | UnaryOp::Plus => {
                        if !(ty.is_numeric() || ty == DataType::Unknown) {
                            return Err(err(
                                sqlstate::UNDEFINED_FUNCTION,
                                format!("operator does not exist: - {ty}"),
                            ));
                        }
                        if *op == UnaryOp::Plus {
                            (x, ty)
                        } else {
                            (Expr::Neg(Box::new(x)), ty)
                        }
                    }
                }
            }
            ast::Expr::Binary(op, l, r) => self.binary(*op, l, r, scope, grouping)?,
            ast::Expr::IsNull { expr, negated } => {
                let (x, _) = sub(self, expr, grouping)?;
                (Expr::IsNull(Box::new(x), *negated), DataType::Bool)
            }
            ast::Expr::IsBool {
                expr,
                value,
                negated,
            } => {
                let (x, ty) = sub(self, expr, grouping)?;
                if !matches!(ty, DataType::Bool | DataType::Unknown) {
                    return Err(err(
                        sqlstate::DATATYPE_MISMATCH,
                        format!(
                            "argument of IS {} must be type boolean, not type {ty}",
                            if *value { "TRUE" } else { "FALSE" }
                        ),
                    ));
                }
                self.hint(&x, &DataType::Bool);
                (Expr::IsBool(Box::new(x), *value, *negated), DataType::Bool)
            }
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => {
                let (x, ty) = sub(self, expr, grouping)?;
                let mut items = Vec::new();
                for item in list {
                    let (i, ity) = self.operand_for(item, &ty, scope, grouping)?;
                    if !DataType::comparable(&ty, &ity) {
                        return Err(err(
                            sqlstate::UNDEFINED_FUNCTION,
                            format!("operator does not exist: {ty} = {ity}"),
                        ));
                    }
                    self.hint(&i, &ty);
                    items.push(i);
                }
                (Expr::InList(Box::new(x), items, *negated), DataType::Bool)
            }
            ast::Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let ge = ast::Expr::Binary(BinaryOp::GtEq, expr.clone(), low.clone());
                let le = ast::Expr::Binary(BinaryOp::LtEq, expr.clone(), high.clone());
                let both = ast::Expr::Binary(BinaryOp::And, Box::new(ge), Box::new(le));
                let (x, _) = sub(self, &both, grouping)?;
                if *negated {
                    (Expr::Not(Box::new(x)), DataType::Bool)
                } else {
                    (x, DataType::Bool)
                }
            }
            ast::Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => {
                let (x, ty) = sub(self, expr, grouping)?;
                let (p, pty) = sub(self, pattern, grouping)?;
                for (e, t) in [(&x, &ty), (&p, &pty)] {
                    if !(t.is_text() || *t == DataType::Unknown) {
                        return Err(err(
                            sqlstate::UNDEFINED_FUNCTION,
                            format!("operator does not exist: {t} ~~ text"),
                        ));
                    }
                    self.hint(e, &DataType::Text);
                }
                (
                    Expr::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                        case_insensitive: *case_insensitive,
                    },
                    DataType::Bool,
                )
            }
            ast::Expr::Cast(x, ty) => {
                if let ast::Expr::Literal(Literal::String(s)) = x.as_ref() {
                    (Expr::Const(Value::Text(s.clone()).cast(ty)?), ty.clone())
                } else {
                    let (x, xty) = sub(self, x, grouping)?;
                    if xty == DataType::Unknown {
                        self.hint(&x, ty);
                    }
                    (Expr::Cast(Box::new(x), ty.clone()), ty.clone())
                }
            }
            ast::Expr::Function {
                name,
                args,
                star,
                distinct,
            } => {
                if *star || *distinct {
                    return Err(err(sqlstate::SYNTAX_ERROR, format!("{name}(*) or DISTINCT specified, but {name} is not an aggregate function")));
                }
                let mut bound = Vec::new();
                let mut types = Vec::new();
                for a in args {
                    let (x, t) = sub(self, a, grouping)?;
                    bound.push(x);
                    types.push(t);
                }
                let sig = || {
                    format!(
                        "{name}({})",
                        types
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let no_such = || {
                    err(
                        sqlstate::UNDEFINED_FUNCTION,
                        format!("function {} does not exist", sig()),
                    )
                };
                let (f, ty) = match (name.as_str(), types.as_slice()) {
                    ("version", []) => (Function::Version, DataType::Text),
                    ("now" | "current_timestamp" | "localtimestamp", []) => {
                        (Function::Now, DataType::Timestamp)
                    }
                    ("lower", [t]) if t.is_text() || *t == DataType::Unknown => {
                        (Function::Lower, DataType::Text)
                    }
                    ("upper", [t]) if t.is_text() || *t == DataType::Unknown => {
                        (Function::Upper, DataType::Text)
                    }
                    ("length" | "char_length" | "character_length", [t])
                        if t.is_text() || *t == DataType::Unknown =>
                    {
                        (Function::Length, DataType::Int)
                    }
                    ("abs", [t]) if t.is_numeric() => (Function::Abs, t.clone()),
                    ("abs", [DataType::Unknown]) => (Function::Abs, DataType::Double),
                    ("coalesce", ts) if !ts.is_empty() => {
                        let ty = ts
                            .iter()
                            .find(|t| **t != DataType::Unknown)
                            .cloned()
                            .unwrap_or(DataType::Unknown);
                        if ts.iter().any(|t| !DataType::comparable(t, &ty)) {
                            return Err(err(
                                sqlstate::DATATYPE_MISMATCH,
                                format!("COALESCE types cannot be matched: {}", sig()),
                            ));
                        }
                        (Function::Coalesce, ty)
                    }
                    _ => return Err(no_such()),
                };
                for (x, _) in bound.iter().zip(&types) {
                    if matches!(f, Function::Lower | Function::Upper | Function::Length) {
                        self.hint(x, &DataType::Text);
                    }
                }
                (Expr::Call(f, bound), ty)
            }
        })
    }

    /// Binds `e` as an operand next to one of type `other`: a quoted literal takes that type.
    pub(super) fn operand_for(
        &mut self,
        e: &ast::Expr,
        other: &DataType,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<(Expr, DataType)> {
        if let ast::Expr::Literal(Literal::String(s)) = e {
            if *other != DataType::Unknown && !other.is_text() {
                return Ok((
                    Expr::Const(Value::Text(s.clone()).cast(other)?),
                    other.clone(),
                ));
            }
        }
        self.expr(e, scope, g)
    }

    pub(super) fn binary(
        &mut self,
        op: BinaryOp,
        l: &ast::Expr,
        r: &ast::Expr,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<(Expr, DataType)> {
        // Bind the side that is not a quoted literal first, so the literal can take its type
        // (except for `||`, which turns both sides into text).
        let (le, lt, re, rt) = if op == BinaryOp::Concat {
            let (le, lt) = self.expr(l, scope, g)?;
            let (re, rt) = self.expr(r, scope, g)?;
            (le, lt, re, rt)
        } else if matches!(l, ast::Expr::Literal(Literal::String(_))) {
            let (re, rt) = self.expr(r, scope, g)?;
            let (le, lt) = self.operand_for(l, &rt, scope, g)?;
            (le, lt, re, rt)
        } else {
            let (le, lt) = self.expr(l, scope, g)?;
            let (re, rt) = self.operand_for(r, &lt, scope, g)?;
            (le, lt, re, rt)
        };
        if lt == DataType::Unknown {
            self.hint(&le, &rt);
        }
        if rt == DataType::Unknown {
            self.hint(&re, &lt);
        }
        let mismatch = || {
            err(
                sqlstate::UNDEFINED_FUNCTION,
                format!("operator does not exist: {lt} {} {rt}", op.symbol()),
            )
        };
        let ty = match op {
            BinaryOp::And | BinaryOp::Or => {
                for (e, t) in [(&le, &lt), (&re, &rt)] {
                    if !matches!(t, DataType::Bool | DataType::Unknown) {
                        return Err(err(
                            sqlstate::DATATYPE_MISMATCH,
                            format!(
                                "argument of {} must be type boolean, not type {t}",
                                op.symbol()
                            ),
                        ));
                    }
                    self.hint(e, &DataType::Bool);
                }
                DataType::Bool
            }
            op if op.is_comparison() => {
                if !DataType::comparable(&lt, &rt) {
                    return Err(mismatch());
                }
                DataType::Bool
            }
            BinaryOp::Concat => {
                self.hint(&le, &DataType::Text);
                self.hint(&re, &DataType::Text);
                DataType::Text
            }
            _ => {
                let known = |t: &DataType| t.is_numeric() || *t == DataType::Unknown;
                if !known(&lt) || !known(&rt) {
                    return Err(mismatch());
                }
                match (&lt, &rt) {
                    (DataType::Unknown, t) | (t, DataType::Unknown) => t.clone(),
                    (a, b) => DataType::promote(a, b),
                }
            }
        };
        // Integer results are range-checked for their type, as in PostgreSQL.
        let expr = Expr::Binary(op, Box::new(le), Box::new(re));
        let expr = if matches!(ty, DataType::SmallInt | DataType::Int) && !op.is_comparison() {
            Expr::Cast(Box::new(expr), ty.clone())
        } else {
            expr
        };
        Ok((expr, ty))
    }
}
