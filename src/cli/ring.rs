//! `ddb ring`: how the hash ring divides the keys among the shards, from the map of the cluster
//! file's nodes or, with `--addr`, of the node there.

use clap::Args;

use super::global::GlobalArgs;
use super::nodes::{col, Targets};
use super::output::{Format, Printer};
use crate::cluster::ring::spread;
use crate::error::Error;
use crate::storage::keycode;
use crate::types::value::{DataType, Value};
use crate::types::QueryResult;

/// Arguments of `ddb ring`.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Show the shard that owns this primary key value
    #[arg(long, value_name = "VALUE")]
    pub key: Option<String>,
    /// The table whose primary key type reads VALUE (default: an integer if VALUE is one, else text)
    #[arg(long, value_name = "TABLE", requires = "key")]
    pub table: Option<String>,
}

/// Runs `ddb ring`.
pub async fn run(args: &RingArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = Targets::resolve(global).await?;
    let map = targets.map().await.ok_or_else(|| {
        Error::Unreachable(
            "no node of the cluster answered with a map (is it formed? run ddb init)".into(),
        )
    })?;
    let mut printer = Printer::new(Format::resolve(global.format), true, true);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    if let Some(raw) = &args.key {
        let value = match &args.table {
            Some(t) => {
                let table = map
                    .tables
                    .get(t)
                    .ok_or_else(|| Error::InvalidInput(format!("no table named '{t}'")))?;
                if table.primary_key.len() != 1 || table.has_rowid() {
                    return Err(Error::InvalidInput(format!(
                        "table '{t}' does not have a single-column primary key"
                    ))
                    .into());
                }
                let ty = &table.columns[table.primary_key[0]].data_type;
                Value::Text(raw.clone())
                    .cast(ty)
                    .map_err(|e| Error::InvalidInput(format!("--key {raw}: {e}")))?
            }
            None => raw
                .parse::<i64>()
                .map(Value::Int)
                .unwrap_or_else(|_| Value::Text(raw.clone())),
        };
        let token = keycode::token(&keycode::encode_values(std::slice::from_ref(&value)));
        let shard = map
            .shard_of_token(token)
            .ok_or_else(|| Error::Internal("the ring is empty".into()))?;
        let node = map
            .primary(shard)
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let result = QueryResult {
            columns: vec![
                col("key", DataType::Text),
                col("token", DataType::Text),
                col("shard", DataType::Int),
                col("node", DataType::Text),
            ],
            rows: vec![vec![
                Value::Text(raw.clone()),
                Value::Text(format!("{token:016x}")),
                Value::Int(shard.into()),
                Value::Text(node),
            ]],
            tag: String::new(),
        };
        printer.print(&result, &mut out, &mut err)?;
        return Ok(());
    }
    let statuses = targets.statuses().await?;
    let shares = map.ring.shares();
    let tokens = map.ring.token_counts();
    let mut rows = Vec::new();
    for (&shard, info) in &map.shards {
        let keys = targets
            .nodes
            .iter()
            .zip(&statuses)
            .find(|(n, _)| n.name == info.primary)
            .and_then(|(_, s)| s.as_ref().map(|s| Value::Int(s.keys as i64)))
            .unwrap_or(Value::Null);
        rows.push(vec![
            Value::Int(shard.into()),
            Value::Text(info.primary.clone()),
            Value::Int(tokens.get(&shard).copied().unwrap_or(0) as i64),
            Value::Float((shares.get(&shard).copied().unwrap_or(0.0) * 1e6).round() / 1e6),
            keys,
        ]);
    }
    let result = QueryResult {
        columns: vec![
            col("shard", DataType::Int),
            col("node", DataType::Text),
            col("tokens", DataType::Int),
            col("share", DataType::Double),
            col("keys", DataType::BigInt),
        ],
        rows,
        tag: String::new(),
    };
    printer.print(&result, &mut out, &mut err)?;
    if !global.quiet {
        super::console::note(format_args!(
            "spread (largest share / mean - 1): {:.2}%",
            spread(&shares) * 100.0
        ));
    }
    Ok(())
}
