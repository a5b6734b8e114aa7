//! The gateway's connections to the other nodes, and one shard request over them.
//!
//! A gateway keeps one RPC connection per peer, opened on first use and reopened after a
//! failure; many transactions share it (requests carry ids, so they interleave). A shard
//! request that gets no answer within `PEER_CALL_TIMEOUT` (30 s) fails as unreachable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::{Request, Response, ShardReply, ShardRequest};

/// How long the gateway waits to connect to another shard's primary.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// RPC connections to the other nodes, one per node, reopened after a failure.
#[derive(Default)]
pub struct Peers {
    clients: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
}

impl Peers {
    /// The connection to `addr`, opened (and kept) on first use, as a peer of the cluster
    /// with id `cluster_id` (a node of another cluster refuses it).
    pub async fn get(&self, addr: &str, cluster_id: &str) -> Result<Arc<Client>> {
        if let Some(c) = self.clients.lock().await.get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        // Connect without holding the pool: a dead node must not stall connections to others.
        let c = Arc::new(Client::connect_peer(addr, PEER_CONNECT_TIMEOUT, cluster_id).await?);
        let mut clients = self.clients.lock().await;
        match clients.get(addr) {
            // Another task connected meanwhile: use one connection.
            Some(existing) if !existing.is_closed() => Ok(existing.clone()),
            _ => {
                clients.insert(addr.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    /// Drops the connection to `addr` (it failed); the next use reconnects.
    pub async fn forget(&self, addr: &str) {
        self.clients.lock().await.remove(addr);
    }
}

/// How long a shard may take to answer one row operation before the statement gives up.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one shard request and waits (at most `PEER_CALL_TIMEOUT`, 30 s) for the answer.
pub async fn call(client: &Client, req: ShardRequest) -> Result<ShardReply> {
    let reply = tokio::time::timeout(PEER_CALL_TIMEOUT, client.call(Request::Shard(req)))
        .await
        .map_err(|_| {
            Error::Unreachable(format!(
                "no answer within {} s",
                PEER_CALL_TIMEOUT.as_secs()
            ))
        })?;
    match reply? {
        Response::Shard(r) => Ok(r),
        other => Err(Error::Corrupt(format!(
            "unexpected answer from a shard: {other:?}"
        ))),
    }
}

/// Names the shard and node in an unreachable error.
pub fn unreachable(shard: ShardId, node: &str, e: Error) -> Error {
    match e {
        Error::Unreachable(msg) => {
            Error::Unreachable(format!("shard {shard} is unavailable (node {node}): {msg}"))
        }
        other => other,
    }
}
