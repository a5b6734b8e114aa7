//! Work a scan sends to the shards, so that less comes back to the gateway.
//!
//! A scan that fans out to every shard takes its filter along. Two more kinds of work can go
//! with it:
//!
//! * **Partial aggregation.** Each shard groups its rows and returns, per group, a partial state
//!   of each aggregate: `count` as a count, `sum`/`min`/`max` as a value, and `avg` as a sum and
//!   a count. The gateway merges the states per group, so an average over shards is exact.
//!   `DISTINCT` aggregates cannot be merged from partial states, so they get the rows instead.
//! * **Top-N.** A query with `ORDER BY` and `LIMIT` (and no grouping) needs at most
//!   `offset + limit` rows from each shard, in order. The gateway merges the shards' lists,
//!   sorts once more, and applies the offset and limit.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sql::execution::{group_rows, Acc};
use crate::sql::expr::{Context, Expr};
use crate::sql::planner::{AggCall, Aggregate, SelectPlan};
use crate::sql::types::Value;

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

impl Pushdown {
    /// What of `plan` can run on the shards, if anything.
    pub fn for_select(plan: &SelectPlan, ctx: &Context) -> Option<Pushdown> {
        if let Some(agg) = &plan.aggregate {
            if agg.calls.iter().any(|c| c.distinct) {
                return None;
            }
            return Some(Pushdown::Partial {
                group_by: agg.group_by.clone(),
                calls: agg.calls.clone(),
            });
        }
        let limit = plan.limit.as_ref()?;
        if plan.order_by.is_empty() {
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
        let n = count(Some(limit))?.checked_add(count(plan.offset.as_ref())?)?;
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
        let key = crate::storage::keycode::encode_values(&values);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::ast::BinaryOp;
    use crate::sql::planner::AggFunc;

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
        let whole = crate::sql::execution::group_rows(&agg, rows.clone(), &ctx)
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
