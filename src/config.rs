//! `cluster.yaml`: the cluster file, parsed into typed settings and validated.
//!
//! The file names the cluster, its replication and sharding settings, and every node with its
//! addresses (DESIGN §10.2). Parsing refuses unknown fields and wrong types with the line that
//! serde_yaml reports; validation then checks what the types cannot: unique node names, no two
//! listeners on one address, ranges of numbers. Every error names the file and the field, and
//! says what is expected.
//!
//! The first map of a cluster is made here from its file ([`ClusterConfig::initial_map`]), not in
//! `cluster/`: the map knows nothing of the file, and `config` depends on `cluster`, never the
//! other way round.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cluster::map::{ClusterMap, Mode, NodeInfo, ShardInfo, ShardState};
use crate::cluster::ring::{Ring, ShardId};
use crate::error::{Error, Result};

/// `replication:` in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// Copies of each shard: one primary and `factor - 1` replicas.
    #[serde(default = "one")]
    pub factor: u32,
    #[serde(default = "sync")]
    pub mode: Mode,
}

fn one() -> u32 {
    1
}

fn sync() -> Mode {
    Mode::Sync
}

fn default_vnodes() -> u32 {
    128
}

/// `sharding:` in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sharding {
    /// Virtual nodes per shard on the ring.
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
}

/// SSH settings (defaults in `ssh:`, overrides per node).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub remote_binary: Option<String>,
}

/// `defaults:` in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The data directory; `{name}` becomes the node name.
    pub data_dir: Option<String>,
}

/// One entry of `nodes:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub host: String,
    pub rpc_port: u16,
    pub sql_port: u16,
    pub data_dir: Option<String>,
    pub ssh: Option<Ssh>,
    pub shard: Option<ShardId>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default = "default_replication")]
    replication: Replication,
    #[serde(default = "default_sharding")]
    sharding: Sharding,
    #[serde(default)]
    ssh: Ssh,
    #[serde(default)]
    defaults: Defaults,
    nodes: Vec<NodeEntry>,
}

fn default_replication() -> Replication {
    Replication {
        factor: 1,
        mode: Mode::Sync,
    }
}

fn default_sharding() -> Sharding {
    Sharding {
        vnodes: default_vnodes(),
    }
}

/// A node as the cluster file describes it, with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub host: String,
    pub rpc_port: u16,
    pub sql_port: u16,
    /// The data directory, relative paths resolved against the cluster file's directory.
    pub data_dir: PathBuf,
    /// The shard this node belongs to.
    pub shard: ShardId,
    /// Whether the node runs on this machine (a loopback host) rather than over SSH.
    pub local: bool,
}

impl NodeConfig {
    /// `host:rpc_port`.
    pub fn rpc_addr(&self) -> String {
        join_host_port(&self.host, self.rpc_port)
    }

    /// `host:sql_port`.
    pub fn sql_addr(&self) -> String {
        join_host_port(&self.host, self.sql_port)
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A validated cluster file.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The file it came from.
    pub path: PathBuf,
    pub name: String,
    pub factor: u32,
    pub mode: Mode,
    pub vnodes: u32,
    /// The nodes, in file order.
    pub nodes: Vec<NodeConfig>,
    /// SSH defaults (used by SSH deployment, which is not built yet).
    pub ssh: Ssh,
}

/// Whether `host` is this machine: a loopback address or `localhost`.
pub fn is_local_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Finds the 1-based line of the `n`-th (0-based) line matching `needle` after trimming.
fn find_line(text: &str, needle: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ").trim();
            l == needle || l.starts_with(&format!("{needle} #"))
        })
        .nth(n)
        .map(|(i, _)| i + 1)
}

impl ClusterConfig {
    /// Reads and validates a cluster file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read cluster file {}: {e}", path.display()))
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates the text of a cluster file read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file = path.display();
        let bad = |line: Option<usize>, msg: String| {
            Error::InvalidInput(match line {
                Some(l) => format!("{file}:{l}: {msg}"),
                None => format!("{file}: {msg}"),
            })
        };
        let raw: File = serde_yaml::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let msg = e.to_string();
            // serde_yaml appends " at line L column C"; the line is already in front.
            let msg = match msg.find(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            bad(line, msg)
        })?;

        if raw.name.trim().is_empty() {
            return Err(bad(
                find_line(text, "name:", 0),
                "name: must not be empty".into(),
            ));
        }
        let factor = raw.replication.factor;
        if !(1..=7).contains(&factor) {
            return Err(bad(
                find_line(text, &format!("factor: {factor}"), 0),
                format!("replication.factor: {factor} is out of range; expected 1 to 7"),
            ));
        }
        if factor > 1 {
            return Err(bad(
                find_line(text, &format!("factor: {factor}"), 0),
                format!("replication.factor: {factor} needs replication, which is not built yet; use factor: 1"),
            ));
        }
        let vnodes = raw.sharding.vnodes;
        if !(1..=4096).contains(&vnodes) {
            return Err(bad(
                find_line(text, &format!("vnodes: {vnodes}"), 0),
                format!("sharding.vnodes: {vnodes} is out of range; expected 1 to 4096"),
            ));
        }
        if raw.nodes.is_empty() {
            return Err(bad(
                find_line(text, "nodes:", 0),
                "nodes: expected at least one node".into(),
            ));
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let default_dir = raw
            .defaults
            .data_dir
            .clone()
            .unwrap_or_else(|| "./ddb-data/{name}".into());
        let mut names = HashSet::new();
        let mut listeners: BTreeMap<(String, u16), String> = BTreeMap::new();
        let mut nodes = Vec::new();
        let mut next_shard: ShardId = 1;
        let mut pinned: BTreeMap<ShardId, String> = BTreeMap::new();
        for n in &raw.nodes {
            if n.name.is_empty()
                || !n
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(bad(
                    find_line(text, &format!("name: {}", n.name), 0),
                    format!("nodes.name: '{}' is not a valid node name; expected letters, digits, '-', '_' or '.'", n.name),
                ));
            }
            if !names.insert(n.name.clone()) {
                return Err(bad(
                    find_line(text, &format!("name: {}", n.name), 1),
                    format!("nodes.name: duplicate node name '{}'", n.name),
                ));
            }
            if n.rpc_port == 0 || n.sql_port == 0 {
                return Err(bad(
                    None,
                    format!("nodes.{}: ports must be between 1 and 65535", n.name),
                ));
            }
            for (port, field) in [(n.rpc_port, "rpc_port"), (n.sql_port, "sql_port")] {
                if let Some(other) =
                    listeners.insert((n.host.clone(), port), format!("{}.{field}", n.name))
                {
                    return Err(bad(
                        None,
                        format!(
                            "nodes.{}.{field}: {}:{port} is already used by {other}",
                            n.name, n.host
                        ),
                    ));
                }
            }
            let shard = match n.shard {
                Some(0) => {
                    return Err(bad(
                        None,
                        format!("nodes.{}.shard: shard ids start at 1", n.name),
                    ))
                }
                Some(s) => {
                    if let Some(other) = pinned.insert(s, n.name.clone()) {
                        return Err(bad(
                            None,
                            format!(
                                "nodes.{}.shard: shard {s} already has node {other}; with replication.factor 1 each shard has one node",
                                n.name
                            ),
                        ));
                    }
                    s
                }
                None => {
                    while pinned.contains_key(&next_shard) {
                        next_shard += 1;
                    }
                    pinned.insert(next_shard, n.name.clone());
                    next_shard
                }
            };
            let dir = n
                .data_dir
                .clone()
                .unwrap_or_else(|| default_dir.replace("{name}", &n.name));
            let dir = PathBuf::from(dir);
            let data_dir = if dir.is_absolute() {
                dir
            } else {
                base.join(dir)
            };
            nodes.push(NodeConfig {
                name: n.name.clone(),
                host: n.host.clone(),
                rpc_port: n.rpc_port,
                sql_port: n.sql_port,
                data_dir,
                shard,
                local: is_local_host(&n.host),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            name: raw.name,
            factor,
            mode: raw.replication.mode,
            vnodes,
            nodes,
            ssh: raw.ssh,
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            Error::InvalidInput(format!("no node named '{name}' in {}", self.path.display()))
        })
    }
}

impl ClusterConfig {
    /// The first map of the cluster `cluster_id`: one shard per node of the file (factor 1),
    /// each at epoch 1 with that node as primary, and on the ring with `vnodes` tokens, added in
    /// shard order. Raft ids follow file order from 1, so the first nodes of the file are the
    /// voters. The version is 0; applying the change makes it 1.
    pub fn initial_map(&self, cluster_id: String) -> ClusterMap {
        let mut nodes = BTreeMap::new();
        let mut shards = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            nodes.insert(
                n.name.clone(),
                NodeInfo {
                    raft_id: i as u64 + 1,
                    rpc_addr: n.rpc_addr(),
                    sql_addr: n.sql_addr(),
                    shard: n.shard,
                },
            );
            shards.insert(
                n.shard,
                ShardInfo {
                    epoch: 1,
                    primary: n.name.clone(),
                    replicas: Vec::new(),
                    state: ShardState::Active,
                },
            );
        }
        let mut ring = Ring::new();
        for &s in shards.keys() {
            ring.add_shard(s, self.vnodes);
        }
        ClusterMap {
            cluster_id,
            name: self.name.clone(),
            version: 0,
            factor: self.factor,
            mode: self.mode,
            vnodes: self.vnodes,
            ring,
            shards,
            nodes,
            tables: BTreeMap::new(),
            next_table_id: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: demo
replication:
  factor: 1
  mode: sync
sharding:
  vnodes: 64
defaults:
  data_dir: ./data/{name}
nodes:
  - name: n1
    host: 127.0.0.1
    rpc_port: 7071
    sql_port: 5441
  - name: n2
    host: 127.0.0.1
    rpc_port: 7072
    sql_port: 5442
    data_dir: /srv/n2
";

    fn parse(text: &str) -> Result<ClusterConfig> {
        ClusterConfig::parse(text, Path::new("/etc/ddb/cluster.yaml"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn a_good_file_parses_with_defaults_applied() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "demo");
        assert_eq!(c.vnodes, 64);
        assert_eq!(c.nodes[0].data_dir, PathBuf::from("/etc/ddb/./data/n1"));
        assert_eq!(c.nodes[1].data_dir, PathBuf::from("/srv/n2"));
        assert_eq!((c.nodes[0].shard, c.nodes[1].shard), (1, 2));
        assert!(c.nodes[0].local);
        assert_eq!(c.nodes[1].rpc_addr(), "127.0.0.1:7072");
    }

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
    fn duplicate_node_names_are_refused() {
        let e = err(&GOOD.replace("name: n2", "name: n1"));
        assert!(
            e.contains("duplicate node name 'n1'") && e.contains("cluster.yaml:14"),
            "{e}"
        );
    }

    #[test]
    fn two_listeners_on_one_address_are_refused() {
        let e = err(&GOOD.replace("rpc_port: 7072", "rpc_port: 7071"));
        assert!(
            e.contains("127.0.0.1:7071 is already used by n1.rpc_port"),
            "{e}"
        );
        let e = err(&GOOD.replace("sql_port: 5441", "sql_port: 7071"));
        assert!(e.contains("already used"), "{e}");
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let e = err(&GOOD.replace("vnodes: 64", "vnodes: 0"));
        assert!(
            e.contains("sharding.vnodes: 0 is out of range; expected 1 to 4096")
                && e.contains(":6:"),
            "{e}"
        );
        let e = err(&GOOD.replace("factor: 1", "factor: 9"));
        assert!(e.contains("replication.factor: 9 is out of range"), "{e}");
        let e = err(&GOOD.replace("rpc_port: 7071", "rpc_port: 70000"));
        assert!(e.contains("rpc_port"), "{e}");
    }

    #[test]
    fn replication_is_refused_until_it_is_built() {
        let e = err(&GOOD.replace("factor: 1", "factor: 2"));
        assert!(e.contains("replication, which is not built yet"), "{e}");
    }

    #[test]
    fn an_unknown_mode_is_refused() {
        let e = err(&GOOD.replace("mode: sync", "mode: eventually"));
        assert!(
            e.contains("unknown variant `eventually`, expected `sync` or `async`"),
            "{e}"
        );
        assert!(e.contains("cluster.yaml:4"), "{e}");
    }

    #[test]
    fn missing_ports_are_refused() {
        let e = err(&GOOD.replace("    sql_port: 5442\n", ""));
        assert!(e.contains("missing field `sql_port`"), "{e}");
    }

    #[test]
    fn pinned_shards_are_respected_and_free_ones_filled() {
        let c = parse(&GOOD.replace("    rpc_port: 7071\n", "    rpc_port: 7071\n    shard: 2\n"))
            .unwrap();
        assert_eq!((c.nodes[0].shard, c.nodes[1].shard), (2, 1));
        let e = err(&GOOD
            .replace("    rpc_port: 7071\n", "    rpc_port: 7071\n    shard: 2\n")
            .replace("    rpc_port: 7072\n", "    rpc_port: 7072\n    shard: 2\n"));
        assert!(e.contains("shard 2 already has node n1"), "{e}");
    }

    fn config(n: u16) -> ClusterConfig {
        let text = "name: demo\nnodes:\n".to_string()
            + &(1..=n)
                .map(|i| {
                    format!(
                        "  - {{ name: n{i}, host: 127.0.0.1, rpc_port: {}, sql_port: {} }}\n",
                        7070 + i,
                        5440 + i
                    )
                })
                .collect::<String>();
        parse(&text).unwrap()
    }

    #[test]
    fn the_initial_map_has_one_shard_per_node_and_three_voters() {
        let m = config(4).initial_map("x".into());
        assert_eq!((m.cluster_id.as_str(), m.name.as_str()), ("x", "demo"));
        assert_eq!(m.shards.len(), 4);
        assert_eq!(m.ring.shards(), vec![1, 2, 3, 4]);
        assert_eq!(m.ring.tokens_of(3).len(), 128);
        assert_eq!(m.voters(), vec![1, 2, 3]);
        assert_eq!(m.primary(2).unwrap().0, "n2");
        assert_eq!(m.node("n4").unwrap().rpc_addr, "127.0.0.1:7074");
    }

    #[test]
    fn the_initial_map_forms_the_cluster_at_version_1() {
        let mut map = None;
        let init = crate::cluster::map::Change::Init(Box::new(config(4).initial_map("x".into())));
        assert_eq!(ClusterMap::apply(&mut map, &init), Ok(1));
    }
}
