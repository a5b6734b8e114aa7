//! The map a new cluster starts with, made from its cluster file.
//!
//! `ddb init` builds it and proposes it as [`Change::Init`](crate::cluster::map::Change::Init).
//! It is built here rather than in `cluster/` because the map must know nothing of the file:
//! nodes never read `cluster.yaml` (DESIGN §3), and `config` depends on `cluster`, never the
//! other way round.

use std::collections::BTreeMap;

use super::settings::ClusterConfig;
use crate::cluster::map::{ClusterMap, NodeInfo, ShardInfo, ShardState};
use crate::cluster::ring::Ring;

impl ClusterConfig {
    /// The first map of the cluster `cluster_id`: one shard per node of the file (factor 1),
    /// each at epoch 1 with that node as primary, and on the ring with `vnodes` tokens, added in
    /// shard order. Raft ids follow file order from 1, so the first nodes of the file are the
    /// voters. The version is 0; applying the change makes it 1.
    pub fn initial_map(&self, cluster_id: String) -> ClusterMap {
        let mut nodes = BTreeMap::new();
        let mut shards = BTreeMap::new();
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
            shards.insert(
                n.shard,
                ShardInfo {
                    epoch: 1,
                    primary: n.name.clone(),
                    replicas: Vec::new(),
                    state: ShardState::Active,
                },
            );
        }
        let ring = Ring::with_shards(shards.keys().copied(), self.vnodes);
        ClusterMap {
            cluster_id,
            name: self.name.clone(),
            version: 0,
            factor: self.factor,
            mode: self.mode,
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
}
