//! Bound expressions and their evaluation.
//!
//! The planner resolves names to column positions and parameters to indexes, producing
//! [`Expr`]s that evaluate against a row (`&[Value]`) and the statement's parameters. Logic is
//! three-valued: comparisons with NULL yield NULL, `AND`/`OR` follow SQL's truth tables, and a
//! filter keeps a row only when it evaluates to TRUE. Arithmetic is checked (22003 on overflow,
//! 22012 on division by zero).

use serde::{Deserialize, Serialize};

use crate::error::{sqlstate, Error, Result};
use crate::types::value::{DataType, Value};

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
}

impl BinaryOp {
    /// Whether the operator compares its operands and yields a boolean.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }

    /// The operator as written in SQL.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Concat => "||",
        }
    }
}

/// A scalar function known to ddb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Function {
    Version,
    Now,
    Lower,
    Upper,
    Length,
    Abs,
    Coalesce,
    /// A `char(n)` value as text: without its trailing spaces, which do not count in `char(n)`
    /// comparisons, lengths and conversions to text (PostgreSQL's `bpchar` → `text`).
    Unpad,
    /// `gen_random_uuid()`: a new version 4 UUID at every call (volatile).
    GenRandomUuid,
    /// `nextval(name)`, `currval(name)`, `setval(name, value [, is_called])`: the sequences of
    /// the session's node ([`Sequences`]).
    Nextval,
    Currval,
    Setval,
}

impl Function {
    /// Whether the function may give another value at every call, so that an expression
    /// calling it means something else where it is evaluated again (on another node).
    pub fn is_volatile(self) -> bool {
        matches!(
            self,
            Function::GenRandomUuid | Function::Nextval | Function::Currval | Function::Setval
        )
    }
}

/// A bound expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Const(Value),
    /// The value at this position of the input row.
    Column(usize),
    /// Statement parameter `$n+1`.
    Param(usize),
    Not(#[serde(with = "crate::types::nesting::boxed")] Box<Expr>),
    Neg(#[serde(with = "crate::types::nesting::boxed")] Box<Expr>),
    Binary(
        BinaryOp,
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
    ),
    IsNull(
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
        bool,
    ),
    /// `IS [NOT] TRUE/FALSE`: the value to test for, and whether negated.
    IsBool(
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
        bool,
        bool,
    ),
    InList(
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
        #[serde(with = "crate::types::nesting::vec")] Vec<Expr>,
        bool,
    ),
    Like {
        #[serde(with = "crate::types::nesting::boxed")]
        expr: Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")]
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    Cast(
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
        DataType,
    ),
    Call(
        Function,
        #[serde(with = "crate::types::nesting::vec")] Vec<Expr>,
    ),
    /// `expr [NOT] BETWEEN low AND high`: `expr >= low AND expr <= high`, with `expr`
    /// evaluated once (nested `BETWEEN`s would otherwise double the tree at every level).
    Between {
        #[serde(with = "crate::types::nesting::boxed")]
        expr: Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")]
        low: Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")]
        high: Box<Expr>,
        negated: bool,
    },
    /// The default of a `SERIAL` or identity column: the next value of its own sequence
    /// (see [`crate::types::schema::Identity`]). Last, so stored expressions keep their codes.
    Identity {
        sequence: String,
        always: bool,
    },
}

/// What an expression is evaluated against: the row, the parameters, and the statement's clock.
pub struct Context<'a> {
    pub params: &'a [Value],
    /// `now()` / `CURRENT_TIMESTAMP`: fixed for the statement, microseconds since the epoch.
    pub now: i64,
    /// The sequences `nextval` and its kin use: the session's, where a session runs the
    /// statement (`None` where one does not, as on a shard serving a scan).
    pub sequences: Option<&'a dyn Sequences>,
}

/// The sequences of a session: what `nextval`, `currval` and `setval` call. Values are never
/// handed out twice, and are not given back when a transaction rolls back (gaps are allowed,
/// as in PostgreSQL).
pub trait Sequences: Send + Sync {
    /// The next value of the sequence `name`, which becomes the session's `currval`.
    fn nextval(&self, name: &str) -> Result<i64>;
    /// The value `nextval` last gave this session (55000 before any).
    fn currval(&self, name: &str) -> Result<i64>;
    /// Sets the sequence's last value (`called`) or its next one, and returns `value`.
    fn setval(&self, name: &str, value: i64, called: bool) -> Result<i64>;
}

impl std::fmt::Debug for dyn Sequences + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sequences")
    }
}

impl Expr {
    /// Evaluates the expression against `row`.
    #[recursive::recursive]
    pub fn eval(&self, row: &[Value], ctx: &Context) -> Result<Value> {
        Ok(match self {
            Expr::Const(v) => v.clone(),
            Expr::Identity { sequence, .. } => {
                let sequences = ctx.sequences.ok_or_else(|| {
                    Error::unsupported("a sequence function outside a session (on a shard)")
                })?;
                Value::Int(sequences.nextval(sequence)?)
            }
            Expr::Column(i) => row
                .get(*i)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("column {i} out of range")))?,
            Expr::Param(i) => ctx.params.get(*i).cloned().ok_or_else(|| {
                Error::sql(
                    sqlstate::UNDEFINED_PARAMETER,
                    format!("there is no parameter ${}", i + 1),
                )
            })?,
            Expr::Not(e) => match e.eval(row, ctx)? {
                Value::Null => Value::Null,
                Value::Bool(b) => Value::Bool(!b),
                v => return Err(type_error("NOT", &v)),
            },
            Expr::Neg(e) => match e.eval(row, ctx)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(overflow)?),
                Value::Float(f) => Value::Float(-f),
                v => return Err(type_error("-", &v)),
            },
            Expr::Binary(BinaryOp::And, l, r) => {
                let l = truth(l.eval(row, ctx)?)?;
                if l == Some(false) {
                    return Ok(Value::Bool(false));
                }
                match (l, truth(r.eval(row, ctx)?)?) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                }
            }
            Expr::Binary(BinaryOp::Or, l, r) => {
                let l = truth(l.eval(row, ctx)?)?;
                if l == Some(true) {
                    return Ok(Value::Bool(true));
                }
                match (l, truth(r.eval(row, ctx)?)?) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                }
            }
            Expr::Binary(op, l, r) => binary(*op, l.eval(row, ctx)?, r.eval(row, ctx)?)?,
            Expr::IsNull(e, negated) => Value::Bool(e.eval(row, ctx)?.is_null() != *negated),
            Expr::IsBool(e, value, negated) => {
                let is = truth(e.eval(row, ctx)?)? == Some(*value);
                Value::Bool(is != *negated)
            }
            Expr::InList(e, list, negated) => {
                let v = e.eval(row, ctx)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    let i = item.eval(row, ctx)?;
                    match v.sql_cmp(&i) {
                        Some(std::cmp::Ordering::Equal) => return Ok(Value::Bool(!*negated)),
                        None => saw_null |= i.is_null(),
                        _ => {}
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => match (expr.eval(row, ctx)?, pattern.eval(row, ctx)?) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (Value::Text(s), Value::Text(p)) => {
                    let m = if *case_insensitive {
                        like(&s.to_lowercase(), &p.to_lowercase())?
                    } else {
                        like(&s, &p)?
                    };
                    Value::Bool(m != *negated)
                }
                (a, _) => return Err(type_error("LIKE", &a)),
            },
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = expr.eval(row, ctx)?;
                let ge = truth(binary(BinaryOp::GtEq, v.clone(), low.eval(row, ctx)?)?)?;
                // As `AND`: a false lower bound decides without the upper one.
                let within = match ge {
                    Some(false) => Some(false),
                    ge => match (ge, truth(binary(BinaryOp::LtEq, v, high.eval(row, ctx)?)?)?) {
                        (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                };
                match within {
                    Some(b) => Value::Bool(b != *negated),
                    None => Value::Null,
                }
            }
            Expr::Cast(e, ty) => e.eval(row, ctx)?.cast(ty)?,
            Expr::Call(f, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(a.eval(row, ctx)?);
                }
                call(*f, values, ctx)?
            }
        })
    }

    /// Evaluates a filter: true only when the expression is TRUE (NULL and FALSE reject).
    pub fn matches(&self, row: &[Value], ctx: &Context) -> Result<bool> {
        Ok(truth(self.eval(row, ctx)?)? == Some(true))
    }

    /// Whether the expression reads no column (a constant or parameters only).
    pub fn is_row_independent(&self) -> bool {
        let mut independent = true;
        self.walk(&mut |e| {
            if matches!(e, Expr::Column(_)) {
                independent = false;
            }
        });
        independent
    }

    /// Whether the expression calls a volatile function ([`Function::is_volatile`]).
    pub fn is_volatile(&self) -> bool {
        let mut volatile = false;
        self.walk(&mut |e| match e {
            Expr::Call(f, _) => volatile |= f.is_volatile(),
            Expr::Identity { .. } => volatile = true,
            _ => {}
        });
        volatile
    }

    /// Calls `f` on this expression and every sub-expression.
    #[recursive::recursive]
    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Const(_) | Expr::Column(_) | Expr::Param(_) | Expr::Identity { .. } => {}
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::IsNull(e, _)
            | Expr::IsBool(e, _, _)
            | Expr::Cast(e, _) => e.walk(f),
            Expr::Binary(_, l, r) => {
                l.walk(f);
                r.walk(f);
            }
            Expr::InList(e, list, _) => {
                e.walk(f);
                list.iter().for_each(|x| x.walk(f));
            }
            Expr::Like { expr, pattern, .. } => {
                expr.walk(f);
                pattern.walk(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|x| x.walk(f)),
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.walk(f);
                low.walk(f);
                high.walk(f);
            }
        }
    }
}

fn overflow() -> Error {
    Error::sql(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "integer out of range")
}

fn type_error(op: &str, v: &Value) -> Error {
    Error::sql(
        sqlstate::DATATYPE_MISMATCH,
        format!("operator {op} cannot be applied to type {}", v.data_type()),
    )
}

/// The truth value of a boolean (None for NULL).
pub fn truth(v: Value) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        v => Err(Error::sql(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "argument of boolean operator must be type boolean, not type {}",
                v.data_type()
            ),
        )),
    }
}

fn binary(op: BinaryOp, l: Value, r: Value) -> Result<Value> {
    use std::cmp::Ordering::*;
    if l.is_null() || r.is_null() {
        return Ok(Value::Null);
    }
    if op.is_comparison() {
        let ord = l.sql_cmp(&r).ok_or_else(|| {
            Error::sql(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "operator does not exist: {} {} {}",
                    l.data_type(),
                    op.symbol(),
                    r.data_type()
                ),
            )
        })?;
        return Ok(Value::Bool(match op {
            BinaryOp::Eq => ord == Equal,
            BinaryOp::NotEq => ord != Equal,
            BinaryOp::Lt => ord == Less,
            BinaryOp::LtEq => ord != Greater,
            BinaryOp::Gt => ord == Greater,
            _ => ord != Less,
        }));
    }
    let div_zero = || Error::sql(sqlstate::DIVISION_BY_ZERO, "division by zero");
    Ok(match (op, l, r) {
        (BinaryOp::Concat, a, b) => {
            let text = |v: Value| v.cast(&DataType::Text).map(|v| v.to_string());
            Value::Text(format!("{}{}", text(a)?, text(b)?))
        }
        (op, Value::Int(a), Value::Int(b)) => Value::Int(match op {
            BinaryOp::Add => a.checked_add(b).ok_or_else(overflow)?,
            BinaryOp::Sub => a.checked_sub(b).ok_or_else(overflow)?,
            BinaryOp::Mul => a.checked_mul(b).ok_or_else(overflow)?,
            BinaryOp::Div if b == 0 => return Err(div_zero()),
            BinaryOp::Div => a.checked_div(b).ok_or_else(overflow)?,
            BinaryOp::Mod if b == 0 => return Err(div_zero()),
            BinaryOp::Mod => a.checked_rem(b).unwrap_or(0),
            _ => return Err(Error::Internal(format!("bad integer operator {op:?}"))),
        }),
        (op, a @ (Value::Int(_) | Value::Float(_)), b @ (Value::Int(_) | Value::Float(_))) => {
            let (a, b) = (as_f64(&a), as_f64(&b));
            let result = match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div if b == 0.0 => return Err(div_zero()),
                BinaryOp::Div => a / b,
                BinaryOp::Mod if b == 0.0 => return Err(div_zero()),
                BinaryOp::Mod => a % b,
                _ => return Err(Error::Internal(format!("bad float operator {op:?}"))),
            };
            // A finite computation that overflows to infinity is an error, as in PostgreSQL.
            if result.is_infinite() && a.is_finite() && b.is_finite() {
                return Err(Error::sql(
                    sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    "value out of range: overflow",
                ));
            }
            Value::Float(result)
        }
        (op, a, b) => {
            return Err(Error::sql(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "operator does not exist: {} {} {}",
                    a.data_type(),
                    op.symbol(),
                    b.data_type()
                ),
            ))
        }
    })
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

/// SQL `LIKE`: `%` matches any run, `_` one character, `\` escapes the next character.
pub fn like(s: &str, pattern: &str) -> Result<bool> {
    #[derive(Clone, Copy)]
    enum P {
        Any,
        One,
        Lit(char),
    }
    let mut pat = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            '%' => P::Any,
            '_' => P::One,
            '\\' => P::Lit(chars.next().ok_or_else(|| {
                Error::sql("22025", "LIKE pattern must not end with escape character")
            })?),
            c => P::Lit(c),
        });
    }
    let s: Vec<char> = s.chars().collect();
    // Iterative matching with backtracking to the last `%`: linear in practice, no recursion.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match pat.get(pi) {
            Some(P::Any) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(P::One) => {
                si += 1;
                pi += 1;
            }
            Some(P::Lit(c)) if *c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return Ok(false),
            },
        }
    }
    Ok(pat[pi..].iter().all(|p| matches!(p, P::Any)))
}

fn call(f: Function, args: Vec<Value>, ctx: &Context) -> Result<Value> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    Ok(match f {
        Function::Version => Value::Text(crate::version::version_string()),
        Function::Now => Value::Timestamp(ctx.now),
        Function::GenRandomUuid => Value::Uuid(crate::types::value::random_uuid()?),
        Function::Nextval | Function::Currval | Function::Setval => {
            let sequences = ctx.sequences.ok_or_else(|| {
                Error::unsupported("a sequence function outside a session (on a shard)")
            })?;
            let name = match arg(0) {
                Value::Null => return Ok(Value::Null),
                Value::Text(s) => s,
                v => v.to_string(),
            };
            // `nextval('public.s')` names the one schema ddb has.
            let name = name.strip_prefix("public.").unwrap_or(&name).to_string();
            Value::Int(match f {
                Function::Nextval => sequences.nextval(&name)?,
                Function::Currval => sequences.currval(&name)?,
                _ => {
                    let value = match arg(1).cast(&DataType::BigInt)? {
                        Value::Int(i) => i,
                        _ => return Ok(Value::Null),
                    };
                    let called = !matches!(arg(2), Value::Bool(false));
                    sequences.setval(&name, value, called)?
                }
            })
        }
        Function::Lower => match arg(0) {
            Value::Text(s) => Value::Text(s.to_lowercase()),
            v => v,
        },
        Function::Upper => match arg(0) {
            Value::Text(s) => Value::Text(s.to_uppercase()),
            v => v,
        },
        Function::Length => match arg(0) {
            Value::Text(s) => Value::Int(s.chars().count() as i64),
            v => v,
        },
        Function::Abs => match arg(0) {
            Value::Int(i) => Value::Int(i.checked_abs().ok_or_else(overflow)?),
            Value::Float(x) => Value::Float(x.abs()),
            v => v,
        },
        Function::Unpad => match arg(0) {
            Value::Text(s) => Value::Text(s.trim_end_matches(' ').to_string()),
            v => v,
        },
        Function::Coalesce => args
            .into_iter()
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            params: &[],
            now: 0,
            sequences: None,
        }
    }

    fn c(v: Value) -> Box<Expr> {
        Box::new(Expr::Const(v))
    }

    #[test]
    fn three_valued_logic() {
        let and = Expr::Binary(BinaryOp::And, c(Value::Null), c(Value::Bool(false)));
        assert_eq!(and.eval(&[], &ctx()).unwrap(), Value::Bool(false));
        let or = Expr::Binary(BinaryOp::Or, c(Value::Null), c(Value::Bool(false)));
        assert_eq!(or.eval(&[], &ctx()).unwrap(), Value::Null);
        let eq = Expr::Binary(BinaryOp::Eq, c(Value::Null), c(Value::Int(1)));
        assert!(!eq.matches(&[], &ctx()).unwrap());
        let inl = Expr::InList(
            c(Value::Int(2)),
            vec![Expr::Const(Value::Int(1)), Expr::Const(Value::Null)],
            false,
        );
        assert_eq!(inl.eval(&[], &ctx()).unwrap(), Value::Null);
    }

    #[test]
    fn arithmetic_is_checked() {
        let e = Expr::Binary(BinaryOp::Add, c(Value::Int(i64::MAX)), c(Value::Int(1)));
        assert_eq!(
            e.eval(&[], &ctx()).unwrap_err().sqlstate(),
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        );
        let e = Expr::Binary(BinaryOp::Div, c(Value::Int(1)), c(Value::Int(0)));
        assert_eq!(
            e.eval(&[], &ctx()).unwrap_err().sqlstate(),
            sqlstate::DIVISION_BY_ZERO
        );
        let e = Expr::Binary(BinaryOp::Div, c(Value::Int(7)), c(Value::Int(2)));
        assert_eq!(e.eval(&[], &ctx()).unwrap(), Value::Int(3));
    }

    #[test]
    fn like_patterns() {
        assert!(like("hello", "h%o").unwrap());
        assert!(like("hello", "_ello").unwrap());
        assert!(!like("hello", "h_o").unwrap());
        assert!(like("50%", "50\\%").unwrap());
        assert!(like("", "%").unwrap());
        assert!(like("abcabc", "%b%c").unwrap());
    }
}
