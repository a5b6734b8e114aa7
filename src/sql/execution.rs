//! Execution: runs a [`Plan`] inside a transaction and produces a [`QueryResult`].
//!
//! Rows are read through the transaction (which locks them), filtered, grouped and aggregated,
//! projected, sorted and limited here at the node. Writes go into the transaction's buffer and
//! become durable at commit. Constraint checks (NOT NULL, primary key uniqueness, column types,
//! lengths and ranges) happen as each row is written.
//!
//! A `SELECT` streams: its output rows go to an [`Output`] batch by batch as the scan delivers
//! them, and a `LIMIT` stops the scan once it has its rows. What cannot stream keeps only what
//! it must: an aggregate keeps its groups (rows are folded in as they arrive), an `ORDER BY`
//! with a `LIMIT` keeps the first `offset + limit` rows (a top-N), and an `ORDER BY` without
//! one keeps every row, since the last row read may sort first. `UPDATE` and `DELETE` read
//! their rows whole before writing, as their writes are buffered in the transaction anyway.

use crate::error::{sqlstate, Error, Result, Violation};
use async_trait::async_trait;

use crate::sql::aggregate::{finish_groups, group_rows, Grouper};
use crate::sql::catalog::Catalog;
use crate::sql::limits;
use crate::sql::order::compare_keys;
use crate::sql::output::{send_all, Collect, Output};
use crate::sql::partial::{AccumulatorSink, Pushdown};
use crate::sql::planner::{Aggregate, Plan, Returning, SelectPlan, Source};
use crate::sql::rows::decode_row;
use crate::sql::rows::{Flow, KeepAll, KeyedRows, RowSink, RowTxn};
use crate::storage::keycode::RowKeys;
use crate::storage::Store;
use crate::txn::lock::LockMode;
use crate::txn::Intent;
use crate::types::expr::{Context, Expr};
use crate::types::value::{DataType, Value};
use crate::types::QueryResult;
use crate::types::Table;

/// Runs data statements (`INSERT`, `UPDATE`, `DELETE`, `SELECT`) in `txn`.
pub struct Executor<'a> {
    pub catalog: &'a Catalog,
    pub store: &'a Store,
    pub ctx: Context<'a>,
    /// The node's tag, which makes generated row ids unique across gateways.
    pub node_tag: u64,
}

impl Executor<'_> {
    /// Executes a data statement and returns its whole result, rows included.
    pub async fn execute(&self, txn: &mut dyn RowTxn, plan: &Plan) -> Result<QueryResult> {
        let mut rows = Collect::default();
        let mut result = self.execute_to(txn, plan, &mut rows).await?;
        result.rows = rows.0;
        Ok(result)
    }

    /// Executes a data statement, handing a query's rows to `out` as they are produced. The
    /// result carries the columns and the tag, and no rows.
    pub async fn execute_to(
        &self,
        txn: &mut dyn RowTxn,
        plan: &Plan,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        match plan {
            Plan::Insert {
                table,
                rows,
                returning,
            } => {
                let mut back = Returned::new(returning.as_ref(), &self.ctx);
                let result = self.insert(txn, table, rows, &mut back).await?;
                back.finish(result, out).await
            }
            Plan::Update {
                source,
                sets,
                returning,
            } => {
                let mut back = Returned::new(returning.as_ref(), &self.ctx);
                let result = self.update(txn, source, sets, &mut back).await?;
                back.finish(result, out).await
            }
            Plan::Delete { source, returning } => {
                let mut back = Returned::new(returning.as_ref(), &self.ctx);
                let result = self.delete(txn, source, &mut back).await?;
                back.finish(result, out).await
            }
            Plan::Select(select) => self.select(txn, select, out).await,
            other => Err(Error::Internal(format!("not a data statement: {other:?}"))),
        }
    }

    fn store_tag(&self) -> u64 {
        self.node_tag & 0x3ff
    }

    /// Locks the table and checks that it was not dropped after the statement was planned.
    pub async fn open_table(
        &self,
        txn: &mut dyn RowTxn,
        table: &Table,
        mode: LockMode,
    ) -> Result<()> {
        txn.lock_table(table.id, mode).await?;
        if !self.catalog.contains_id(table.id)? {
            return Err(Error::sql(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", table.name),
            ));
        }
        Ok(())
    }

    async fn insert(
        &self,
        txn: &mut dyn RowTxn,
        table: &Table,
        rows: &[Vec<Option<Expr>>],
        back: &mut Returned<'_, '_>,
    ) -> Result<QueryResult> {
        self.open_table(txn, table, LockMode::IntentionExclusive)
            .await?;
        for row in rows {
            let mut values = Vec::with_capacity(table.columns.len());
            for (col, expr) in table.columns.iter().zip(row) {
                let v = match (expr, &col.default) {
                    (Some(e), _) => e.eval(&[], &self.ctx)?,
                    (None, _) if col.hidden => {
                        let (id, reserved) = self.catalog.next_rowid(
                            self.store.engine.as_ref(),
                            &self.store.committer,
                            table.id,
                        )?;
                        if let Some(rx) = reserved {
                            rx.await
                                .map_err(|_| Error::Io("the committer stopped".into()))??;
                        }
                        // Row ids made on different gateways must differ: the node tag goes in
                        // the high bits.
                        Value::Int(((self.store_tag() << 48) | id as u64) as i64)
                    }
                    (None, Some(d)) => d.eval(&[], &self.ctx)?,
                    (None, None) => Value::Null,
                };
                values.push(v.coerce_to(&col.data_type, &col.name)?);
            }
            check_not_null(table, &values)?;
            let key = limits::row_key(table, &values)?;
            let value = limits::row_value(table, &values)?;
            if !table.has_rowid() && txn.get(table.id, &key, Intent::Write).await?.is_some() {
                return Err(duplicate_key(table, &values));
            }
            txn.put(table.id, key, value).await?;
            // Tests make a statement panic here, holding a row lock (`executor-after-write=panic`).
            crate::failpoint::crash_point("executor-after-write");
            back.add(&values)?;
        }
        Ok(QueryResult::tag(format!("INSERT 0 {}", rows.len())))
    }

    /// The rows a statement reads, with their keys, after the filter.
    async fn rows(
        &self,
        txn: &mut dyn RowTxn,
        source: &Source,
        intent: Intent,
    ) -> Result<Vec<(Vec<u8>, Vec<Value>)>> {
        let table = &source.table;
        let mode = match (&source.key, intent) {
            (Some(_), Intent::Read) => LockMode::IntentionShared,
            (Some(_), Intent::Write) => LockMode::IntentionExclusive,
            (None, Intent::Read) => LockMode::Shared,
            (None, Intent::Write) => LockMode::SharedIntentionExclusive,
        };
        self.open_table(txn, table, mode).await?;
        match &source.key {
            Some(exprs) => {
                let mut pk = Vec::with_capacity(exprs.len());
                for (e, &col) in exprs.iter().zip(&table.primary_key) {
                    let v = e.eval(&[], &self.ctx)?;
                    if v.is_null() {
                        return Ok(Vec::new());
                    }
                    pk.push(v.cast(&table.columns[col].data_type)?);
                }
                let key = table.key_of(&pk);
                let Some(bytes) = txn.get(table.id, &key, intent).await? else {
                    return Ok(Vec::new());
                };
                let row = decode_row(&bytes)?;
                if let Some(f) = &source.filter {
                    if !f.matches(&row, &self.ctx)? {
                        return Ok(Vec::new());
                    }
                }
                Ok(vec![(key, row)])
            }
            None => {
                let mut all = KeepAll::default();
                txn.scan(
                    table.id,
                    intent,
                    source.filter.as_ref(),
                    &self.ctx,
                    &mut all,
                )
                .await?;
                Ok(all.0)
            }
        }
    }

    async fn update(
        &self,
        txn: &mut dyn RowTxn,
        source: &Source,
        sets: &[(usize, Expr)],
        back: &mut Returned<'_, '_>,
    ) -> Result<QueryResult> {
        let table = &source.table;
        let rows = self.rows(txn, source, Intent::Write).await?;
        let count = rows.len();
        for (key, row) in rows {
            let mut new = row.clone();
            for (i, e) in sets {
                let col = &table.columns[*i];
                new[*i] = e
                    .eval(&row, &self.ctx)?
                    .coerce_to(&col.data_type, &col.name)?;
            }
            check_not_null(table, &new)?;
            let new_key = limits::row_key(table, &new)?;
            let value = limits::row_value(table, &new)?;
            if new_key != key {
                if txn.get(table.id, &new_key, Intent::Write).await?.is_some() {
                    return Err(duplicate_key(table, &new));
                }
                txn.delete(table.id, key).await?;
            }
            txn.put(table.id, new_key, value).await?;
            back.add(&new)?;
        }
        Ok(QueryResult::tag(format!("UPDATE {count}")))
    }

    async fn delete(
        &self,
        txn: &mut dyn RowTxn,
        source: &Source,
        back: &mut Returned<'_, '_>,
    ) -> Result<QueryResult> {
        let rows = self.rows(txn, source, Intent::Write).await?;
        let count = rows.len();
        for (key, row) in rows {
            txn.delete(source.table.id, key).await?;
            back.add(&row)?;
        }
        Ok(QueryResult::tag(format!("DELETE {count}")))
    }

    async fn select(
        &self,
        txn: &mut dyn RowTxn,
        plan: &SelectPlan,
        out: &mut dyn Output,
    ) -> Result<QueryResult> {
        let ctx = &self.ctx;
        let source = match &plan.source {
            Some(source) if source.key.is_none() => source,
            // No table, or one row by key: nothing to stream.
            Some(source) => {
                let input = self.rows(txn, source, Intent::Read).await?;
                let input = input.into_iter().map(|(_, r)| r).collect();
                return emit(finish_select(plan, input, ctx)?, out).await;
            }
            None => {
                let input = match &plan.input_filter {
                    Some(f) if !f.matches(&[], ctx)? => Vec::new(),
                    _ => vec![Vec::new()],
                };
                return emit(finish_select(plan, input, ctx)?, out).await;
            }
        };
        self.open_table(txn, &source.table, LockMode::Shared)
            .await?;
        let (table, filter) = (source.table.id, source.filter.as_ref());
        if let Some(agg) = &plan.aggregate {
            let mut groups = GroupSink {
                grouper: Grouper::new(&agg.group_by, &agg.calls),
                ctx,
            };
            txn.scan(table, Intent::Read, filter, ctx, &mut groups)
                .await?;
            let rows = finish_groups(groups.grouper.finish());
            return emit(finish_grouped(plan, rows, ctx)?, out).await;
        }
        if !plan.order_by.is_empty() {
            // With a LIMIT only the first offset + limit rows in order can be output.
            let rows = match Pushdown::top_n(plan, ctx) {
                Some(top) => {
                    let mut acc = AccumulatorSink {
                        acc: top.accumulator(),
                        ctx,
                    };
                    txn.scan(table, Intent::Read, filter, ctx, &mut acc).await?;
                    acc.acc.finish()?
                }
                None => {
                    let mut all = KeepAll::default();
                    txn.scan(table, Intent::Read, filter, ctx, &mut all).await?;
                    all.0.into_iter().map(|(_, r)| r).collect()
                }
            };
            return emit(finish_select(plan, rows, ctx)?, out).await;
        }
        let mut stream = Streamer {
            plan,
            ctx,
            skip: count_value(plan.offset.as_ref(), ctx, "OFFSET")?.unwrap_or(0),
            left: count_value(plan.limit.as_ref(), ctx, "LIMIT")?.unwrap_or(usize::MAX),
            sent: 0,
            out,
        };
        if stream.left > 0 {
            txn.scan(table, Intent::Read, filter, ctx, &mut stream)
                .await?;
        }
        Ok(QueryResult {
            columns: plan.columns.clone(),
            rows: Vec::new(),
            tag: format!("SELECT {}", stream.sent),
        })
    }
}

/// The rows a write returns (its `RETURNING` list evaluated over each row written), kept
/// until the write is done: a write that fails part way returns nothing, and every row it
/// returns was written.
struct Returned<'a, 'c> {
    returning: Option<&'a Returning>,
    ctx: &'a Context<'c>,
    rows: Vec<Vec<Value>>,
}

impl<'a, 'c> Returned<'a, 'c> {
    fn new(returning: Option<&'a Returning>, ctx: &'a Context<'c>) -> Self {
        Returned {
            returning,
            ctx,
            rows: Vec::new(),
        }
    }

    /// Evaluates the list over a row as written.
    fn add(&mut self, row: &[Value]) -> Result<()> {
        let Some(r) = self.returning else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(r.projection.len());
        for (e, col) in r.projection.iter().zip(&r.columns) {
            out.push(checked(e.eval(row, self.ctx)?, &col.data_type)?);
        }
        self.rows.push(out);
        Ok(())
    }

    /// The write's result with its returned rows handed to `out`; the tag stays the write's
    /// (`INSERT 0 n`), as in PostgreSQL.
    async fn finish(self, mut result: QueryResult, out: &mut dyn Output) -> Result<QueryResult> {
        if let Some(r) = self.returning {
            result.columns = r.columns.clone();
            send_all(out, self.rows).await?;
        }
        Ok(result)
    }
}

/// Integer results are range-checked against their declared type on the way out.
fn checked(v: Value, ty: &DataType) -> Result<Value> {
    Ok(match (&v, ty) {
        (Value::Int(i), t) if t.is_integer() => Value::Int(t.check_integer(*i)?),
        _ => v,
    })
}

/// Hands a finished result's rows to `out` and returns the result without them.
pub async fn emit(mut result: QueryResult, out: &mut dyn Output) -> Result<QueryResult> {
    send_all(out, std::mem::take(&mut result.rows)).await?;
    Ok(result)
}

/// The sink of a `SELECT` that streams: projects each row, skips the offset, and hands the
/// rest to the output until the limit is reached.
struct Streamer<'a, 'c> {
    plan: &'a SelectPlan,
    ctx: &'a Context<'c>,
    out: &'a mut dyn Output,
    skip: usize,
    left: usize,
    sent: usize,
}

#[async_trait]
impl RowSink for Streamer<'_, '_> {
    async fn take(&mut self, batch: KeyedRows) -> Result<Flow> {
        let mut rows = Vec::with_capacity(batch.len().min(self.left));
        // A row that fails (a division by zero) fails the statement, but only after the rows
        // before it are out, as PostgreSQL streams them: a cursor fails at the fetch that
        // reaches the bad row, not at an earlier one.
        let mut failed = None;
        for (_, row) in batch {
            if self.left == 0 {
                break;
            }
            let projected = match project_row(self.plan, &row, self.ctx) {
                Ok(Some((projected, _))) => projected,
                Ok(None) => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            rows.push(projected);
            self.left -= 1;
        }
        if !rows.is_empty() {
            self.sent += rows.len();
            self.out.rows(rows).await?;
        }
        if let Some(e) = failed {
            self.out.delivered().await?;
            return Err(e);
        }
        Ok(if self.left == 0 {
            Flow::Stop
        } else {
            Flow::More
        })
    }
}

/// The sink of an aggregate: folds each batch into the groups.
struct GroupSink<'a, 'c> {
    grouper: Grouper<'a>,
    ctx: &'a Context<'c>,
}

#[async_trait]
impl RowSink for GroupSink<'_, '_> {
    async fn take(&mut self, batch: KeyedRows) -> Result<Flow> {
        for (_, row) in batch {
            self.grouper.add(&row, self.ctx)?;
        }
        Ok(Flow::More)
    }
}

/// Aggregates, filters, projects, sorts and limits the rows of a `SELECT`.
pub fn finish_select(
    plan: &SelectPlan,
    input: Vec<Vec<Value>>,
    ctx: &Context,
) -> Result<QueryResult> {
    let rows = match &plan.aggregate {
        Some(agg) => aggregate(agg, input, ctx)?,
        None => input,
    };
    finish_grouped(plan, rows, ctx)
}

/// Filters (HAVING), projects, sorts and limits rows that are already grouped (or need none).
pub fn finish_grouped(
    plan: &SelectPlan,
    rows: Vec<Vec<Value>>,
    ctx: &Context,
) -> Result<QueryResult> {
    let mut out: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    for row in rows {
        if let Some(projected) = project_row(plan, &row, ctx)? {
            out.push(projected);
        }
    }
    if !plan.order_by.is_empty() {
        out.sort_by(|(_, a), (_, b)| {
            compare_keys(
                a,
                b,
                plan.order_by.iter().map(|k| (k.descending, k.nulls_first)),
            )
        });
    }
    let offset = count_value(plan.offset.as_ref(), ctx, "OFFSET")?.unwrap_or(0);
    let limit = count_value(plan.limit.as_ref(), ctx, "LIMIT")?;
    let rows: Vec<Vec<Value>> = out
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|(r, _)| r)
        .collect();
    let tag = format!("SELECT {}", rows.len());
    Ok(QueryResult {
        columns: plan.columns.clone(),
        rows,
        tag,
    })
}

/// One row of a `SELECT`'s output with its sort keys, or `None` when `HAVING` drops it.
fn project_row(
    plan: &SelectPlan,
    row: &[Value],
    ctx: &Context,
) -> Result<Option<(Vec<Value>, Vec<Value>)>> {
    if let Some(h) = &plan.having {
        if !h.matches(row, ctx)? {
            return Ok(None);
        }
    }
    let mut projected = Vec::with_capacity(plan.projection.len());
    for (e, col) in plan.projection.iter().zip(&plan.columns) {
        projected.push(checked(e.eval(row, ctx)?, &col.data_type)?);
    }
    let mut keys = Vec::with_capacity(plan.order_by.len());
    for k in &plan.order_by {
        keys.push(if k.over_output {
            k.expr.eval(&projected, ctx)?
        } else {
            k.expr.eval(row, ctx)?
        });
    }
    Ok(Some((projected, keys)))
}

fn count_value(e: Option<&Expr>, ctx: &Context, what: &str) -> Result<Option<usize>> {
    let Some(e) = e else { return Ok(None) };
    match e.eval(&[], ctx)? {
        Value::Null => Ok(None),
        Value::Int(i) if i >= 0 => Ok(Some(usize::try_from(i).unwrap_or(usize::MAX))),
        Value::Int(_) => Err(Error::sql(
            if what == "OFFSET" {
                sqlstate::INVALID_OFFSET
            } else {
                sqlstate::INVALID_ROW_COUNT
            },
            format!("{what} must not be negative"),
        )),
        v => Err(Error::sql(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "argument of {what} must be type bigint, not type {}",
                v.data_type()
            ),
        )),
    }
}

fn check_not_null(table: &Table, row: &[Value]) -> Result<()> {
    for (col, v) in table.columns.iter().zip(row) {
        if col.not_null && v.is_null() {
            return Err(Error::Constraint(Box::new(Violation {
                code: sqlstate::NOT_NULL_VIOLATION.into(),
                message: format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    col.name, table.name
                ),
                detail: Some(format!(
                    "Failing row contains ({}).",
                    row.iter()
                        .map(|v| if v.is_null() {
                            "null".to_string()
                        } else {
                            v.to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                schema: Some("public".into()),
                table: Some(table.name.clone()),
                column: Some(col.name.clone()),
                constraint: None,
            })));
        }
    }
    Ok(())
}

fn duplicate_key(table: &Table, row: &[Value]) -> Error {
    let names: Vec<&str> = table
        .primary_key
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    let values: Vec<String> = table
        .primary_key
        .iter()
        .map(|&i| row[i].to_string())
        .collect();
    Error::Constraint(Box::new(Violation {
        code: sqlstate::UNIQUE_VIOLATION.into(),
        message: format!(
            "duplicate key value violates unique constraint \"{}\"",
            table.pkey_name()
        ),
        detail: Some(format!(
            "Key ({})=({}) already exists.",
            names.join(", "),
            values.join(", ")
        )),
        schema: Some("public".into()),
        table: Some(table.name.clone()),
        column: None,
        constraint: Some(table.pkey_name()),
    }))
}

fn aggregate(agg: &Aggregate, input: Vec<Vec<Value>>, ctx: &Context) -> Result<Vec<Vec<Value>>> {
    Ok(finish_groups(group_rows(agg, input, ctx)?))
}
