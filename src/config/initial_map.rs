//! The map a new cluster starts with, made from its cluster file.
//!
//! `ddb init` builds it and proposes it as [`Change::Init`](crate::cluster::map::Change::Init).
//! It is built here rather than in `cluster/` because the map must know nothing of the file:
//! nodes never read `cluster.yaml` (DESIGN §3), and `config` depends on `cluster`, never the
//! other way round.

use std::collections::BTreeMap;

use super::settings::ClusterConfig;
use crate::cluster::map::{ClusterMap, NodeInfo, ShardInfo};
use crate::cluster::ring::Ring;

impl ClusterConfig {
    /// The first map of the cluster `cluster_id`: one replica group per shard of the file, the
    /// first of its nodes in file order its primary and the others its replicas, all of them
    /// in sync at epoch 1 (nothing is committed yet); the shards on the ring with `vnodes`
    /// tokens each, added in shard order. Raft ids follow file order from 1, so the first
    /// nodes of the file are the voters. The version and placement are 0; applying the change
    /// makes them 1.
    pub fn initial_map(&self, cluster_id: String) -> ClusterMap {
        let mut nodes = BTreeMap::new();
        let mut members: BTreeMap<_, Vec<String>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            nodes.insert(
                n.name.clone(),
                NodeInfo {
                    raft_id: i as u64 + 1,
                    rpc_addr: n.rpc_addr(),
                    sql_addr: n.sql_addr(),
                    shard: n.shard,
                },
            );
            members.entry(n.shard).or_default().push(n.name.clone());
        }
        let shards: BTreeMap<_, _> = members
            .into_iter()
            .filter_map(|(id, mut names)| {
                let replicas = names.split_off(1.min(names.len()));
                let primary = names.pop()?;
                Some((id, ShardInfo::new(primary, replicas)))
            })
            .collect();
        let ring = Ring::with_shards(shards.keys().copied(), self.vnodes);
        ClusterMap {
            cluster_id,
            name: self.name.clone(),
            version: 0,
            placement: 0,
            replication: self.replication.clone(),
            vnodes: self.vnodes,
            ring,
            shards,
            nodes,
            tables: BTreeMap::new(),
            next_table_id: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> ClusterConfig {
        let text = "name: demo\nnodes:\n".to_string()
            + &(1..=4)
                .map(|i| {
                    format!(
                        "  - {{ name: n{i}, host: 127.0.0.1, rpc_port: {}, sql_port: {} }}\n",
                        7070 + i,
                        5440 + i
                    )
                })
                .collect::<String>();
        ClusterConfig::parse(&text, Path::new("c.yaml")).unwrap()
    }

    #[test]
    fn the_initial_map_has_one_shard_per_node_and_three_voters() {
        let m = config().initial_map("x".into());
        assert_eq!(m.replication.factor, 1);
        assert!(m
            .shards
            .values()
            .all(|s| s.replicas.is_empty() && s.in_sync == [s.primary.clone()]));
        assert_eq!((m.cluster_id.as_str(), m.name.as_str()), ("x", "demo"));
        assert_eq!(m.shards.len(), 4);
        assert_eq!(m.ring.shards(), vec![1, 2, 3, 4]);
        assert_eq!(m.ring.tokens_of(3).len(), 128);
        assert_eq!(m.voters(), vec![1, 2, 3]);
        assert_eq!(m.primary(2).unwrap().0, "n2");
        assert_eq!(m.node("n4").unwrap().rpc_addr, "127.0.0.1:7074");
    }

    #[test]
    fn the_initial_map_forms_the_cluster_at_version_1() {
        let mut map = None;
        let init = crate::cluster::map::Change::Init(Box::new(config().initial_map("x".into())));
        assert_eq!(ClusterMap::apply(&mut map, &init), Ok(1));
    }

    /// Three shards of two copies, the second pinned: n1 n2 | n3 n5 (n4 pins 3) | n4 n6.
    fn replicated() -> ClusterConfig {
        let pin = |i: u32| if i == 4 { ", shard: 3" } else { "" };
        let text = "name: demo\nreplication: { factor: 2 }\nnodes:\n".to_string()
            + &(1..=6)
                .map(|i| {
                    format!(
                        "  - {{ name: n{i}, host: 127.0.0.1, rpc_port: {}, sql_port: {}{} }}\n",
                        7070 + i,
                        5440 + i,
                        pin(i)
                    )
                })
                .collect::<String>();
        let (config, unbuilt) = ClusterConfig::parse_plan(&text, Path::new("c.yaml")).unwrap();
        assert!(unbuilt.is_none(), "factor 2 runs");
        config
    }

    #[test]
    fn the_initial_map_forms_replica_groups_with_the_first_node_as_primary() {
        let m = replicated().initial_map("x".into());
        assert_eq!(m.shards.len(), 3);
        assert_eq!(m.ring.shards(), vec![1, 2, 3]);
        let group = |id| {
            let s = &m.shards[&id];
            (s.primary.clone(), s.replicas.clone(), s.in_sync.clone())
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            group(1),
            ("n1".into(), names(&["n2"]), names(&["n1", "n2"]))
        );
        assert_eq!(
            group(2),
            ("n3".into(), names(&["n5"]), names(&["n3", "n5"]))
        );
        assert_eq!(
            group(3),
            ("n4".into(), names(&["n6"]), names(&["n4", "n6"]))
        );
        assert_eq!(m.shards[&1].epochs, vec![(1, 1)]);
        assert_eq!((m.replication.factor, m.replication.min_in_sync), (2, 1));
        assert_eq!(m.replication.ack_timeout_ms, 1000);
        assert!(m.short_of_copies().is_empty());
        assert_eq!(m.voters(), vec![1, 2, 3, 4, 5]);
    }
}
