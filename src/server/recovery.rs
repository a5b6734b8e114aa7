//! Recovery of two-phase commits: resolving in-doubt transactions and collecting records.
//!
//! One task per node. Every tick it takes the prepared transactions held longer than the
//! prepared timeout (at once for those reloaded at startup, whose gateway is gone) and asks each
//! one's anchor for the outcome; the anchor answers from its record or, with none, writes
//! `ABORTED` first. The outcome is then applied here, which releases the locks. An anchor that
//! does not answer is asked again after another timeout: a prepared transaction never decides
//! on its own.
//!
//! As an anchor, the node also garbage-collects its decision records: a `COMMITTED` record goes
//! once no participant holds the transaction prepared any more (normally the gateway says so
//! right after the commit; this catches gateways that died), and an `ABORTED` record after its
//! retention.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::node::Node;
use crate::cluster::map::ClusterMap;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::gateway::peers::call;
use crate::protocol::{ShardOp, ShardReply, ShardRequest};
use crate::txn::distributed::InDoubt;
use crate::txn::twopc::{Gid, Outcome};

/// How often committed records are checked for collection, and how old they must be.
const GC_INTERVAL: Duration = Duration::from_secs(5);

/// Runs recovery until the node stops.
pub async fn run(node: Arc<Node>, timeout: Duration, mut stop: watch::Receiver<bool>) {
    let period = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gc = Instant::now();
    let collecting = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let Some(map) = node.meta().and_then(|m| m.map()) else {
            continue;
        };
        for doubt in node.db.twopc.in_doubt(timeout) {
            tokio::spawn(resolve(node.clone(), map.clone(), doubt));
        }
        // One collection at a time: against a hung node, its calls take up to their timeout.
        if last_gc.elapsed() >= GC_INTERVAL && !collecting.swap(true, Ordering::AcqRel) {
            last_gc = Instant::now();
            let (node, map, collecting) = (node.clone(), map.clone(), collecting.clone());
            tokio::spawn(async move {
                collect(node, map).await;
                collecting.store(false, Ordering::Release);
            });
        }
    }
}

/// Sends one recovery message about `gid` to the primary of `shard`.
async fn ask(
    node: &Node,
    map: &ClusterMap,
    shard: ShardId,
    gid: Gid,
    op: ShardOp,
) -> Result<ShardReply> {
    let meta = node
        .meta()
        .ok_or_else(|| Error::Internal("recovery outside a cluster".into()))?;
    let (name, info) = map
        .primary(shard)
        .ok_or_else(|| Error::Unreachable(format!("shard {shard} has no primary in the map")))?;
    let client = node
        .db
        .peers
        .get(&info.rpc_addr, &meta.identity.cluster_id)
        .await
        .map_err(|e| Error::Unreachable(format!("shard {shard} (node {name}): {e}")))?;
    let req = ShardRequest {
        txn: gid,
        age: 0,
        shard,
        map_version: map.version,
        placement: map.placement,
        epoch: map.shards.get(&shard).map_or(0, |s| s.epoch),
        lock_timeout_ms: None,
        op,
    };
    let reply = call(&client, req).await;
    if matches!(reply, Err(Error::Unreachable(_))) {
        node.db.peers.forget(&info.rpc_addr).await;
    }
    reply
}

/// Asks the anchor of an in-doubt transaction for its outcome and applies it here.
async fn resolve(node: Arc<Node>, map: Arc<ClusterMap>, doubt: InDoubt) {
    let gid = doubt.gid;
    resolve_once(&node, &map, &doubt).await;
    node.db.twopc.asked(gid);
}

async fn resolve_once(node: &Arc<Node>, map: &ClusterMap, doubt: &InDoubt) {
    let gid = doubt.gid;
    let outcome = match ask(node, map, doubt.anchor, gid, ShardOp::Resolve).await {
        Ok(ShardReply::Outcome(o)) => o,
        Ok(other) => {
            tracing::warn!(
                gid,
                "the anchor answered a resolve with {other:?}; asking again later"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(
                gid,
                anchor = doubt.anchor,
                "cannot resolve an in-doubt transaction yet: {e}"
            );
            return;
        }
    };
    if outcome.is_some() {
        crate::failpoint::crash_point("recovery-before-apply");
    }
    let applied = match outcome {
        None => return,
        Some(Outcome::Committed) => node.db.twopc.commit_prepared(gid).await.map(|_| ()),
        Some(Outcome::Aborted) => node.db.twopc.abort(gid).await,
    };
    match applied {
        Ok(()) => tracing::info!(
            gid,
            ?outcome,
            "resolved an in-doubt transaction with its anchor"
        ),
        Err(e) => tracing::warn!(
            gid,
            "applying the outcome of an in-doubt transaction failed: {e}"
        ),
    }
}

/// Garbage-collects this node's decision records.
async fn collect(node: Arc<Node>, map: Arc<ClusterMap>) {
    let (committed, aborted) = node.db.twopc.gc_candidates(GC_INTERVAL);
    let me = node
        .meta()
        .and_then(|m| map.node(&m.identity.node_name).map(|n| n.shard));
    for (gid, participants) in committed {
        let mut applied_everywhere = true;
        for &shard in participants.iter().filter(|&&s| Some(s) != me) {
            match ask(&node, &map, shard, gid, ShardOp::IsPrepared).await {
                // Only a definite "no longer prepared" from the shard's primary counts.
                Ok(ShardReply::Prepared(false)) => {}
                _ => {
                    applied_everywhere = false;
                    break;
                }
            }
        }
        if applied_everywhere {
            if let Err(e) = node.db.twopc.forget(gid).await {
                tracing::warn!(gid, "cannot delete a decision record: {e}");
            }
        }
    }
    for gid in aborted {
        if let Err(e) = node.db.twopc.forget(gid).await {
            tracing::warn!(gid, "cannot delete a decision record: {e}");
        }
    }
}
