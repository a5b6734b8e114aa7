//! Reaching the nodes a command looks at: probing, status, the map, and the node table that
//! `init`, `status` and `stop` print.
//!
//! The nodes come from one of two places, never both: the cluster file, or, with `--addr`
//! (`DDB_ADDR`), the node at that address and the nodes of its map ([`Targets::resolve`]). So
//! `ddb --addr A status` shows A's cluster as A sees it, whatever file `DDB_CONFIG` names.

use std::time::Duration;

use crate::client::Client;
use crate::cluster::map::ClusterMap;
use crate::cluster::ring::ShardId;
use crate::config::{is_local_host, ClusterConfig, NodeConfig};
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

/// Refuses `--addr` for a command that acts on the nodes of the cluster file: it must not act
/// on the file's nodes when told about another one (bad usage, exit 2).
pub fn refuse_addr(global: &GlobalArgs, command: &str, why: &str) -> Result<()> {
    match &global.addr {
        Some(addr) => Err(Error::InvalidInput(format!(
            "ddb {command} {why}; it does not take --addr (given {addr}, from the option or DDB_ADDR)"
        ))),
        None => Ok(()),
    }
}

/// A node a command looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub rpc_addr: String,
    pub sql_addr: String,
    /// Its shard, when a file or a map says (a node outside any cluster has none).
    pub shard: Option<ShardId>,
    /// Whether it runs on this machine (its pid can be watched).
    pub local: bool,
}

impl From<&NodeConfig> for Target {
    fn from(n: &NodeConfig) -> Self {
        Self {
            name: n.name.clone(),
            rpc_addr: n.rpc_addr(),
            sql_addr: n.sql_addr(),
            shard: Some(n.shard),
            local: n.local,
        }
    }
}

/// Whether the host of `HOST:PORT` is this machine.
pub fn addr_is_local(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    is_local_host(host.trim_start_matches('[').trim_end_matches(']'))
}

/// The nodes a command looks at, the cluster name to expect of them, and the map if known.
pub struct Targets {
    /// The cluster name sent in handshakes (none for a node outside any cluster).
    pub cluster: Option<String>,
    pub nodes: Vec<Target>,
    /// The map of the node given with `--addr` (a file's map is fetched when needed).
    pub map: Option<ClusterMap>,
}

impl Targets {
    /// The nodes of a cluster file.
    pub fn from_config(config: &ClusterConfig) -> Self {
        Self {
            cluster: Some(config.name.clone()),
            nodes: config.nodes.iter().map(Target::from).collect(),
            map: None,
        }
    }

    /// With `--addr`: the node there and, if it is in a cluster, every node of its map, in
    /// Raft id order (the file order at init). Without: the nodes of the cluster file.
    pub async fn resolve(global: &GlobalArgs) -> Result<Self> {
        let Some(addr) = &global.addr else {
            return Ok(Self::from_config(&load_config(global)?));
        };
        let client = Client::connect(addr, PROBE_TIMEOUT * 3).await?;
        if let Response::Map(Some(map)) = client.call(Request::GetMap).await? {
            let mut nodes: Vec<(u64, Target)> = map
                .nodes
                .iter()
                .map(|(name, n)| {
                    (
                        n.raft_id,
                        Target {
                            name: name.clone(),
                            rpc_addr: n.rpc_addr.clone(),
                            sql_addr: n.sql_addr.clone(),
                            shard: Some(n.shard),
                            local: addr_is_local(&n.rpc_addr),
                        },
                    )
                })
                .collect();
            nodes.sort_by_key(|(id, _)| *id);
            return Ok(Self {
                cluster: Some(map.name.clone()),
                nodes: nodes.into_iter().map(|(_, t)| t).collect(),
                map: Some(*map),
            });
        }
        let status = match client.call(Request::Status).await? {
            Response::Status(s) => s,
            other => {
                return Err(Error::Corrupt(format!(
                    "unexpected answer to a status request: {other:?}"
                )))
            }
        };
        Ok(Self {
            cluster: None,
            nodes: vec![Target {
                name: status.name,
                rpc_addr: addr.clone(),
                sql_addr: status.sql_addr,
                shard: None,
                local: addr_is_local(addr),
            }],
            map: None,
        })
    }

    /// The map: the one `--addr`'s node gave, else the newest (highest version) of those the
    /// nodes that answer have. A node that has just restarted may not have caught up with the
    /// map's Raft log yet: its map may name a primary that is no longer one.
    pub async fn map(&self) -> Option<ClusterMap> {
        if let Some(m) = &self.map {
            return Some(m.clone());
        }
        let asks = self.nodes.iter().map(|node| async move {
            let (client, _) = probe(&node.rpc_addr, self.cluster.as_deref())
                .await
                .ok()??;
            match client.call(Request::GetMap).await {
                Ok(Response::Map(Some(map))) => Some(*map),
                _ => None,
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .max_by_key(|m| m.version)
    }

    /// Probes every node, in order.
    pub async fn statuses(&self) -> Result<Vec<Option<NodeStatus>>> {
        let probes = self
            .nodes
            .iter()
            .map(|n| probe(&n.rpc_addr, self.cluster.as_deref()));
        let results = futures::future::join_all(probes).await;
        results
            .into_iter()
            .map(|r| r.map(|o| o.map(|(_, s)| s)))
            .collect()
    }
}

/// Connects to a node and asks its status. `Ok(None)` when it does not answer; an error when
/// it answers as a member of another cluster.
pub async fn probe(rpc_addr: &str, cluster: Option<&str>) -> Result<Option<(Client, NodeStatus)>> {
    let client =
        match Client::connect_to(rpc_addr, PROBE_TIMEOUT, cluster.map(str::to_string)).await {
            Ok(c) => c,
            Err(e @ Error::Refused(_)) => return Err(e),
            Err(_) => return Ok(None),
        };
    match tokio::time::timeout(PROBE_TIMEOUT * 3, client.call(Request::Status)).await {
        Ok(Ok(Response::Status(s))) => Ok(Some((client, s))),
        _ => Ok(None),
    }
}

/// The map of the first node of the file that has one.
pub async fn fetch_map(config: &ClusterConfig) -> Option<ClusterMap> {
    Targets::from_config(config).map().await
}

/// An output column.
pub fn col(name: &str, data_type: DataType) -> OutputColumn {
    OutputColumn {
        name: name.into(),
        data_type,
    }
}

/// A node's place in its replica group, as the map says.
struct GroupPlace {
    shard: Option<ShardId>,
    /// `primary` or `replica`.
    role: &'static str,
    /// Whether the map counts it in its shard's in-sync set; `None` without a map.
    in_sync: Option<bool>,
    epoch: Option<u64>,
    /// The primary of its shard, for a replica.
    primary: Option<String>,
}

impl GroupPlace {
    /// Where `node` is under `map`; without a map (a node outside any cluster) it is its own
    /// primary, in sync with nothing to say.
    fn of(node: &Target, map: Option<&ClusterMap>) -> Self {
        let in_map = map.and_then(|m| m.shard_of_node(&node.name));
        match in_map {
            Some((id, s)) => Self {
                shard: Some(id),
                role: if s.primary == node.name {
                    "primary"
                } else {
                    "replica"
                },
                in_sync: Some(s.is_in_sync(&node.name)),
                epoch: Some(s.epoch),
                primary: (s.primary != node.name).then(|| s.primary.clone()),
            },
            None => Self {
                shard: node.shard,
                role: "primary",
                in_sync: None,
                epoch: None,
                primary: None,
            },
        }
    }

    /// Entries and milliseconds this node is behind its primary: 0 for a primary; for a
    /// replica, what its primary reports of it (the entries of its log the replica has not
    /// acknowledged, and how long ago, on the primary's clock, the oldest of them became
    /// durable there), or without such a report the difference of their LSNs and no
    /// milliseconds; unknown (`None`) when the primary does not answer.
    fn lag(
        &self,
        mine: Option<&NodeStatus>,
        name: &str,
        status_of: &dyn Fn(&str) -> Option<NodeStatus>,
    ) -> (Option<u64>, Option<u64>) {
        let Some(mine) = mine else {
            return (None, None);
        };
        match &self.primary {
            None => (Some(0), Some(0)),
            Some(p) => match status_of(p) {
                Some(theirs) => match theirs.replicas.iter().find(|r| r.node == name) {
                    Some(r) => (Some(r.lag), Some(r.lag_ms)),
                    None => (Some(theirs.lsn.saturating_sub(mine.lsn)), None),
                },
                None => (None, None),
            },
        }
    }
}

/// The node table: one row per node, with its live status when it answered. Field names are
/// the stable JSON names of DESIGN §10.1.
///
/// `role`, `in_sync` and `epoch` come from the map; `lsn` from the node (the last entry in its
/// log, which with one copy is also the last applied), and `log_start` (the first entry its log
/// still holds: it holds `log_start..=lsn`); `lag` is how many entries a replica is
/// behind its primary, and `lag_ms` the age of the oldest entry it lacks, both as the primary
/// measures them (0 for a primary; `null` when the primary does not report them).
pub fn node_table(
    nodes: &[Target],
    statuses: &[Option<NodeStatus>],
    map: Option<&ClusterMap>,
) -> QueryResult {
    let columns = vec![
        col("name", DataType::Text),
        col("rpc_addr", DataType::Text),
        col("sql_addr", DataType::Text),
        col("shard", DataType::Int),
        col("role", DataType::Text),
        col("in_sync", DataType::Bool),
        col("state", DataType::Text),
        col("raft", DataType::Text),
        col("map_version", DataType::BigInt),
        col("epoch", DataType::BigInt),
        col("lsn", DataType::BigInt),
        col("log_start", DataType::BigInt),
        col("lag", DataType::BigInt),
        col("lag_ms", DataType::BigInt),
        col("keys", DataType::BigInt),
        col("prepared", DataType::BigInt),
        col("oldest_prepared_s", DataType::Double),
        col("rolled_back", DataType::BigInt),
        col("rolled_back_lsns", DataType::Text),
    ];
    let status_of = |name: &str| {
        nodes
            .iter()
            .zip(statuses)
            .find(|(n, _)| n.name == name)
            .and_then(|(_, s)| s.clone())
    };
    let mut rows = Vec::new();
    for (node, status) in nodes.iter().zip(statuses) {
        let place = GroupPlace::of(node, map);
        let opt_int = |v: Option<u64>| v.map(|v| Value::Int(v as i64)).unwrap_or(Value::Null);
        let (lag, lag_ms) = place.lag(status.as_ref(), &node.name, &status_of);
        let rolled = status.as_ref().and_then(|s| s.rolled_back.as_ref());
        rows.push(vec![
            Value::Text(node.name.clone()),
            Value::Text(node.rpc_addr.clone()),
            Value::Text(node.sql_addr.clone()),
            place
                .shard
                .map(|s| Value::Int(s.into()))
                .unwrap_or(Value::Null),
            Value::Text(place.role.into()),
            place.in_sync.map(Value::Bool).unwrap_or(Value::Null),
            Value::Text(if status.is_some() { "up" } else { "down" }.into()),
            Value::Text(
                status
                    .as_ref()
                    .map(|s| s.raft.clone())
                    .unwrap_or_else(|| "unknown".into()),
            ),
            opt_int(status.as_ref().map(|s| s.map_version)),
            opt_int(place.epoch),
            opt_int(status.as_ref().map(|s| s.lsn)),
            opt_int(status.as_ref().map(|s| s.log_start)),
            opt_int(lag),
            opt_int(lag_ms),
            opt_int(status.as_ref().map(|s| s.keys)),
            opt_int(status.as_ref().map(|s| s.prepared)),
            status
                .as_ref()
                .map(|s| Value::Float(s.oldest_prepared_ms as f64 / 1000.0))
                .unwrap_or(Value::Null),
            opt_int(rolled.map(|r| r.count())),
            rolled
                .map(|r| Value::Text(format!("{}..={}", r.first_lsn, r.last_lsn)))
                .unwrap_or(Value::Null),
        ]);
    }
    let tag = format!("SELECT {}", rows.len());
    QueryResult { columns, rows, tag }
}

/// The notes `ddb status` prints about rollbacks: one line per answering node that rolled
/// back applied entries lost in a failover (the last time it did), saying which and when.
pub fn rollback_notes(nodes: &[Target], statuses: &[Option<NodeStatus>]) -> Vec<String> {
    nodes
        .iter()
        .zip(statuses)
        .filter_map(|(node, status)| {
            let r = status.as_ref()?.rolled_back.as_ref()?;
            let when = i64::try_from(r.at_unix_ms)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or_else(|| "an unknown time".into(), |t| t.to_rfc3339());
            Some(format!(
                "NOTE: {} rolled back {r}, which the primary of epoch {} did not have (lost in a \
                 failover), at {when}; its data was rebuilt from that primary's",
                node.name, r.by_epoch
            ))
        })
        .collect()
}

/// The warnings `ddb status` prints about primaries that refuse writes: one line per shard
/// whose primary (as the map names it) answers but refuses writes now, with its reason (a
/// switchover's pause, a restart's recovery, too few copies in sync, or a node fenced by a
/// promotion the map has not taken). A replica's refusal is its role, not a warning.
pub fn refusal_warnings(
    nodes: &[Target],
    statuses: &[Option<NodeStatus>],
    map: Option<&ClusterMap>,
) -> Vec<String> {
    let Some(map) = map else {
        return Vec::new();
    };
    map.shards
        .iter()
        .filter_map(|(id, shard)| {
            let (_, status) = nodes
                .iter()
                .zip(statuses)
                .find(|(n, _)| n.name == shard.primary)?;
            let why = status.as_ref()?.write_refusal.as_ref()?;
            Some(format!(
                "WARNING: shard {id}'s primary {} refuses writes: {why}",
                shard.primary
            ))
        })
        .collect()
}

/// The warnings `ddb status` and `ddb init` print about the map: one line per shard whose
/// in-sync set is smaller than `replication.factor`, naming who is in it. Empty when every
/// shard has its copies (or there is no map).
pub fn copy_warnings(map: Option<&ClusterMap>) -> Vec<String> {
    let Some(map) = map else {
        return Vec::new();
    };
    let factor = map.replication.factor;
    map.short_of_copies()
        .into_iter()
        .filter_map(|(id, n)| {
            let s = map.shards.get(&id)?;
            let floor = if n < map.replication.min_in_sync as usize {
                format!(
                    ", below replication.min_in_sync {}: its writes are refused",
                    map.replication.min_in_sync
                )
            } else {
                String::new()
            };
            Some(format!(
                "WARNING: shard {id} has {n} of {factor} copies in sync ({}){floor}",
                s.in_sync.join(", ")
            ))
        })
        .collect()
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
    Targets::from_config(config).statuses().await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cluster::map::Change;

    /// The formed map of a file of 2 shards × 2 copies (n1 n2 | n3 n4), and its nodes.
    fn groups() -> (ClusterMap, Vec<Target>) {
        let mut text = "name: g\nreplication: { factor: 2 }\nnodes:\n".to_string();
        for i in 1..=4 {
            text += &format!(
                "  - {{ name: n{i}, host: 127.0.0.1, rpc_port: {}, sql_port: {} }}\n",
                7000 + i,
                5000 + i
            );
        }
        let (config, _) = ClusterConfig::parse_plan(&text, Path::new("c.yaml")).unwrap();
        let mut map = None;
        ClusterMap::apply(
            &mut map,
            &Change::Init(Box::new(config.initial_map("x".into()))),
        )
        .unwrap();
        let targets = config.nodes.iter().map(Target::from).collect();
        (map.unwrap(), targets)
    }

    fn status(name: &str, lsn: u64) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            rpc_addr: String::new(),
            sql_addr: String::new(),
            version: String::new(),
            lsn,
            log_start: 1,
            applied_lsn: lsn,
            write_refusal: None,
            checksum: 0,
            replicas: Vec::new(),
            keys: 0,
            locks: 0,
            commits: 0,
            fsyncs: 0,
            cluster: Some("g".into()),
            raft: "follower".into(),
            map_version: 1,
            pid: 1,
            prepared: 0,
            oldest_prepared_ms: 0,
            decisions: 0,
            two_phase_commits: 0,
            one_phase_commits: 0,
            twopc_prepare_us: 0,
            twopc_decide_us: 0,
            twopc_finish_us: 0,
            rolled_back: None,
        }
    }

    /// The value of column `field` in the row of `node`.
    fn cell(table: &QueryResult, node: &str, field: &str) -> Value {
        let col = table.columns.iter().position(|c| c.name == field).unwrap();
        let row = table
            .rows
            .iter()
            .find(|r| r[0] == Value::Text(node.into()))
            .unwrap();
        row[col].clone()
    }

    #[test]
    fn each_node_shows_its_role_in_sync_epoch_and_lag_behind_its_primary() {
        let (map, nodes) = groups();
        // n4 is down; n2 is 5 entries behind n1.
        let statuses = vec![
            Some(status("n1", 12)),
            Some(status("n2", 7)),
            Some(status("n3", 3)),
            None,
        ];
        let t = node_table(&nodes, &statuses, Some(&map));
        let text = |s: &str| Value::Text(s.into());
        for (node, role, lag) in [
            ("n1", "primary", Value::Int(0)),
            ("n2", "replica", Value::Int(5)),
            ("n3", "primary", Value::Int(0)),
            ("n4", "replica", Value::Null),
        ] {
            assert_eq!(cell(&t, node, "role"), text(role), "{node}");
            assert_eq!(cell(&t, node, "lag"), lag, "{node}");
            assert_eq!(cell(&t, node, "in_sync"), Value::Bool(true), "{node}");
            assert_eq!(cell(&t, node, "epoch"), Value::Int(1), "{node}");
        }
        // Without a report from the primary, a replica's lag in milliseconds is unknown.
        assert_eq!(cell(&t, "n2", "lag_ms"), Value::Null);
        assert_eq!(cell(&t, "n1", "lag_ms"), Value::Int(0));
        // With one, the primary's figures are shown.
        let mut n1 = status("n1", 12);
        n1.replicas.push(crate::protocol::ReplicaProgress {
            node: "n2".into(),
            acked: 9,
            lag: 3,
            lag_ms: 40,
            connected: true,
        });
        let statuses = vec![Some(n1), Some(status("n2", 7)), None, None];
        let t = node_table(&nodes, &statuses, Some(&map));
        assert_eq!(cell(&t, "n2", "lag"), Value::Int(3));
        assert_eq!(cell(&t, "n2", "lag_ms"), Value::Int(40));
        assert_eq!(cell(&t, "n3", "shard"), Value::Int(2));
        // A replica whose primary is down has an unknown lag.
        let statuses = vec![None, Some(status("n2", 7)), None, None];
        let t = node_table(&nodes, &statuses, Some(&map));
        assert_eq!(cell(&t, "n2", "lag"), Value::Null);
    }

    #[test]
    fn a_shard_short_of_in_sync_copies_is_warned_about_and_its_node_shown_out_of_sync() {
        let (mut map, nodes) = groups();
        assert!(copy_warnings(Some(&map)).is_empty());
        let mut m = Some(map);
        let remove = Change::RemoveInSync {
            shard: 2,
            epoch: 1,
            node: "n4".into(),
        };
        ClusterMap::apply(&mut m, &remove).unwrap();
        map = m.unwrap();
        assert_eq!(
            copy_warnings(Some(&map)),
            ["WARNING: shard 2 has 1 of 2 copies in sync (n3)"]
        );
        let t = node_table(&nodes, &[None, None, None, None], Some(&map));
        assert_eq!(cell(&t, "n4", "in_sync"), Value::Bool(false));
        assert_eq!(cell(&t, "n3", "in_sync"), Value::Bool(true));
        assert!(copy_warnings(None).is_empty());
    }

    #[test]
    fn a_primary_that_refuses_writes_is_warned_about_and_a_replica_is_not() {
        let (map, nodes) = groups();
        let mut n1 = status("n1", 4);
        let mut n2 = status("n2", 4);
        n2.write_refusal = Some("node n2 is a replica of shard 1".into());
        let statuses = vec![Some(n1.clone()), Some(n2.clone()), None, None];
        assert!(refusal_warnings(&nodes, &statuses, Some(&map)).is_empty());
        n1.write_refusal = Some("epoch 3 replaced epoch 2".into());
        let statuses = vec![Some(n1), Some(n2), None, None];
        assert_eq!(
            refusal_warnings(&nodes, &statuses, Some(&map)),
            ["WARNING: shard 1's primary n1 refuses writes: epoch 3 replaced epoch 2"]
        );
        assert!(refusal_warnings(&nodes, &statuses, None).is_empty());
    }

    #[test]
    fn below_min_in_sync_the_warning_says_writes_are_refused() {
        let (map, _) = groups();
        let mut m = Some(map);
        if let Some(map) = m.as_mut() {
            map.replication.min_in_sync = 2;
        }
        let remove = Change::RemoveInSync {
            shard: 1,
            epoch: 1,
            node: "n2".into(),
        };
        ClusterMap::apply(&mut m, &remove).unwrap();
        assert_eq!(
            copy_warnings(m.as_ref()),
            ["WARNING: shard 1 has 1 of 2 copies in sync (n1), below replication.min_in_sync 2: its writes are refused"]
        );
    }

    #[test]
    fn without_a_map_a_node_is_its_own_primary_with_nothing_known_of_its_group() {
        let (_, nodes) = groups();
        let t = node_table(&nodes[..1], &[Some(status("n1", 4))], None);
        assert_eq!(cell(&t, "n1", "role"), Value::Text("primary".into()));
        assert_eq!(cell(&t, "n1", "in_sync"), Value::Null);
        assert_eq!(cell(&t, "n1", "epoch"), Value::Null);
        assert_eq!(cell(&t, "n1", "lag"), Value::Int(0));
    }
}
