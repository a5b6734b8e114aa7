//! Execution: runs a [`Plan`] inside a transaction and produces a [`QueryResult`].
//!
//! Rows are read through the transaction (which locks them), filtered, grouped and aggregated,
//! projected, sorted and limited here at the node. Writes go into the transaction's buffer and
//! become durable at commit. Constraint checks (NOT NULL, primary key uniqueness, column types,
//! lengths and ranges) happen as each row is written.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::error::{sqlstate, Error, Result};
use crate::sql::catalog::Catalog;
use crate::sql::limits;
use crate::sql::planner::{AggCall, AggFunc, Aggregate, Plan, SelectPlan, Source};
use crate::sql::rows::decode_row;
use crate::sql::rows::RowTxn;
use crate::storage::keycode::{self, RowKeys};
use crate::storage::Store;
use crate::txn::lock::LockMode;
use crate::txn::Intent;
use crate::types::expr::{Context, Expr};
use crate::types::value::Value;
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
    /// Executes a data statement.
    pub async fn execute(&self, txn: &mut dyn RowTxn, plan: &Plan) -> Result<QueryResult> {
        match plan {
            Plan::Insert { table, rows } => self.insert(txn, table, rows).await,
            Plan::Update { source, sets } => self.update(txn, source, sets).await,
            Plan::Delete { source } => self.delete(txn, source).await,
            Plan::Select(select) => self.select(txn, select).await,
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
                txn.scan(table.id, intent, source.filter.as_ref(), &self.ctx)
                    .await
            }
        }
    }

    async fn update(
        &self,
        txn: &mut dyn RowTxn,
        source: &Source,
        sets: &[(usize, Expr)],
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
        }
        Ok(QueryResult::tag(format!("UPDATE {count}")))
    }

    async fn delete(&self, txn: &mut dyn RowTxn, source: &Source) -> Result<QueryResult> {
        let rows = self.rows(txn, source, Intent::Write).await?;
        let count = rows.len();
        for (key, _) in rows {
            txn.delete(source.table.id, key).await?;
        }
        Ok(QueryResult::tag(format!("DELETE {count}")))
    }

    async fn select(&self, txn: &mut dyn RowTxn, plan: &SelectPlan) -> Result<QueryResult> {
        let input: Vec<Vec<Value>> = match &plan.source {
            Some(source) => self
                .rows(txn, source, Intent::Read)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect(),
            None => vec![Vec::new()],
        };
        finish_select(plan, input, &self.ctx)
    }
}

/// Compares two rows of sort keys: NULLs placed by `nulls_first`, the rest by value and
/// direction.
pub fn compare_keys<'a>(
    a: &[Value],
    b: &[Value],
    specs: impl Iterator<Item = (bool, bool)> + 'a,
) -> Ordering {
    for (i, (descending, nulls_first)) in specs.enumerate() {
        let (x, y) = (&a[i], &b[i]);
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.sort_cmp(y);
                if descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
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
        if let Some(h) = &plan.having {
            if !h.matches(&row, ctx)? {
                continue;
            }
        }
        let mut projected = Vec::with_capacity(plan.projection.len());
        for (e, col) in plan.projection.iter().zip(&plan.columns) {
            let v = e.eval(&row, ctx)?;
            // Integer results are range-checked against their declared type on the way out.
            let v = match (&v, &col.data_type) {
                (Value::Int(i), t) if t.is_integer() => Value::Int(t.check_integer(*i)?),
                _ => v,
            };
            projected.push(v);
        }
        let mut keys = Vec::with_capacity(plan.order_by.len());
        for k in &plan.order_by {
            keys.push(if k.over_output {
                k.expr.eval(&projected, ctx)?
            } else {
                k.expr.eval(&row, ctx)?
            });
        }
        out.push((projected, keys));
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
            return Err(Error::sql(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    col.name, table.name
                ),
            ));
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
    Error::sql(
        sqlstate::UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}\": Key ({})=({}) already exists.",
            table.pkey_name(),
            names.join(", "),
            values.join(", ")
        ),
    )
}

/// The running state of one aggregate call over one group.
pub(crate) enum Acc {
    Count(i64),
    Sum(Value),
    Min(Value),
    Max(Value),
    Avg(f64, i64),
}

impl Acc {
    pub(crate) fn new(func: AggFunc) -> Self {
        match func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum => Acc::Sum(Value::Null),
            AggFunc::Min => Acc::Min(Value::Null),
            AggFunc::Max => Acc::Max(Value::Null),
            AggFunc::Avg => Acc::Avg(0.0, 0),
        }
    }

    fn add(&mut self, v: Value) -> Result<()> {
        if v.is_null() {
            return Ok(());
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum(s) => {
                *s = match (std::mem::replace(s, Value::Null), v) {
                    (Value::Null, v) => v,
                    (Value::Int(a), Value::Int(b)) => {
                        Value::Int(a.checked_add(b).ok_or_else(|| {
                            Error::sql(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
                        })?)
                    }
                    (a, b) => Value::Float(as_f64(&a) + as_f64(&b)),
                }
            }
            Acc::Min(m) => {
                if m.is_null() || v.sort_cmp(m) == std::cmp::Ordering::Less {
                    *m = v;
                }
            }
            Acc::Max(m) => {
                if m.is_null() || v.sort_cmp(m) == std::cmp::Ordering::Greater {
                    *m = v;
                }
            }
            Acc::Avg(sum, n) => {
                *sum += as_f64(&v);
                *n += 1;
            }
        }
        Ok(())
    }

    /// The state as values a gateway can merge: one value, or (sum, count) for avg.
    pub(crate) fn partial(self) -> Vec<Value> {
        match self {
            Acc::Count(n) => vec![Value::Int(n)],
            Acc::Sum(v) | Acc::Min(v) | Acc::Max(v) => vec![v],
            Acc::Avg(sum, n) => vec![Value::Float(sum), Value::Int(n)],
        }
    }

    /// How many values [`Acc::partial`] produces for a function.
    pub(crate) fn partial_width(func: AggFunc) -> usize {
        if func == AggFunc::Avg {
            2
        } else {
            1
        }
    }

    /// Merges another shard's partial state into this one.
    pub(crate) fn merge(&mut self, parts: &[Value]) -> Result<()> {
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Ok(*i),
            other => Err(Error::Corrupt(format!("bad partial aggregate {other:?}"))),
        };
        match self {
            Acc::Count(n) => *n += int(parts.first())?,
            Acc::Avg(sum, n) => {
                *sum += as_f64(parts.first().unwrap_or(&Value::Null));
                *n += int(parts.get(1))?;
            }
            // Sum, min and max merge like the values they hold.
            _ => self.add(parts.first().cloned().unwrap_or(Value::Null))?,
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(n),
            Acc::Sum(v) | Acc::Min(v) | Acc::Max(v) => v,
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(sum, n) => Value::Float(sum / n as f64),
        }
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => 0.0,
    }
}

pub(crate) struct Group {
    pub(crate) values: Vec<Value>,
    pub(crate) accs: Vec<Acc>,
    seen: Vec<Option<std::collections::HashSet<Vec<u8>>>>,
}

/// Groups rows and runs the aggregate calls over each group (groups in first-seen order).
pub(crate) fn group_rows(
    agg: &Aggregate,
    input: Vec<Vec<Value>>,
    ctx: &Context,
) -> Result<Vec<Group>> {
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let new_group = |values: Vec<Value>, calls: &[AggCall]| Group {
        values,
        accs: calls.iter().map(|c| Acc::new(c.func)).collect(),
        seen: calls
            .iter()
            .map(|c| c.distinct.then(Default::default))
            .collect(),
    };
    for row in input {
        let mut values = Vec::with_capacity(agg.group_by.len());
        for g in &agg.group_by {
            values.push(g.eval(&row, ctx)?);
        }
        let key = keycode::encode_values(&values);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                groups.push(new_group(values, &agg.calls));
                index.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        let group = &mut groups[gi];
        for (i, call) in agg.calls.iter().enumerate() {
            let v = match &call.arg {
                None => Value::Bool(true), // count(*) counts rows
                Some(e) => e.eval(&row, ctx)?,
            };
            if let Some(seen) = &mut group.seen[i] {
                if v.is_null() || !seen.insert(keycode::encode_values(std::slice::from_ref(&v))) {
                    continue;
                }
            }
            group.accs[i].add(v)?;
        }
    }
    // An aggregate without GROUP BY over no rows still yields one row (count 0, sum NULL).
    if groups.is_empty() && agg.group_by.is_empty() {
        groups.push(new_group(Vec::new(), &agg.calls));
    }
    Ok(groups)
}

fn aggregate(agg: &Aggregate, input: Vec<Vec<Value>>, ctx: &Context) -> Result<Vec<Vec<Value>>> {
    Ok(group_rows(agg, input, ctx)?
        .into_iter()
        .map(|g| {
            let mut row = g.values;
            row.extend(g.accs.into_iter().map(Acc::finish));
            row
        })
        .collect())
}
