//! The plan types: what the executor runs.
//!
//! A [`Plan`] is a statement with every name resolved and every expression typed. A row source
//! ([`Source`]) carries its access path: the primary key values when the filter fixes the whole
//! key (one shard, one read), otherwise a scan with the filter applied. The gateway splits a
//! [`SelectPlan`] into the part each shard runs and the part it merges.

use std::sync::Arc;

use crate::types::expr::Expr;
use crate::types::value::DataType;
use crate::types::{OutputColumn, Table};

/// An executable statement.
#[derive(Clone, Debug)]
pub enum Plan {
    Begin,
    Commit,
    Rollback,
    /// `table` has id 0 until the DDL path assigns one.
    CreateTable {
        table: Table,
        if_not_exists: bool,
    },
    DropTable {
        names: Vec<String>,
        if_exists: bool,
    },
    /// Each row has one entry per table column: `None` means the column default.
    Insert {
        table: Arc<Table>,
        rows: Vec<Vec<Option<Expr>>>,
        returning: Option<Returning>,
    },
    /// `sets` pairs a column position with its new value, evaluated over the old row.
    Update {
        source: Source,
        sets: Vec<(usize, Expr)>,
        returning: Option<Returning>,
    },
    Delete {
        source: Source,
        returning: Option<Returning>,
    },
    Select(Box<SelectPlan>),
    /// A session statement (`SET`, `SHOW`, …): the session carries it out itself. `columns`
    /// are `SHOW`'s result columns (empty for the others).
    Session {
        columns: Vec<OutputColumn>,
    },
}

/// The `RETURNING` list of a write: evaluated over each row as written (the new row of an
/// `INSERT` or `UPDATE`, the old row of a `DELETE`), after the column defaults are filled in
/// and the values converted to the column types.
#[derive(Clone, Debug)]
pub struct Returning {
    pub projection: Vec<Expr>,
    pub columns: Vec<OutputColumn>,
}

/// Where a statement's rows come from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The table read.
    pub table: Arc<Table>,
    /// The primary key values when the filter fixes the whole key: a point access.
    pub key: Option<Vec<Expr>>,
    /// The `WHERE` condition over input rows, checked on a point access too.
    pub filter: Option<Expr>,
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate call; `arg` is `None` for `count(*)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AggCall {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub distinct: bool,
}

/// Grouping: rows become `[group values…, aggregate values…]`.
#[derive(Clone, Debug)]
pub struct Aggregate {
    /// The group expressions, over input rows.
    pub group_by: Vec<Expr>,
    /// The aggregate calls, deduplicated.
    pub calls: Vec<AggCall>,
}

/// One sort key: over the output row (`ORDER BY 1`, `ORDER BY alias`) or the input row.
#[derive(Clone, Debug)]
pub struct SortKey {
    pub expr: Expr,
    /// Whether `expr` is evaluated over the output row rather than the input (or grouped) row.
    pub over_output: bool,
    pub descending: bool,
    pub nulls_first: bool,
}

/// A planned `SELECT`.
#[derive(Clone, Debug)]
pub struct SelectPlan {
    /// `None` for a `SELECT` without `FROM`, which produces one empty input row.
    pub source: Option<Source>,
    /// The `WHERE` of an aggregating `SELECT` without `FROM`: whether its one input row is
    /// aggregated at all (`SELECT count(*) WHERE false` counts no row: 0).
    pub input_filter: Option<Expr>,
    /// The grouping step of an aggregate query.
    pub aggregate: Option<Aggregate>,
    /// A condition over grouped rows (or over the single row of a `SELECT` without `FROM`).
    pub having: Option<Expr>,
    /// The output row, over input or grouped rows.
    pub projection: Vec<Expr>,
    /// The output columns as described to the client.
    pub columns: Vec<OutputColumn>,
    pub order_by: Vec<SortKey>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

impl Plan {
    /// The result columns the statement returns (empty for statements without rows).
    pub fn columns(&self) -> &[OutputColumn] {
        match self {
            Plan::Select(s) => &s.columns,
            Plan::Session { columns } => columns,
            Plan::Insert { returning, .. }
            | Plan::Update { returning, .. }
            | Plan::Delete { returning, .. } => {
                returning.as_ref().map_or(&[], |r| r.columns.as_slice())
            }
            _ => &[],
        }
    }
}

/// A planned statement with the inferred types of its parameters.
#[derive(Clone, Debug)]
pub struct Planned {
    pub plan: Plan,
    /// The type of each `$n`: declared by the client, else inferred, else `text`.
    pub param_types: Vec<DataType>,
}
