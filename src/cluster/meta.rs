//! The node's view of the cluster: its identity, its member of the map's Raft group, and
//! `propose`, the one way to change the map.
//!
//! A node joins a cluster once (`ddb init` sends it its [`Identity`]); the identity is persisted,
//! so after a restart the node rejoins its group by itself. Every change to the map is
//! proposed with [`Meta::propose`] on any node: the leader appends it to the Raft log, a
//! follower forwards it to the leader, and the call returns once the change is applied on
//! this node too, so the caller sees its own change.
//!
//! This module knows nothing of sockets: the Raft network and the forwarding of proposals are
//! handed in by the server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, RaftNetworkFactory, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::map::{Change, ClusterMap};
use super::raft::{LogStore, NodeId, Raft, StateMachine, TypeConfig};
use crate::error::{Error, Result};
use crate::storage::{Engine, Space, Write};

const IDENTITY_KEY: &[u8] = b"cluster_identity";

/// How long a proposal may take before its outcome is reported unknown.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a node is in its cluster. Persisted when the node joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub cluster_name: String,
    pub node_name: String,
    pub raft_id: NodeId,
}

impl Identity {
    /// The identity stored in the engine, if the node has joined a cluster.
    pub fn load(engine: &dyn Engine) -> Result<Option<Self>> {
        match engine.get(Space::Meta, IDENTITY_KEY)? {
            None => Ok(None),
            Some(b) => Ok(Some(postcard::from_bytes(&b)?)),
        }
    }

    /// Stores the identity durably.
    pub fn save(&self, engine: &dyn Engine) -> Result<()> {
        let bytes = postcard::to_stdvec(self).map_err(|e| Error::Internal(e.to_string()))?;
        engine.write(vec![Write::Put(Space::Meta, IDENTITY_KEY.to_vec(), bytes)])?;
        engine.persist()
    }
}

/// Sends a proposal to another node (the leader) and returns the map version it produced.
pub type Forward = Arc<dyn Fn(String, Change) -> BoxFuture<'static, Result<u64>> + Send + Sync>;

/// A node's membership in the cluster.
pub struct Meta {
    pub identity: Identity,
    pub raft: Raft,
    map: watch::Receiver<Option<Arc<ClusterMap>>>,
    forward: Forward,
}

/// The Raft timing: a leader that stops sending heartbeats is replaced within about two seconds.
fn raft_config(cluster: &str) -> Result<Arc<Config>> {
    let config = Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| {
        Error::Internal(format!("raft config: {e}"))
    })?))
}

impl Meta {
    /// Starts this node's member of the map's Raft group.
    pub async fn start<N>(
        identity: Identity,
        engine: Arc<dyn Engine>,
        network: N,
        forward: Forward,
    ) -> Result<Arc<Self>>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let (publish, map) = watch::channel(None);
        super::upgrade::upgrade(engine.as_ref())?;
        let log = LogStore::open(engine.clone())?;
        let sm = StateMachine::open(engine, publish)?;
        let raft = Raft::new(
            identity.raft_id,
            raft_config(&identity.cluster_id)?,
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| Error::Internal(format!("cannot start raft: {e}")))?;
        Ok(Arc::new(Self {
            identity,
            raft,
            map,
            forward,
        }))
    }

    /// The current map on this node (None until the cluster is formed).
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.map.borrow().clone()
    }

    /// A receiver that sees every new map.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ClusterMap>>> {
        self.map.clone()
    }

    /// This node's role in the Raft group: `leader`, `follower`, `learner` or `candidate`.
    pub fn role(&self) -> &'static str {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "unknown",
        }
    }

    /// Initialises the Raft group with `voters` (only on the first node of a new cluster; a
    /// group that is already initialised is left as it is).
    pub async fn initialize(&self, voters: BTreeMap<NodeId, BasicNode>) -> Result<()> {
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Internal(format!("cannot initialise raft: {e}"))),
        }
    }

    /// Adds a non-voting member that receives every change.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<()> {
        // Blocking: it returns once the learner has caught up, so bound the wait.
        match tokio::time::timeout(
            PROPOSE_TIMEOUT,
            self.raft
                .add_learner(id, BasicNode::new(addr.clone()), true),
        )
        .await
        {
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| Error::Unreachable(format!("cannot add learner {id} at {addr}: {e}"))),
            Err(_) => Err(Error::Timeout(format!(
                "learner {id} at {addr} did not catch up in time"
            ))),
        }
    }

    /// Proposes a change to the map and waits until it is applied on this node. Returns the map
    /// version the change produced. A follower forwards the proposal to the leader.
    pub async fn propose(&self, change: Change) -> Result<u64> {
        let version = tokio::time::timeout(PROPOSE_TIMEOUT, self.propose_inner(change))
            .await
            .map_err(|_| Error::Timeout("the cluster map did not accept the change in time (no Raft quorum?); its outcome is unknown".into()))??;
        self.wait_for_version(version, Duration::from_secs(5)).await;
        Ok(version)
    }

    async fn propose_inner(&self, change: Change) -> Result<u64> {
        loop {
            match self.raft.client_write(change.clone()).await {
                Ok(resp) => return resp.data,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    match fwd.leader_node {
                        Some(node) => match (self.forward)(node.addr, change.clone()).await {
                            // The leader could not be reached, so it never saw the change: a new
                            // leader is being elected; try again.
                            Err(Error::Unreachable(e)) => {
                                tracing::debug!("leader unreachable, retrying the proposal: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            other => return other,
                        },
                        None => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                Err(e) => return Err(Error::Unreachable(format!("cluster map: {e}"))),
            }
        }
    }

    /// Proposes on this node only, as the leader (for forwarded proposals): a node that is not
    /// the leader forwards again.
    pub async fn propose_forwarded(&self, change: Change) -> Result<u64> {
        tokio::time::timeout(PROPOSE_TIMEOUT, self.propose_inner(change))
            .await
            .map_err(|_| {
                Error::Timeout("the cluster map did not accept the change in time".into())
            })?
    }

    /// Waits until this node's map reaches `version` (or the timeout passes).
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> bool {
        let mut rx = self.map.clone();
        let reached =
            |m: &Option<Arc<ClusterMap>>| m.as_ref().is_some_and(|m| m.version >= version);
        let ok = tokio::time::timeout(timeout, rx.wait_for(reached))
            .await
            .is_ok_and(|r| r.is_ok());
        ok
    }

    /// Stops the Raft member.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
