//! Scalar function calls: resolving a name and argument types to a [`Function`].
//!
//! Resolution is by name and argument types, as PostgreSQL's is: `lower(int)` does not exist
//! even though `lower(text)` does, and the error names the signature that was asked for
//! (`function lower(integer) does not exist`, 42883), which is what clients and ORMs match on.
//! Arguments of unknown type (parameters, `NULL`) fit any text or numeric slot; the text
//! functions then make such a parameter `text`. Aggregate functions are not resolved here: they
//! are bound over grouped rows (see [`super::aggregate`]).

use super::binder::Grouping;
use super::binder::Scope;
use super::binder::Typed;
use super::binder::{err, Binder};
use super::expr::unpad;
use crate::error::{sqlstate, Error, Result};
use crate::sql::ast;
use crate::types::expr::{Expr, Function};
use crate::types::value::{DataType, Value};

impl Binder<'_> {
    /// Binds a call of the scalar function `name`. `star_or_distinct` is true for `f(*)` and
    /// `f(DISTINCT …)`, which only aggregates accept.
    pub(super) fn call(
        &mut self,
        name: &str,
        args: &[ast::Expr],
        star_or_distinct: bool,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<Typed> {
        if star_or_distinct {
            return Err(err(
                sqlstate::SYNTAX_ERROR,
                format!("{name}(*) or DISTINCT specified, but {name} is not an aggregate function"),
            ));
        }
        // ddb has no advisory locks (`pg_advisory_lock` does not exist), so a session holds
        // none, and unlocking them all (a connection pool's reset) does nothing. PostgreSQL's
        // result is `void`, which prints as an empty string.
        if name == "pg_advisory_unlock_all" && args.is_empty() {
            return Ok((Expr::Const(Value::Text(String::new())), DataType::Text));
        }
        let mut bound = Vec::new();
        let mut types = Vec::new();
        for a in args {
            let (x, t) = self.expr(a, scope, g)?;
            bound.push(x);
            types.push(t);
        }
        let (f, ty) = resolve(name, &types)?;
        if matches!(f, Function::Lower | Function::Upper | Function::Length) {
            for x in &bound {
                self.hint(x, &DataType::Text);
            }
            // A text function sees a char(n) without its padding.
            bound = bound
                .into_iter()
                .zip(types)
                .map(|typed| unpad(typed).0)
                .collect();
        }
        Ok((Expr::Call(f, bound), ty))
    }
}

/// The function `name` taking arguments of `types`, and its result type.
fn resolve(name: &str, types: &[DataType]) -> Result<(Function, DataType)> {
    let textual = |t: &DataType| t.is_text() || *t == DataType::Unknown;
    Ok(match (name, types) {
        ("version", []) => (Function::Version, DataType::Text),
        ("gen_random_uuid", []) => (Function::GenRandomUuid, DataType::Uuid),
        ("now" | "current_timestamp" | "localtimestamp", []) => {
            (Function::Now, DataType::Timestamp)
        }
        ("lower", [t]) if textual(t) => (Function::Lower, DataType::Text),
        ("upper", [t]) if textual(t) => (Function::Upper, DataType::Text),
        ("length" | "char_length" | "character_length", [t]) if textual(t) => {
            (Function::Length, DataType::Int)
        }
        ("abs", [t]) if t.is_numeric() => (Function::Abs, t.clone()),
        ("abs", [DataType::Unknown]) => (Function::Abs, DataType::Double),
        ("coalesce", ts) if !ts.is_empty() => (Function::Coalesce, coalesce_type(name, ts)?),
        ("nextval", [t]) if textual(t) => (Function::Nextval, DataType::BigInt),
        ("currval", [t]) if textual(t) => (Function::Currval, DataType::BigInt),
        ("setval", [t, n]) if textual(t) && (n.is_integer() || *n == DataType::Unknown) => {
            (Function::Setval, DataType::BigInt)
        }
        ("setval", [t, n, DataType::Bool | DataType::Unknown])
            if textual(t) && (n.is_integer() || *n == DataType::Unknown) =>
        {
            (Function::Setval, DataType::BigInt)
        }
        ("lastval", []) => return Err(Error::not_built_yet("lastval() calls")),
        _ => {
            return Err(err(
                sqlstate::UNDEFINED_FUNCTION,
                format!("function {} does not exist", signature(name, types)),
            ))
        }
    })
}

/// `coalesce`'s result type: that of its first typed argument, which every other argument must
/// be comparable with.
fn coalesce_type(name: &str, types: &[DataType]) -> Result<DataType> {
    let ty = types
        .iter()
        .find(|t| **t != DataType::Unknown)
        .cloned()
        .unwrap_or(DataType::Unknown);
    if types.iter().any(|t| !DataType::comparable(t, &ty)) {
        return Err(err(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "COALESCE types cannot be matched: {}",
                signature(name, types)
            ),
        ));
    }
    Ok(ty)
}

/// `name(type, type, …)`, as PostgreSQL names a function in its errors.
fn signature(name: &str, types: &[DataType]) -> String {
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    format!("{name}({})", types.join(", "))
}
