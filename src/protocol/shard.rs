//! Shard messages: what a gateway asks of a shard's primary inside a transaction.
//!
//! A gateway transaction holds a participant on every shard it touches. Row operations (get,
//! scan, put, delete), whole statements on one key, and the steps of one- and two-phase commit
//! all travel as a [`ShardRequest`] carrying the transaction id, its wait-die age, the shard,
//! and the map version, placement and epoch the gateway routed with. A shard refuses a request
//! routed under another placement or meant for another epoch's primary (`WrongShard`); the
//! map version only makes it wait for a map (and a catalog) as new as the gateway's, so DDL
//! and in-sync changes never fence a transaction in flight (DESIGN §3). Scans carry their filter and the work pushed down
//! to the shard ([`Pushdown`]), which is why these messages name SQL types: statements and
//! expressions are data here, run by the shard's SQL layer.
//!
//! A scan is served a batch at a time: [`ShardOp::Scan`] asks for the rows after a key, at
//! most a [`BatchLimit`], and [`ShardReply::Rows`] answers with them and the key to resume
//! after. The gateway asks for the next batch only when it needs it, so a shard holds no
//! state for a scan between requests (the transaction's table lock keeps the rows still)
//! and never more than one batch of it in memory; a reply stays far below the frame size.

use serde::{Deserialize, Serialize};

use crate::cluster::ring::ShardId;
use crate::sql::ast::Statement;
use crate::sql::partial::Pushdown;
use crate::sql::rows::KeyedRows;
use crate::txn::twopc::Outcome;
use crate::txn::{BatchLimit, Intent};
use crate::types::{DataType, Expr, QueryResult, Value};

/// A row operation for one shard's participant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardOp {
    Get {
        table: u32,
        key: Vec<u8>,
        intent: Intent,
    },
    /// One batch of a scan: the rows after `after` (from the start when `None`) that pass
    /// the filter, reading at most `limit` stored rows.
    Scan {
        table: u32,
        intent: Intent,
        filter: Option<Expr>,
        params: Vec<Value>,
        now: i64,
        after: Option<Vec<u8>>,
        limit: BatchLimit,
    },
    /// A scan with work pushed down (partial aggregation, top-N).
    ScanPushdown {
        table: u32,
        filter: Option<Expr>,
        push: Pushdown,
        params: Vec<Value>,
        now: i64,
    },
    Put {
        table: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: u32,
        key: Vec<u8>,
    },
    /// A whole statement on one key of this shard, run in the transaction's part here.
    Execute {
        stmt: Statement,
        params: Vec<Value>,
        param_types: Vec<DataType>,
        /// The statement's time at the gateway, so `now()` means the same on both sides.
        now: i64,
        /// The catalog version the gateway planned with; the shard waits to have it.
        catalog_version: u64,
    },
    /// Takes savepoint `id` in the open part: a mark its writes can be returned to.
    Savepoint {
        id: u64,
    },
    /// Undoes the part's writes after savepoint `savepoint` (after its start when `None`: the
    /// part was opened after the savepoint), keeping every lock. The part must be open here:
    /// a part that is not (it was rolled back) is an error, never a fresh transaction.
    RollbackTo {
        savepoint: Option<u64>,
    },
    /// One-phase commit: this is the only shard the transaction wrote.
    Commit,
    /// Rolls back an open part, or aborts a prepared one.
    Rollback,
    /// Phase one: log the write set and lock set, keep the locks, vote.
    Prepare {
        anchor: ShardId,
        participants: Vec<ShardId>,
    },
    /// The commit point: the anchor commits its writes with the `COMMITTED` record.
    CommitAnchor {
        participants: Vec<ShardId>,
    },
    /// Phase two at a prepared participant.
    CommitPrepared,
    /// Recovery asks the anchor for the outcome.
    Resolve,
    /// Garbage collection asks whether the transaction is still prepared here.
    IsPrepared,
    /// Every participant applied the commit: the anchor drops its record.
    Forget,
    /// Ends a read-only part at commit and says whether its reads still stand: answered
    /// `Done` by the shard's primary of the request's epoch, refused (the transaction must
    /// abort) by a node that no longer is, or that is handing the shard over (its reads may
    /// be older than writes the next primary takes).
    Release,
}

/// A request to a shard's primary on behalf of a gateway transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRequest {
    /// The gateway's transaction id: unique in the cluster (a fresh timestamp carrying the
    /// gateway's node tag).
    pub txn: u64,
    /// The wait-die age of the transaction.
    pub age: u64,
    /// The shard the gateway believes it is talking to.
    pub shard: ShardId,
    /// The map version the gateway routed with: the shard waits until its map (and catalog)
    /// is at least as new before it acts, and never refuses for it.
    pub map_version: u64,
    /// The placement the gateway routed with (who serves which keys): a shard under another
    /// placement refuses the request.
    pub placement: u64,
    /// The shard's epoch under that map: a message for an older primary is refused.
    pub epoch: u64,
    /// The client session's `lock_timeout` in milliseconds, bounding this operation's lock
    /// waits instead of the node's `--lock-timeout-ms` (`None`: the node's).
    pub lock_timeout_ms: Option<u64>,
    pub op: ShardOp,
}

/// A participant's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardReply {
    Row(Option<Vec<u8>>),
    /// One batch of a scan, and the key the next batch starts after (`None`: the scan is done).
    Rows {
        rows: KeyedRows,
        resume: Option<Vec<u8>>,
    },
    /// Output rows of a pushed-down scan.
    Values(Vec<Vec<Value>>),
    /// The result of a statement run by [`ShardOp::Execute`], and whether the transaction has
    /// written anything on this shard so far.
    Executed {
        result: QueryResult,
        wrote: bool,
    },
    Done,
    /// The outcome of a transaction anchored here; `None` while it is being decided.
    Outcome(Option<Outcome>),
    /// Whether the transaction is prepared here.
    Prepared(bool),
    /// This node does not own the key, is not the shard's primary, or routes keys under
    /// another placement or epoch than the sender, under its map `version`.
    WrongShard {
        version: u64,
    },
}
