//! The internal RPC protocol: framing and the message types shared by client and server.

pub mod frame;
pub mod message;
pub mod shard;

pub use frame::{read_frame, write_frame, FramedStream, MAX_FRAME};
pub use message::{
    Envelope, NodeStatus, RaftRequest, RaftResponse, Request, Response, StatementError,
    PROTOCOL_VERSION,
};
pub use shard::{ShardOp, ShardReply, ShardRequest};
