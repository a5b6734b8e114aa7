//! Work that runs over one part of a table's rows: the half of a scan that a shard does for a
//! gateway, so that less comes back.
//!
//! A scan that fans out to every shard takes its filter along. Two more kinds of work can go
//! with it (the gateway chooses which, and merges what comes back: `gateway::pushdown`):
//!
//! * **Partial aggregation.** Each shard groups its rows and returns, per group, a partial state
//!   of each aggregate: `count` as a count, `sum`/`min`/`max` as a value, and `avg` as a sum and
//!   a count. The gateway merges the states per group, so an average over shards is exact.
//!   `DISTINCT` aggregates cannot be merged from partial states, so they get the rows instead.
//! * **Top-N.** A query with `ORDER BY` and `LIMIT` (and no grouping) needs at most
//!   `offset + limit` rows from each shard, in order. The gateway merges the shards' lists,
//!   sorts once more, and applies the offset and limit.
//!
//! Both are computed while the shard scans its rows batch by batch ([`Accumulator`]): partial
//! aggregation keeps one state per group, top-N at most `2n` rows, so a shard never holds its
//! part of the table however large it is. Their results come back to the gateway once.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use async_trait::async_trait;

use crate::sql::aggregate::{Acc, Grouper};
use crate::sql::order::compare_keys;
use crate::sql::planner::{AggCall, SelectPlan};
use crate::sql::rows::{scan_local, Flow, KeyedRows, RowSink};
use crate::txn::{Intent, Transaction};
use crate::types::expr::{Context, Expr};
use crate::types::value::Value;

/// One sort key of a top-N pushdown, over the input row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SortSpec {
    pub expr: Expr,
    pub descending: bool,
    pub nulls_first: bool,
}

/// Work pushed down to every shard with a scan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Pushdown {
    /// Group and aggregate on each shard; rows come back as `[group values…, partial states…]`.
    Partial {
        group_by: Vec<Expr>,
        calls: Vec<AggCall>,
    },
    /// Each shard returns its first `n` input rows in this order.
    TopN { keys: Vec<SortSpec>, n: usize },
}

impl Pushdown {
    /// The top-N of a `SELECT` with `ORDER BY` and a `LIMIT` that evaluates here (and no
    /// grouping): its sort keys over the input row, and `offset + limit`.
    pub fn top_n(plan: &SelectPlan, ctx: &Context) -> Option<Pushdown> {
        if plan.aggregate.is_some() || plan.order_by.is_empty() {
            return None;
        }
        let count = |e: Option<&Expr>| -> Option<usize> {
            match e {
                None => Some(0),
                Some(e) => match e.eval(&[], ctx).ok()? {
                    Value::Int(i) if i >= 0 => usize::try_from(i).ok(),
                    _ => None,
                },
            }
        };
        let n = count(Some(plan.limit.as_ref()?))?.checked_add(count(plan.offset.as_ref())?)?;
        let keys = plan
            .order_by
            .iter()
            .map(|k| {
                // A key over the output (ORDER BY 1, ORDER BY alias) is that output's expression.
                let expr = match (&k.expr, k.over_output) {
                    (Expr::Column(i), true) => plan.projection.get(*i)?.clone(),
                    (e, false) => e.clone(),
                    _ => return None,
                };
                Some(SortSpec {
                    expr,
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Pushdown::TopN { keys, n })
    }

    /// A fresh accumulator of this work.
    pub fn accumulator(&self) -> Accumulator<'_> {
        match self {
            Pushdown::Partial { group_by, calls } => {
                Accumulator::Partial(Grouper::new(group_by, calls))
            }
            Pushdown::TopN { keys, n } => Accumulator::TopN {
                keys,
                n: *n,
                rows: Vec::new(),
            },
        }
    }

    /// Runs the pushed-down work over a shard's (filtered) rows.
    pub fn apply(&self, rows: Vec<Vec<Value>>, ctx: &Context) -> Result<Vec<Vec<Value>>> {
        let mut acc = self.accumulator();
        acc.add(rows, ctx)?;
        acc.finish()
    }

    /// Scans a table on this node in batches and runs the pushed-down work over the rows that
    /// pass the filter: a shard's whole answer to a pushed-down scan.
    pub async fn run_local(
        &self,
        txn: &mut Transaction,
        table: u32,
        filter: Option<&Expr>,
        ctx: &Context<'_>,
    ) -> Result<Vec<Vec<Value>>> {
        let mut sink = AccumulatorSink {
            acc: self.accumulator(),
            ctx,
        };
        scan_local(txn, table, Intent::Read, filter, ctx, &mut sink).await?;
        sink.acc.finish()
    }
}

/// The sink of work pushed down with a scan (and of the executor's own top-N).
pub struct AccumulatorSink<'a, 'c> {
    pub acc: Accumulator<'a>,
    pub ctx: &'a Context<'c>,
}

#[async_trait]
impl RowSink for AccumulatorSink<'_, '_> {
    async fn take(&mut self, batch: KeyedRows) -> Result<Flow> {
        self.acc
            .add(batch.into_iter().map(|(_, r)| r).collect(), self.ctx)?;
        Ok(Flow::More)
    }
}

/// Pushed-down work in progress: rows are added a batch at a time, and only what the work
/// needs is kept.
pub enum Accumulator<'a> {
    /// One state per group.
    Partial(Grouper<'a>),
    /// The first rows in order, with their sort keys: between `n` and `2n` of them, cut back
    /// to `n` each time they reach `2n`, so adding a row costs O(log n) on average.
    TopN {
        keys: &'a [SortSpec],
        n: usize,
        rows: Vec<(Vec<Value>, Vec<Value>)>,
    },
}

impl Accumulator<'_> {
    /// Adds rows.
    pub fn add(&mut self, batch: Vec<Vec<Value>>, ctx: &Context) -> Result<()> {
        match self {
            Accumulator::Partial(grouper) => {
                for row in batch {
                    grouper.add(&row, ctx)?;
                }
            }
            Accumulator::TopN { keys, n, rows } => {
                for row in batch {
                    let k = keys
                        .iter()
                        .map(|s| s.expr.eval(&row, ctx))
                        .collect::<Result<Vec<_>>>()?;
                    rows.push((k, row));
                    if rows.len() >= n.saturating_mul(2).max(1024) {
                        cut(keys, rows, *n);
                    }
                }
            }
        }
        Ok(())
    }

    /// The result: `[group values…, partial states…]` per group, or the first `n` rows in
    /// order.
    pub fn finish(self) -> Result<Vec<Vec<Value>>> {
        Ok(match self {
            Accumulator::Partial(grouper) => grouper
                .finish()
                .into_iter()
                .map(|g| {
                    let mut row = g.values;
                    row.extend(g.accs.into_iter().flat_map(Acc::partial));
                    row
                })
                .collect(),
            Accumulator::TopN { keys, n, mut rows } => {
                cut(keys, &mut rows, n);
                rows.into_iter().map(|(_, r)| r).collect()
            }
        })
    }
}

/// Sorts keyed rows by their keys and keeps the first `n` (a stable sort: ties keep their
/// order of arrival).
fn cut(keys: &[SortSpec], rows: &mut Vec<(Vec<Value>, Vec<Value>)>, n: usize) {
    rows.sort_by(|(a, _), (b, _)| {
        compare_keys(a, b, keys.iter().map(|s| (s.descending, s.nulls_first)))
    });
    rows.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_keeps_the_first_rows_in_order() {
        let ctx = Context {
            params: &[],
            now: 0,
            sequences: None,
        };
        let rows: Vec<Vec<Value>> = [5, 1, 4, 2, 3]
            .iter()
            .map(|i| vec![Value::Int(*i)])
            .collect();
        let push = Pushdown::TopN {
            keys: vec![SortSpec {
                expr: Expr::Column(0),
                descending: true,
                nulls_first: true,
            }],
            n: 2,
        };
        assert_eq!(
            push.apply(rows, &ctx).unwrap(),
            vec![vec![Value::Int(5)], vec![Value::Int(4)]]
        );
    }

    #[test]
    fn top_n_over_many_batches_keeps_the_same_rows_as_sorting_everything() {
        let ctx = Context {
            params: &[],
            now: 0,
            sequences: None,
        };
        let push = Pushdown::TopN {
            keys: vec![SortSpec {
                expr: Expr::Column(0),
                descending: false,
                nulls_first: false,
            }],
            n: 10,
        };
        let values: Vec<i64> = (0..5000).map(|i| (i * 7919) % 5003).collect();
        let mut acc = push.accumulator();
        for chunk in values.chunks(97) {
            acc.add(chunk.iter().map(|i| vec![Value::Int(*i)]).collect(), &ctx)
                .unwrap();
        }
        let mut sorted = values.clone();
        sorted.sort();
        let expected: Vec<Vec<Value>> = sorted[..10].iter().map(|i| vec![Value::Int(*i)]).collect();
        assert_eq!(acc.finish().unwrap(), expected);
    }
}
