//! Shipping: a statement on one key runs whole on the shard that owns the key.
//!
//! A point statement ([`crate::sql::point`]) touches one row, so one shard. Instead of one round
//! trip per row operation (and one for the commit), the gateway sends the statement itself:
//! an autocommit statement as a [`Request::Execute`] that the owner runs and commits in one
//! RPC, and a statement inside a transaction block as a `ShardOp::Execute` that runs in the
//! transaction's part on that shard. A shipped write whose answer is lost has an unknown
//! outcome (40003): it may have committed there.

use std::time::Duration;

use super::context::Gateway;
use super::txn::{ClusterTxn, Part};
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::{Request, Response, ShardOp, ShardReply};
use crate::sql::backend::Prepared;
use crate::sql::planner::Plan;
use crate::sql::point::point_key;
use crate::storage::keycode::token_of_key;
use crate::types::{Context, QueryResult, Value};

impl Gateway {
    /// The shard a point statement's key belongs to, if it is a point statement whose key
    /// evaluates cleanly here.
    pub fn point_shard(&self, plan: &Plan, ctx: &Context) -> Option<ShardId> {
        let map = self.meta.map()?;
        let key = point_key(plan, ctx)?;
        map.shard_of_token(token_of_key(&key)?)
    }

    /// Where a point statement must run: the shard, its primary's name and RPC address, when
    /// that is another shard than this node's. Anything that does not evaluate cleanly here
    /// runs the ordinary way.
    fn point_target(&self, plan: &Plan, ctx: &Context) -> Option<(ShardId, String, String)> {
        let map = self.meta.map()?;
        let me = map.served_shard(&self.meta.identity.node_name);
        let shard = self.point_shard(plan, ctx)?;
        if Some(shard) == me {
            return None;
        }
        let (node, info) = map.primary(shard)?;
        Some((shard, node.to_string(), info.rpc_addr.clone()))
    }

    /// Runs an autocommit point statement on the shard that owns its key, if that is another
    /// node: its result, or `None` to run it here.
    pub async fn ship(
        &self,
        stmt: &Prepared<'_>,
        ctx: &Context<'_>,
    ) -> Option<Result<QueryResult>> {
        let target = self.point_target(stmt.plan, ctx)?;
        Some(self.ship_to(target, stmt, ctx.params).await)
    }

    /// Runs a statement on another node and returns its result.
    async fn ship_to(
        &self,
        (shard, node, addr): (ShardId, String, String),
        stmt: &Prepared<'_>,
        params: &[Value],
    ) -> Result<QueryResult> {
        let cluster = &self.meta.identity.cluster_id;
        let unavailable = |e: Error| {
            Error::Unreachable(format!("shard {shard} is unavailable (node {node}): {e}"))
        };
        let client = self.peers.get(&addr, cluster).await.map_err(unavailable)?;
        let request = Request::Execute {
            stmt: stmt.stmt.clone(),
            params: params.to_vec(),
            param_types: stmt.param_types.to_vec(),
            catalog_version: self.catalog.version(),
        };
        let reply = match tokio::time::timeout(Duration::from_secs(30), client.call(request)).await
        {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable("no answer within 30 s".into())),
        };
        match reply {
            Ok(Response::Executed(result)) => Ok(result),
            Ok(other) => Err(Error::Corrupt(format!(
                "unexpected answer to a shipped statement: {other:?}"
            ))),
            Err(Error::Unreachable(e)) => {
                self.peers.forget(&addr).await;
                if matches!(stmt.plan, Plan::Select(_)) {
                    Err(unavailable(Error::Unreachable(e)))
                } else {
                    // The statement was sent: it may have committed there.
                    Err(Error::unknown_outcome(format!("lost shard {shard} (node {node}) while it ran the statement; its outcome is unknown: {e}"),
                    ))
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl ClusterTxn {
    /// Runs a point statement whole on another shard, in this transaction's part there.
    pub(super) async fn execute_on(
        &mut self,
        shard: ShardId,
        stmt: &Prepared<'_>,
        ctx: &Context<'_>,
    ) -> Result<QueryResult> {
        if let Part::Local(_) = self.part(shard).await? {
            return Err(Error::Internal(
                "a statement for this node's own shard was sent to execute_on".into(),
            ));
        }
        let op = ShardOp::Execute {
            stmt: stmt.stmt.clone(),
            params: ctx.params.to_vec(),
            param_types: stmt.param_types.to_vec(),
            now: ctx.now,
            catalog_version: self.gw.catalog.version(),
        };
        match self.remote(shard, op).await? {
            ShardReply::Executed { result, wrote } => {
                // A shard where nothing was written stays a reader: it is released at prepare
                // time instead of preparing an empty write set.
                if wrote {
                    self.note_write(shard);
                }
                Ok(result)
            }
            other => Err(Error::Corrupt(format!("unexpected shard reply {other:?}"))),
        }
    }
}
