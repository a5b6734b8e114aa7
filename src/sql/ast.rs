//! ddb's own statement and expression types.
//!
//! The parser converts sqlparser's PostgreSQL syntax tree into these types at once, so the rest
//! of the SQL layer depends only on the subset ddb supports, and every construct outside it is
//! refused in one place with an error that names it. Names here are unresolved; the planner
//! binds them against the catalog.

pub use crate::types::BinaryOp;
use crate::types::DataType;

/// A parsed SQL statement.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    CreateTable {
        name: String,
        columns: Vec<ColumnDef>,
        /// The primary key columns, in key order; empty for a table without one.
        primary_key: Vec<String>,
        if_not_exists: bool,
    },
    DropTable {
        names: Vec<String>,
        if_exists: bool,
    },
    Insert {
        table: String,
        /// The target columns; `None` means every column in table order.
        columns: Option<Vec<String>>,
        rows: Vec<Vec<Expr>>,
    },
    Update {
        table: String,
        sets: Vec<(String, Expr)>,
        filter: Option<Expr>,
    },
    Delete {
        table: String,
        filter: Option<Expr>,
    },
    Select(Box<Select>),
}

/// A column in `CREATE TABLE`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    pub not_null: bool,
    pub default: Option<Expr>,
}

/// A `SELECT` query.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Select {
    pub projection: Vec<SelectItem>,
    /// The table read from and its alias; `None` for `SELECT` without `FROM`.
    pub from: Option<(String, Option<String>)>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

/// One item of a select list.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SelectItem {
    /// `*` or `t.*`.
    Wildcard,
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
}

/// One `ORDER BY` item.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrderItem {
    pub expr: Expr,
    pub descending: bool,
    /// `NULLS FIRST`/`NULLS LAST`; the default puts NULLs last ascending and first descending.
    pub nulls_first: Option<bool>,
}

/// A literal as written.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A quoted string: untyped until context gives it a type, as in PostgreSQL.
    String(String),
}

/// A unary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    Not,
    Neg,
    Plus,
}

/// An unresolved expression.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Expr {
    Literal(Literal),
    /// A column, optionally qualified by a table name or alias.
    Column(Option<String>, String),
    /// A parameter `$n`, 0-based.
    Param(usize),
    Unary(
        UnaryOp,
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
    ),
    Binary(
        BinaryOp,
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")] Box<Expr>,
    ),
    IsNull {
        #[serde(with = "crate::types::nesting::boxed")]
        expr: Box<Expr>,
        negated: bool,
    },
    /// `IS [NOT] TRUE` / `IS [NOT] FALSE`: never NULL.
    IsBool {
        #[serde(with = "crate::types::nesting::boxed")]
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    InList {
        #[serde(with = "crate::types::nesting::boxed")]
        expr: Box<Expr>,
        #[serde(with = "crate::types::nesting::vec")]
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        #[serde(with = "crate::types::nesting::boxed")]
        expr: Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")]
        low: Box<Expr>,
        #[serde(with = "crate::types::nesting::boxed")]
        high: Box<Expr>,
        negated: bool,
    },
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
    /// A function or aggregate call; `star` for `count(*)`.
    Function {
        name: String,
        #[serde(with = "crate::types::nesting::vec")]
        args: Vec<Expr>,
        star: bool,
        distinct: bool,
    },
    /// `DEFAULT` in an `INSERT` values list.
    Default,
}
