//! Aggregation: the running state of each aggregate call ([`Acc`]), and the grouping of rows
//! into groups with one state per call ([`Grouper`]).
//!
//! Rows are folded in one at a time, so an aggregate over a scan of any size keeps its groups
//! and nothing else. The same states serve partial aggregation on the shards
//! (`sql::partial`): a state can be written out as values (`Acc::partial`) and merged into
//! another (`Acc::merge`) at the gateway, so an aggregate over many shards is exact.

use std::collections::HashMap;

use crate::error::{sqlstate, Error, Result};
use crate::sql::planner::{AggCall, AggFunc, Aggregate};
use crate::storage::keycode;
use crate::types::expr::{Context, Expr};
use crate::types::value::Value;

/// The running state of one aggregate call over one group.
pub enum Acc {
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

/// One group: its grouping values, one state per aggregate call, and for each `DISTINCT`
/// call the values it has seen.
pub struct Group {
    pub(crate) values: Vec<Value>,
    pub(crate) accs: Vec<Acc>,
    seen: Vec<Option<std::collections::HashSet<Vec<u8>>>>,
}

/// Groups rows and runs the aggregate calls over each group, a row at a time, so an aggregate
/// over a scan keeps its groups and nothing else (groups come out in first-seen order).
pub struct Grouper<'a> {
    group_by: &'a [Expr],
    calls: &'a [AggCall],
    index: HashMap<Vec<u8>, usize>,
    groups: Vec<Group>,
}

impl<'a> Grouper<'a> {
    pub(crate) fn new(group_by: &'a [Expr], calls: &'a [AggCall]) -> Self {
        Self {
            group_by,
            calls,
            index: HashMap::new(),
            groups: Vec::new(),
        }
    }

    fn new_group(&self, values: Vec<Value>) -> Group {
        Group {
            values,
            accs: self.calls.iter().map(|c| Acc::new(c.func)).collect(),
            seen: self
                .calls
                .iter()
                .map(|c| c.distinct.then(Default::default))
                .collect(),
        }
    }

    /// Folds one input row into its group.
    pub(crate) fn add(&mut self, row: &[Value], ctx: &Context) -> Result<()> {
        let mut values = Vec::with_capacity(self.group_by.len());
        for g in self.group_by {
            values.push(g.eval(row, ctx)?);
        }
        let key = keycode::encode_values(&values);
        let gi = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let group = self.new_group(values);
                self.groups.push(group);
                self.index.insert(key, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[gi];
        for (i, call) in self.calls.iter().enumerate() {
            let v = match &call.arg {
                None => Value::Bool(true), // count(*) counts rows
                Some(e) => e.eval(row, ctx)?,
            };
            if let Some(seen) = &mut group.seen[i] {
                if v.is_null() || !seen.insert(keycode::encode_values(std::slice::from_ref(&v))) {
                    continue;
                }
            }
            group.accs[i].add(v)?;
        }
        Ok(())
    }

    /// The groups. An aggregate without GROUP BY over no rows still yields one (count 0, sum
    /// NULL).
    pub(crate) fn finish(mut self) -> Vec<Group> {
        if self.groups.is_empty() && self.group_by.is_empty() {
            let group = self.new_group(Vec::new());
            self.groups.push(group);
        }
        self.groups
    }
}

/// Groups rows and runs the aggregate calls over each group (groups in first-seen order).
pub(crate) fn group_rows(
    agg: &Aggregate,
    input: Vec<Vec<Value>>,
    ctx: &Context,
) -> Result<Vec<Group>> {
    let mut grouper = Grouper::new(&agg.group_by, &agg.calls);
    for row in input {
        grouper.add(&row, ctx)?;
    }
    Ok(grouper.finish())
}

/// The final rows of groups: `[group values…, aggregates…]`.
pub(crate) fn finish_groups(groups: Vec<Group>) -> Vec<Vec<Value>> {
    groups
        .into_iter()
        .map(|g| {
            let mut row = g.values;
            row.extend(g.accs.into_iter().map(Acc::finish));
            row
        })
        .collect()
}
