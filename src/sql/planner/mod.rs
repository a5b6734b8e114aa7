//! Planning: binds a parsed statement against the catalog into an executable [`Plan`].
//!
//! Binding resolves column names to positions, infers the type of every expression (so the result
//! columns can be described to a client before anything runs, with the PostgreSQL type OIDs that
//! drivers decode natively), infers the types of `$n` parameters from their context (the column
//! they are compared with or assigned to), gives quoted literals the type their context expects,
//! and chooses the access path: a statement whose filter fixes every primary key column with
//! `=` reads one key; anything else scans the table with the filter applied.

mod access;
mod aggregate;
mod bind;
mod expr;
mod function;
mod plan;
mod scope;
mod select;

pub use self::bind::plan;
pub use self::plan::{AggCall, AggFunc, Aggregate, Plan, Planned, SelectPlan, SortKey, Source};
