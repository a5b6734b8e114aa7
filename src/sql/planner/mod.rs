//! Planning: binds a parsed statement against the catalog into an executable [`Plan`].
//!
//! Binding resolves column names to positions, infers the type of every expression (so the result
//! columns can be described to a client before anything runs, with the PostgreSQL type OIDs that
//! drivers decode natively), infers the types of `$n` parameters from their context (the column
//! they are compared with or assigned to), gives quoted literals the type their context expects,
//! and chooses the access path: a statement whose filter fixes every primary key column with
//! `=` reads one key; anything else scans the table with the filter applied.
//!
//! The pipeline, one file per step:
//!
//! * `bind`: the entry point [`plan`], statement dispatch, and the binding of `CREATE TABLE`,
//!   `INSERT`, `UPDATE` and `DELETE`; it owns the inferred parameter types;
//! * `binder`: the binder's state and what every step shares: typed expressions, the grouping
//!   of an aggregate query, and the scope of names an expression may refer to;
//! * `expr`: expressions, one binding function per kind, with type inference; `function`
//!   resolves scalar function calls by name and argument types;
//! * `aggregate`: aggregate calls and expressions evaluated over grouped rows;
//! * `select`: `SELECT`, one step per clause in PostgreSQL's resolution order;
//! * `access`: the access path of a row source (a point read or a scan);
//! * `plan`: the plan types the executor runs and the gateway splits.
//!
//! Planning is pure: it reads the catalog and returns a plan or an error, and the same statement
//! against the same catalog always plans the same way.

mod access;
mod aggregate;
mod bind;
mod binder;
mod expr;
mod function;
mod plan;
mod select;

pub use self::bind::plan;
pub use self::plan::{
    AggCall, AggFunc, Aggregate, Plan, Planned, Returning, SelectPlan, SortKey, Source,
};
