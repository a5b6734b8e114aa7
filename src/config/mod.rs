//! `cluster.yaml`: the cluster file, decoded, validated, and turned into typed settings.
//!
//! The file names the cluster, its replication and sharding settings, and every node with its
//! addresses (DESIGN §10.2). Only the CLI reads it; nodes act on the cluster map alone, which the
//! CLI makes from the file ([`ClusterConfig::initial_map`]). Reading a file goes through three
//! steps, each in its own file:
//!
//! 1. **Decoding** (`decode.rs`): serde_yaml turns the text into raw structs that hold exactly
//!    what the file says; unknown fields, missing fields and wrong types are refused here, at
//!    the line serde_yaml reports.
//! 2. **Validation** (`validate.rs`): one function per rule for what the types cannot say
//!    (ranges, unique node names, one listener per address however the host is spelled
//!    (`hosts.rs`), one data directory per node (`data_dir.rs`), one node per shard). A rule
//!    names the field it is about; `locate.rs` finds that field's line by asking serde_yaml.
//! 3. **Settings** (`settings.rs`): defaults applied and paths resolved, into a
//!    [`ClusterConfig`] that can only exist for a file that passed every rule.
//!
//! Every error names the file, the line, the field, and says what is expected, and is bad input
//! (exit code 2).

mod data_dir;
mod decode;
#[cfg(test)]
mod fixture;
mod hosts;
mod initial_map;
mod locate;
mod settings;
mod shards;
mod validate;

pub use decode::Ssh;
pub use settings::{is_local_host, ClusterConfig, NodeConfig};
