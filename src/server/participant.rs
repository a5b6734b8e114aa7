//! The shard side of a gateway transaction: runs row operations and two-phase commit messages
//! sent by other nodes.
//!
//! Participant transactions live in the node's [`TwoPhase`] table, by the gateway's
//! transaction id (unique in the cluster), and use the gateway's age. Each gateway connection
//! remembers the ids it opened: if the connection closes (the gateway crashed or went away),
//! those that are still open are rolled back, so nothing stays locked. A transaction that has
//! prepared is no longer the connection's: it waits for its outcome from the gateway or, past
//! a timeout, from its anchor (see `server::recovery`).
//!
//! Every message carries the shard, its epoch, and the map version and placement the sender
//! routed with (DESIGN §3). What fences a message is **placement and epoch**, never the map
//! version:
//!
//! * A message for a shard this node is not the primary of, or under another epoch, is refused
//!   (`WrongShard`), whatever it is.
//! * A message routed under another placement (who serves which keys has changed since) is
//!   refused, except the ones that apply a decision already made (rollback, the second phase,
//!   recovery's questions): a row operation, a prepare, an anchor's commit, a one-phase commit.
//!   So is a row operation for a key this node does not own.
//! * A newer map version at the sender (a `CREATE TABLE`, an in-sync change) refuses nothing:
//!   this node waits to have that map and its catalog, then goes on. A newer version here than
//!   at the sender refuses nothing either. That is what lets a multi-shard transaction commit
//!   across DDL run from another session.
//!
//! This node's own part of a gateway transaction is checked per operation only: it shares the
//! gateway's map.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::node::Node;
use crate::error::{sqlstate, Error, Result};
use crate::protocol::Response;
use crate::protocol::{ShardOp, ShardReply, ShardRequest};
use crate::sql::local::Local;
use crate::sql::point::execute_point;
use crate::sql::rows::scan_batch_local;
use crate::storage::keycode::token_of_key;
use crate::txn::twopc::Gid;
use crate::txn::{BatchLimit, Transaction, TwoPhase};
use crate::types::Context;

/// The largest scan batch a shard serves in one reply, whatever a gateway asks for.
const MAX_BATCH: BatchLimit = BatchLimit {
    rows: 65_536,
    bytes: 4 * 1024 * 1024,
};

/// How many ended transaction ids a connection remembers (to refuse late operations).
const ENDED_MEMORY: usize = 100_000;

/// The participant transactions one gateway connection opened.
pub type Participants = Arc<Conn>;

/// What one gateway connection opened, and which of its ids have ended.
pub struct Conn {
    twopc: Arc<TwoPhase>,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    opened: HashSet<Gid>,
    /// Ids that were committed, prepared or rolled back: an operation that arrives late for one
    /// of them (it was overtaken on the connection) must not open a new transaction.
    ended: BTreeSet<Gid>,
}

impl Conn {
    /// The table of a new connection.
    pub fn new(twopc: Arc<TwoPhase>) -> Participants {
        Arc::new(Conn {
            twopc,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `gid` ended on this connection and takes its open transaction.
    fn end(&self, gid: Gid) -> Option<Transaction> {
        {
            let mut st = self.state();
            st.opened.remove(&gid);
            st.ended.insert(gid);
            while st.ended.len() > ENDED_MEMORY {
                st.ended.pop_first();
            }
        }
        let txn = self.twopc.take_open(gid)?;
        // An operation still running holds the other handle; it ends with the transaction.
        Arc::try_unwrap(txn).ok().map(|m| m.into_inner())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for gid in std::mem::take(&mut self.state().opened) {
            drop(self.twopc.take_open(gid));
        }
    }
}

/// Handles one shard request.
pub async fn handle(node: &Node, conn: &Participants, req: ShardRequest) -> Response {
    match run(node, conn, req).await {
        Ok(reply) => Response::Shard(reply),
        Err(e) => Response::Error(e),
    }
}

fn still_in_use(gid: Gid) -> Error {
    Error::serialization(format!(
        "transaction {gid} cannot prepare on this shard: it was rolled back, or an operation of it is still running"
    ))
}

async fn run(node: &Node, conn: &Participants, req: ShardRequest) -> Result<ShardReply> {
    let twopc = &node.db.twopc;
    let gid = req.txn;
    let meta = node
        .meta()
        .ok_or_else(|| Error::Refused(format!("node {} is not part of a cluster", node.name)))?;
    let mut map = meta
        .map()
        .ok_or_else(|| Error::Refused("the cluster is not formed yet".into()))?;
    // Every message is for the primary of its shard under the epoch the sender knows. A
    // different epoch means one side has a stale map: refuse, and let the sender find out.
    let me = &meta.identity.node_name;
    let fenced = match map.shards.get(&req.shard) {
        Some(s) => s.epoch != req.epoch || &s.primary != me,
        None => true,
    };
    if fenced {
        if matches!(
            req.op,
            ShardOp::Commit | ShardOp::Rollback | ShardOp::Release
        ) {
            // The gateway takes a refused commit as definite: make it so. A rollback ends the
            // part too: an open part left here would keep its locks.
            drop(conn.end(gid));
        }
        return Ok(ShardReply::WrongShard {
            version: map.version,
        });
    }

    // Ending a transaction, and the messages of recovery, come first, before anything that
    // waits: they must not be overtaken, and they apply decisions already made.
    match &req.op {
        ShardOp::Rollback => {
            drop(conn.end(gid));
            twopc.abort(gid).await?;
            return Ok(ShardReply::Done);
        }
        ShardOp::Release => {
            drop(conn.end(gid));
            // A shard being handed over refuses reads from the proposal on: what this part
            // read may be older than a write the next primary has taken.
            if let Some(refusal) = node.db.txns.store.committer.read_refusal() {
                return Err(refusal);
            }
            return Ok(ShardReply::Done);
        }
        ShardOp::Commit => {
            let txn = conn.end(gid);
            if map.placement != req.placement {
                // Routed under another placement: the keys it wrote may no longer be ours.
                // Dropping the part rolls it back, so the refusal is definite.
                drop(txn);
                return Ok(ShardReply::WrongShard {
                    version: map.version,
                });
            }
            let txn = txn.ok_or_else(|| {
                Error::serialization(format!(
                    "transaction {gid} was already rolled back on shard {}",
                    req.shard
                ))
            })?;
            txn.commit().await?;
            return Ok(ShardReply::Done);
        }
        ShardOp::CommitPrepared => {
            crate::failpoint::crash_point("participant-after-commit-received");
            twopc.commit_prepared(gid).await?;
            return Ok(ShardReply::Done);
        }
        ShardOp::Resolve => return Ok(ShardReply::Outcome(twopc.resolve(gid).await?)),
        ShardOp::IsPrepared => return Ok(ShardReply::Prepared(twopc.is_prepared(gid))),
        ShardOp::Forget => {
            twopc.forget(gid).await?;
            return Ok(ShardReply::Done);
        }
        _ => {}
    }
    // A restarted primary whose log tail is not applied yet would read rows that miss
    // acknowledged commits (57P03 until it is; nothing was done).
    if let Some(refusal) = node.db.txns.store.committer.read_refusal() {
        return Err(refusal);
    }

    // A sender with a newer map (a table it just created, a new placement) is waited for, so
    // that both sides judge the request by the same map.
    if map.version < req.map_version {
        meta.wait_for_version(req.map_version, Duration::from_secs(2))
            .await;
        map = meta.map().unwrap_or(map);
    }
    // The catalog follows the map a moment later: a table the gateway already knows must not
    // look dropped here. Waiting for it refuses nothing unless it never comes.
    node.db.catch_up_catalog(req.map_version).await?;
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
    // Routed under another placement: what the sender believes about who serves which keys is
    // not what this node believes, so nothing it asks (a read, a write set) is known to be ours.
    let moved = map.placement != req.placement;

    match req.op {
        ShardOp::Prepare {
            anchor,
            participants,
        } => {
            let txn = conn.end(gid);
            if moved {
                return Ok(wrong);
            }
            let txn = txn.ok_or_else(|| still_in_use(gid))?;
            twopc.prepare(gid, txn, anchor, participants).await?;
            return Ok(ShardReply::Done);
        }
        ShardOp::CommitAnchor { participants } => {
            let txn = conn.end(gid);
            if moved {
                return Ok(wrong);
            }
            let txn = txn.ok_or_else(|| {
                Error::serialization(format!(
                    "transaction {gid} was already rolled back on its anchor shard {}",
                    req.shard
                ))
            })?;
            twopc.commit_anchor(gid, txn, participants, None).await?;
            return Ok(ShardReply::Done);
        }
        _ => {}
    }
    if moved {
        return Ok(wrong);
    }

    let owns = |key: &[u8]| token_of_key(key).and_then(|t| map.shard_of_token(t)) == my_shard;
    let txn = {
        let mut st = conn.state();
        if st.ended.contains(&gid) {
            return Err(Error::serialization(format!(
                "transaction {gid} has already ended"
            )));
        }
        if matches!(
            req.op,
            ShardOp::Savepoint { .. } | ShardOp::RollbackTo { .. }
        ) {
            // A savepoint belongs to the part's writes so far: a part that is gone (rolled
            // back) must not be replaced by an empty one that the gateway would commit.
            match twopc.get_open(gid) {
                Some(txn) if st.opened.contains(&gid) => txn,
                _ => {
                    return Err(Error::serialization(format!(
                        "transaction {gid} is no longer open on shard {}; roll it back",
                        req.shard
                    )))
                }
            }
        } else {
            st.opened.insert(gid);
            twopc.open(gid, req.age)
        }
    };
    let mut txn = txn.lock().await;
    txn.set_lock_timeout(req.lock_timeout_ms.map(Duration::from_millis));
    match req.op {
        ShardOp::Get { table, key, intent } => {
            if !owns(&key) {
                return Ok(wrong);
            }
            let row = txn.get(table, &key, intent).await?;
            check_table(node, table)?;
            Ok(ShardReply::Row(row))
        }
        ShardOp::Scan {
            table,
            intent,
            filter,
            params,
            now,
            after,
            limit,
        } => {
            let ctx = Context {
                params: &params,
                now,
                sequences: None,
            };
            // However much the gateway asks for, one reply stays far below the frame size.
            let limit = BatchLimit {
                rows: limit.rows.clamp(1, MAX_BATCH.rows),
                bytes: limit.bytes.clamp(1, MAX_BATCH.bytes),
            };
            let (rows, resume) = scan_batch_local(
                &mut txn,
                table,
                intent,
                filter.as_ref(),
                &ctx,
                after.as_deref(),
                limit,
            )
            .await?;
            check_table(node, table)?;
            Ok(ShardReply::Rows { rows, resume })
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
                sequences: None,
            };
            let rows = push
                .run_local(&mut txn, table, filter.as_ref(), &ctx)
                .await?;
            check_table(node, table)?;
            Ok(ShardReply::Values(rows))
        }
        ShardOp::Execute {
            stmt,
            params,
            param_types,
            now,
            catalog_version,
        } => {
            // The gateway planned with this catalog; this shard may be a moment behind it.
            node.db.catch_up_catalog(catalog_version).await?;
            let result = {
                execute_point(
                    node.db.as_ref(),
                    &mut Local(&mut txn),
                    &stmt,
                    &params,
                    &param_types,
                    now,
                    |key| owns(key),
                )
                .await?
            };
            match result {
                Some((result, written)) => {
                    if let Some(table) = written {
                        check_table(node, table)?;
                    }
                    Ok(ShardReply::Executed {
                        result,
                        wrote: txn.has_writes(),
                    })
                }
                None => Ok(wrong),
            }
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
        ShardOp::Savepoint { id } => {
            txn.savepoint(id);
            Ok(ShardReply::Done)
        }
        ShardOp::RollbackTo { savepoint } => {
            txn.rollback_to(savepoint)?;
            Ok(ShardReply::Done)
        }
        // Handled above.
        ShardOp::Commit
        | ShardOp::Rollback
        | ShardOp::Prepare { .. }
        | ShardOp::CommitAnchor { .. }
        | ShardOp::CommitPrepared
        | ShardOp::Resolve
        | ShardOp::IsPrepared
        | ShardOp::Forget
        | ShardOp::Release => Ok(ShardReply::Done),
    }
}

/// An operation on a table that was dropped meanwhile is refused: a write's rows would outlive
/// the table, and a gateway whose catalog is behind must not read it as empty.
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
