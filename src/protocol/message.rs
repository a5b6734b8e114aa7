//! The RPC messages. Each type is defined once and used by both the client and the server.
//!
//! Every message is an [`Envelope`] carrying a request id chosen by the client, so one
//! connection carries many requests at once and responses may come back in any order. The first
//! request on a connection must be [`Request::Hello`], which carries the protocol version, who
//! is calling ([`Caller`]: a peer names its cluster id, the CLI its file's cluster name or
//! nothing) and the largest frame the caller reads; the answer carries the node's. A server
//! that speaks another version, or belongs to another cluster, answers with an error and closes
//! the connection.

use serde::{Deserialize, Serialize};

use super::shard::{ShardReply, ShardRequest};
use crate::cluster::map::{Change, ClusterMap};
use crate::cluster::meta::Identity;
use crate::cluster::raft::{NodeId, TypeConfig};
use crate::cluster::ring::ShardId;
use crate::error::Error;
use crate::replication::{LogId, Reject};
use crate::sql::ast::Statement;
use crate::storage::{LogEntry, Lsn};
use crate::types::value::{DataType, Value};
use crate::types::{OutputColumn, QueryResult};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

/// The version of this protocol. Bumped on any incompatible change to the messages.
pub const PROTOCOL_VERSION: u32 = 7;

/// Who opens a connection, and which cluster it expects the node to be in (DESIGN §10.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// The operator's CLI: the cluster name of its file, or none with `--addr`. A node of
    /// another cluster refuses a name that is not its own; a node outside any cluster lets the
    /// CLI in (that is how `ddb init` reaches it before it joins).
    Cli { cluster: Option<String> },
    /// Another node, in the cluster with this id: refused by a node that is not a member of
    /// exactly that cluster, a node outside any cluster included.
    Peer { cluster_id: String },
}

/// A request or response with its id.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}

/// A message of the map's Raft group.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    Append(std::result::Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(
        std::result::Result<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        >,
    ),
}

/// A request to a node.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// The handshake: must be the first request on a connection. `max_frame` is the largest
    /// frame the caller reads (the node's answers are cut to fit it).
    Hello {
        protocol: u32,
        caller: Caller,
        max_frame: u64,
    },
    /// Runs SQL text (one or more statements) in the given session of this connection; the
    /// session is created on first use and keeps its transaction between requests. The answer
    /// is a stream of frames with the request's id, as the statements run: for each statement
    /// [`Response::SqlColumns`] (if it returns rows), [`Response::SqlRows`] a batch at a time,
    /// [`Response::SqlDone`]; then [`Response::SqlEnd`]. A client that reads slowly slows the
    /// statement down (the node holds a few batches per connection, not the result).
    Sql { session: u64, sql: String },
    /// Ends a session, rolling back any open transaction.
    EndSession { session: u64 },
    /// The node's status.
    Status,
    /// Joins the node to a cluster (from `ddb init`); refused if it belongs to another one.
    Join(Identity),
    /// Initialises the map's Raft group on this node and forms the cluster with this map.
    Initialize(Box<ClusterMap>),
    /// The node's current map.
    GetMap,
    /// A proposal forwarded to the Raft leader.
    Propose(Change),
    /// A Raft message between members of the map's group.
    Raft(RaftRequest),
    /// Stops the node gracefully (as SIGTERM does).
    Shutdown,
    /// A row operation of a gateway transaction for this node's shard.
    Shard(ShardRequest),
    /// Log shipping from a shard's primary to one of its replicas (DESIGN §6.1).
    Replicate(Replicate),
    /// An autocommit statement on one key, shipped to the primary that owns the key.
    Execute {
        stmt: Statement,
        params: Vec<Value>,
        param_types: Vec<DataType>,
        /// The catalog version the gateway planned with; the target waits to have it.
        catalog_version: u64,
    },
    /// A switchover (DESIGN §6.2), sent by `ddb promote` to the primary of `shard` in
    /// `epoch`: it stops taking writes, lets the commits in flight finish for at most
    /// `drain_ms`, and proposes `to` as the primary of the next epoch, which begins after what
    /// `to` holds. Answered with [`Response::HandedOver`] once the map took the change.
    HandOver {
        shard: ShardId,
        epoch: u64,
        to: String,
        drain_ms: u64,
    },
    /// Asked by `ddb promote` of a copy of `shard`: the first entry in `(after, upto]` of its
    /// log that holds a two-phase commit record, answered with [`Response::TxnRecord`]. An
    /// `async` promotion must not pick a replica lacking a decision record another one holds.
    FirstTxnRecord {
        shard: ShardId,
        after: u64,
        upto: u64,
    },
}

/// What a shard's primary sends a replica, on one long-lived connection per replica.
///
/// A replica handles these in the order their frames arrive (one driver per node, fed at
/// frame-read time), so a stream of appends with many in flight is appended in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Replicate {
    /// Opens a stream: answered with [`ReplicateReply::Opened`], where the replica's log ends.
    Open {
        shard: ShardId,
        epoch: u64,
        /// The primary's session number of this stream (acks name it).
        session: u64,
    },
    /// Fences a replica for a promotion (DESIGN §6.2): it takes `epoch` as the newest it knows,
    /// durably, before it answers, so it refuses the old primary's entries from then on; the
    /// answer is [`ReplicateReply::Opened`], whose `last` is where the new epoch may begin
    /// (after it). Sent by `ddb promote`, not by a primary: no stream is opened.
    Fence { shard: ShardId, epoch: u64 },
    /// The entries after `prev`, in order (none: a heartbeat), and the primary's commit LSN.
    /// Answered with [`ReplicateReply::Acked`] once the replica has persisted them, or
    /// [`ReplicateReply::Refused`].
    Append {
        shard: ShardId,
        epoch: u64,
        session: u64,
        prev: LogId,
        entries: Vec<LogEntry>,
        commit: Lsn,
    },
    /// A part of a snapshot of the primary's shard at `at`, sent in `session` in place of the
    /// log before `at`; answered with [`ReplicateReply::Stored`], and the `Finish` with
    /// [`ReplicateReply::Acked`] once the whole snapshot is durable.
    Snapshot {
        shard: ShardId,
        epoch: u64,
        session: u64,
        at: LogId,
        part: SnapshotPart,
    },
}

/// One step of a snapshot transfer (DESIGN §6.1, catch-up), on the stream's connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SnapshotPart {
    /// Clear the replica's data and log (durably marked as installing a snapshot). `epochs` is
    /// where each epoch begins in the primary's log (its own history, from its log's base on),
    /// so the replica can tell which of its applied entries the snapshot rolls back.
    Begin { epochs: Vec<(u64, u64)> },
    /// Puts into the `data` and `txn` spaces (about 1 MiB).
    Batch(Vec<crate::storage::Write>),
    /// The snapshot is whole: it stands at the request's `at`.
    Finish,
}

/// A replica's answer to a [`Replicate`] request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicateReply {
    /// The replica's log ends at `last` (durable up to `persisted`), applied up to `applied`.
    Opened {
        last: LogId,
        persisted: LogId,
        applied: Lsn,
    },
    /// The replica's log is persisted, and checked against this primary, up to `up_to`.
    Acked { up_to: LogId },
    /// The batch was refused, and why.
    Refused(Reject),
    /// A part of a snapshot was written.
    Stored,
}

/// What a primary knows of one of its replicas, for `ddb status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub node: String,
    /// The last LSN the replica acknowledged in its current session.
    pub acked: u64,
    /// Entries of the primary's log the replica has not acknowledged.
    pub lag: u64,
    /// How long ago (on the primary's clock) the oldest entry it lacks became durable on the
    /// primary; 0 when it lacks none.
    pub lag_ms: u64,
    /// Whether a stream to it is open.
    pub connected: bool,
}

/// Applied entries a node rolled back because the shard's new primary does not have them (in
/// `async` mode, an old primary's tail lost in a failover; DESIGN §6.2, "Rejoining"). The
/// node's data was rebuilt from a snapshot of the new primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    /// The first and last LSN rolled back, and the epoch the last was written in.
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub epoch: u64,
    /// Whether `first_lsn` is exact; otherwise the logs parted before it (the new primary's
    /// log no longer reached back to where), so at least this many were lost.
    pub exact: bool,
    /// Entries after `last_lsn` that were durable but never applied, dropped with them.
    pub dropped: u64,
    /// The epoch of the primary whose snapshot replaced them.
    pub by_epoch: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl RolledBack {
    /// How many entries were rolled back.
    pub fn count(&self) -> u64 {
        self.last_lsn.saturating_sub(self.first_lsn) + 1
    }
}

impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{} entries (LSN {}..={} of epoch {})",
            if self.exact { "" } else { "at least " },
            self.count(),
            self.first_lsn,
            self.last_lsn,
            self.epoch
        )
    }
}

/// The failing statement of a [`Request::Sql`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementError {
    /// Zero-based index of the statement in the request.
    pub index: usize,
    /// The statement's text.
    pub statement: String,
    pub error: Error,
}

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub rpc_addr: String,
    pub sql_addr: String,
    pub version: String,
    /// The LSN of the last entry in the node's log (with one copy, the last durable commit).
    pub lsn: u64,
    /// The LSN of the first entry the node's log still holds: the entries before it were
    /// truncated (or replaced by a snapshot). The log holds `log_start..=lsn`, nothing when
    /// `lsn` is below it.
    pub log_start: u64,
    /// The LSN of the last entry applied to the data.
    pub applied_lsn: u64,
    /// Why the node refuses writes right now (a replica, a primary starting or below
    /// `min_in_sync`, ...); `None` when it takes them.
    pub write_refusal: Option<String>,
    /// A checksum of every row stored on this node (xxh3 of the data space in key order), so
    /// that copies of a shard can be compared.
    pub checksum: u64,
    /// On a replicated shard's primary: its replicas' progress.
    pub replicas: Vec<ReplicaProgress>,
    /// Rows stored on this node.
    pub keys: u64,
    /// Resources locked or waited for right now.
    pub locks: u64,
    /// Commits written since the node started.
    pub commits: u64,
    /// Commit groups (one fsync each) written since the node started.
    pub fsyncs: u64,
    /// The cluster this node belongs to (None for a standalone node).
    pub cluster: Option<String>,
    /// The node's role in the map's Raft group.
    pub raft: String,
    /// The version of the node's map (0 without one).
    pub map_version: u64,
    /// The node's process id.
    pub pid: u32,
    /// Transactions prepared on this node whose outcome it does not know yet (in doubt).
    pub prepared: u64,
    /// How long the oldest of them has been prepared, in milliseconds (0 with none).
    pub oldest_prepared_ms: u64,
    /// Decision records of two-phase commits anchored here, not yet garbage-collected.
    pub decisions: u64,
    /// Transactions this node committed as gateway through two-phase commit.
    pub two_phase_commits: u64,
    /// Transactions this node committed as gateway in one phase on a single shard.
    pub one_phase_commits: u64,
    /// Microseconds spent as gateway in the three steps of two-phase commits (all of them
    /// together): prepares and votes, the anchor's commit, telling the others.
    pub twopc_prepare_us: u64,
    pub twopc_decide_us: u64,
    pub twopc_finish_us: u64,
    /// The last run of applied entries this node rolled back on rejoining a new primary.
    pub rolled_back: Option<RolledBack>,
}

/// A response from a node.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The handshake's answer; `max_frame` is the largest frame the node reads.
    Hello {
        protocol: u32,
        node: String,
        version: String,
        max_frame: u64,
    },
    /// The whole answer to a [`Request::Sql`], gathered by the client
    /// ([`crate::client::Client::call`]): the results of the statements that ran, rows
    /// included, and the error that stopped the rest, if any. A node never sends it; it
    /// streams the frames below.
    Sql {
        results: Vec<QueryResult>,
        error: Option<StatementError>,
    },
    /// Statement `statement` of a [`Request::Sql`] returns rows with these columns; its rows
    /// follow.
    SqlColumns {
        statement: usize,
        columns: Vec<OutputColumn>,
    },
    /// The next rows of statement `statement`, in order (at most one executor batch).
    SqlRows {
        statement: usize,
        rows: Vec<Vec<Value>>,
    },
    /// Statement `statement` finished: its result (columns and tag, no rows: they came
    /// before).
    SqlDone {
        statement: usize,
        result: QueryResult,
    },
    /// The last frame of a [`Request::Sql`]: the error that stopped it, if one did (the
    /// statements after the failing one did not run).
    SqlEnd {
        error: Option<StatementError>,
    },
    Status(NodeStatus),
    Done,
    /// The node's map, if it has one.
    Map(Option<Box<ClusterMap>>),
    /// A proposal was applied, producing this map version.
    Proposed(u64),
    Raft(RaftResponse),
    Shard(ShardReply),
    /// The result of a shipped statement.
    Executed(QueryResult),
    /// A replica's answer to [`Request::Replicate`].
    Replicated(ReplicateReply),
    /// The request failed as a whole.
    Error(Error),
    /// A switchover's map change was applied ([`Request::HandOver`]).
    HandedOver(HandedOver),
    /// The LSN of a two-phase commit record, if any ([`Request::FirstTxnRecord`]).
    TxnRecord(Option<u64>),
}

/// What a primary that handed its shard over reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOver {
    /// The map version with the new primary.
    pub version: u64,
    /// Where the new epoch begins.
    pub first_lsn: u64,
    /// Entries written before writes stopped but not held by the new primary at the drain
    /// bound: never committed, their clients refused with a retryable error.
    pub stragglers: u64,
    /// How long writes were refused on the old primary before the map took the change, in
    /// milliseconds.
    pub drain_ms: u64,
}
