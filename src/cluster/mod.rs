//! The cluster: the map (membership, placement, schema), its Raft group, and the hash ring.

pub mod map;
pub mod meta;
pub mod raft;
pub mod ring;
pub mod upgrade;
