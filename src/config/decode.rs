//! Decoding: the text of `cluster.yaml` into raw structs that hold exactly what the file says.
//!
//! serde_yaml does the work. What the types express is refused here, with the position that
//! serde_yaml reports: unknown fields (every struct denies them, so a typo such as `sql_prot`
//! is an error rather than a silently ignored line), missing required fields, wrong types, ports
//! past 65535, an unknown replication mode. Omitted sections and fields take their defaults
//! here too, so that what comes out is a complete description of the file.
//!
//! Nothing else is checked: rules about values that decoded fine (a range, a name that two
//! nodes share) are validation, in [`super::validate`], which finds their lines with
//! [`super::locate`]. The raw structs stay private to `config`: the rest of ddb sees only the
//! validated settings of [`super::settings`].

use std::path::Path;

use serde::Deserialize;

use super::locate::error_at;
use crate::cluster::map::{Mode, Replication};
use crate::cluster::ring::ShardId;
use crate::error::Result;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) name: String,
    #[serde(default)]
    pub(super) replication: RawReplication,
    #[serde(default)]
    pub(super) sharding: RawSharding,
    #[serde(default)]
    pub(super) ssh: Ssh,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    pub(super) nodes: Vec<RawNode>,
}

/// `replication:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplication {
    /// Copies of each shard: one primary and `factor - 1` replicas.
    #[serde(default = "one")]
    pub(super) factor: u32,
    #[serde(default)]
    pub(super) mode: RawMode,
    /// The fewest in-sync copies a write needs; `None`: a majority of `factor`, rounded up.
    pub(super) min_in_sync: Option<u32>,
    /// How long a replica may take to acknowledge before it leaves the in-sync set.
    #[serde(default = "default_ack_timeout_ms")]
    pub(super) ack_timeout_ms: u64,
}

impl Default for RawReplication {
    fn default() -> Self {
        Self {
            factor: one(),
            mode: RawMode::default(),
            min_in_sync: None,
            ack_timeout_ms: default_ack_timeout_ms(),
        }
    }
}

impl RawReplication {
    /// `min_in_sync` as given, or its default for `factor`.
    pub(super) fn min_in_sync(&self) -> u32 {
        self.min_in_sync
            .unwrap_or_else(|| Replication::default_min_in_sync(self.factor))
    }

    /// The map's replication settings for this section.
    pub(super) fn replication(&self) -> Replication {
        Replication {
            factor: self.factor,
            mode: self.mode.mode(),
            min_in_sync: self.min_in_sync(),
            ack_timeout_ms: self.ack_timeout_ms,
        }
    }
}

fn default_ack_timeout_ms() -> u64 {
    Replication::DEFAULT_ACK_TIMEOUT_MS
}

fn one() -> u32 {
    1
}

/// `replication.mode:` as the file spells it. It is its own type, not the map's [`Mode`], so
/// that the file's format and the format nodes persist can change apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMode {
    #[default]
    Sync,
    Async,
}

impl RawMode {
    /// The map's mode for this spelling.
    pub(super) fn mode(self) -> Mode {
        match self {
            RawMode::Sync => Mode::Sync,
            RawMode::Async => Mode::Async,
        }
    }
}

/// `sharding:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSharding {
    /// Virtual nodes per shard on the ring.
    #[serde(default = "default_vnodes")]
    pub(super) vnodes: u32,
}

impl Default for RawSharding {
    fn default() -> Self {
        Self {
            vnodes: default_vnodes(),
        }
    }
}

fn default_vnodes() -> u32 {
    128
}

/// SSH settings: the defaults in `ssh:`, and the overrides of a node's `ssh:`. Kept as the file
/// gives them, for SSH deployment.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// The remote user.
    pub user: Option<String>,
    /// The SSH port.
    pub port: Option<u16>,
    /// The private key to authenticate with.
    pub identity_file: Option<String>,
    /// Where the `ddb` binary goes on the remote host.
    pub remote_binary: Option<String>,
}

/// `defaults:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    /// The data directory; `{name}` becomes the node name.
    pub(super) data_dir: Option<String>,
}

/// One entry of `nodes:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) rpc_port: u16,
    pub(super) sql_port: u16,
    pub(super) data_dir: Option<String>,
    /// Decoded so that a typo in it is refused; SSH deployment will read it.
    #[allow(dead_code)]
    pub(super) ssh: Option<Ssh>,
    pub(super) shard: Option<ShardId>,
}

/// Decodes the text of the cluster file read from `path`.
pub(super) fn decode(text: &str, path: &Path) -> Result<RawFile> {
    serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        error_at(path, line, &without_position(&e.to_string()))
    })
}

/// serde_yaml's message without the " at line L column C" it puts in: the line goes in front
/// instead, as in every other error about the file.
fn without_position(message: &str) -> String {
    const AT: &str = " at line ";
    let Some(start) = message.find(AT) else {
        return message.to_string();
    };
    let rest = message[start + AT.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix(" column ") else {
        return message.to_string();
    };
    // What may follow the column is more of the message: ", while parsing a flow node".
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{rest}", &message[..start])
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{err, GOOD};

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let e = err(&GOOD.replace(
            "    sql_port: 5441\n",
            "    sql_port: 5441\n    colour: red\n",
        ));
        assert!(
            e.contains("cluster.yaml:14") && e.contains("unknown field `colour`"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_mode_is_refused_with_its_line() {
        let e = err(&GOOD.replace("mode: sync", "mode: eventually"));
        assert!(
            e.contains("cluster.yaml:4:")
                && e.contains("unknown variant `eventually`, expected `sync` or `async`"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_field_is_refused_at_its_entry() {
        let e = err(&GOOD.replace("    sql_port: 5442\n", ""));
        assert!(
            e.contains("cluster.yaml:14:") && e.contains("missing field `sql_port`"),
            "{e}"
        );
    }

    #[test]
    fn a_port_past_65535_is_refused_with_its_line() {
        let e = err(&GOOD.replace("rpc_port: 7071", "rpc_port: 70000"));
        assert!(
            e.contains("cluster.yaml:12:") && e.contains("nodes[0].rpc_port"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_file_is_refused_at_line_1() {
        assert_eq!(err(""), "/etc/ddb/cluster.yaml:1: missing field `name`");
    }

    #[test]
    fn a_syntax_error_keeps_its_message_and_moves_its_line_to_the_front() {
        assert_eq!(
            err("name: x\nnodes: [\n"),
            "/etc/ddb/cluster.yaml:3: did not find expected node content, while parsing a flow node"
        );
        assert_eq!(
            super::without_position("no position here"),
            "no position here"
        );
    }
}
