//! A bound on how deeply expressions nest when they are decoded from bytes.
//!
//! Expressions arrive over the internal RPC (pushed-down filters, shipped statements) and are
//! decoded recursively. Without a bound, a frame of a few megabytes holding one expression
//! nested millions of levels deep would overflow the stack and abort the node. Every recursive
//! field of an expression is decoded through [`boxed()`] or [`vec()`], which count the nesting on
//! this thread and refuse to go deeper than [`MAX_DEPTH`], with an ordinary decoding error.
//! (SQL text is already bounded by the parser's own recursion limit.)

use std::cell::Cell;

use serde::{Deserialize, Deserializer};

/// The deepest nesting of expressions that decodes.
pub const MAX_DEPTH: u32 = 512;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One level of nesting, released when dropped.
struct Level;

impl Level {
    fn enter<E: serde::de::Error>() -> Result<Level, E> {
        DEPTH.with(|d| {
            if d.get() >= MAX_DEPTH {
                return Err(E::custom(format!(
                    "expression nested deeper than {MAX_DEPTH} levels"
                )));
            }
            d.set(d.get() + 1);
            Ok(Level)
        })
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Decodes a boxed sub-expression, one level deeper.
pub fn boxed<'de, D, T>(d: D) -> Result<Box<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let _level = Level::enter::<D::Error>()?;
    T::deserialize(d).map(Box::new)
}

/// Decodes a list of sub-expressions, one level deeper.
pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let _level = Level::enter::<D::Error>()?;
    Vec::<T>::deserialize(d)
}

#[cfg(test)]
mod tests {
    use crate::types::expr::Expr;
    use crate::types::value::Value;

    #[test]
    fn deeply_nested_expressions_are_refused_not_a_stack_overflow() {
        let mut bytes = Vec::new();
        // postcard: variant index of Expr::Not, repeated, then a constant.
        let not = postcard::to_stdvec(&Expr::Not(Box::new(Expr::Const(Value::Null)))).unwrap();
        let prefix = not[0];
        bytes.extend(std::iter::repeat_n(prefix, 1_000_000));
        bytes.extend(postcard::to_stdvec(&Expr::Const(Value::Null)).unwrap());
        let err = postcard::from_bytes::<Expr>(&bytes);
        assert!(err.is_err());
        // Ordinary nesting decodes.
        let mut e = Expr::Const(Value::Int(1));
        for _ in 0..100 {
            e = Expr::Not(Box::new(e));
        }
        let back: Expr = postcard::from_bytes(&postcard::to_stdvec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
