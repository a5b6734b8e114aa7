//! Which shard each node of the cluster file is on.
//!
//! With `replication.factor` 1 every node is a shard of its own. A node may pin its shard
//! (`shard: 2`); the others fill the lowest shards that no node above them has, in file order,
//! so adding a node at the end of the file never moves the nodes above it.
//!
//! The assignment is one function shared by validation, which refuses a file where a pinned
//! node lands on a shard a node above it already has, and by the settings, which record it. It
//! never fails on its own: deciding what is wrong is validation's job.

use std::collections::BTreeSet;

use super::decode::RawNode;
use crate::cluster::ring::ShardId;

/// The shard of each node, in file order: a pinned node takes its shard, any other the lowest
/// shard that no node above it has.
pub(super) fn assign_shards(nodes: &[RawNode]) -> Vec<ShardId> {
    let mut taken = BTreeSet::new();
    let mut next: ShardId = 1;
    let mut shards = Vec::with_capacity(nodes.len());
    for node in nodes {
        let shard = match node.shard {
            Some(pinned) => pinned,
            None => {
                while taken.contains(&next) {
                    next += 1;
                }
                next
            }
        };
        taken.insert(shard);
        shards.push(shard);
    }
    shards
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
        assert_eq!(assign_shards(&nodes), vec![1, 2, 3, 4, 9]);
    }

    #[test]
    fn a_pin_counts_only_for_the_nodes_below_it() {
        // n1 takes shard 1 before n2 pins it: both on 1, which validation refuses.
        let nodes = [None, Some(1), None].map(node);
        assert_eq!(assign_shards(&nodes), vec![1, 1, 2]);
    }
}
