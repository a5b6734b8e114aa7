//! Expression binding and type inference.
//!
//! [`Binder::expr`] turns an AST expression into a typed [`Expr`], one small function per
//! expression kind. Types are inferred bottom-up; where a side has no type of its own (a `$n`
//! parameter, `NULL`) it is `Unknown`, and the context supplies one:
//!
//! * a quoted literal next to a typed operand takes that operand's type (`id = '3'` compares
//!   integers), see [`Binder::operand_for`];
//! * a parameter of unknown type takes the type its context expects ([`Binder::hint`]): the
//!   other operand of a comparison, `boolean` under `NOT`/`AND`/`OR`, `text` under `LIKE`/`||`.
//!
//! Over grouped rows (an aggregate query), [`Binder::over_groups`] runs first: aggregate calls
//! and grouped expressions become columns of the grouped row before the per-kind binding here.
//! Function calls are in [`super::function`].

use super::binder::Grouping;
use super::binder::Scope;
use super::binder::{err, Binder, Typed};
use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::{self, BinaryOp, Literal, UnaryOp};
use crate::types::expr::{Expr, Function};
use crate::types::value::{decimal_to_integer, DataType, Value};

/// The highest parameter number plus one: PostgreSQL's wire protocol counts parameters in 16 bits.
const MAX_PARAMS: usize = 65535;

impl Binder<'_> {
    /// Binds an expression. With `grouping`, the expression is evaluated over grouped rows:
    /// aggregate calls and grouped expressions become columns of the grouped row, and any other
    /// column reference is an error.
    #[recursive::recursive]
    pub(super) fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<Typed> {
        if let Some(bound) = self.over_groups(e, scope, grouping)? {
            return Ok(bound);
        }
        match e {
            ast::Expr::Literal(l) => Ok(literal(l)),
            ast::Expr::Column(q, name) => scope.column(q.as_deref(), name),
            ast::Expr::Param(i) => self.param(*i),
            ast::Expr::Default => Err(err(
                sqlstate::SYNTAX_ERROR,
                "DEFAULT is not allowed in this context",
            )),
            ast::Expr::Unary(op, x) => self.unary(*op, x, scope, grouping),
            ast::Expr::Binary(op, l, r) => self.binary(*op, l, r, scope, grouping),
            ast::Expr::IsNull { expr, negated } => {
                let (x, _) = self.expr(expr, scope, grouping)?;
                Ok((Expr::IsNull(Box::new(x), *negated), DataType::Bool))
            }
            ast::Expr::IsBool {
                expr,
                value,
                negated,
            } => self.is_bool(expr, *value, *negated, scope, grouping),
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated, scope, grouping),
            ast::Expr::Between {
                expr,
                low,
                high,
                negated,
            } => self.between(expr, low, high, *negated, scope, grouping),
            ast::Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => {
                let flags = (*negated, *case_insensitive);
                self.like(expr, pattern, flags, scope, grouping)
            }
            ast::Expr::Cast(x, ty) => self.cast(x, ty, scope, grouping),
            ast::Expr::Function {
                name,
                args,
                star,
                distinct,
            } => self.call(name, args, *star || *distinct, scope, grouping),
            ast::Expr::SessionValue { name, value } => match value {
                Some(ast::Literal::String(s)) => {
                    Ok((Expr::Const(Value::Text(s.clone())), DataType::Text))
                }
                Some(ast::Literal::Null) => Ok((Expr::Const(Value::Null), DataType::Text)),
                _ => Err(Error::Internal(format!(
                    "{name} was planned without its session's value"
                ))),
            },
        }
    }

    /// A parameter `$n` (0-based `i`): its declared or so far inferred type, else `Unknown`.
    fn param(&mut self, i: usize) -> Result<Typed> {
        if i >= MAX_PARAMS {
            return Err(err(
                sqlstate::UNDEFINED_PARAMETER,
                format!("there is no parameter ${}", i + 1),
            ));
        }
        if self.params.len() <= i {
            self.params.resize(i + 1, None);
        }
        let ty = self.params[i].clone().unwrap_or(DataType::Unknown);
        Ok((Expr::Param(i), ty))
    }

    fn unary(
        &mut self,
        op: UnaryOp,
        x: &ast::Expr,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        let (x, ty) = self.expr(x, scope, g)?;
        match op {
            UnaryOp::Not => {
                self.expect_bool(&x, &ty, "NOT")?;
                Ok((Expr::Not(Box::new(x)), DataType::Bool))
            }
            UnaryOp::Neg | UnaryOp::Plus => {
                if !(ty.is_numeric() || ty == DataType::Unknown) {
                    return Err(err(
                        sqlstate::UNDEFINED_FUNCTION,
                        format!("operator does not exist: - {ty}"),
                    ));
                }
                match op {
                    UnaryOp::Plus => Ok((x, ty)),
                    _ => Ok((Expr::Neg(Box::new(x)), ty)),
                }
            }
        }
    }

    /// Checks that an operand of `what` (`NOT`, `AND`, `IS TRUE`…) is boolean, and makes an
    /// untyped parameter one.
    fn expect_bool(&mut self, x: &Expr, ty: &DataType, what: &str) -> Result<()> {
        if !matches!(ty, DataType::Bool | DataType::Unknown) {
            return Err(err(
                sqlstate::DATATYPE_MISMATCH,
                format!("argument of {what} must be type boolean, not type {ty}"),
            ));
        }
        self.hint(x, &DataType::Bool);
        Ok(())
    }

    fn is_bool(
        &mut self,
        x: &ast::Expr,
        value: bool,
        negated: bool,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        let (x, ty) = self.expr(x, scope, g)?;
        self.expect_bool(&x, &ty, if value { "IS TRUE" } else { "IS FALSE" })?;
        Ok((Expr::IsBool(Box::new(x), value, negated), DataType::Bool))
    }

    /// `x IN (a, b, …)`: each item is bound as an operand next to `x`, so quoted literals and
    /// parameters take `x`'s type.
    fn in_list(
        &mut self,
        x: &ast::Expr,
        list: &[ast::Expr],
        negated: bool,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        let (x, ty) = self.expr(x, scope, g)?;
        let mut items = Vec::new();
        for item in list {
            let (i, ity) = self.operand_for(item, &ty, scope, g)?;
            if !DataType::comparable(&ty, &ity) {
                return Err(err(
                    sqlstate::UNDEFINED_FUNCTION,
                    format!("operator does not exist: {ty} = {ity}"),
                ));
            }
            self.hint(&i, &ty);
            items.push(i);
        }
        Ok((Expr::InList(Box::new(x), items, negated), DataType::Bool))
    }

    /// `x BETWEEN low AND high` types as `x >= low AND x <= high` would (a quoted literal or a
    /// parameter takes the other side's type, a `char(n)` compares without its padding), and
    /// binds `x` once: a copy per comparison would double nested `BETWEEN`s at every level.
    fn between(
        &mut self,
        x: &ast::Expr,
        low: &ast::Expr,
        high: &ast::Expr,
        negated: bool,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        let (x, low) = if matches!(x, ast::Expr::Literal(Literal::String(_))) {
            let low = self.expr(low, scope, g)?;
            (self.operand_for(x, &low.1, scope, g)?, low)
        } else {
            let x = self.expr(x, scope, g)?;
            let low = self.operand_for(low, &x.1, scope, g)?;
            (x, low)
        };
        let high = self.operand_for(high, &x.1, scope, g)?;
        for bound in [&low, &high] {
            if !DataType::comparable(&x.1, &bound.1) {
                return Err(err(
                    sqlstate::UNDEFINED_FUNCTION,
                    format!("operator does not exist: {} >= {}", x.1, bound.1),
                ));
            }
            if bound.1 == DataType::Unknown {
                self.hint(&bound.0, &x.1);
            }
        }
        if x.1 == DataType::Unknown {
            let known = [&low.1, &high.1]
                .into_iter()
                .find(|t| **t != DataType::Unknown);
            if let Some(t) = known.cloned() {
                self.hint(&x.0, &t);
            }
        }
        let is_char = |t: &Typed| matches!(t.1, DataType::Char(_));
        let char_compare = is_char(&x) || is_char(&low) || is_char(&high);
        let prepare = |t: Typed| match char_compare {
            true => unpad(unpad_literal(t)),
            false => unpad(t),
        };
        let between = Expr::Between {
            expr: Box::new(prepare(x).0),
            low: Box::new(prepare(low).0),
            high: Box::new(prepare(high).0),
            negated,
        };
        Ok((between, DataType::Bool))
    }

    /// `x [NOT] LIKE/ILIKE pattern`; `flags` is `(negated, case_insensitive)`.
    fn like(
        &mut self,
        x: &ast::Expr,
        pattern: &ast::Expr,
        (negated, case_insensitive): (bool, bool),
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        let (x, ty) = self.expr(x, scope, g)?;
        let (p, pty) = self.expr(pattern, scope, g)?;
        for (e, t) in [(&x, &ty), (&p, &pty)] {
            if !(t.is_text() || *t == DataType::Unknown) {
                return Err(err(
                    sqlstate::UNDEFINED_FUNCTION,
                    format!("operator does not exist: {t} ~~ text"),
                ));
            }
            self.hint(e, &DataType::Text);
        }
        let like = Expr::Like {
            expr: Box::new(x),
            pattern: Box::new(p),
            negated,
            case_insensitive,
        };
        Ok((like, DataType::Bool))
    }

    /// `x::ty`. A quoted literal is converted now (so `'5'::int` is a constant, and a bad one is
    /// an error before anything runs); a parameter of unknown type takes the target type.
    fn cast(
        &mut self,
        x: &ast::Expr,
        ty: &DataType,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        if let ast::Expr::Literal(Literal::String(s)) = x {
            return Ok((Expr::Const(Value::Text(s.clone()).cast(ty)?), ty.clone()));
        }
        if let (Some(f), true) = (decimal_literal(x), ty.is_integer()) {
            return Ok((Expr::Const(decimal_to_integer(f, ty)?), ty.clone()));
        }
        let (x, xty) = self.expr(x, scope, g)?;
        if xty == DataType::Unknown {
            self.hint(&x, ty);
        }
        // A char(n) becomes text without its padding.
        let (x, _) = match ty {
            DataType::Text | DataType::Varchar(_) => unpad((x, xty)),
            _ => (x, xty),
        };
        Ok((Expr::Cast(Box::new(x), ty.clone()), ty.clone()))
    }

    /// Binds `e` as an operand next to one of type `other`: a quoted literal takes that type.
    pub(super) fn operand_for(
        &mut self,
        e: &ast::Expr,
        other: &DataType,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
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

    fn binary(
        &mut self,
        op: BinaryOp,
        l: &ast::Expr,
        r: &ast::Expr,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        let (left, right) = self.operands(op, l, r, scope, g)?;
        if left.1 == DataType::Unknown {
            self.hint(&left.0, &right.1);
        }
        if right.1 == DataType::Unknown {
            self.hint(&right.0, &left.1);
        }
        let ty = self.binary_type(op, &left, &right)?;
        // A char(n) compares and concatenates without its padding; a quoted literal compared
        // with one is a char(n) too, so its own trailing spaces do not count either.
        let is_char = |t: &Typed| matches!(t.1, DataType::Char(_));
        let (left, right) = if op.is_comparison() && (is_char(&left) || is_char(&right)) {
            (unpad(unpad_literal(left)), unpad(unpad_literal(right)))
        } else if op.is_comparison() || op == BinaryOp::Concat {
            (unpad(left), unpad(right))
        } else {
            (left, right)
        };
        let expr = Expr::Binary(op, Box::new(left.0), Box::new(right.0));
        // Integer results are range-checked for their type, as in PostgreSQL.
        if matches!(ty, DataType::SmallInt | DataType::Int) && !op.is_comparison() {
            return Ok((Expr::Cast(Box::new(expr), ty.clone()), ty));
        }
        Ok((expr, ty))
    }

    /// Binds both operands of `l op r`. The side that is not a quoted literal goes first, so the
    /// literal can take its type (except for `||`, which turns both sides into text).
    fn operands(
        &mut self,
        op: BinaryOp,
        l: &ast::Expr,
        r: &ast::Expr,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<(Typed, Typed)> {
        if op == BinaryOp::Concat {
            let left = self.expr(l, scope, g)?;
            let right = self.expr(r, scope, g)?;
            Ok((left, right))
        } else if matches!(l, ast::Expr::Literal(Literal::String(_))) {
            let right = self.expr(r, scope, g)?;
            let left = self.operand_for(l, &right.1, scope, g)?;
            Ok((left, right))
        } else {
            let left = self.expr(l, scope, g)?;
            let right = self.operand_for(r, &left.1, scope, g)?;
            Ok((left, right))
        }
    }

    /// The result type of `left op right`, or the error PostgreSQL gives for the operand types.
    fn binary_type(&mut self, op: BinaryOp, left: &Typed, right: &Typed) -> Result<DataType> {
        let ((le, lt), (re, rt)) = (left, right);
        let mismatch = || {
            err(
                sqlstate::UNDEFINED_FUNCTION,
                format!("operator does not exist: {lt} {} {rt}", op.symbol()),
            )
        };
        match op {
            BinaryOp::And | BinaryOp::Or => {
                self.expect_bool(le, lt, op.symbol())?;
                self.expect_bool(re, rt, op.symbol())?;
                Ok(DataType::Bool)
            }
            op if op.is_comparison() => match DataType::comparable(lt, rt) {
                true => Ok(DataType::Bool),
                false => Err(mismatch()),
            },
            BinaryOp::Concat => {
                self.hint(le, &DataType::Text);
                self.hint(re, &DataType::Text);
                Ok(DataType::Text)
            }
            _ => {
                let numeric = |t: &DataType| t.is_numeric() || *t == DataType::Unknown;
                if !numeric(lt) || !numeric(rt) {
                    return Err(mismatch());
                }
                Ok(match (lt, rt) {
                    (DataType::Unknown, t) | (t, DataType::Unknown) => t.clone(),
                    (a, b) => DataType::promote(a, b),
                })
            }
        }
    }
}

/// A literal's value and type: an integer that fits 32 bits is `int`, a larger one `bigint`;
/// a quoted string is `text` until its context says otherwise; `NULL` has no type.
fn literal(l: &Literal) -> Typed {
    match l {
        Literal::Null => (Expr::Const(Value::Null), DataType::Unknown),
        Literal::Bool(b) => (Expr::Const(Value::Bool(*b)), DataType::Bool),
        Literal::Int(i) => {
            let ty = match i32::try_from(*i) {
                Ok(_) => DataType::Int,
                Err(_) => DataType::BigInt,
            };
            (Expr::Const(Value::Int(*i)), ty)
        }
        Literal::Float(f) => (Expr::Const(Value::Float(*f)), DataType::Double),
        Literal::String(s) => (Expr::Const(Value::Text(s.clone())), DataType::Text),
    }
}

/// The value of a decimal literal, possibly negated (`2.5`, `(-2.5)`): what PostgreSQL types
/// `numeric`, whose casts to integers round half away from zero.
pub(super) fn decimal_literal(e: &ast::Expr) -> Option<f64> {
    match e {
        ast::Expr::Literal(Literal::Float(f)) => Some(*f),
        ast::Expr::Unary(ast::UnaryOp::Neg, inner) => decimal_literal(inner).map(|f| -f),
        ast::Expr::Unary(ast::UnaryOp::Plus, inner) => decimal_literal(inner),
        _ => None,
    }
}

/// A `char(n)` expression as text without its trailing spaces, as PostgreSQL converts a
/// `bpchar` wherever its padding must not count (comparisons, `||`, text functions, casts to
/// text); any other expression unchanged.
pub(super) fn unpad((e, ty): Typed) -> Typed {
    match ty {
        DataType::Char(_) => (Expr::Call(Function::Unpad, vec![e]), DataType::Text),
        ty => (e, ty),
    }
}

/// A quoted literal without its trailing spaces, for a comparison with a `char(n)`.
fn unpad_literal((e, ty): Typed) -> Typed {
    match e {
        Expr::Const(Value::Text(s)) => {
            (Expr::Const(Value::Text(s.trim_end_matches(' ').into())), ty)
        }
        e => (e, ty),
    }
}
