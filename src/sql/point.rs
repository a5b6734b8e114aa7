//! Point statements: the statements that touch exactly one row key.
//!
//! A `SELECT`, `UPDATE` or `DELETE` that fixes the whole primary key, or a one-row `INSERT`
//! into a table with a primary key, touches one key and so one shard. A gateway sends such a
//! statement whole to the shard that owns the key (one round trip instead of one per row
//! operation); the shard plans it again and runs it here, after checking that it owns the key.

use crate::error::{sqlstate, Error, Result};
use crate::sql::ast::Statement;
use crate::sql::backend::Backend;
use crate::sql::execution::Executor;
use crate::sql::planner::{self, Plan, Source};
use crate::sql::rows::RowTxn;
use crate::storage::keycode::RowKeys;
use crate::types::{Context, DataType, QueryResult, Value};

/// The one row key a statement touches, if it is a point statement: a `SELECT`, `UPDATE` or
/// `DELETE` that fixes the whole primary key, or a one-row `INSERT` into a table with a
/// primary key.
pub fn point_key(plan: &Plan, ctx: &Context) -> Option<Vec<u8>> {
    // A volatile call (`nextval`, `gen_random_uuid()`) would be made again, differently, where
    // the statement is shipped, and on a shard that has no session: the gateway runs it.
    if volatile(plan) {
        return None;
    }
    let key_of = |source: &Source| -> Option<Vec<u8>> {
        let exprs = source.key.as_ref()?;
        let mut pk = Vec::with_capacity(exprs.len());
        for (e, &col) in exprs.iter().zip(&source.table.primary_key) {
            let v = e.eval(&[], ctx).ok()?;
            if v.is_null() {
                return None;
            }
            pk.push(v.cast(&source.table.columns[col].data_type).ok()?);
        }
        Some(source.table.key_of(&pk))
    };
    let key = match plan {
        Plan::Select(s) => key_of(s.source.as_ref()?)?,
        // An update that assigns a key column may move the row to another shard: not a
        // point statement (the gateway routes each of its row operations).
        Plan::Update { source, sets, .. }
            if sets
                .iter()
                .any(|(col, _)| source.table.primary_key.contains(col)) =>
        {
            return None
        }
        Plan::Update { source, .. } | Plan::Delete { source, .. } => key_of(source)?,
        Plan::Insert { table, rows, .. } if rows.len() == 1 && !table.has_rowid() => {
            let mut pk = Vec::with_capacity(table.primary_key.len());
            for &i in &table.primary_key {
                let col = &table.columns[i];
                // A key made by a volatile call (`gen_random_uuid()`) would be made again, and
                // differently, where the statement is shipped: the gateway routes its row.
                let e = rows[0][i].as_ref()?;
                if e.is_volatile() {
                    return None;
                }
                let v = e.eval(&[], ctx).ok()?;
                pk.push(v.coerce_to(&col.data_type, &col.name).ok()?);
            }
            table.key_of(&pk)
        }
        _ => return None,
    };
    Some(key)
}

/// Whether a write or query calls a volatile function anywhere it would be evaluated, column
/// defaults of an `INSERT` included.
fn volatile(plan: &Plan) -> bool {
    fn any<'a>(mut es: impl Iterator<Item = &'a crate::types::Expr>) -> bool {
        es.any(|e| e.is_volatile())
    }
    let returning = |r: &Option<crate::sql::planner::Returning>| {
        r.as_ref()
            .is_some_and(|r| r.projection.iter().any(|e| e.is_volatile()))
    };
    match plan {
        Plan::Insert {
            table,
            rows,
            returning: r,
        } => {
            returning(r)
                || rows.iter().any(|row| {
                    row.iter().zip(&table.columns).any(|(e, c)| match e {
                        Some(e) => e.is_volatile(),
                        None => c.default.as_ref().is_some_and(|d| d.is_volatile()),
                    })
                })
        }
        Plan::Update {
            source,
            sets,
            returning: r,
        } => returning(r) || any(sets.iter().map(|(_, e)| e)) || any(source.filter.iter()),
        Plan::Delete {
            source,
            returning: r,
        } => returning(r) || any(source.filter.iter()),
        Plan::Select(s) => {
            any(s.projection.iter())
                || any(s.source.iter().filter_map(|src| src.filter.as_ref()))
                || any(s.having.iter())
        }
        _ => false,
    }
}

/// Runs a point statement shipped by a gateway inside its transaction's part on this shard
/// (`ShardOp::Execute`). `owns` says whether this shard owns a key;
/// `Ok(None)` means the statement is not a point statement on a key owned here. Also returns
/// the table the statement wrote to, if it is a write.
pub async fn execute_point(
    backend: &dyn Backend,
    txn: &mut dyn RowTxn,
    stmt: &Statement,
    params: &[Value],
    param_types: &[DataType],
    now: i64,
    owns: impl Fn(&[u8]) -> bool,
) -> Result<Option<(QueryResult, Option<u32>)>> {
    let planned = planner::plan(backend.catalog(), stmt, param_types)?;
    if params.len() < planned.param_types.len() {
        return Err(Error::sql(
            sqlstate::PROTOCOL_VIOLATION,
            "a shipped statement came without its parameters",
        ));
    }
    let executor = Executor {
        catalog: backend.catalog(),
        store: backend.store(),
        ctx: Context {
            params,
            now,
            sequences: None,
        },
        node_tag: backend.node_tag(),
    };
    match point_key(&planned.plan, &executor.ctx) {
        Some(key) if owns(&key) => {}
        _ => return Ok(None),
    }
    let written = match &planned.plan {
        Plan::Insert { table, .. } => Some(table.id),
        Plan::Update { source, .. } | Plan::Delete { source, .. } => Some(source.table.id),
        _ => None,
    };
    let result = executor.execute(txn, &planned.plan).await?;
    Ok(Some((result, written)))
}
