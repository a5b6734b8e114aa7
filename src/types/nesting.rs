//! The one bound on how deeply expressions nest, wherever ddb builds or decodes one.
//!
//! Every pass over an expression tree — conversion from sqlparser's tree, binding, evaluation,
//! encoding for the internal RPC, decoding on a shard, and even `Drop` and `Clone` — recurses
//! once per level. sqlparser builds left-deep chains (`1+1+…`, `a AND b AND …`, `x::int::int…`)
//! in a loop, so their depth grows with the length of the text: 1,500 terms of `+` (3 KB) used
//! to overflow a worker's stack and abort the whole node. The bound is enforced where ddb's own
//! trees are *built*, so that every later recursive pass is bounded by construction:
//!
//! * the parser enters one level per expression it converts ([`enter`]) and refuses a statement
//!   nested deeper than [`MAX_DEPTH`] with SQLSTATE 54001 (statement too complex), as
//!   PostgreSQL refuses one that exceeds `max_stack_depth`;
//! * binding adds at most [`BOUND_LEVELS_PER_LEVEL`] levels per level as written (a range check
//!   of an integer result, the unpadding of a `char(n)`, `BETWEEN` rewritten as two comparisons
//!   under `AND`), so a bound expression is at most [`MAX_DECODED_DEPTH`] deep;
//! * decoding from bytes goes through [`boxed`] and [`vec`](mod@vec), which count the nesting and
//!   refuse to go deeper than [`MAX_DECODED_DEPTH`] with an ordinary decoding error: a peer
//!   cannot send a frame of a few megabytes that nests millions of levels deep.
//!
//! The levels are counted on the current thread (conversion and decoding are synchronous), and
//! a level is released when its guard drops, on an early return or an unwind alike.
//!
//! A bound depth is not yet a bound stack: in a debug build one level of the parser's
//! conversion takes about 9 KB of stack, so even 1,000 levels need more than a worker's 2 MB.
//! The hand-written recursive passes (conversion, binding, evaluation, walks) are marked
//! `#[recursive::recursive]`, and the encoding and decoding of every sub-expression go through
//! [`boxed`] and [`vec`](mod@vec): each level first makes sure 128 KB of stack are left, and continues
//! on a new segment otherwise ([`stacker`]). The derived passes (`Clone`, `PartialEq`, `Debug`,
//! `Drop`) cannot do that; they run on worker threads with [`WORKER_STACK`], which holds them at
//! the deepest decodable expression with room to spare (tested below).
//!
//! `AND` and `OR` chains are not bounded by this: the parser regroups them into balanced trees
//! (they are associative), so a filter of 500,000 `AND` terms nests 19 levels deep and runs.
//!
//! The limit is far above what applications write (ORMs emit long `IN` lists and `AND`/`OR`
//! chains, which are flat or balanced here), and low enough that the deepest tree fits the
//! stack of a worker thread in a debug build; `tests/limits.rs` runs statements at the limit
//! through every pass.

use std::cell::Cell;

use crate::error::{sqlstate, Error, Result};

/// The deepest nesting of expressions a SQL statement may have, as written.
pub const MAX_DEPTH: u32 = 1_000;

/// The most levels binding adds for one level as written.
pub const BOUND_LEVELS_PER_LEVEL: u32 = 4;

/// The deepest nesting of expressions that decodes: a bound expression of the deepest statement.
pub const MAX_DECODED_DEPTH: u32 = MAX_DEPTH * BOUND_LEVELS_PER_LEVEL;

/// The stack of a server's worker threads, on which statements are planned and run. The derived
/// passes (`Clone`, `PartialEq`, `Debug`, `Drop`) cannot grow their stack; at
/// [`MAX_DECODED_DEPTH`] they take up to about 4 MB in a debug build, far less in a release.
pub const WORKER_STACK: usize = 16 << 20;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One level of nesting, released when dropped.
pub struct Level(());

impl Level {
    fn try_enter(limit: u32) -> std::result::Result<Level, u32> {
        DEPTH.with(|d| {
            if d.get() >= limit {
                return Err(limit);
            }
            d.set(d.get() + 1);
            Ok(Level(()))
        })
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Enters one level of a SQL expression being built; past [`MAX_DEPTH`], SQLSTATE 54001.
pub fn enter() -> Result<Level> {
    Level::try_enter(MAX_DEPTH).map_err(|limit| {
        Error::sql(
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!("statement too complex: expressions nest deeper than {limit} levels"),
        )
    })
}

fn enter_decoding<E: serde::de::Error>() -> std::result::Result<Level, E> {
    Level::try_enter(MAX_DECODED_DEPTH)
        .map_err(|limit| E::custom(format!("expression nested deeper than {limit} levels")))
}

/// Runs one level of a recursive pass with room on the stack: on a new segment when less than
/// [`RED_ZONE`] is left (what the `recursive` attribute does for ddb's hand-written passes).
fn grow<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// The stack a level of a recursive pass may need at most.
const RED_ZONE: usize = 128 << 10;

/// The size of a stack segment added when a pass runs out.
const SEGMENT: usize = 2 << 20;

/// A boxed sub-expression: decoded one level deeper, both ways on a stack with room.
pub mod boxed {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Encodes a boxed sub-expression.
    pub fn serialize<S: Serializer, T: Serialize>(
        value: &T,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        super::grow(|| value.serialize(s))
    }

    /// Decodes a boxed sub-expression, one level deeper.
    pub fn deserialize<'de, D, T>(d: D) -> std::result::Result<Box<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let _level = super::enter_decoding::<D::Error>()?;
        super::grow(|| T::deserialize(d).map(Box::new))
    }
}

/// A list of sub-expressions: decoded one level deeper, both ways on a stack with room.
pub mod vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Encodes a list of sub-expressions.
    pub fn serialize<S: Serializer, T: Serialize>(
        value: &[T],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        super::grow(|| value.serialize(s))
    }

    /// Decodes a list of sub-expressions, one level deeper.
    pub fn deserialize<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let _level = super::enter_decoding::<D::Error>()?;
        super::grow(|| Vec::<T>::deserialize(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::expr::Expr;
    use crate::types::value::Value;

    /// Runs `f` on a thread with a server worker's stack.
    fn on_a_worker_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

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
    }

    #[test]
    fn the_deepest_decodable_expression_fits_a_workers_stack_in_every_pass() {
        on_a_worker_stack(|| {
            let mut e = Expr::Const(Value::Int(1));
            for _ in 0..MAX_DECODED_DEPTH {
                let one = Box::new(Expr::Const(Value::Int(1)));
                e = Expr::Binary(crate::types::BinaryOp::Add, Box::new(e), one);
            }
            let bytes = postcard::to_stdvec(&e).unwrap();
            let back: Expr = postcard::from_bytes(&bytes).unwrap();
            assert!(back == e.clone());
            assert!(format!("{back:?}").len() > bytes.len());
            let ctx = crate::types::expr::Context {
                params: &[],
                now: 0,
                sequences: None,
            };
            let sum = Value::Int(i64::from(MAX_DECODED_DEPTH) + 1);
            assert_eq!(back.eval(&[], &ctx).unwrap(), sum);
        });
    }

    #[test]
    fn building_past_the_limit_is_statement_too_complex_and_levels_are_released() {
        let mut levels = Vec::new();
        for _ in 0..MAX_DEPTH {
            levels.push(enter().unwrap());
        }
        let err = enter().err().unwrap();
        assert_eq!(err.sqlstate(), "54001");
        levels.clear();
        assert!(enter().is_ok());
    }
}
