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
    /// `BEGIN` / `START TRANSACTION`, with its modes.
    Begin(TransactionModes),
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
        /// The `RETURNING` list, if any.
        returning: Option<Vec<SelectItem>>,
    },
    Update {
        table: String,
        sets: Vec<(String, Expr)>,
        filter: Option<Expr>,
        returning: Option<Vec<SelectItem>>,
    },
    Delete {
        table: String,
        filter: Option<Expr>,
        returning: Option<Vec<SelectItem>>,
    },
    Select(Box<Select>),
    /// A statement about the session itself (`SET`, `SHOW`, `RESET`, `DISCARD`, …): it reads
    /// or changes the connection's state and touches no table.
    Session(SessionStatement),
}

/// The modes of `BEGIN` or `SET TRANSACTION`. ddb runs every transaction serializable, so an
/// isolation level is accepted (strict two-phase locking is stronger than every level) and
/// only the access mode changes what a transaction may do.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransactionModes {
    /// `READ ONLY` (`Some(true)`) or `READ WRITE` (`Some(false)`), if given.
    pub read_only: Option<bool>,
    /// The isolation level asked for, lower-case (`read committed`), if given.
    pub isolation: Option<String>,
}

/// A statement about the session (see `sql::settings`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SessionStatement {
    /// `SET [SESSION | LOCAL] name { TO | = } value[, …]`; `None` is `DEFAULT`.
    Set {
        name: String,
        value: Option<Vec<SetValue>>,
        local: bool,
    },
    /// `RESET name`; `None` is `RESET ALL`.
    Reset(Option<String>),
    /// `SHOW name`; `None` is `SHOW ALL`.
    Show(Option<String>),
    /// `SET TRANSACTION …` (`session: false`) or `SET SESSION CHARACTERISTICS AS TRANSACTION …`.
    SetTransaction {
        modes: TransactionModes,
        session: bool,
    },
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`, its word upper-case.
    Discard(String),
    /// `DEALLOCATE [PREPARE] name`; `None` is `DEALLOCATE ALL`.
    Deallocate(Option<String>),
    /// `CLOSE name`; `None` is `CLOSE ALL`.
    Close(Option<String>),
    /// `UNLISTEN channel`; `None` is `UNLISTEN *`.
    Unlisten(Option<String>),
}

/// One value of a `SET` list, as written.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SetValue {
    /// A quoted string.
    String(String),
    /// A bare word (an identifier or keyword) as written; `quoted` when it was double-quoted.
    Word { text: String, quoted: bool },
    /// A number, as written (`-1`, `2.5`).
    Number(String),
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
    /// A value of the session (`current_user`, `current_schema()`, `current_database()`):
    /// the parser leaves `value` empty and the session fills it in before the statement is
    /// planned or shipped, so every node that plans it sees the same constant.
    SessionValue {
        name: String,
        value: Option<Literal>,
    },
}

/// The functions whose value is the session's, by the name PostgreSQL gives their column.
pub const SESSION_FUNCTIONS: &[&str] = &[
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_schema",
    "current_database",
    "current_catalog",
];

impl Statement {
    /// Fills in every [`Expr::SessionValue`] with `value(name)`.
    pub fn fill_session_values(&mut self, value: &dyn Fn(&str) -> Literal) {
        let mut fill = |e: &mut Expr| e.fill_session_values(value);
        match self {
            Statement::Insert {
                rows, returning, ..
            } => {
                rows.iter_mut().flatten().for_each(&mut fill);
                fill_items(returning.iter_mut().flatten(), &mut fill);
            }
            Statement::Update {
                sets,
                filter,
                returning,
                ..
            } => {
                sets.iter_mut().for_each(|(_, e)| fill(e));
                filter.iter_mut().for_each(&mut fill);
                fill_items(returning.iter_mut().flatten(), &mut fill);
            }
            Statement::Delete {
                filter, returning, ..
            } => {
                filter.iter_mut().for_each(&mut fill);
                fill_items(returning.iter_mut().flatten(), &mut fill);
            }
            Statement::Select(s) => {
                fill_items(s.projection.iter_mut(), &mut fill);
                s.filter.iter_mut().for_each(&mut fill);
                s.group_by.iter_mut().for_each(&mut fill);
                s.having.iter_mut().for_each(&mut fill);
                s.order_by.iter_mut().for_each(|o| fill(&mut o.expr));
                s.limit.iter_mut().for_each(&mut fill);
                s.offset.iter_mut().for_each(&mut fill);
            }
            Statement::CreateTable { columns, .. } => columns
                .iter_mut()
                .filter_map(|c| c.default.as_mut())
                .for_each(fill),
            Statement::Begin(_)
            | Statement::Commit
            | Statement::Rollback
            | Statement::DropTable { .. }
            | Statement::Session(_) => {}
        }
    }
}

/// Fills in the expressions of a select list (or a `RETURNING` list).
fn fill_items<'a>(
    items: impl Iterator<Item = &'a mut SelectItem>,
    fill: &mut impl FnMut(&mut Expr),
) {
    for item in items {
        if let SelectItem::Expr { expr, .. } = item {
            fill(expr);
        }
    }
}

impl Expr {
    /// Fills in every [`Expr::SessionValue`] below this one (the tree's depth is bounded by
    /// the parser, see `types::nesting`).
    #[recursive::recursive]
    fn fill_session_values(&mut self, value: &dyn Fn(&str) -> Literal) {
        let fill = |e: &mut Expr| e.fill_session_values(value);
        match self {
            Expr::SessionValue { name, value: v } => *v = Some(value(name)),
            Expr::Literal(_) | Expr::Column(..) | Expr::Param(_) | Expr::Default => {}
            Expr::Unary(_, e) | Expr::Cast(e, _) => fill(e),
            Expr::IsNull { expr, .. } | Expr::IsBool { expr, .. } => fill(expr),
            Expr::Binary(_, l, r) => {
                fill(l);
                fill(r);
            }
            Expr::InList { expr, list, .. } => {
                fill(expr);
                list.iter_mut().for_each(fill);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                fill(expr);
                fill(low);
                fill(high);
            }
            Expr::Like { expr, pattern, .. } => {
                fill(expr);
                fill(pattern);
            }
            Expr::Function { args, .. } => args.iter_mut().for_each(fill),
        }
    }
}
