//! The cluster file's settings as the rest of ddb uses them: [`ClusterConfig`] and its
//! [`NodeConfig`]s, with every default applied and every path resolved.
//!
//! [`ClusterConfig::load`] is the one way in: it reads the file, decodes it
//! ([`super::decode`]), validates it ([`super::validate`]), and only then builds the settings,
//! so a `ClusterConfig` always describes a file that passed every rule. Building can therefore
//! not fail: what it does (data directories from `defaults.data_dir`, shards given in file
//! order by [`super::shards`]) is a function of a valid file.
//!
//! [`ClusterConfig::load_plan`] is the way in for `ddb init --dry-run` alone: a file that is
//! valid but asks for what ddb cannot run yet (replicas) is planned, and the refusal handed
//! back beside the settings, to be reported after the plan.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::data_dir::data_dir;
use super::decode::{decode, RawFile, Ssh};
use super::shards::{assign_shards, short_shards};
use super::validate::{validate, validate_plan};
use crate::cluster::map::Replication;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};

/// A node as the cluster file describes it, with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub host: String,
    pub rpc_port: u16,
    pub sql_port: u16,
    /// The data directory, relative paths resolved against the cluster file's directory, and
    /// normalised (`.` and `x/..` folded).
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
    /// `replication:`, with its defaults (`min_in_sync` a majority of `factor`).
    pub replication: Replication,
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
        let file = decode(text, path)?;
        validate(&file, text, path)?;
        Ok(Self::build(file, path))
    }

    /// Reads a cluster file to plan it: as [`ClusterConfig::load`], except that a valid file
    /// asking for what ddb cannot start yet gives its settings together with the error that
    /// says so, instead of the error alone.
    pub fn load_plan(path: &Path) -> Result<(Self, Option<Error>)> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read cluster file {}: {e}", path.display()))
        })?;
        Self::parse_plan(&text, path)
    }

    /// [`ClusterConfig::load_plan`] of the text of a cluster file read from `path`.
    pub fn parse_plan(text: &str, path: &Path) -> Result<(Self, Option<Error>)> {
        let file = decode(text, path)?;
        let unbuilt = validate_plan(&file, text, path)?;
        Ok((Self::build(file, path), unbuilt))
    }

    /// The settings of a file that passed validation.
    fn build(file: RawFile, path: &Path) -> Self {
        let shards = assign_shards(&file.nodes, file.replication.factor);
        let dirs: Vec<PathBuf> = (0..file.nodes.len())
            .map(|i| data_dir(&file, i, path))
            .collect();
        let nodes = file
            .nodes
            .into_iter()
            .zip(shards)
            .zip(dirs)
            .map(|((n, shard), data_dir)| NodeConfig {
                local: is_local_host(&n.host),
                name: n.name,
                host: n.host,
                rpc_port: n.rpc_port,
                sql_port: n.sql_port,
                data_dir,
                shard,
            })
            .collect();
        Self {
            path: path.to_path_buf(),
            name: file.name,
            replication: file.replication.replication(),
            vnodes: file.sharding.vnodes,
            nodes,
            ssh: file.ssh,
        }
    }

    /// The shards with fewer nodes than `replication.factor`, with how many they have: allowed
    /// (their replicas may join later), but worth a warning, since they run short of copies.
    pub fn short_shards(&self) -> Vec<(ShardId, usize)> {
        let shards: Vec<ShardId> = self.nodes.iter().map(|n| n.shard).collect();
        short_shards(&shards, self.replication.factor)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            Error::InvalidInput(format!("no node named '{name}' in {}", self.path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{parse, GOOD};
    use super::*;
    use crate::cluster::map::Mode;

    #[test]
    fn a_good_file_parses_with_defaults_applied() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "demo");
        assert_eq!(c.replication, Replication::single());
        assert_eq!(c.vnodes, 64);
        assert_eq!(c.nodes[0].data_dir, PathBuf::from("/etc/ddb/data/n1"));
        assert_eq!(c.nodes[1].data_dir, PathBuf::from("/srv/n2"));
        assert_eq!((c.nodes[0].shard, c.nodes[1].shard), (1, 2));
        assert!(c.nodes[0].local);
        assert_eq!(c.nodes[1].rpc_addr(), "127.0.0.1:7072");
    }

    #[test]
    fn omitted_sections_take_their_defaults() {
        let text = "name: x\nnodes:\n  - { name: a, host: '::1', rpc_port: 1, sql_port: 2 }\n";
        let c = ClusterConfig::parse(text, Path::new("c.yaml")).unwrap();
        assert_eq!(
            (c.replication.clone(), c.vnodes),
            (Replication::single(), 128)
        );
        assert_eq!(c.nodes[0].data_dir, PathBuf::from("ddb-data/a"));
        assert_eq!(c.nodes[0].sql_addr(), "[::1]:2");
        assert!(c.nodes[0].local);
        let c = parse(&GOOD.replace("mode: sync", "mode: async")).unwrap();
        assert_eq!(c.replication.mode, Mode::Async);
    }

    #[test]
    fn pinned_shards_are_respected_and_free_ones_filled() {
        let c = parse(&GOOD.replace("    rpc_port: 7071\n", "    rpc_port: 7071\n    shard: 2\n"))
            .unwrap();
        assert_eq!((c.nodes[0].shard, c.nodes[1].shard), (2, 1));
    }

    #[test]
    fn a_node_is_found_by_name() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node("n2").unwrap().sql_port, 5442);
        let e = c.node("n9").unwrap_err().to_string();
        assert_eq!(e, "no node named 'n9' in /etc/ddb/cluster.yaml");
    }
}
