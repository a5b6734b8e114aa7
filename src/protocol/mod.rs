//! The internal RPC protocol: framing and the message types shared by client and server.

pub mod frame;
pub mod message;
pub mod shard;

pub use frame::{FrameReader, FrameWriter, Limits};
pub use message::{
    Caller, Envelope, HandedOver, NodeStatus, RaftRequest, RaftResponse, ReplicaProgress,
    Replicate, ReplicateReply, Request, Response, RolledBack, SnapshotPart, StatementError,
    PROTOCOL_VERSION,
};
pub use shard::{ShardOp, ShardReply, ShardRequest};
