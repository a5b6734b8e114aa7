//! The node's side of cluster membership: joining, forming the cluster, and following the map.

use std::sync::Arc;
use std::time::Duration;

use super::node::Node;
use super::raft_network::{forwarder, Network};
use crate::cluster::map::{Change, ClusterMap};
use crate::cluster::meta::{Identity, Meta};
use crate::cluster::raft::members;
use crate::error::{Error, Result};

/// Starts the node's member of the map's Raft group and makes the catalog follow the map.
pub async fn start_member(node: &Arc<Node>, identity: Identity) -> Result<Arc<Meta>> {
    let engine = node.db.txns.store.engine.clone();
    let network = Network {
        cluster_id: identity.cluster_id.clone(),
    };
    let forward = forwarder(identity.cluster_id.clone());
    node.db.txns.set_node_tag(identity.raft_id);
    let meta = Meta::start(identity, engine, network, forward).await?;
    node.db.join_cluster(meta.clone())?;
    let db = node.db.clone();
    let mut rx = meta.subscribe();
    let member = node.clone();
    tokio::spawn(async move {
        loop {
            let map = rx.borrow_and_update().clone();
            if let Some(map) = map {
                // The store's mode and the replication drivers first: nothing is committed
                // in a replicated cluster before the store keeps a replicated log.
                if let Err(e) = member.repl.follow(&member.db, &map).await {
                    tracing::error!("replication cannot follow map version {}: {e}", map.version);
                }
                // Retry until the catalog follows (a drop may wait for long transactions), or
                // a newer map supersedes this one.
                while let Err(e) = db.follow_map(&map).await {
                    tracing::warn!(
                        "cannot apply map version {} to the catalog yet: {e}",
                        map.version
                    );
                    if rx.has_changed().unwrap_or(true) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    tracing::info!(cluster = %meta.identity.cluster_name, raft_id = meta.identity.raft_id, "member of the cluster map group");
    Ok(meta)
}

/// Joins this node to a cluster (idempotent for the same identity).
pub async fn join(node: &Arc<Node>, identity: Identity) -> Result<()> {
    let _guard = node.join_lock.lock().await;
    if let Some(meta) = node.meta() {
        if meta.identity == identity {
            return Ok(());
        }
        return Err(Error::Refused(format!(
            "node {} already belongs to cluster '{}' (as {}); use an empty data directory for a new cluster",
            node.name, meta.identity.cluster_name, meta.identity.node_name
        )));
    }
    if !node.db.catalog.table_names()?.is_empty() {
        return Err(Error::Refused(format!(
            "node {} has tables of its own (it ran standalone); use an empty data directory to join a cluster",
            node.name
        )));
    }
    identity.save(node.db.txns.store.engine.as_ref())?;
    start_member(node, identity).await?;
    Ok(())
}

/// Forms the cluster on this node (the first voter): initialises the Raft group, commits the
/// initial map, and adds the other nodes as learners. Safe to repeat.
pub async fn initialize(node: &Arc<Node>, map: ClusterMap) -> Result<()> {
    let meta = node
        .meta()
        .cloned()
        .ok_or_else(|| Error::Refused("the node has not joined a cluster".into()))?;
    if meta.map().is_none() {
        meta.initialize(members(&map)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        // Wait for a leader (this node, unless another voter won the first election).
        loop {
            if meta.raft.metrics().borrow().current_leader.is_some() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(
                    "no Raft leader was elected; are the voters reachable?".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match meta.propose(Change::Init(Box::new(map.clone()))).await {
            Ok(_) => {}
            // Another init won the race: the cluster is formed.
            Err(Error::Refused(_)) if meta.map().is_some() => {}
            Err(e) => return Err(e),
        }
    }
    let map = meta
        .map()
        .ok_or_else(|| Error::Internal("no map after init".into()))?;
    let voters = map.voters();
    let membership = meta.raft.metrics().borrow().membership_config.clone();
    for n in map.nodes.values().filter(|n| !voters.contains(&n.raft_id)) {
        let known = membership.nodes().any(|(id, _)| *id == n.raft_id);
        if !known {
            meta.add_learner(n.raft_id, n.rpc_addr.clone()).await?;
        }
    }
    Ok(())
}
