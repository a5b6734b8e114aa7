//! The shard side of a gateway transaction: runs row operations sent by other nodes.
//!
//! Each gateway connection keeps its own table of participant transactions, by the gateway's
//! transaction id. They all use the gateway's age. A transaction ends with the gateway's
//! `Commit` or `Rollback`. If the gateway's connection closes (the gateway crashed or went
//! away), its participant transactions are dropped and rolled back, so nothing stays locked.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Node;
use crate::error::{sqlstate, Error, Result};
use crate::protocol::Response;
use crate::sql::expr::Context;
use crate::sql::router::{key_token, ShardOp, ShardReply, ShardRequest};
use crate::sql::rows::scan_local;
use crate::txn::{Intent, Transaction};

/// The participant transactions of one gateway connection.
pub type Participants = Arc<Mutex<Table>>;

/// How many ended transaction ids a connection remembers (to refuse late operations).
const ENDED_MEMORY: usize = 100_000;

/// Open participant transactions by gateway transaction id, and the ids that have ended.
#[derive(Default)]
pub struct Table {
    open: HashMap<u64, Arc<tokio::sync::Mutex<Transaction>>>,
    /// Ids that were committed or rolled back: an operation that arrives late for one of them
    /// (it was overtaken by the end on the connection) must not open a new transaction.
    ended: BTreeSet<u64>,
}

/// Handles one shard request.
pub async fn handle(node: &Node, txns: &Participants, req: ShardRequest) -> Response {
    match run(node, txns, req).await {
        Ok(reply) => Response::Shard(reply),
        Err(e) => Response::Error(e),
    }
}

fn poisoned() -> Error {
    Error::Internal("participant table lock poisoned".into())
}

async fn run(node: &Node, txns: &Participants, req: ShardRequest) -> Result<ShardReply> {
    // Ending a transaction comes first, before anything that waits: it must not be overtaken.
    if matches!(req.op, ShardOp::Commit | ShardOp::Rollback) {
        let txn = {
            let mut table = txns.lock().map_err(|_| poisoned())?;
            table.ended.insert(req.txn);
            while table.ended.len() > ENDED_MEMORY {
                table.ended.pop_first();
            }
            table.open.remove(&req.txn)
        };
        if matches!(req.op, ShardOp::Rollback) {
            // Dropping the last handle rolls back (an operation still running holds one).
            return Ok(ShardReply::Done);
        }
        let Some(txn) = txn else {
            return Err(Error::serialization(format!(
                "transaction {} was already rolled back on shard {}",
                req.txn, req.shard
            )));
        };
        let txn = Arc::try_unwrap(txn)
            .map_err(|_| Error::Internal("a participant transaction is still in use".into()))?
            .into_inner();
        txn.commit().await?;
        return Ok(ShardReply::Done);
    }

    let meta = node
        .meta()
        .ok_or_else(|| Error::Refused(format!("node {} is not part of a cluster", node.name)))?;
    let mut map = meta
        .map()
        .ok_or_else(|| Error::Refused("the cluster is not formed yet".into()))?;
    if map.version < req.map_version {
        meta.wait_for_version(req.map_version, Duration::from_secs(2))
            .await;
        map = meta.map().unwrap_or(map);
    }
    let me = &meta.identity.node_name;
    let my_shard = map.node(me).map(|n| n.shard);
    let primary = my_shard
        .and_then(|s| map.shards.get(&s))
        .is_some_and(|s| &s.primary == me);
    let wrong = ShardReply::WrongShard {
        version: map.version,
    };
    if my_shard != Some(req.shard) || !primary {
        return Ok(wrong);
    }
    let owns = |key: &[u8]| key_token(key).and_then(|t| map.shard_of_token(t)) == my_shard;

    let txn = {
        let mut table = txns.lock().map_err(|_| poisoned())?;
        if table.ended.contains(&req.txn) {
            return Err(Error::serialization(format!(
                "transaction {} has already ended",
                req.txn
            )));
        }
        table
            .open
            .entry(req.txn)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(node.db.txns.begin(Some(req.age)))))
            .clone()
    };
    let mut txn = txn.lock().await;
    match req.op {
        ShardOp::Get { table, key, intent } => {
            if !owns(&key) {
                return Ok(wrong);
            }
            Ok(ShardReply::Row(txn.get(table, &key, intent).await?))
        }
        ShardOp::Scan {
            table,
            intent,
            filter,
            params,
            now,
        } => {
            let ctx = Context {
                params: &params,
                now,
            };
            Ok(ShardReply::Rows(
                scan_local(&mut txn, table, intent, filter.as_ref(), &ctx).await?,
            ))
        }
        ShardOp::ScanPushdown {
            table,
            filter,
            push,
            params,
            now,
        } => {
            let ctx = Context {
                params: &params,
                now,
            };
            let rows = scan_local(&mut txn, table, Intent::Read, filter.as_ref(), &ctx).await?;
            Ok(ShardReply::Values(
                push.apply(rows.into_iter().map(|(_, r)| r).collect(), &ctx)?,
            ))
        }
        ShardOp::Put { table, key, value } => {
            if !owns(&key) {
                return Ok(wrong);
            }
            txn.put(table, key, value).await?;
            check_table(node, table)?;
            Ok(ShardReply::Done)
        }
        ShardOp::Delete { table, key } => {
            if !owns(&key) {
                return Ok(wrong);
            }
            txn.delete(table, key).await?;
            check_table(node, table)?;
            Ok(ShardReply::Done)
        }
        ShardOp::Commit | ShardOp::Rollback => Ok(ShardReply::Done),
    }
}

/// A write to a table that was dropped meanwhile is refused (its rows would outlive it).
fn check_table(node: &Node, table: u32) -> Result<()> {
    if node.db.catalog.contains_id(table)? {
        Ok(())
    } else {
        Err(Error::sql(
            sqlstate::UNDEFINED_TABLE,
            format!("table {table} was dropped"),
        ))
    }
}
