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

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sql::execution::{compare_keys, group_rows, Acc};
use crate::sql::planner::{AggCall, Aggregate};
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
    /// Runs the pushed-down work over a shard's (filtered) rows.
    pub fn apply(&self, rows: Vec<Vec<Value>>, ctx: &Context) -> Result<Vec<Vec<Value>>> {
        match self {
            Pushdown::Partial { group_by, calls } => {
                let agg = Aggregate {
                    group_by: group_by.clone(),
                    calls: calls.clone(),
                };
                Ok(group_rows(&agg, rows, ctx)?
                    .into_iter()
                    .map(|g| {
                        let mut row = g.values;
                        row.extend(g.accs.into_iter().flat_map(Acc::partial));
                        row
                    })
                    .collect())
            }
            Pushdown::TopN { keys, n } => {
                let mut keyed = Vec::with_capacity(rows.len());
                for row in rows {
                    let k = keys
                        .iter()
                        .map(|s| s.expr.eval(&row, ctx))
                        .collect::<Result<Vec<_>>>()?;
                    keyed.push((k, row));
                }
                keyed.sort_by(|(a, _), (b, _)| {
                    compare_keys(a, b, keys.iter().map(|s| (s.descending, s.nulls_first)))
                });
                keyed.truncate(*n);
                Ok(keyed.into_iter().map(|(_, r)| r).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_keeps_the_first_rows_in_order() {
        let ctx = Context {
            params: &[],
            now: 0,
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
}
