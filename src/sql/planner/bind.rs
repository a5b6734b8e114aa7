//! The binder: resolves a parsed statement against the catalog into a [`Plan`].
//!
//! [`plan`] is the entry point. It dispatches on the statement kind; `CREATE TABLE`, `INSERT`,
//! `UPDATE` and `DELETE` are bound here, `SELECT` in [`super::select`], expressions in
//! [`super::expr`]. The binder also owns the inferred parameter types: a `$n` whose type the
//! client did not declare takes the type of the first context that determines one
//! ([`Binder::hint`]), and one that nothing determines is `text`, which converts to anything.
//! The client learns these types (ParameterDescription) before it sends any values.

use std::sync::Arc;

use super::binder::Grouping;
use super::binder::Scope;
use super::binder::Typed;
use super::binder::{err, Binder};
use super::expr::decimal_literal;
use super::plan::{Plan, Planned, Returning};
use super::select::{expand, no_aggregate};
use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::{self, Literal};
use crate::sql::catalog::Catalog;
use crate::sql::limits;
use crate::sql::settings;
use crate::types::expr::Expr;
use crate::types::value::{decimal_to_integer, DataType, Value};
use crate::types::{Column, OutputColumn, Table, ROWID_COLUMN};

/// Plans `stmt`. `param_types` are the types the client declared (may be shorter than the
/// number of parameters, or `Unknown` where it declared none).
pub fn plan(catalog: &Catalog, stmt: &ast::Statement, param_types: &[DataType]) -> Result<Planned> {
    let mut b = Binder {
        catalog,
        params: param_types
            .iter()
            .map(|t| Some(t.clone()).filter(|t| *t != DataType::Unknown))
            .collect(),
    };
    let plan = b.statement(stmt)?;
    // Parameters whose type nothing determined are text, which converts to anything.
    let param_types = b
        .params
        .into_iter()
        .map(|t| t.unwrap_or(DataType::Text))
        .collect();
    Ok(Planned { plan, param_types })
}

/// The result columns of a session statement: `SHOW`'s (text, as PostgreSQL's).
fn session_columns(stmt: &ast::SessionStatement) -> Vec<OutputColumn> {
    let text = |name: &str| OutputColumn {
        name: name.to_string(),
        data_type: DataType::Text,
    };
    match stmt {
        ast::SessionStatement::Show(Some(name)) => vec![text(&settings::column_name(name))],
        ast::SessionStatement::Show(None) => {
            vec![text("name"), text("setting"), text("description")]
        }
        _ => Vec::new(),
    }
}

impl Binder<'_> {
    fn statement(&mut self, stmt: &ast::Statement) -> Result<Plan> {
        Ok(match stmt {
            ast::Statement::Begin(_) => Plan::Begin,
            ast::Statement::Session(stmt) => Plan::Session {
                columns: session_columns(stmt),
            },
            ast::Statement::Commit => Plan::Commit,
            ast::Statement::Rollback => Plan::Rollback,
            ast::Statement::CreateTable {
                name,
                columns,
                primary_key,
                if_not_exists,
            } => self.create_table(name, columns, primary_key, *if_not_exists)?,
            ast::Statement::DropTable { names, if_exists } => Plan::DropTable {
                names: names.clone(),
                if_exists: *if_exists,
            },
            ast::Statement::Insert {
                table,
                columns,
                rows,
                returning,
            } => self.insert(table, columns.as_deref(), rows, returning.as_deref())?,
            ast::Statement::Update {
                table,
                sets,
                filter,
                returning,
            } => self.update(table, sets, filter.as_ref(), returning.as_deref())?,
            ast::Statement::Delete {
                table,
                filter,
                returning,
            } => {
                let t = self.table(table)?;
                let scope = Scope::Table {
                    table: &t,
                    alias: None,
                };
                let source = self.source(&t, &scope, filter.as_ref())?;
                Plan::Delete {
                    returning: self.returning(returning.as_deref(), &t)?,
                    source,
                }
            }
            ast::Statement::Select(select) => Plan::Select(Box::new(self.select(select)?)),
        })
    }

    /// The table called `name`.
    pub(super) fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.catalog.get(name)?.ok_or_else(|| {
            err(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            )
        })
    }

    fn create_table(
        &mut self,
        name: &str,
        columns: &[ast::ColumnDef],
        primary_key: &[String],
        if_not_exists: bool,
    ) -> Result<Plan> {
        limits::table_name(name)?;
        let mut cols: Vec<Column> = Vec::new();
        for c in columns {
            let col = self.column_def(name, c, &cols)?;
            cols.push(col);
        }
        let pk = key_columns(&mut cols, primary_key)?;
        Ok(Plan::CreateTable {
            table: Table {
                id: 0,
                name: name.to_string(),
                columns: cols,
                primary_key: pk,
            },
            if_not_exists,
        })
    }

    /// One column of a `CREATE TABLE`, after the `earlier` ones.
    fn column_def(
        &mut self,
        table: &str,
        c: &ast::ColumnDef,
        earlier: &[Column],
    ) -> Result<Column> {
        if c.name == ROWID_COLUMN {
            return Err(err(
                sqlstate::DUPLICATE_COLUMN,
                format!("column name \"{ROWID_COLUMN}\" is reserved"),
            ));
        }
        if earlier.iter().any(|x| x.name == c.name) {
            return Err(err(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{}\" specified more than once", c.name),
            ));
        }
        let default = match &c.default {
            None => None,
            Some(e) => Some(self.default(e, &c.data_type)?),
        };
        let Some(always) = c.identity else {
            return Ok(Column {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                not_null: c.not_null,
                default,
                hidden: false,
            });
        };
        // A SERIAL or identity column: its default is the next value of its own sequence.
        if default.is_some() {
            return Err(err(
                sqlstate::SYNTAX_ERROR,
                format!(
                    "both default and identity specified for column \"{}\" of table \"{table}\"",
                    c.name
                ),
            ));
        }
        if !c.data_type.is_integer() {
            return Err(err(
                sqlstate::INVALID_PARAMETER_VALUE,
                "identity column type must be smallint, integer, or bigint",
            ));
        }
        let sequence = format!("{table}_{}_seq", c.name);
        Ok(Column {
            name: c.name.clone(),
            data_type: c.data_type.clone(),
            not_null: true,
            default: Some(Expr::Identity { sequence, always }),
            hidden: false,
        })
    }

    /// A column's `DEFAULT`: evaluated for each inserted row without the row, so it may not
    /// refer to columns.
    fn default(&mut self, e: &ast::Expr, ty: &DataType) -> Result<Expr> {
        let (expr, _) = self.assigned(e, &Scope::Empty, ty)?;
        if !expr.is_row_independent() {
            return Err(Error::unsupported(
                "a column reference in a DEFAULT expression",
            ));
        }
        Ok(expr)
    }

    fn insert(
        &mut self,
        table: &str,
        columns: Option<&[String]>,
        rows: &[Vec<ast::Expr>],
        returning: Option<&[ast::SelectItem]>,
    ) -> Result<Plan> {
        let t = self.table(table)?;
        if rows.iter().any(|r| r.len() != rows[0].len()) {
            return Err(err(
                sqlstate::SYNTAX_ERROR,
                "VALUES lists must all be the same length",
            ));
        }
        let targets: Vec<usize> = match columns {
            // Without a column list the values fill the leading columns; the rest get defaults.
            None => {
                let width = rows.first().map(|r| r.len()).unwrap_or(0);
                let visible = (0..t.columns.len()).filter(|&i| !t.columns[i].hidden);
                visible.take(width).collect()
            }
            Some(names) => named_columns(&t, names)?,
        };
        let mut bound = Vec::with_capacity(rows.len());
        for row in rows {
            bound.push(self.insert_row(&t, row, &targets)?);
        }
        Ok(Plan::Insert {
            returning: self.returning(returning, &t)?,
            table: t,
            rows: bound,
        })
    }

    /// One `VALUES` row: an entry per table column, `None` where the column takes its default.
    fn insert_row(
        &mut self,
        t: &Table,
        row: &[ast::Expr],
        targets: &[usize],
    ) -> Result<Vec<Option<Expr>>> {
        // Every row is as wide as the first (checked by the caller), so a row wider than the
        // targets is also wider than the leading columns a list-less INSERT fills.
        if row.len() > targets.len() {
            return Err(err(
                sqlstate::SYNTAX_ERROR,
                "INSERT has more expressions than target columns",
            ));
        }
        if row.len() < targets.len() {
            return Err(err(
                sqlstate::SYNTAX_ERROR,
                "INSERT has more target columns than expressions",
            ));
        }
        let mut out: Vec<Option<Expr>> = vec![None; t.columns.len()];
        for (e, &i) in row.iter().zip(targets) {
            if matches!(e, ast::Expr::Default) {
                continue;
            }
            let col = &t.columns[i];
            if col.identity().is_some_and(|id| id.always) {
                return Err(err(
                    sqlstate::GENERATED_ALWAYS,
                    format!(
                        "cannot insert a non-DEFAULT value into column \"{}\": Column \"{}\" is an identity column defined as GENERATED ALWAYS.",
                        col.name, col.name
                    ),
                ));
            }
            let (expr, _) = self.assigned(e, &Scope::Empty, &t.columns[i].data_type)?;
            out[i] = Some(expr);
        }
        Ok(out)
    }

    fn update(
        &mut self,
        table: &str,
        sets: &[(String, ast::Expr)],
        filter: Option<&ast::Expr>,
        returning: Option<&[ast::SelectItem]>,
    ) -> Result<Plan> {
        let t = self.table(table)?;
        let scope = Scope::Table {
            table: &t,
            alias: None,
        };
        let mut bound: Vec<(usize, Expr)> = Vec::new();
        for (name, e) in sets {
            let i = target_column(&t, name)?;
            if t.columns[i].identity().is_some_and(|id| id.always) {
                return Err(err(
                    sqlstate::GENERATED_ALWAYS,
                    format!("column \"{name}\" can only be updated to DEFAULT: Column \"{name}\" is an identity column defined as GENERATED ALWAYS."),
                ));
            }
            if bound.iter().any(|(j, _)| *j == i) {
                return Err(err(
                    sqlstate::SYNTAX_ERROR,
                    format!("multiple assignments to same column \"{name}\""),
                ));
            }
            let (expr, _) = self.assigned(e, &scope, &t.columns[i].data_type)?;
            bound.push((i, expr));
        }
        let source = self.source(&t, &scope, filter)?;
        Ok(Plan::Update {
            source,
            sets: bound,
            returning: self.returning(returning, &t)?,
        })
    }

    /// Binds a `RETURNING` list over the rows of `t` as written: `*` is the visible columns,
    /// and aggregates are refused (42803), as in PostgreSQL.
    fn returning(
        &mut self,
        items: Option<&[ast::SelectItem]>,
        t: &Table,
    ) -> Result<Option<Returning>> {
        let Some(items) = items else { return Ok(None) };
        let scope = Scope::Table {
            table: t,
            alias: None,
        };
        let items = expand(items, Some(t))?;
        for item in &items {
            no_aggregate(&item.expr, "RETURNING")?;
        }
        let (projection, columns) = self.projection(&items, &scope, &mut None)?;
        Ok(Some(Returning {
            projection,
            columns,
        }))
    }

    /// Binds an expression assigned to a column of type `ty`: quoted literals and parameters
    /// take the column's type.
    fn assigned(&mut self, e: &ast::Expr, scope: &Scope, ty: &DataType) -> Result<Typed> {
        if let ast::Expr::Literal(Literal::String(s)) = e {
            // An untyped literal takes the column's type; text keeps the length check of an
            // assignment (22001), where an explicit cast would truncate.
            let v = if ty.is_text() {
                Value::Text(s.clone()).coerce_to(ty, "?")?
            } else {
                Value::Text(s.clone()).cast(ty)?
            };
            return Ok((Expr::Const(v), ty.clone()));
        }
        // A decimal literal assigned to an integer column rounds as a numeric does.
        if let (Some(f), true) = (decimal_literal(e), ty.is_integer()) {
            return Ok((Expr::Const(decimal_to_integer(f, ty)?), ty.clone()));
        }
        let (expr, t) = self.expr(e, scope, &mut None)?;
        if t == DataType::Unknown {
            self.hint(&expr, ty);
        }
        Ok((expr, t))
    }

    /// Gives a parameter of unknown type the type its context expects.
    pub(super) fn hint(&mut self, e: &Expr, ty: &DataType) {
        if let Expr::Param(i) = e {
            if let Some(slot) = self.params.get_mut(*i) {
                if slot.is_none() && *ty != DataType::Unknown {
                    *slot = Some(ty.clone());
                }
            }
        }
    }

    /// Binds a boolean condition over input rows (`WHERE`).
    pub(super) fn condition(&mut self, e: &ast::Expr, scope: &Scope, clause: &str) -> Result<Expr> {
        self.condition_grouped(e, scope, &mut None, clause)
    }

    /// Binds a boolean condition of `clause`, over grouped rows when there is a grouping.
    pub(super) fn condition_grouped(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        g: &mut Option<Grouping>,
        clause: &str,
    ) -> Result<Expr> {
        let (expr, ty) = self.expr(e, scope, g)?;
        match ty {
            DataType::Bool => Ok(expr),
            DataType::Unknown => {
                self.hint(&expr, &DataType::Bool);
                Ok(expr)
            }
            other => Err(err(
                sqlstate::DATATYPE_MISMATCH,
                format!("argument of {clause} must be type boolean, not type {other}"),
            )),
        }
    }
}

/// The positions of the primary key columns `names` (which become `NOT NULL`). A table declared
/// without a key gets a hidden `bigint` row id as its key.
fn key_columns(cols: &mut Vec<Column>, names: &[String]) -> Result<Vec<usize>> {
    let mut pk = Vec::new();
    for k in names {
        let i = cols.iter().position(|c| &c.name == k).ok_or_else(|| {
            err(
                sqlstate::UNDEFINED_COLUMN,
                format!("column \"{k}\" named in key does not exist"),
            )
        })?;
        if pk.contains(&i) {
            return Err(err(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{k}\" appears twice in primary key constraint"),
            ));
        }
        cols[i].not_null = true;
        pk.push(i);
    }
    if pk.is_empty() {
        cols.push(Column {
            name: ROWID_COLUMN.into(),
            data_type: DataType::BigInt,
            not_null: true,
            default: None,
            hidden: true,
        });
        pk.push(cols.len() - 1);
    }
    Ok(pk)
}

/// The positions of an `INSERT`'s column list.
fn named_columns(t: &Table, names: &[String]) -> Result<Vec<usize>> {
    let mut v = Vec::new();
    for n in names {
        let i = target_column(t, n)?;
        if v.contains(&i) {
            return Err(err(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{n}\" specified more than once"),
            ));
        }
        v.push(i);
    }
    Ok(v)
}

/// The position of the column `name` that an `INSERT` or `UPDATE` writes.
fn target_column(t: &Table, name: &str) -> Result<usize> {
    t.column_index(name).ok_or_else(|| {
        err(
            sqlstate::UNDEFINED_COLUMN,
            format!(
                "column \"{name}\" of relation \"{}\" does not exist",
                t.name
            ),
        )
    })
}
