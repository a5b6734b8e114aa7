//! The cluster map: who is in the cluster, which shard owns which keys, and the schema.
//!
//! Every node holds a copy. The map changes only by [`Change`]s applied in one order, the order
//! of the Raft log (see [`super::meta`]); each change is validated against the current map when
//! it is applied, so a change that was valid when proposed but is stale by the time it is
//! ordered is refused, never applied twice. Every applied change raises `version` by one, and
//! requests between nodes carry the version they were routed with.
//!
//! Two counters, because two questions are asked of the map:
//!
//! * `version` says "is this the newest map?": it rises with every change, DDL and in-sync
//!   changes included. A node that learns of a newer version waits for it (or fetches it)
//!   before acting on a request, so a gateway's fresh table is never unknown at a shard.
//! * `placement` says "does the sender route keys the way I do?": it rises only when who
//!   serves which keys changes: the cluster forms, the ring changes, a shard's epoch rises (a
//!   promotion). Shard requests and 2PC messages are fenced by it and by the shard's epoch,
//!   never by `version` (DESIGN §3): a `CREATE TABLE` or a replica leaving the in-sync set must
//!   not abort the transactions in flight. Today only [`Change::Init`] raises it; ring
//!   changes and promotions will, when `ddb join` and `ddb promote` are built.
//!
//! Each shard is a replica group (DESIGN §6): a primary, its replicas, its epoch with the
//! history of where each epoch began in the shard's log, and its **in-sync set**, the members
//! that hold every committed entry. The in-sync set is in the map so that it changes only
//! through Raft ([`Change::RemoveInSync`], [`Change::AddInSync`], proposed by the primary and
//! validated against the shard's epoch, so a deposed primary's proposal is refused). It may
//! shrink below `replication.min_in_sync`: it records who holds the data, and it is the
//! primary that refuses writes below the floor, not the map that refuses the truth.
//!
//! Each kind of change is applied by its own function ([`ClusterMap::apply`] only dispatches),
//! and each checks everything before it changes anything, so a refused change leaves the map as
//! it was.
//!
//! Applying a change is a pure function of the map: no I/O, no clock, no randomness. That is
//! what lets every node reach the same map from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ring::{Ring, ShardId};
use crate::error::{sqlstate, Error};
use crate::storage::log::Lsn;
use crate::types::Table;

/// When a primary acknowledges a write: once the in-sync replicas hold it (`Sync`), or as soon
/// as it holds it itself (`Async`).
///
/// The cluster file has its own spelling of this (`replication.mode`); this one is part of the
/// map, so its serialized form is what nodes persist and exchange, and must not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sync,
    Async,
}

impl Mode {
    /// The mode as the cluster file and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }
}

/// How a shard's copies are kept: the map's half of the cluster file's `replication:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// Copies of each shard: one primary and `factor - 1` replicas.
    pub factor: u32,
    pub mode: Mode,
    /// The fewest in-sync copies a primary commits with; below it, writes fail with a
    /// retryable error (DESIGN §6.1).
    pub min_in_sync: u32,
    /// A replica that has not acknowledged an entry this long leaves the in-sync set.
    pub ack_timeout_ms: u64,
}

impl Replication {
    /// Most copies of a shard a cluster may keep.
    pub const MAX_FACTOR: u32 = 5;

    /// The default acknowledgement timeout, in milliseconds.
    pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 1000;

    /// The default floor for `factor` copies: a majority, rounded up (1 of 2, 2 of 3, 3 of 5).
    pub fn default_min_in_sync(factor: u32) -> u32 {
        factor.div_ceil(2)
    }

    /// One copy per shard, as a cluster without replicas has.
    pub fn single() -> Self {
        Self {
            factor: 1,
            mode: Mode::Sync,
            min_in_sync: 1,
            ack_timeout_ms: Self::DEFAULT_ACK_TIMEOUT_MS,
        }
    }
}

/// Whether a shard is serving, or moving in or out (moves come with rebalancing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardState {
    Active,
    Joining,
    Leaving,
}

/// The first LSN of a shard's log: where epoch 1 begins.
pub const FIRST_LSN: Lsn = 1;

/// A shard: a replica group with one primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Raised by every promotion; fences old primaries.
    pub epoch: u64,
    /// Where each epoch began in the shard's log, `(epoch, first LSN)`, oldest first; the last
    /// is `epoch`'s. A rejoining node finds the last entry it shares with the primary by it.
    pub epochs: Vec<(u64, Lsn)>,
    pub primary: String,
    pub replicas: Vec<String>,
    /// The members that hold every committed entry, the primary included, in the order they
    /// entered it.
    pub in_sync: Vec<String>,
    pub state: ShardState,
}

impl ShardInfo {
    /// A new shard at epoch 1, every member in sync (nothing is committed yet, so all of them
    /// hold all of it).
    pub fn new(primary: String, replicas: Vec<String>) -> Self {
        let mut in_sync = vec![primary.clone()];
        in_sync.extend(replicas.iter().cloned());
        Self {
            epoch: 1,
            epochs: vec![(1, FIRST_LSN)],
            primary,
            replicas,
            in_sync,
            state: ShardState::Active,
        }
    }

    /// Whether `node` is the primary or a replica of this shard.
    pub fn is_member(&self, node: &str) -> bool {
        self.primary == node || self.replicas.iter().any(|r| r == node)
    }

    /// Whether `node` is in the in-sync set.
    pub fn is_in_sync(&self, node: &str) -> bool {
        self.in_sync.iter().any(|n| n == node)
    }
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id in the Raft group of the map.
    pub raft_id: u64,
    pub rpc_addr: String,
    pub sql_addr: String,
    pub shard: ShardId,
}

/// The cluster map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Unique per cluster: a node refuses requests and maps of another cluster.
    pub cluster_id: String,
    pub name: String,
    pub version: u64,
    /// Raised when who serves which keys changes (not by DDL or in-sync changes): what shard
    /// requests and 2PC messages are fenced by.
    pub placement: u64,
    pub replication: Replication,
    pub vnodes: u32,
    pub ring: Ring,
    pub shards: BTreeMap<ShardId, ShardInfo>,
    pub nodes: BTreeMap<String, NodeInfo>,
    /// The catalog.
    pub tables: BTreeMap<String, Table>,
    pub next_table_id: u32,
}

/// A change to the map: one Raft command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Forms the cluster; valid only as the first change.
    Init(Box<ClusterMap>),
    /// Creates a table; the map assigns its id.
    CreateTable { table: Table, if_not_exists: bool },
    /// Drops tables by name.
    DropTable { names: Vec<String>, if_exists: bool },
    /// Takes `node` out of `shard`'s in-sync set: proposed by the shard's primary of `epoch`
    /// when the node stopped acknowledging. Refused under another epoch.
    RemoveInSync {
        shard: ShardId,
        epoch: u64,
        node: String,
    },
    /// Puts `node` back into `shard`'s in-sync set: proposed by the shard's primary of `epoch`
    /// once the node has caught up. Refused under another epoch.
    AddInSync {
        shard: ShardId,
        epoch: u64,
        node: String,
    },
    /// Makes `node` the primary of `shard` in a new epoch, `epoch + 1`, whose first entry is
    /// `first_lsn` (DESIGN §6.2: one past the fenced target's last entry). Refused unless the
    /// shard is still at `epoch` (two promotions of one shard are ordered: the second is stale)
    /// and `node` is a replica of it, in the in-sync set unless `allow_data_loss`.
    Promote {
        shard: ShardId,
        epoch: u64,
        node: String,
        first_lsn: Lsn,
        allow_data_loss: bool,
    },
}

/// What applying a change produced: the map version after it.
pub type ChangeResult = std::result::Result<u64, Error>;

impl ClusterMap {
    /// Applies a change, validating it against the map. On error the map is unchanged.
    ///
    /// This is the only way the map changes: each change has its own function below, which
    /// checks the change against the map as it is now (not as it was when the change was
    /// proposed) before it touches anything.
    pub fn apply(current: &mut Option<ClusterMap>, change: &Change) -> ChangeResult {
        match (current.as_mut(), change) {
            (_, Change::Init(map)) => Self::init(current, map),
            (None, _) => Err(Error::Refused(
                "the cluster is not formed yet (run ddb init)".into(),
            )),
            (
                Some(map),
                Change::CreateTable {
                    table,
                    if_not_exists,
                },
            ) => map.create_table(table, *if_not_exists),
            (Some(map), Change::DropTable { names, if_exists }) => {
                map.drop_tables(names, *if_exists)
            }
            (Some(map), Change::RemoveInSync { shard, epoch, node }) => {
                map.remove_in_sync(*shard, *epoch, node)
            }
            (Some(map), Change::AddInSync { shard, epoch, node }) => {
                map.add_in_sync(*shard, *epoch, node)
            }
            (
                Some(map),
                Change::Promote {
                    shard,
                    epoch,
                    node,
                    first_lsn,
                    allow_data_loss,
                },
            ) => map.promote(*shard, *epoch, node, *first_lsn, *allow_data_loss),
        }
    }

    /// [`Change::Init`]: forms the cluster with `map` at version 1 and placement 1. A cluster
    /// forms once; a second init (a re-run of `ddb init` that raced the first) is refused.
    fn init(current: &mut Option<ClusterMap>, map: &ClusterMap) -> ChangeResult {
        if current.is_some() {
            return Err(Error::Refused("the cluster is already formed".into()));
        }
        let mut map = map.clone();
        map.version = 1;
        map.placement = 1;
        let v = map.version;
        *current = Some(map);
        Ok(v)
    }

    /// [`Change::CreateTable`]: adds `table` with the next table id. A name already taken is
    /// refused, unless `if_not_exists`, which leaves the map (and its version) as it is.
    fn create_table(&mut self, table: &Table, if_not_exists: bool) -> ChangeResult {
        if self.tables.contains_key(&table.name) {
            if if_not_exists {
                return Ok(self.version);
            }
            return Err(Error::sql(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", table.name),
            ));
        }
        let mut table = table.clone();
        table.id = self.next_table_id;
        self.next_table_id += 1;
        self.tables.insert(table.name.clone(), table);
        Ok(self.bump())
    }

    /// [`Change::DropTable`]: removes the named tables, all or none: every name is checked
    /// before any table is removed. A missing name is refused unless `if_exists`.
    fn drop_tables(&mut self, names: &[String], if_exists: bool) -> ChangeResult {
        if !if_exists {
            if let Some(name) = names.iter().find(|n| !self.tables.contains_key(*n)) {
                return Err(Error::sql(
                    sqlstate::UNDEFINED_TABLE,
                    format!("table \"{name}\" does not exist"),
                ));
            }
        }
        for name in names {
            self.tables.remove(name);
        }
        Ok(self.bump())
    }

    /// [`Change::RemoveInSync`]: takes a replica out of the in-sync set. The primary cannot
    /// leave it (it is the copy every commit is on); a set below `min_in_sync` is allowed, since
    /// it records who holds the data. Raises the version, not the placement: nobody serves
    /// other keys than before.
    fn remove_in_sync(&mut self, shard: ShardId, epoch: u64, node: &str) -> ChangeResult {
        let s = self.in_sync_target(shard, epoch, node)?;
        if s.primary == node {
            return Err(Error::Refused(format!(
                "node {node} is the primary of shard {shard}: it cannot leave the in-sync set"
            )));
        }
        if !s.is_in_sync(node) {
            return Err(Error::Refused(format!(
                "node {node} is not in the in-sync set of shard {shard}"
            )));
        }
        self.shard_mut(shard)?.in_sync.retain(|n| n != node);
        Ok(self.bump())
    }

    /// [`Change::AddInSync`]: puts a replica back into the in-sync set. Raises the version,
    /// not the placement.
    fn add_in_sync(&mut self, shard: ShardId, epoch: u64, node: &str) -> ChangeResult {
        let s = self.in_sync_target(shard, epoch, node)?;
        if s.is_in_sync(node) {
            return Err(Error::Refused(format!(
                "node {node} is already in the in-sync set of shard {shard}"
            )));
        }
        self.shard_mut(shard)?.in_sync.push(node.to_string());
        Ok(self.bump())
    }

    /// [`Change::Promote`]: `node` becomes the primary in epoch `epoch + 1`, which the epoch
    /// history records as beginning at `first_lsn`; the old primary becomes a replica and leaves
    /// the in-sync set (it re-enters by [`Change::AddInSync`] once its log matches); the other
    /// members stay, unless the promotion is lossy (the set is the new primary alone). Raises the
    /// version and the placement: another node serves the shard's keys.
    fn promote(
        &mut self,
        shard: ShardId,
        epoch: u64,
        node: &str,
        first_lsn: Lsn,
        allow_data_loss: bool,
    ) -> ChangeResult {
        let s = self.in_sync_target(shard, epoch, node)?;
        if s.primary == node {
            return Err(Error::Refused(format!(
                "node {node} is already the primary of shard {shard}"
            )));
        }
        if !s.is_in_sync(node) && !allow_data_loss {
            return Err(Error::Refused(format!(
                "node {node} is not in the in-sync set of shard {shard}: it may lack committed \
                 writes"
            )));
        }
        let s = self.shard_mut(shard)?;
        let old = std::mem::replace(&mut s.primary, node.to_string());
        s.replicas.retain(|r| r != node);
        s.replicas.insert(0, old.clone());
        s.epoch = epoch + 1;
        // Epochs that began at or after `first_lsn` left no entry on the new primary (only a
        // lossy promotion can pick a node that lacks them): they are not part of its log.
        s.epochs.retain(|&(_, first)| first < first_lsn);
        s.epochs.push((s.epoch, first_lsn));
        // The other members of the set hold every committed entry, and nothing of the new
        // epoch commits without them: they stay (their tails of the old epoch are cut when the
        // new primary's stream reaches them). A lossy promotion starts the set afresh.
        if allow_data_loss && !s.is_in_sync(node) {
            s.in_sync = vec![node.to_string()];
        } else {
            s.in_sync.retain(|n| *n != old);
        }
        self.placement += 1;
        Ok(self.bump())
    }

    /// The shard an in-sync change is about, checked: it exists, the change was proposed under
    /// its current epoch (a deposed primary's proposal is stale), and `node` is a member.
    fn in_sync_target(&self, shard: ShardId, epoch: u64, node: &str) -> Result<&ShardInfo, Error> {
        let s = self
            .shards
            .get(&shard)
            .ok_or_else(|| Error::Refused(format!("there is no shard {shard}")))?;
        if s.epoch != epoch {
            return Err(Error::Refused(format!(
                "shard {shard} is at epoch {}, not {epoch}: the change was proposed by an older primary",
                s.epoch
            )));
        }
        if !s.is_member(node) {
            return Err(Error::Refused(format!(
                "node {node} is not a member of shard {shard}"
            )));
        }
        Ok(s)
    }

    fn shard_mut(&mut self, shard: ShardId) -> Result<&mut ShardInfo, Error> {
        self.shards
            .get_mut(&shard)
            .ok_or_else(|| Error::Refused(format!("there is no shard {shard}")))
    }

    /// Raises the version after an applied change and returns it.
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// The shard that owns a ring token.
    pub fn shard_of_token(&self, token: u64) -> Option<ShardId> {
        self.ring.owner(token)
    }

    /// The primary node of a shard.
    pub fn primary(&self, shard: ShardId) -> Option<(&str, &NodeInfo)> {
        let s = self.shards.get(&shard)?;
        self.nodes.get(&s.primary).map(|n| (s.primary.as_str(), n))
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// The shard of the node named `name`, with the shard's entry.
    pub fn shard_of_node(&self, name: &str) -> Option<(ShardId, &ShardInfo)> {
        let id = self.nodes.get(name)?.shard;
        self.shards.get(&id).map(|s| (id, s))
    }

    /// The shard whose keys the node named `name` serves: its shard if it is that shard's
    /// primary, none if it is a replica (a replica's copy is the log's, not the gateways': every
    /// read and write goes to the primary, DESIGN §6.1).
    pub fn served_shard(&self, name: &str) -> Option<ShardId> {
        self.shard_of_node(name)
            .filter(|(_, s)| s.primary == name)
            .map(|(id, _)| id)
    }

    /// The shards whose in-sync set is smaller than `replication.factor`, with its size: they
    /// run with fewer copies of their committed data than the cluster asks for.
    pub fn short_of_copies(&self) -> Vec<(ShardId, usize)> {
        self.shards
            .iter()
            .filter(|(_, s)| s.in_sync.len() < self.replication.factor as usize)
            .map(|(id, s)| (*id, s.in_sync.len()))
            .collect()
    }

    /// The Raft voters: the first three nodes by Raft id (five once there are five or more).
    pub fn voters(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.nodes.values().map(|n| n.raft_id).collect();
        ids.sort_unstable();
        let n = if ids.len() >= 5 { 5 } else { ids.len().min(3) };
        ids.truncate(n);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::value::DataType;
    use crate::types::Column;

    /// A formed-looking map of `n` nodes, one shard each, built without a cluster file: the
    /// map must not depend on how the CLI reads one.
    fn formed(n: u32) -> ClusterMap {
        groups(n, 1)
    }

    /// A map of `shards` replica groups of `factor` nodes each: shard `s` has nodes
    /// `n{s}a` (its primary), `n{s}b`, …, all in sync.
    fn groups(shards: u32, factor: u32) -> ClusterMap {
        let mut ring = Ring::new();
        let mut map_shards = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        let name = |s: u32, i: u32| {
            if factor == 1 {
                format!("n{s}")
            } else {
                format!("n{s}{}", (b'a' + i as u8) as char)
            }
        };
        for s in 1..=shards {
            ring.add_shard(s, 16);
            let members: Vec<String> = (0..factor).map(|i| name(s, i)).collect();
            map_shards.insert(s, ShardInfo::new(members[0].clone(), members[1..].to_vec()));
            for (i, m) in members.iter().enumerate() {
                let id = u64::from((s - 1) * factor) + i as u64 + 1;
                nodes.insert(
                    m.clone(),
                    NodeInfo {
                        raft_id: id,
                        rpc_addr: format!("127.0.0.1:{}", 7070 + id),
                        sql_addr: format!("127.0.0.1:{}", 5440 + id),
                        shard: s,
                    },
                );
            }
        }
        ClusterMap {
            cluster_id: "x".into(),
            name: "demo".into(),
            version: 0,
            placement: 0,
            replication: Replication {
                factor,
                min_in_sync: Replication::default_min_in_sync(factor),
                ..Replication::single()
            },
            vnodes: 16,
            ring,
            shards: map_shards,
            nodes,
            tables: BTreeMap::new(),
            next_table_id: 1,
        }
    }

    fn table(name: &str) -> Table {
        Table {
            id: 0,
            name: name.into(),
            columns: vec![Column {
                name: "id".into(),
                data_type: DataType::Int,
                not_null: true,
                default: None,
                hidden: false,
            }],
            primary_key: vec![0],
        }
    }

    #[test]
    fn the_first_three_nodes_vote_until_there_are_five() {
        assert_eq!(formed(1).voters(), vec![1]);
        assert_eq!(formed(4).voters(), vec![1, 2, 3]);
        assert_eq!(formed(6).voters(), vec![1, 2, 3, 4, 5]);
        assert_eq!(formed(4).primary(2).unwrap().0, "n2");
    }

    #[test]
    fn changes_are_validated_when_applied_and_raise_the_version() {
        let mut map = None;
        assert!(ClusterMap::apply(
            &mut map,
            &Change::CreateTable {
                table: table("t"),
                if_not_exists: false
            }
        )
        .is_err());
        let init = Change::Init(Box::new(formed(4)));
        assert_eq!(ClusterMap::apply(&mut map, &init), Ok(1));
        assert!(
            ClusterMap::apply(&mut map, &init).is_err(),
            "a second init is refused"
        );
        let create = Change::CreateTable {
            table: table("t"),
            if_not_exists: false,
        };
        assert_eq!(ClusterMap::apply(&mut map, &create), Ok(2));
        let err = ClusterMap::apply(&mut map, &create).unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::DUPLICATE_TABLE);
        assert_eq!(
            map.as_ref().unwrap().version,
            2,
            "a refused change leaves the map as it was"
        );
        assert_eq!(map.as_ref().unwrap().tables["t"].id, 1);
        let drop = Change::DropTable {
            names: vec!["t".into()],
            if_exists: false,
        };
        assert_eq!(ClusterMap::apply(&mut map, &drop), Ok(3));
        assert!(ClusterMap::apply(&mut map, &drop).is_err());
    }

    #[test]
    fn create_if_not_exists_of_a_taken_name_leaves_the_version() {
        let create = |if_not_exists| Change::CreateTable {
            table: table("t"),
            if_not_exists,
        };
        let mut m = None;
        ClusterMap::apply(&mut m, &Change::Init(Box::new(formed(1)))).unwrap();
        assert_eq!(ClusterMap::apply(&mut m, &create(false)), Ok(2));
        assert_eq!(ClusterMap::apply(&mut m, &create(true)), Ok(2));
        assert_eq!(m.unwrap().next_table_id, 2, "no id was used up");
    }

    #[test]
    fn dropping_tables_is_all_or_none() {
        let mut m = None;
        ClusterMap::apply(&mut m, &Change::Init(Box::new(formed(1)))).unwrap();
        for name in ["a", "b"] {
            let create = Change::CreateTable {
                table: table(name),
                if_not_exists: false,
            };
            ClusterMap::apply(&mut m, &create).unwrap();
        }
        let drop = |names: &[&str], if_exists| Change::DropTable {
            names: names.iter().map(|n| n.to_string()).collect(),
            if_exists,
        };
        let err = ClusterMap::apply(&mut m, &drop(&["a", "c"], false)).unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::UNDEFINED_TABLE);
        let after = m.as_ref().unwrap();
        assert_eq!(
            (after.version, after.tables.len()),
            (3, 2),
            "nothing dropped"
        );
        assert_eq!(ClusterMap::apply(&mut m, &drop(&["a", "c"], true)), Ok(4));
        assert_eq!(m.unwrap().tables.keys().collect::<Vec<_>>(), ["b"]);
    }

    /// A formed map of 2 shards × 3 copies, at version 1.
    fn replicated() -> Option<ClusterMap> {
        let mut m = None;
        ClusterMap::apply(&mut m, &Change::Init(Box::new(groups(2, 3)))).unwrap();
        m
    }

    fn remove(shard: ShardId, epoch: u64, node: &str) -> Change {
        Change::RemoveInSync {
            shard,
            epoch,
            node: node.into(),
        }
    }

    fn add(shard: ShardId, epoch: u64, node: &str) -> Change {
        Change::AddInSync {
            shard,
            epoch,
            node: node.into(),
        }
    }

    /// Applies `change`, expects a refusal that mentions `why`, and checks the map is unchanged.
    fn refused(m: &mut Option<ClusterMap>, change: Change, why: &str) {
        let before = m.clone();
        let err = ClusterMap::apply(m, &change).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(*m, before, "a refused change left the map changed");
    }

    #[test]
    fn init_starts_placement_at_1_with_every_member_in_sync_at_epoch_1() {
        let m = replicated().unwrap();
        assert_eq!((m.version, m.placement), (1, 1));
        let s = &m.shards[&2];
        assert_eq!(s.primary, "n2a");
        assert_eq!(s.replicas, ["n2b", "n2c"]);
        assert_eq!(s.in_sync, ["n2a", "n2b", "n2c"]);
        assert_eq!((s.epoch, s.epochs.clone()), (1, vec![(1, 1)]));
        assert_eq!(m.shard_of_node("n1c").map(|(id, _)| id), Some(1));
        assert_eq!(m.served_shard("n1a"), Some(1), "a primary serves its shard");
        assert_eq!(m.served_shard("n1c"), None, "a replica serves no keys");
        assert_eq!(m.served_shard("zz"), None);
        assert!(m.short_of_copies().is_empty());
    }

    #[test]
    fn ddl_raises_the_version_but_not_the_placement() {
        let mut m = replicated();
        let create = Change::CreateTable {
            table: table("t"),
            if_not_exists: false,
        };
        assert_eq!(ClusterMap::apply(&mut m, &create), Ok(2));
        let m = m.unwrap();
        assert_eq!((m.version, m.placement), (2, 1));
    }

    #[test]
    fn in_sync_changes_raise_the_version_but_not_the_placement() {
        let mut m = replicated();
        assert_eq!(ClusterMap::apply(&mut m, &remove(1, 1, "n1b")), Ok(2));
        let after = m.as_ref().unwrap();
        assert_eq!(after.shards[&1].in_sync, ["n1a", "n1c"]);
        assert_eq!(after.placement, 1);
        assert_eq!(after.short_of_copies(), vec![(1, 2)]);
        assert_eq!(ClusterMap::apply(&mut m, &add(1, 1, "n1b")), Ok(3));
        let after = m.unwrap();
        assert_eq!(after.shards[&1].in_sync, ["n1a", "n1c", "n1b"]);
        assert_eq!(after.placement, 1);
        assert!(after.short_of_copies().is_empty());
    }

    #[test]
    fn the_in_sync_set_may_shrink_below_min_in_sync() {
        // min_in_sync is 2 of 3: the set records who holds the data, and the primary refuses
        // writes below the floor; the map does not refuse the truth.
        let mut m = replicated();
        ClusterMap::apply(&mut m, &remove(2, 1, "n2b")).unwrap();
        ClusterMap::apply(&mut m, &remove(2, 1, "n2c")).unwrap();
        let m = m.unwrap();
        assert_eq!(m.shards[&2].in_sync, ["n2a"]);
        assert_eq!(m.short_of_copies(), vec![(2, 1)]);
    }

    #[test]
    fn an_in_sync_change_under_another_epoch_is_refused() {
        let mut m = replicated();
        refused(&mut m, remove(1, 2, "n1b"), "at epoch 1, not 2");
        refused(&mut m, remove(1, 0, "n1b"), "at epoch 1, not 0");
        ClusterMap::apply(&mut m, &remove(1, 1, "n1b")).unwrap();
        refused(&mut m, add(1, 7, "n1b"), "at epoch 1, not 7");
    }

    #[test]
    fn an_in_sync_change_for_a_node_outside_the_shard_is_refused() {
        let mut m = replicated();
        refused(&mut m, remove(1, 1, "n2b"), "not a member of shard 1");
        refused(&mut m, add(1, 1, "zz"), "not a member of shard 1");
        refused(&mut m, remove(9, 1, "n1b"), "there is no shard 9");
        refused(&mut m, add(9, 1, "n1b"), "there is no shard 9");
    }

    #[test]
    fn the_primary_cannot_leave_the_in_sync_set() {
        let mut m = replicated();
        refused(&mut m, remove(1, 1, "n1a"), "is the primary of shard 1");
    }

    #[test]
    fn adding_a_member_already_in_sync_or_removing_one_that_is_not_is_refused() {
        let mut m = replicated();
        refused(&mut m, add(1, 1, "n1b"), "already in the in-sync set");
        refused(&mut m, add(1, 1, "n1a"), "already in the in-sync set");
        ClusterMap::apply(&mut m, &remove(1, 1, "n1c")).unwrap();
        refused(&mut m, remove(1, 1, "n1c"), "not in the in-sync set");
    }

    #[test]
    fn in_sync_changes_need_a_formed_cluster() {
        let mut m = None;
        let err = ClusterMap::apply(&mut m, &add(1, 1, "n1b")).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert!(m.is_none());
    }

    fn promote(shard: ShardId, epoch: u64, node: &str, first_lsn: Lsn, lossy: bool) -> Change {
        Change::Promote {
            shard,
            epoch,
            node: node.into(),
            first_lsn,
            allow_data_loss: lossy,
        }
    }

    #[test]
    fn a_promotion_raises_the_epoch_records_where_it_begins_and_the_placement() {
        let mut m = replicated();
        ClusterMap::apply(&mut m, &promote(2, 1, "n2b", 41, false)).unwrap();
        let after = m.clone().unwrap();
        let s = &after.shards[&2];
        assert_eq!((after.version, after.placement), (2, 2));
        assert_eq!(s.primary, "n2b");
        assert_eq!(s.replicas, ["n2a", "n2c"]);
        assert_eq!(s.in_sync, ["n2b", "n2c"], "the old primary leaves the set");
        assert_eq!((s.epoch, s.epochs.clone()), (2, vec![(1, 1), (2, 41)]));
        assert_eq!(after.served_shard("n2b"), Some(2));
        assert_eq!(
            after.served_shard("n2a"),
            None,
            "the old primary serves nothing"
        );
        // The old primary's proposals are stale now.
        refused(&mut m, remove(2, 1, "n2c"), "older primary");
    }

    #[test]
    fn two_promotions_of_one_shard_under_the_same_epoch_never_both_apply() {
        let mut m = replicated();
        ClusterMap::apply(&mut m, &promote(1, 1, "n1b", 10, false)).unwrap();
        refused(&mut m, promote(1, 1, "n1c", 12, false), "older primary");
    }

    #[test]
    fn a_promotion_of_a_primary_a_stranger_or_an_out_of_sync_node_is_refused() {
        let mut m = replicated();
        refused(
            &mut m,
            promote(1, 1, "n1a", 5, false),
            "already the primary",
        );
        refused(&mut m, promote(1, 1, "n2b", 5, false), "not a member");
        ClusterMap::apply(&mut m, &remove(1, 1, "n1c")).unwrap();
        refused(
            &mut m,
            promote(1, 1, "n1c", 5, false),
            "not in the in-sync set",
        );
    }

    #[test]
    fn a_lossy_promotion_drops_the_epochs_the_new_primary_never_had() {
        let mut m = replicated();
        ClusterMap::apply(&mut m, &promote(1, 1, "n1b", 100, false)).unwrap();
        // n1c falls out of the set and lacks all of epoch 2.
        ClusterMap::apply(&mut m, &remove(1, 2, "n1c")).unwrap();
        ClusterMap::apply(&mut m, &promote(1, 2, "n1c", 90, true)).unwrap();
        let s = &m.unwrap().shards[&1];
        assert_eq!(s.primary, "n1c");
        assert_eq!(
            s.in_sync,
            ["n1c"],
            "a lossy promotion starts the set afresh"
        );
        assert_eq!((s.epoch, s.epochs.clone()), (3, vec![(1, 1), (3, 90)]));
    }
}
