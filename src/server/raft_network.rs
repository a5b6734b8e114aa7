//! The map's Raft messages over ddb's internal RPC, and the forwarding of proposals to the
//! leader.
//!
//! Each peer gets one lazily opened RPC connection; a failed call drops it, so the next call
//! reconnects. Failures are reported to openraft as `Unreachable`, which makes it back off and
//! retry; a peer that answers with a Raft error is reported as a remote error.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::client::Client;
use crate::cluster::map::Change;
use crate::cluster::meta::Forward;
use crate::cluster::raft::{NodeId, TypeConfig};
use crate::error::{Error, Result};
use crate::protocol::{RaftRequest, RaftResponse, Request, Response};

/// How long to wait for a peer to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Makes a [`Peer`] for each member openraft talks to.
pub struct Network {
    /// The cluster id sent in every handshake, so a peer of another cluster refuses.
    pub cluster_id: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            cluster_id: self.cluster_id.clone(),
            client: None,
        }
    }
}

/// The connection to one Raft peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    cluster_id: String,
    client: Option<Client>,
}

type RpcResult<T, E = RaftError<NodeId>> = std::result::Result<T, RPCError<NodeId, BasicNode, E>>;

impl Peer {
    async fn call<E: std::error::Error>(
        &mut self,
        req: RaftRequest,
        ttl: Duration,
    ) -> RpcResult<RaftResponse, E> {
        if self.client.is_none() {
            let client = Client::connect_peer(&self.addr, CONNECT_TIMEOUT, &self.cluster_id)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            self.client = Some(client);
        }
        let Some(client) = &self.client else {
            return Err(RPCError::Unreachable(Unreachable::new(&Error::Internal(
                "no client".into(),
            ))));
        };
        let result = tokio::time::timeout(ttl, client.call(Request::Raft(req))).await;
        match result {
            Ok(Ok(Response::Raft(r))) => Ok(r),
            Ok(Ok(other)) => Err(RPCError::Network(NetworkError::new(&Error::Corrupt(
                format!("unexpected answer {other:?}"),
            )))),
            Ok(Err(e)) => {
                self.client = None;
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(_) => {
                self.client = None;
                Err(RPCError::Unreachable(Unreachable::new(&Error::Timeout(
                    format!("{} did not answer", self.addr),
                ))))
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&Error::Corrupt(
            "mismatched raft response".into(),
        )))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self
            .call(RaftRequest::Append(rpc), option.hard_ttl())
            .await?
        {
            RaftResponse::Append(Ok(r)) => Ok(r),
            RaftResponse::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self
            .call(RaftRequest::Snapshot(rpc), option.hard_ttl())
            .await?
        {
            RaftResponse::Snapshot(Ok(r)) => Ok(r),
            RaftResponse::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await? {
            RaftResponse::Vote(Ok(r)) => Ok(r),
            RaftResponse::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// Forwards proposals to another node over RPC.
pub fn forwarder(cluster_id: String) -> Forward {
    Arc::new(move |addr: String, change: Change| {
        let cluster_id = cluster_id.clone();
        Box::pin(async move {
            // A connection that cannot be made never carried the proposal: the caller may retry.
            let client = Client::connect_peer(&addr, Duration::from_secs(2), &cluster_id).await?;
            match client.call(Request::Propose(change)).await {
                Ok(Response::Proposed(v)) => Ok(v),
                Ok(other) => Err(Error::Corrupt(format!(
                    "unexpected answer to a proposal: {other:?}"
                ))),
                // Sent, but no answer: it may or may not have been applied.
                Err(Error::Unreachable(e)) => Err(Error::Timeout(format!(
                    "the leader stopped answering; the change's outcome is unknown: {e}"
                ))),
                Err(e) => Err(e),
            }
        }) as futures::future::BoxFuture<'static, Result<u64>>
    })
}
