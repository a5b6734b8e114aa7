//! Which shard each node of the cluster file is on, and which node is each shard's primary.
//!
//! Each shard is a replica group of `replication.factor` nodes. Nodes fill shards in file
//! order: the first `factor` nodes form shard 1, the next `factor` shard 2, and so on; with
//! factor 1 every node is a shard of its own. A node may pin its shard (`shard: 2`); the others
//! fill the lowest shard that the nodes above them have not filled yet, so adding a node at the
//! end of the file never moves the nodes above it. The first node of a shard, in file order, is
//! its primary; the others are its replicas.
//!
//! The assignment is one function shared by validation, which refuses a file where a pinned
//! node lands on a shard the nodes above it already filled, and by the settings, which record
//! it. It never fails on its own: deciding what is wrong is validation's job. A shard with
//! fewer than `factor` nodes is not wrong (the last shard of a file that does not divide
//! evenly, or a shard whose replicas join later): [`short_shards`] names them for a warning.

use std::collections::BTreeMap;

use super::decode::RawNode;
use crate::cluster::ring::ShardId;

/// The shard of each node, in file order: a pinned node takes its shard, any other the lowest
/// shard that has fewer than `factor` nodes above it.
pub(super) fn assign_shards(nodes: &[RawNode], factor: u32) -> Vec<ShardId> {
    let factor = factor.max(1) as usize;
    let mut sizes: BTreeMap<ShardId, usize> = BTreeMap::new();
    let mut next: ShardId = 1;
    let mut shards = Vec::with_capacity(nodes.len());
    for node in nodes {
        let shard = match node.shard {
            Some(pinned) => pinned,
            None => {
                while sizes.get(&next).copied().unwrap_or(0) >= factor {
                    next += 1;
                }
                next
            }
        };
        *sizes.entry(shard).or_default() += 1;
        shards.push(shard);
    }
    shards
}

/// The shards of an assignment with fewer than `factor` nodes, with how many they have.
pub(super) fn short_shards(shards: &[ShardId], factor: u32) -> Vec<(ShardId, usize)> {
    let mut sizes: BTreeMap<ShardId, usize> = BTreeMap::new();
    for s in shards {
        *sizes.entry(*s).or_default() += 1;
    }
    sizes
        .into_iter()
        .filter(|(_, n)| *n < factor as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(shard: Option<ShardId>) -> RawNode {
        RawNode {
            name: "n".into(),
            host: "h".into(),
            rpc_port: 1,
            sql_port: 2,
            data_dir: None,
            ssh: None,
            shard,
        }
    }

    #[test]
    fn unpinned_nodes_fill_the_lowest_free_shards_in_file_order() {
        let nodes = [None, Some(2), None, None, Some(9)].map(node);
        assert_eq!(assign_shards(&nodes, 1), vec![1, 2, 3, 4, 9]);
    }

    #[test]
    fn a_pin_counts_only_for_the_nodes_below_it() {
        // n1 takes shard 1 before n2 pins it: both on 1, which validation refuses.
        let nodes = [None, Some(1), None].map(node);
        assert_eq!(assign_shards(&nodes, 1), vec![1, 1, 2]);
    }

    #[test]
    fn the_first_factor_nodes_form_shard_1_and_so_on() {
        let nodes = [None; 6].map(node);
        assert_eq!(assign_shards(&nodes, 2), vec![1, 1, 2, 2, 3, 3]);
        assert_eq!(assign_shards(&nodes, 3), vec![1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn a_file_that_does_not_divide_evenly_leaves_the_last_shard_short() {
        let nodes = [None; 5].map(node);
        let shards = assign_shards(&nodes, 2);
        assert_eq!(shards, vec![1, 1, 2, 2, 3]);
        assert_eq!(short_shards(&shards, 2), vec![(3, 1)]);
        assert!(short_shards(&shards, 1).is_empty());
    }

    #[test]
    fn pinned_nodes_count_towards_their_shard_and_the_others_fill_around_them() {
        // n2 pins shard 1 (joining n1), n3 pins shard 3: the unpinned fill 2, then 3, then 4.
        let nodes = [None, Some(1), Some(3), None, None, None, None].map(node);
        let shards = assign_shards(&nodes, 2);
        assert_eq!(shards, vec![1, 1, 3, 2, 2, 3, 4]);
        assert_eq!(short_shards(&shards, 2), vec![(4, 1)]);
        // A pin may overfill a shard: validation refuses that.
        let nodes = [None, None, Some(1)].map(node);
        assert_eq!(assign_shards(&nodes, 2), vec![1, 1, 1]);
    }
}
