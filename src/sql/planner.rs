//! Planning: binds a parsed statement against the catalog into an executable [`Plan`].
//!
//! Binding resolves column names to positions, infers the type of every expression (so the result
//! columns can be described to a client before anything runs, with the PostgreSQL type OIDs that
//! drivers decode natively), infers the types of `$n` parameters from their context (the column
//! they are compared with or assigned to), gives quoted literals the type their context expects,
//! and chooses the access path: a statement whose filter fixes every primary key column with
//! `=` reads one key; anything else scans the table with the filter applied.

use std::sync::Arc;

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::{self, BinaryOp, Literal, UnaryOp};
use crate::sql::catalog::Catalog;
use crate::types::expr::{Expr, Function};
use crate::types::value::{DataType, Value};
use crate::types::{Column, OutputColumn, Table, ROWID_COLUMN};

/// An executable statement.
#[derive(Clone, Debug)]
pub enum Plan {
    Begin,
    Commit,
    Rollback,
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
    },
    Update {
        source: Source,
        sets: Vec<(usize, Expr)>,
    },
    Delete {
        source: Source,
    },
    Select(Box<SelectPlan>),
}

/// Where a statement's rows come from.
#[derive(Clone, Debug)]
pub struct Source {
    pub table: Arc<Table>,
    /// The primary key values when the filter fixes the whole key: a point access.
    pub key: Option<Vec<Expr>>,
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
    pub group_by: Vec<Expr>,
    pub calls: Vec<AggCall>,
}

/// One sort key: over the output row (`ORDER BY 1`, `ORDER BY alias`) or the input row.
#[derive(Clone, Debug)]
pub struct SortKey {
    pub expr: Expr,
    pub over_output: bool,
    pub descending: bool,
    pub nulls_first: bool,
}

/// A planned `SELECT`.
#[derive(Clone, Debug)]
pub struct SelectPlan {
    pub source: Option<Source>,
    pub aggregate: Option<Aggregate>,
    pub having: Option<Expr>,
    pub projection: Vec<Expr>,
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
            _ => &[],
        }
    }
}

/// A planned statement with the inferred types of its parameters.
#[derive(Clone, Debug)]
pub struct Planned {
    pub plan: Plan,
    pub param_types: Vec<DataType>,
}

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

/// The names a scope resolves.
enum Scope<'a> {
    /// No table: `SELECT 1`, `INSERT` values, defaults.
    Empty,
    Table {
        table: &'a Table,
        alias: Option<&'a str>,
    },
}

/// Grouping state while binding the select list, `HAVING` and `ORDER BY` of an aggregate query.
struct Grouping {
    groups: Vec<(Expr, DataType)>,
    calls: Vec<(AggCall, DataType)>,
}

struct Binder<'a> {
    catalog: &'a Catalog,
    params: Vec<Option<DataType>>,
}

fn err(code: &str, msg: impl Into<String>) -> Error {
    Error::sql(code, msg)
}

fn aggregate_func(name: &str) -> Option<AggFunc> {
    Some(match name {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "avg" => AggFunc::Avg,
        _ => return None,
    })
}

fn contains_aggregate(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Function { name, args, .. } => {
            aggregate_func(name).is_some() || args.iter().any(contains_aggregate)
        }
        ast::Expr::Literal(_)
        | ast::Expr::Column(..)
        | ast::Expr::Param(_)
        | ast::Expr::Default => false,
        ast::Expr::Unary(_, e)
        | ast::Expr::IsNull { expr: e, .. }
        | ast::Expr::IsBool { expr: e, .. }
        | ast::Expr::Cast(e, _) => contains_aggregate(e),
        ast::Expr::Binary(_, l, r) => contains_aggregate(l) || contains_aggregate(r),
        ast::Expr::InList { expr, list, .. } => {
            contains_aggregate(expr) || list.iter().any(contains_aggregate)
        }
        ast::Expr::Between {
            expr, low, high, ..
        } => contains_aggregate(expr) || contains_aggregate(low) || contains_aggregate(high),
        ast::Expr::Like { expr, pattern, .. } => {
            contains_aggregate(expr) || contains_aggregate(pattern)
        }
    }
}

/// The output name PostgreSQL gives an unaliased select item.
fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Column(_, name) => name.clone(),
        ast::Expr::Function { name, .. } => name.clone(),
        ast::Expr::Cast(inner, ty) => match inner.as_ref() {
            ast::Expr::Literal(_) => match ty {
                DataType::Int => "int4".into(),
                DataType::BigInt => "int8".into(),
                DataType::SmallInt => "int2".into(),
                DataType::Bool => "bool".into(),
                DataType::Double => "float8".into(),
                DataType::Real => "float4".into(),
                DataType::Timestamp => "timestamp".into(),
                DataType::Varchar(_) => "varchar".into(),
                DataType::Char(_) => "bpchar".into(),
                _ => "text".into(),
            },
            other => output_name(other),
        },
        _ => "?column?".into(),
    }
}

impl Binder<'_> {
    fn statement(&mut self, stmt: &ast::Statement) -> Result<Plan> {
        Ok(match stmt {
            ast::Statement::Begin => Plan::Begin,
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
            } => self.insert(table, columns.as_deref(), rows)?,
            ast::Statement::Update {
                table,
                sets,
                filter,
            } => {
                let t = self.table(table)?;
                let scope = Scope::Table {
                    table: &t,
                    alias: None,
                };
                let mut bound = Vec::new();
                for (name, e) in sets {
                    let i = t.column_index(name).ok_or_else(|| {
                        err(
                            sqlstate::UNDEFINED_COLUMN,
                            format!(
                                "column \"{name}\" of relation \"{}\" does not exist",
                                t.name
                            ),
                        )
                    })?;
                    if bound.iter().any(|(j, _)| *j == i) {
                        return Err(err(
                            sqlstate::SYNTAX_ERROR,
                            format!("multiple assignments to same column \"{name}\""),
                        ));
                    }
                    let ty = t.columns[i].data_type.clone();
                    let (expr, _) = self.assigned(e, &scope, &ty)?;
                    bound.push((i, expr));
                }
                let source = self.source(t.clone(), filter.as_ref())?;
                Plan::Update {
                    source,
                    sets: bound,
                }
            }
            ast::Statement::Delete { table, filter } => {
                let t = self.table(table)?;
                Plan::Delete {
                    source: self.source(t, filter.as_ref())?,
                }
            }
            ast::Statement::Select(select) => Plan::Select(Box::new(self.select(select)?)),
        })
    }

    fn table(&self, name: &str) -> Result<Arc<Table>> {
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
        let mut cols: Vec<Column> = Vec::new();
        for c in columns {
            if c.name == ROWID_COLUMN {
                return Err(err(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("column name \"{ROWID_COLUMN}\" is reserved"),
                ));
            }
            if cols.iter().any(|x| x.name == c.name) {
                return Err(err(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("column \"{}\" specified more than once", c.name),
                ));
            }
            let default = match &c.default {
                None => None,
                Some(e) => {
                    let (expr, _) = self.assigned(e, &Scope::Empty, &c.data_type)?;
                    if !expr.is_row_independent() {
                        return Err(Error::unsupported(
                            "a column reference in a DEFAULT expression",
                        ));
                    }
                    Some(expr)
                }
            };
            cols.push(Column {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                not_null: c.not_null,
                default,
                hidden: false,
            });
        }
        let mut pk = Vec::new();
        for k in primary_key {
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

    fn insert(
        &mut self,
        table: &str,
        columns: Option<&[String]>,
        rows: &[Vec<ast::Expr>],
    ) -> Result<Plan> {
        let t = self.table(table)?;
        if rows.iter().any(|r| r.len() != rows[0].len()) {
            return Err(err(
                sqlstate::SYNTAX_ERROR,
                "VALUES lists must all be the same length",
            ));
        }
        let width = rows.first().map(|r| r.len()).unwrap_or(0);
        let targets: Vec<usize> = match columns {
            // Without a column list the values fill the leading columns; the rest get defaults.
            None => (0..t.columns.len())
                .filter(|&i| !t.columns[i].hidden)
                .take(width)
                .collect(),
            Some(names) => {
                let mut v = Vec::new();
                for n in names {
                    let i = t.column_index(n).ok_or_else(|| {
                        err(
                            sqlstate::UNDEFINED_COLUMN,
                            format!("column \"{n}\" of relation \"{}\" does not exist", t.name),
                        )
                    })?;
                    if v.contains(&i) {
                        return Err(err(
                            sqlstate::DUPLICATE_COLUMN,
                            format!("column \"{n}\" specified more than once"),
                        ));
                    }
                    v.push(i);
                }
                v
            }
        };
        let mut bound_rows = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() > targets.len() || (columns.is_none() && row.len() > width) {
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
            for (e, &i) in row.iter().zip(&targets) {
                if matches!(e, ast::Expr::Default) {
                    continue;
                }
                let (expr, _) = self.assigned(e, &Scope::Empty, &t.columns[i].data_type)?;
                out[i] = Some(expr);
            }
            bound_rows.push(out);
        }
        Ok(Plan::Insert {
            table: t,
            rows: bound_rows,
        })
    }

    /// Binds an expression assigned to a column of type `ty`: quoted literals and parameters
    /// take the column's type.
    fn assigned(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        ty: &DataType,
    ) -> Result<(Expr, DataType)> {
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
        let (expr, t) = self.expr(e, scope, &mut None)?;
        if t == DataType::Unknown {
            self.hint(&expr, ty);
        }
        Ok((expr, t))
    }

    /// Gives a parameter of unknown type the type its context expects.
    fn hint(&mut self, e: &Expr, ty: &DataType) {
        if let Expr::Param(i) = e {
            if let Some(slot) = self.params.get_mut(*i) {
                if slot.is_none() && *ty != DataType::Unknown {
                    *slot = Some(ty.clone());
                }
            }
        }
    }

    fn source(&mut self, table: Arc<Table>, filter: Option<&ast::Expr>) -> Result<Source> {
        let scope = Scope::Table {
            table: &table,
            alias: None,
        };
        let filter = match filter {
            None => None,
            Some(f) => Some(self.condition(f, &scope, "WHERE")?),
        };
        let key = filter.as_ref().and_then(|f| point_key(&table, f));
        Ok(Source { table, key, filter })
    }

    /// Binds a boolean condition (`WHERE`, `HAVING`).
    fn condition(&mut self, e: &ast::Expr, scope: &Scope, clause: &str) -> Result<Expr> {
        self.condition_grouped(e, scope, &mut None, clause)
    }

    fn condition_grouped(
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

    fn select(&mut self, s: &ast::Select) -> Result<SelectPlan> {
        let table = match &s.from {
            Some((name, _)) => Some(self.table(name)?),
            None => None,
        };
        let scope = match (&table, &s.from) {
            (Some(t), Some((_, alias))) => Scope::Table {
                table: t,
                alias: alias.as_deref(),
            },
            _ => Scope::Empty,
        };
        let source = match &table {
            Some(t) => {
                let filter = match &s.filter {
                    Some(f) => {
                        if contains_aggregate(f) {
                            return Err(err(
                                sqlstate::GROUPING_ERROR,
                                "aggregate functions are not allowed in WHERE",
                            ));
                        }
                        Some(self.condition(f, &scope, "WHERE")?)
                    }
                    None => None,
                };
                let key = filter.as_ref().and_then(|f| point_key(t, f));
                Some(Source {
                    table: t.clone(),
                    key,
                    filter,
                })
            }
            None => {
                if s.filter.is_some() {
                    // SELECT 1 WHERE false: filter on the single empty row.
                    None
                } else {
                    None
                }
            }
        };

        // Expand the select list.
        let mut items: Vec<(ast::Expr, String)> = Vec::new();
        for item in &s.projection {
            match item {
                ast::SelectItem::Wildcard => match &table {
                    Some(t) => {
                        for c in t.columns.iter().filter(|c| !c.hidden) {
                            items.push((ast::Expr::Column(None, c.name.clone()), c.name.clone()));
                        }
                    }
                    None => {
                        return Err(err(
                            sqlstate::SYNTAX_ERROR,
                            "SELECT * with no tables specified is not valid",
                        ))
                    }
                },
                ast::SelectItem::Expr { expr, alias } => {
                    items.push((
                        expr.clone(),
                        alias.clone().unwrap_or_else(|| output_name(expr)),
                    ));
                }
            }
        }

        let aggregated = !s.group_by.is_empty()
            || s.having.is_some()
            || items.iter().any(|(e, _)| contains_aggregate(e))
            || s.order_by.iter().any(|o| contains_aggregate(&o.expr));
        let mut grouping = None;
        if aggregated {
            let mut groups = Vec::new();
            for g in &s.group_by {
                let g = match g {
                    ast::Expr::Literal(Literal::Int(n)) => {
                        let idx = usize::try_from(*n)
                            .ok()
                            .filter(|n| *n >= 1 && *n <= items.len())
                            .ok_or_else(|| {
                                err(
                                    sqlstate::INVALID_COLUMN_REFERENCE,
                                    format!("GROUP BY position {n} is not in select list"),
                                )
                            })?;
                        items[idx - 1].0.clone()
                    }
                    // A bare name that is not a column of the table but an output alias.
                    ast::Expr::Column(None, name) if !matches!(&scope, Scope::Table { table, .. } if table.column_index(name).is_some()) => {
                        match items.iter().find(|(_, n)| n == name) {
                            Some((e, _)) => e.clone(),
                            None => g.clone(),
                        }
                    }
                    other => other.clone(),
                };
                if contains_aggregate(&g) {
                    return Err(err(
                        sqlstate::GROUPING_ERROR,
                        "aggregate functions are not allowed in GROUP BY",
                    ));
                }
                groups.push(self.expr(&g, &scope, &mut None)?);
            }
            grouping = Some(Grouping {
                groups,
                calls: Vec::new(),
            });
        }

        let mut projection = Vec::new();
        let mut columns = Vec::new();
        for (e, name) in &items {
            let (expr, ty) = self.expr(e, &scope, &mut grouping)?;
            projection.push(expr);
            columns.push(OutputColumn {
                name: name.clone(),
                data_type: ty,
            });
        }
        let having = match &s.having {
            Some(h) => Some(self.condition_grouped(h, &scope, &mut grouping, "HAVING")?),
            None => None,
        };
        let mut order_by = Vec::new();
        for o in &s.order_by {
            let nulls_first = o.nulls_first.unwrap_or(o.descending);
            let by_output = match &o.expr {
                ast::Expr::Literal(Literal::Int(n)) => {
                    let idx = usize::try_from(*n)
                        .ok()
                        .filter(|n| *n >= 1 && *n <= items.len())
                        .ok_or_else(|| {
                            err(
                                sqlstate::INVALID_COLUMN_REFERENCE,
                                format!("ORDER BY position {n} is not in select list"),
                            )
                        })?;
                    Some(idx - 1)
                }
                ast::Expr::Column(None, name) => items.iter().position(|(_, n)| n == name),
                _ => None,
            };
            let key = match by_output {
                Some(i) => SortKey {
                    expr: Expr::Column(i),
                    over_output: true,
                    descending: o.descending,
                    nulls_first,
                },
                None => {
                    let (expr, _) = self.expr(&o.expr, &scope, &mut grouping)?;
                    SortKey {
                        expr,
                        over_output: false,
                        descending: o.descending,
                        nulls_first,
                    }
                }
            };
            order_by.push(key);
        }
        let limit = s.limit.as_ref().map(|e| self.count_expr(e)).transpose()?;
        let offset = s.offset.as_ref().map(|e| self.count_expr(e)).transpose()?;

        // A SELECT without FROM but with WHERE filters its single row.
        let mut having = having;
        let mut aggregate = grouping.map(|g| Aggregate {
            group_by: g.groups.into_iter().map(|(e, _)| e).collect(),
            calls: g.calls.into_iter().map(|(c, _)| c).collect(),
        });
        if table.is_none() {
            if let Some(f) = &s.filter {
                let cond = self.condition(f, &Scope::Empty, "WHERE")?;
                if aggregate.is_none() {
                    aggregate = None;
                    having = Some(match having {
                        Some(h) => Expr::Binary(BinaryOp::And, Box::new(cond), Box::new(h)),
                        None => cond,
                    });
                }
            }
        }
        Ok(SelectPlan {
            source,
            aggregate,
            having,
            projection,
            columns,
            order_by,
            limit,
            offset,
        })
    }

    fn count_expr(&mut self, e: &ast::Expr) -> Result<Expr> {
        if let ast::Expr::Literal(Literal::String(s)) = e {
            return Ok(Expr::Const(Value::Text(s.clone()).cast(&DataType::BigInt)?));
        }
        let (expr, ty) = self.expr(e, &Scope::Empty, &mut None)?;
        if ty == DataType::Unknown {
            self.hint(&expr, &DataType::BigInt);
        } else if !ty.is_integer() {
            return Err(err(
                sqlstate::DATATYPE_MISMATCH,
                format!("argument of LIMIT/OFFSET must be type bigint, not type {ty}"),
            ));
        }
        Ok(expr)
    }

    fn column(
        &self,
        scope: &Scope,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<(Expr, DataType)> {
        match scope {
            Scope::Table { table, alias } => {
                if let Some(q) = qualifier {
                    let visible = alias.unwrap_or(&table.name);
                    if q != visible {
                        return Err(err(
                            sqlstate::UNDEFINED_TABLE,
                            format!("missing FROM-clause entry for table \"{q}\""),
                        ));
                    }
                }
                match table.column_index(name) {
                    Some(i) => Ok((Expr::Column(i), table.columns[i].data_type.clone())),
                    None => Err(err(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{name}\" does not exist"),
                    )),
                }
            }
            Scope::Empty => match qualifier {
                Some(q) => Err(err(
                    sqlstate::UNDEFINED_TABLE,
                    format!("missing FROM-clause entry for table \"{q}\""),
                )),
                None => Err(err(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{name}\" does not exist"),
                )),
            },
        }
    }

    /// Binds an expression. With `grouping`, the expression is evaluated over grouped rows:
    /// aggregate calls and grouped expressions become columns of the grouped row, and any other
    /// column reference is an error.
    fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        grouping: &mut Option<Grouping>,
    ) -> Result<(Expr, DataType)> {
        if let Some(g) = grouping.as_mut() {
            // An aggregate call: bind its argument over input rows.
            if let ast::Expr::Function {
                name,
                args,
                star,
                distinct,
            } = e
            {
                if let Some(func) = aggregate_func(name) {
                    let call = self.aggregate(func, args, *star, *distinct, scope)?;
                    let idx = g.groups.len() + g.calls.len();
                    let ty = call.1.clone();
                    // Reuse an identical call.
                    if let Some(pos) = g.calls.iter().position(|(c, _)| *c == call.0) {
                        return Ok((Expr::Column(g.groups.len() + pos), ty));
                    }
                    g.calls.push(call);
                    return Ok((Expr::Column(idx), ty));
                }
            }
            if !contains_aggregate(e) {
                // A grouped expression?
                if let Ok((bound, ty)) = self.expr(e, scope, &mut None) {
                    if let Some(i) = g.groups.iter().position(|(x, _)| *x == bound) {
                        return Ok((Expr::Column(i), ty));
                    }
                    if bound.is_row_independent() {
                        return Ok((bound, ty));
                    }
                }
                if let ast::Expr::Column(_, name) = e {
                    return Err(err(
                        sqlstate::GROUPING_ERROR,
                        format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"),
                    ));
                }
            }
        } else if let ast::Expr::Function { name, .. } = e {
            if aggregate_func(name).is_some() {
                return Err(err(
                    sqlstate::GROUPING_ERROR,
                    format!("aggregate function {name} is not allowed here"),
                ));
            }
        }

        let sub = |b: &mut Self, x: &ast::Expr, g: &mut Option<Grouping>| b.expr(x, scope, g);
        Ok(match e {
            ast::Expr::Literal(l) => match l {
                Literal::Null => (Expr::Const(Value::Null), DataType::Unknown),
                Literal::Bool(b) => (Expr::Const(Value::Bool(*b)), DataType::Bool),
                Literal::Int(i) => {
                    let ty = if i32::try_from(*i).is_ok() {
                        DataType::Int
                    } else {
                        DataType::BigInt
                    };
                    (Expr::Const(Value::Int(*i)), ty)
                }
                Literal::Float(f) => (Expr::Const(Value::Float(*f)), DataType::Double),
                Literal::String(s) => (Expr::Const(Value::Text(s.clone())), DataType::Text),
            },
            ast::Expr::Column(q, name) => self.column(scope, q.as_deref(), name)?,
            ast::Expr::Param(i) => {
                if *i >= 65535 {
                    return Err(err(
                        sqlstate::UNDEFINED_PARAMETER,
                        format!("there is no parameter ${}", i + 1),
                    ));
                }
                if self.params.len() <= *i {
                    self.params.resize(*i + 1, None);
                }
                let ty = self.params[*i].clone().unwrap_or(DataType::Unknown);
                (Expr::Param(*i), ty)
            }
            ast::Expr::Default => {
                return Err(err(
                    sqlstate::SYNTAX_ERROR,
                    "DEFAULT is not allowed in this context",
                ))
            }
            ast::Expr::Unary(op, x) => {
                let (x, ty) = sub(self, x, grouping)?;
                match op {
                    UnaryOp::Not => {
                        if !matches!(ty, DataType::Bool | DataType::Unknown) {
                            return Err(err(
                                sqlstate::DATATYPE_MISMATCH,
                                format!("argument of NOT must be type boolean, not type {ty}"),
                            ));
                        }
                        self.hint(&x, &DataType::Bool);
                        (Expr::Not(Box::new(x)), DataType::Bool)
                    }
                    UnaryOp::Neg | UnaryOp::Plus => {
                        if !(ty.is_numeric() || ty == DataType::Unknown) {
                            return Err(err(
                                sqlstate::UNDEFINED_FUNCTION,
                                format!("operator does not exist: - {ty}"),
                            ));
                        }
                        if *op == UnaryOp::Plus {
                            (x, ty)
                        } else {
                            (Expr::Neg(Box::new(x)), ty)
                        }
                    }
                }
            }
            ast::Expr::Binary(op, l, r) => self.binary(*op, l, r, scope, grouping)?,
            ast::Expr::IsNull { expr, negated } => {
                let (x, _) = sub(self, expr, grouping)?;
                (Expr::IsNull(Box::new(x), *negated), DataType::Bool)
            }
            ast::Expr::IsBool {
                expr,
                value,
                negated,
            } => {
                let (x, ty) = sub(self, expr, grouping)?;
                if !matches!(ty, DataType::Bool | DataType::Unknown) {
                    return Err(err(
                        sqlstate::DATATYPE_MISMATCH,
                        format!(
                            "argument of IS {} must be type boolean, not type {ty}",
                            if *value { "TRUE" } else { "FALSE" }
                        ),
                    ));
                }
                self.hint(&x, &DataType::Bool);
                (Expr::IsBool(Box::new(x), *value, *negated), DataType::Bool)
            }
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => {
                let (x, ty) = sub(self, expr, grouping)?;
                let mut items = Vec::new();
                for item in list {
                    let (i, ity) = self.operand_for(item, &ty, scope, grouping)?;
                    if !DataType::comparable(&ty, &ity) {
                        return Err(err(
                            sqlstate::UNDEFINED_FUNCTION,
                            format!("operator does not exist: {ty} = {ity}"),
                        ));
                    }
                    self.hint(&i, &ty);
                    items.push(i);
                }
                (Expr::InList(Box::new(x), items, *negated), DataType::Bool)
            }
            ast::Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let ge = ast::Expr::Binary(BinaryOp::GtEq, expr.clone(), low.clone());
                let le = ast::Expr::Binary(BinaryOp::LtEq, expr.clone(), high.clone());
                let both = ast::Expr::Binary(BinaryOp::And, Box::new(ge), Box::new(le));
                let (x, _) = sub(self, &both, grouping)?;
                if *negated {
                    (Expr::Not(Box::new(x)), DataType::Bool)
                } else {
                    (x, DataType::Bool)
                }
            }
            ast::Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => {
                let (x, ty) = sub(self, expr, grouping)?;
                let (p, pty) = sub(self, pattern, grouping)?;
                for (e, t) in [(&x, &ty), (&p, &pty)] {
                    if !(t.is_text() || *t == DataType::Unknown) {
                        return Err(err(
                            sqlstate::UNDEFINED_FUNCTION,
                            format!("operator does not exist: {t} ~~ text"),
                        ));
                    }
                    self.hint(e, &DataType::Text);
                }
                (
                    Expr::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                        case_insensitive: *case_insensitive,
                    },
                    DataType::Bool,
                )
            }
            ast::Expr::Cast(x, ty) => {
                if let ast::Expr::Literal(Literal::String(s)) = x.as_ref() {
                    (Expr::Const(Value::Text(s.clone()).cast(ty)?), ty.clone())
                } else {
                    let (x, xty) = sub(self, x, grouping)?;
                    if xty == DataType::Unknown {
                        self.hint(&x, ty);
                    }
                    (Expr::Cast(Box::new(x), ty.clone()), ty.clone())
                }
            }
            ast::Expr::Function {
                name,
                args,
                star,
                distinct,
            } => {
                if *star || *distinct {
                    return Err(err(sqlstate::SYNTAX_ERROR, format!("{name}(*) or DISTINCT specified, but {name} is not an aggregate function")));
                }
                let mut bound = Vec::new();
                let mut types = Vec::new();
                for a in args {
                    let (x, t) = sub(self, a, grouping)?;
                    bound.push(x);
                    types.push(t);
                }
                let sig = || {
                    format!(
                        "{name}({})",
                        types
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let no_such = || {
                    err(
                        sqlstate::UNDEFINED_FUNCTION,
                        format!("function {} does not exist", sig()),
                    )
                };
                let (f, ty) = match (name.as_str(), types.as_slice()) {
                    ("version", []) => (Function::Version, DataType::Text),
                    ("now" | "current_timestamp" | "localtimestamp", []) => {
                        (Function::Now, DataType::Timestamp)
                    }
                    ("lower", [t]) if t.is_text() || *t == DataType::Unknown => {
                        (Function::Lower, DataType::Text)
                    }
                    ("upper", [t]) if t.is_text() || *t == DataType::Unknown => {
                        (Function::Upper, DataType::Text)
                    }
                    ("length" | "char_length" | "character_length", [t])
                        if t.is_text() || *t == DataType::Unknown =>
                    {
                        (Function::Length, DataType::Int)
                    }
                    ("abs", [t]) if t.is_numeric() => (Function::Abs, t.clone()),
                    ("abs", [DataType::Unknown]) => (Function::Abs, DataType::Double),
                    ("coalesce", ts) if !ts.is_empty() => {
                        let ty = ts
                            .iter()
                            .find(|t| **t != DataType::Unknown)
                            .cloned()
                            .unwrap_or(DataType::Unknown);
                        if ts.iter().any(|t| !DataType::comparable(t, &ty)) {
                            return Err(err(
                                sqlstate::DATATYPE_MISMATCH,
                                format!("COALESCE types cannot be matched: {}", sig()),
                            ));
                        }
                        (Function::Coalesce, ty)
                    }
                    _ => return Err(no_such()),
                };
                for (x, _) in bound.iter().zip(&types) {
                    if matches!(f, Function::Lower | Function::Upper | Function::Length) {
                        self.hint(x, &DataType::Text);
                    }
                }
                (Expr::Call(f, bound), ty)
            }
        })
    }

    /// Binds `e` as an operand next to one of type `other`: a quoted literal takes that type.
    fn operand_for(
        &mut self,
        e: &ast::Expr,
        other: &DataType,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<(Expr, DataType)> {
        if let ast::Expr::Literal(Literal::String(s)) = e {
            if *other != DataType::Unknown && !other.is_text() {
                return Ok((
                    Expr::Const(Value::Text(s.clone()).cast(other)?),
                    other.clone(),
                ));
            }
        }
        self.expr(e, scope, g)
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        l: &ast::Expr,
        r: &ast::Expr,
        scope: &Scope,
        g: &mut Option<Grouping>,
    ) -> Result<(Expr, DataType)> {
        // Bind the side that is not a quoted literal first, so the literal can take its type
        // (except for `||`, which turns both sides into text).
        let (le, lt, re, rt) = if op == BinaryOp::Concat {
            let (le, lt) = self.expr(l, scope, g)?;
            let (re, rt) = self.expr(r, scope, g)?;
            (le, lt, re, rt)
        } else if matches!(l, ast::Expr::Literal(Literal::String(_))) {
            let (re, rt) = self.expr(r, scope, g)?;
            let (le, lt) = self.operand_for(l, &rt, scope, g)?;
            (le, lt, re, rt)
        } else {
            let (le, lt) = self.expr(l, scope, g)?;
            let (re, rt) = self.operand_for(r, &lt, scope, g)?;
            (le, lt, re, rt)
        };
        if lt == DataType::Unknown {
            self.hint(&le, &rt);
        }
        if rt == DataType::Unknown {
            self.hint(&re, &lt);
        }
        let mismatch = || {
            err(
                sqlstate::UNDEFINED_FUNCTION,
                format!("operator does not exist: {lt} {} {rt}", op.symbol()),
            )
        };
        let ty = match op {
            BinaryOp::And | BinaryOp::Or => {
                for (e, t) in [(&le, &lt), (&re, &rt)] {
                    if !matches!(t, DataType::Bool | DataType::Unknown) {
                        return Err(err(
                            sqlstate::DATATYPE_MISMATCH,
                            format!(
                                "argument of {} must be type boolean, not type {t}",
                                op.symbol()
                            ),
                        ));
                    }
                    self.hint(e, &DataType::Bool);
                }
                DataType::Bool
            }
            op if op.is_comparison() => {
                if !DataType::comparable(&lt, &rt) {
                    return Err(mismatch());
                }
                DataType::Bool
            }
            BinaryOp::Concat => {
                self.hint(&le, &DataType::Text);
                self.hint(&re, &DataType::Text);
                DataType::Text
            }
            _ => {
                let known = |t: &DataType| t.is_numeric() || *t == DataType::Unknown;
                if !known(&lt) || !known(&rt) {
                    return Err(mismatch());
                }
                match (&lt, &rt) {
                    (DataType::Unknown, t) | (t, DataType::Unknown) => t.clone(),
                    (a, b) => DataType::promote(a, b),
                }
            }
        };
        // Integer results are range-checked for their type, as in PostgreSQL.
        let expr = Expr::Binary(op, Box::new(le), Box::new(re));
        let expr = if matches!(ty, DataType::SmallInt | DataType::Int) && !op.is_comparison() {
            Expr::Cast(Box::new(expr), ty.clone())
        } else {
            expr
        };
        Ok((expr, ty))
    }

    fn aggregate(
        &mut self,
        func: AggFunc,
        args: &[ast::Expr],
        star: bool,
        distinct: bool,
        scope: &Scope,
    ) -> Result<(AggCall, DataType)> {
        if star {
            if func != AggFunc::Count || !args.is_empty() {
                return Err(err(sqlstate::SYNTAX_ERROR, "only count accepts *"));
            }
            return Ok((
                AggCall {
                    func,
                    arg: None,
                    distinct: false,
                },
                DataType::BigInt,
            ));
        }
        let [arg] = args else {
            return Err(err(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "function {func:?}() with {} arguments does not exist",
                    args.len()
                )
                .to_lowercase(),
            ));
        };
        if contains_aggregate(arg) {
            return Err(err(
                sqlstate::GROUPING_ERROR,
                "aggregate function calls cannot be nested",
            ));
        }
        let (x, ty) = self.expr(arg, scope, &mut None)?;
        let out = match func {
            AggFunc::Count => DataType::BigInt,
            AggFunc::Sum if ty.is_integer() => DataType::BigInt,
            AggFunc::Sum | AggFunc::Avg if ty.is_float() => DataType::Double,
            AggFunc::Avg if ty.is_integer() => DataType::Double,
            AggFunc::Sum | AggFunc::Avg => {
                return Err(err(
                    sqlstate::UNDEFINED_FUNCTION,
                    format!(
                        "function {}({ty}) does not exist",
                        format!("{func:?}").to_lowercase()
                    ),
                ))
            }
            AggFunc::Min | AggFunc::Max => ty.clone(),
        };
        Ok((
            AggCall {
                func,
                arg: Some(x),
                distinct,
            },
            out,
        ))
    }
}

/// The primary key values fixed by `filter`'s `=` conjuncts, when it fixes all of them with
/// row-independent expressions of the key column's kind.
fn point_key(table: &Table, filter: &Expr) -> Option<Vec<Expr>> {
    let mut conjuncts = Vec::new();
    fn split<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
        match e {
            Expr::Binary(BinaryOp::And, l, r) => {
                split(l, out);
                split(r, out);
            }
            other => out.push(other),
        }
    }
    split(filter, &mut conjuncts);
    let mut key = Vec::new();
    for &col in &table.primary_key {
        let ty = &table.columns[col].data_type;
        let found = conjuncts.iter().find_map(|c| match c {
            Expr::Binary(BinaryOp::Eq, l, r) => match (l.as_ref(), r.as_ref()) {
                (Expr::Column(i), v) | (v, Expr::Column(i))
                    if *i == col && v.is_row_independent() =>
                {
                    Some(v.clone())
                }
                _ => None,
            },
            _ => None,
        })?;
        // Only a value of the column's own kind addresses its key (1.5 never equals an integer key).
        let fits = match &found {
            Expr::Const(v) => match v {
                Value::Int(_) => ty.is_integer(),
                Value::Float(_) => ty.is_float(),
                Value::Text(_) => ty.is_text(),
                Value::Bool(_) => *ty == DataType::Bool,
                Value::Timestamp(_) => *ty == DataType::Timestamp,
                Value::Null => true,
            },
            Expr::Param(_) => true,
            _ => false,
        };
        if !fits {
            return None;
        }
        key.push(found);
    }
    Some(key)
}
