//! The cluster: placement of keys on shards (the hash ring).

pub mod ring;
