//! Reaching the nodes of a cluster file: probing, status, the map, and the node table that
//! `init`, `status` and `stop` print.

use std::time::Duration;

use crate::client::Client;
use crate::cluster::map::ClusterMap;
use crate::config::{ClusterConfig, NodeConfig};
use crate::error::{Error, Result};
use crate::protocol::{NodeStatus, Request, Response};
use crate::types::value::{DataType, Value};
use crate::types::OutputColumn;
use crate::types::QueryResult;

use super::global::GlobalArgs;

/// How long to wait for a node to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Loads the cluster file named by `-c`/`DDB_CONFIG`.
pub fn load_config(global: &GlobalArgs) -> Result<ClusterConfig> {
    ClusterConfig::load(&global.config)
}

/// Connects to a node and asks its status. `Ok(None)` when it does not answer; an error when
/// it answers as a member of another cluster.
pub async fn probe(node: &NodeConfig, cluster: &str) -> Result<Option<(Client, NodeStatus)>> {
    let client = match Client::connect_to(
        &node.rpc_addr(),
        PROBE_TIMEOUT,
        Some(cluster.to_string()),
    )
    .await
    {
        Ok(c) => c,
        Err(e @ Error::Refused(_)) => return Err(e),
        Err(_) => return Ok(None),
    };
    match tokio::time::timeout(PROBE_TIMEOUT * 3, client.call(Request::Status)).await {
        Ok(Ok(Response::Status(s))) => Ok(Some((client, s))),
        _ => Ok(None),
    }
}

/// The map of the first node that has one.
pub async fn fetch_map(config: &ClusterConfig) -> Option<ClusterMap> {
    for node in &config.nodes {
        if let Ok(Some((client, _))) = probe(node, &config.name).await {
            if let Ok(Response::Map(Some(map))) = client.call(Request::GetMap).await {
                return Some(*map);
            }
        }
    }
    None
}

fn col(name: &str, data_type: DataType) -> OutputColumn {
    OutputColumn {
        name: name.into(),
        data_type,
    }
}

/// The node table: one row per node of the file, with its live status when it answered.
/// Field names are the stable JSON names of DESIGN §10.1.
pub fn node_table(
    config: &ClusterConfig,
    statuses: &[Option<NodeStatus>],
    map: Option<&ClusterMap>,
) -> QueryResult {
    let columns = vec![
        col("name", DataType::Text),
        col("rpc_addr", DataType::Text),
        col("sql_addr", DataType::Text),
        col("shard", DataType::Int),
        col("role", DataType::Text),
        col("state", DataType::Text),
        col("raft", DataType::Text),
        col("map_version", DataType::BigInt),
        col("lsn", DataType::BigInt),
        col("lag", DataType::BigInt),
        col("keys", DataType::BigInt),
        col("prepared", DataType::BigInt),
        col("oldest_prepared_s", DataType::Double),
    ];
    let mut rows = Vec::new();
    for (node, status) in config.nodes.iter().zip(statuses) {
        let shard = map
            .and_then(|m| m.node(&node.name))
            .map(|n| n.shard)
            .unwrap_or(node.shard);
        let role = match map.and_then(|m| m.shards.get(&shard)) {
            Some(s) if s.primary == node.name => "primary",
            Some(_) => "replica",
            None => "primary",
        };
        let opt_int = |v: Option<u64>| v.map(|v| Value::Int(v as i64)).unwrap_or(Value::Null);
        rows.push(vec![
            Value::Text(node.name.clone()),
            Value::Text(node.rpc_addr()),
            Value::Text(node.sql_addr()),
            Value::Int(shard.into()),
            Value::Text(role.into()),
            Value::Text(if status.is_some() { "up" } else { "down" }.into()),
            Value::Text(
                status
                    .as_ref()
                    .map(|s| s.raft.clone())
                    .unwrap_or_else(|| "unknown".into()),
            ),
            opt_int(status.as_ref().map(|s| s.map_version)),
            opt_int(status.as_ref().map(|s| s.lsn)),
            // Replication is not built yet: a primary has no lag.
            opt_int(status.as_ref().map(|_| 0)),
            opt_int(status.as_ref().map(|s| s.keys)),
            opt_int(status.as_ref().map(|s| s.prepared)),
            status
                .as_ref()
                .map(|s| Value::Float(s.oldest_prepared_ms as f64 / 1000.0))
                .unwrap_or(Value::Null),
        ]);
    }
    let tag = format!("SELECT {}", rows.len());
    QueryResult { columns, rows, tag }
}

/// Appends the transaction counters of `ddb status --txns` to a node table.
pub fn add_txn_columns(table: &mut QueryResult, statuses: &[Option<NodeStatus>]) {
    for (name, ty) in [
        ("one_phase", DataType::BigInt),
        ("two_phase", DataType::BigInt),
        ("prepare_ms", DataType::Double),
        ("decide_ms", DataType::Double),
        ("finish_ms", DataType::Double),
        ("decisions", DataType::BigInt),
    ] {
        table.columns.push(col(name, ty));
    }
    for (row, status) in table.rows.iter_mut().zip(statuses) {
        let Some(s) = status else {
            row.extend(std::iter::repeat_n(Value::Null, 6));
            continue;
        };
        // Average milliseconds per two-phase commit of each step.
        let avg = |us: u64| {
            if s.two_phase_commits == 0 {
                Value::Null
            } else {
                Value::Float((us as f64 / s.two_phase_commits as f64 / 10.0).round() / 100.0)
            }
        };
        row.extend([
            Value::Int(s.one_phase_commits as i64),
            Value::Int(s.two_phase_commits as i64),
            avg(s.twopc_prepare_us),
            avg(s.twopc_decide_us),
            avg(s.twopc_finish_us),
            Value::Int(s.decisions as i64),
        ]);
    }
}

/// Probes every node of the file, in order.
pub async fn statuses(config: &ClusterConfig) -> Result<Vec<Option<NodeStatus>>> {
    let probes = config.nodes.iter().map(|n| probe(n, &config.name));
    let results = futures::future::join_all(probes).await;
    results
        .into_iter()
        .map(|r| r.map(|o| o.map(|(_, s)| s)))
        .collect()
}
