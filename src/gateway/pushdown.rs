//! Pushing work down to the shards with a scan, and merging what comes back.
//!
//! A `SELECT` that scans every shard can take part of its work along ([`crate::sql::partial`]):
//! partial aggregation when it groups or aggregates (no `DISTINCT` aggregate), top-N when it
//! has `ORDER BY` and `LIMIT`. Here the gateway chooses which ([`choose`]), scatters the scan,
//! merges the shards' partial aggregates ([`merge_partials`]) or their first rows, and finishes
//! the statement with the executor's last steps (`HAVING`, projection, order, limit).

use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::{ShardOp, ShardReply};
use crate::sql::aggregate::Acc;
use crate::sql::execution::{finish_grouped, finish_select, Executor};
use crate::sql::partial::Pushdown;
use crate::sql::planner::{Aggregate, SelectPlan};
use crate::storage::keycode;
use crate::txn::lock::LockMode;
use crate::types::{Context, Expr, QueryResult, Value};

use super::peers::call;
use super::txn::{ClusterTxn, Part};

/// What of `plan` can run on the shards, if anything.
pub fn choose(plan: &SelectPlan, ctx: &Context) -> Option<Pushdown> {
    if let Some(agg) = &plan.aggregate {
        if agg.calls.iter().any(|c| c.distinct) {
            return None;
        }
        return Some(Pushdown::Partial {
            group_by: agg.group_by.clone(),
            calls: agg.calls.clone(),
        });
    }
    Pushdown::top_n(plan, ctx)
}

/// Merges the shards' partial aggregates into final rows `[group values…, aggregates…]`.
pub fn merge_partials(agg: &Aggregate, partials: Vec<Vec<Value>>) -> Result<Vec<Vec<Value>>> {
    let g = agg.group_by.len();
    let widths: Vec<usize> = agg
        .calls
        .iter()
        .map(|c| Acc::partial_width(c.func))
        .collect();
    let mut index: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    let mut groups: Vec<(Vec<Value>, Vec<Acc>)> = Vec::new();
    for row in partials {
        let values = row.get(..g).map(|v| v.to_vec()).unwrap_or_default();
        let key = keycode::encode_values(&values);
        let gi = *index.entry(key).or_insert_with(|| {
            groups.push((values, agg.calls.iter().map(|c| Acc::new(c.func)).collect()));
            groups.len() - 1
        });
        let mut at = g;
        for (acc, w) in groups[gi].1.iter_mut().zip(&widths) {
            let parts = row.get(at..at + w).unwrap_or(&[]);
            acc.merge(parts)?;
            at += w;
        }
    }
    // Every shard returns the empty group of an aggregate without GROUP BY; with none at all
    // (no shards) there is still one row.
    if groups.is_empty() && g == 0 {
        groups.push((
            Vec::new(),
            agg.calls.iter().map(|c| Acc::new(c.func)).collect(),
        ));
    }
    Ok(groups
        .into_iter()
        .map(|(mut values, accs)| {
            values.extend(accs.into_iter().map(Acc::finish));
            values
        })
        .collect())
}

impl ClusterTxn {
    /// Runs a `SELECT` that scans every shard with work pushed down, if it has any to push:
    /// `None` when the ordinary path (rows back, then the executor) should run instead.
    pub(super) async fn select_pushed_down(
        &mut self,
        plan: &SelectPlan,
        exec: &Executor<'_>,
    ) -> Result<Option<QueryResult>> {
        let Some(source) = plan.source.as_ref().filter(|s| s.key.is_none()) else {
            return Ok(None);
        };
        let Some(push) = choose(plan, &exec.ctx) else {
            return Ok(None);
        };
        exec.open_table(self, &source.table, LockMode::Shared)
            .await?;
        let rows = self
            .scan_pushdown(source.table.id, source.filter.as_ref(), &push, &exec.ctx)
            .await?;
        let result = match (&push, &plan.aggregate) {
            (Pushdown::Partial { .. }, Some(agg)) => {
                finish_grouped(plan, merge_partials(agg, rows)?, &exec.ctx)
            }
            _ => finish_select(plan, rows, &exec.ctx),
        };
        result.map(Some)
    }

    /// Scans every shard with `push` and gathers their answers: the remote shards work in
    /// parallel, and this node's own shard meanwhile. Each shard scans its rows in batches and
    /// keeps only what the work needs (`sql::partial`); its answer comes back once.
    async fn scan_pushdown(
        &mut self,
        table: u32,
        filter: Option<&Expr>,
        push: &Pushdown,
        ctx: &Context<'_>,
    ) -> Result<Vec<Vec<Value>>> {
        let shards: Vec<ShardId> = self.map.shards.keys().copied().collect();
        for &s in &shards {
            self.part(s).await?;
        }
        let mut remote = Vec::new();
        for &s in &shards {
            if let Some(Part::Remote { node, addr, client }) = self.parts.get(&s) {
                let op = ShardOp::ScanPushdown {
                    table,
                    filter: filter.cloned(),
                    push: push.clone(),
                    params: ctx.params.to_vec(),
                    now: ctx.now,
                };
                let (req, client, node, addr) = (
                    self.request(s, op),
                    client.clone(),
                    node.clone(),
                    addr.clone(),
                );
                remote.push(async move { (s, node, addr, call(&client, req).await) });
            }
        }
        let local = match self.my_shard.and_then(|s| self.parts.get_mut(&s)) {
            Some(Part::Local(t)) => Some(t),
            _ => None,
        };
        let local = async move {
            match local {
                Some(t) => push.run_local(t, table, filter, ctx).await,
                None => Ok(Vec::new()),
            }
        };
        let (local, replies) = futures::join!(local, futures::future::join_all(remote));
        let mut rows = local?;
        for (shard, node, addr, reply) in replies {
            match self.settle(shard, &node, &addr, reply).await? {
                ShardReply::Values(r) => rows.extend(r),
                other => return Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::planner::{AggCall, AggFunc};
    use crate::types::BinaryOp;

    fn agg() -> Aggregate {
        let call = |func, arg: Option<Expr>| AggCall {
            func,
            arg,
            distinct: false,
        };
        Aggregate {
            group_by: vec![Expr::Binary(
                BinaryOp::Mod,
                Box::new(Expr::Column(0)),
                Box::new(Expr::Const(Value::Int(3))),
            )],
            calls: vec![
                call(AggFunc::Count, None),
                call(AggFunc::Sum, Some(Expr::Column(1))),
                call(AggFunc::Min, Some(Expr::Column(1))),
                call(AggFunc::Max, Some(Expr::Column(1))),
                call(AggFunc::Avg, Some(Expr::Column(1))),
            ],
        }
    }

    #[test]
    fn merged_partial_aggregates_equal_aggregating_everything_at_once() {
        let ctx = Context {
            params: &[],
            now: 0,
            sequences: None,
        };
        let rows: Vec<Vec<Value>> = (0..100i64)
            .map(|i| {
                vec![
                    Value::Int(i),
                    if i % 10 == 0 {
                        Value::Null
                    } else {
                        Value::Int(i * 37 % 101)
                    },
                ]
            })
            .collect();
        let agg = agg();
        let whole = crate::sql::aggregate::group_rows(&agg, rows.clone(), &ctx)
            .unwrap()
            .into_iter()
            .map(|g| {
                let mut r = g.values;
                r.extend(g.accs.into_iter().map(Acc::finish));
                r
            })
            .collect::<Vec<_>>();
        let push = Pushdown::Partial {
            group_by: agg.group_by.clone(),
            calls: agg.calls.clone(),
        };
        let mut partials = Vec::new();
        for shard in rows.chunks(33) {
            partials.extend(push.apply(shard.to_vec(), &ctx).unwrap());
        }
        let mut merged = merge_partials(&agg, partials).unwrap();
        let mut whole = whole;
        let key = |r: &Vec<Value>| r[0].to_string();
        merged.sort_by_key(key);
        whole.sort_by_key(key);
        assert_eq!(merged, whole);
    }
}
