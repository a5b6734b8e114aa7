//! Validation: what a decoded cluster file must satisfy beyond its types, one rule per function.
//!
//! Each rule looks at the raw file (or at one node and the nodes before it) and either passes or
//! returns an [`Invalid`]: the [`Field`] it is about and a message that names the field and says
//! what is expected. [`validate`] turns that into the error the user sees, with the file and the
//! line of the field, found by [`super::locate`].
//!
//! Rules run in a fixed order and the first failure is reported: the file-wide rules first,
//! then, node by node in file order, every rule about that node. So a node is checked against
//! the nodes above it, and the error for a clash (a name, a listener, a data directory, a
//! pinned shard) points at the later of the two entries, naming the earlier one.
//!
//! Clashes are found through [`Seen`], what the nodes above have taken, indexed by what they
//! took: checking a node costs the same however many nodes are above it, so a file of
//! thousands of nodes is validated in well under a second. Listeners are compared by address
//! ([`super::hosts`]: `localhost` and `127.0.0.1` are one), data directories by machine and
//! normalised path ([`super::data_dir`]), so that no clash is left for `ddb init` to find
//! half-way, with some nodes started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::data_dir::data_dir;
use super::decode::{RawFile, RawNode};
use super::hosts::{Addr, Resolver};
use super::locate::{error_at, line_of, Field};
use super::shards::assign_shards;
use crate::cluster::map::Replication;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};

/// Most copies of a shard that `replication.factor` may ask for.
const MAX_FACTOR: u32 = Replication::MAX_FACTOR;

/// The longest `replication.ack_timeout_ms`: ten minutes. A replica silent for longer than
/// that holds up every write of its shard for as long, which is an outage, not a setting.
const MAX_ACK_TIMEOUT_MS: u64 = 600_000;

/// Most virtual nodes per shard that `sharding.vnodes` may ask for.
const MAX_VNODES: u32 = 4096;

/// A broken rule: the field it is about, and what is wrong with it.
#[derive(Debug)]
pub(super) struct Invalid {
    field: Field,
    message: String,
}

impl Invalid {
    fn new(field: Field, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A rule's outcome.
type Check = std::result::Result<(), Invalid>;

/// Checks a decoded file against every rule; the error names `path`, the line in `text` of the
/// field that broke the first failing rule, the field, and what is expected.
pub(super) fn validate(file: &RawFile, text: &str, path: &Path) -> Result<()> {
    match validate_plan(file, text, path)? {
        Some(unbuilt) => Err(unbuilt),
        None => Ok(()),
    }
}

/// Checks a file that is only to be planned (`ddb init --dry-run`): every rule, except that a
/// file asking for what ddb cannot run yet is not refused but handed back, so that the plan
/// can be shown before the refusal. `Ok(Some(e))`: a valid file that `e` says cannot start.
pub(super) fn validate_plan(file: &RawFile, text: &str, path: &Path) -> Result<Option<Error>> {
    let at = |invalid: Invalid| error_at(path, line_of(text, &invalid.field), &invalid.message);
    check(file, path).map_err(at)?;
    // Every setting a valid file can hold runs today (replication factors up to 5 included);
    // a rule for something not built yet would hand its refusal back here.
    Ok(None)
}

/// What the nodes checked so far have taken, indexed for the clash rules.
#[derive(Default)]
struct Seen {
    /// Node names, with the index of their node.
    names: HashMap<String, usize>,
    /// Listener addresses and ports, with the listener that took them (`n1.rpc_port`) and the
    /// host as that node spelled it.
    listeners: HashMap<(Addr, u16), (String, String)>,
    /// Data directories by machine, with their node.
    dirs: HashMap<(Addr, PathBuf), usize>,
    /// Every directory that holds a data directory, by machine, with that directory's node.
    holders: HashMap<(Addr, PathBuf), usize>,
    /// Each shard with the nodes on it so far.
    shards: HashMap<ShardId, Vec<usize>>,
    resolver: Resolver,
}

/// Every rule, in order.
fn check(file: &RawFile, path: &Path) -> Check {
    name_is_not_empty(file)?;
    factor_is_in_range(file)?;
    min_in_sync_is_in_range(file)?;
    ack_timeout_is_in_range(file)?;
    vnodes_are_in_range(file)?;
    there_is_a_node(file)?;
    let nodes = &file.nodes;
    let factor = file.replication.factor;
    let shards = assign_shards(nodes, factor);
    let mut seen = Seen::default();
    for i in 0..nodes.len() {
        node_name_is_valid(nodes, i)?;
        node_name_is_unique(nodes, i, &mut seen)?;
        ports_are_not_zero(nodes, i)?;
        listeners_are_free(nodes, i, &mut seen)?;
        data_dir_is_its_own(file, i, path, &mut seen)?;
        shard_id_is_not_zero(nodes, i)?;
        pinned_shard_is_free(nodes, &shards, factor, i, &mut seen)?;
    }
    Ok(())
}

/// `name:` names the cluster, and nodes refuse maps and requests of another name.
fn name_is_not_empty(file: &RawFile) -> Check {
    if file.name.trim().is_empty() {
        return Err(Invalid::new(
            Field::at(&["name"]),
            "name: must not be empty; expected the cluster's name",
        ));
    }
    Ok(())
}

/// `replication.factor` is between 1 and [`MAX_FACTOR`].
fn factor_is_in_range(file: &RawFile) -> Check {
    let factor = file.replication.factor;
    if !(1..=MAX_FACTOR).contains(&factor) {
        return Err(Invalid::new(
            Field::at(&["replication", "factor"]),
            format!("replication.factor: {factor} is out of range; expected 1 to {MAX_FACTOR}"),
        ));
    }
    Ok(())
}

/// `replication.min_in_sync` is between 1 and `replication.factor`: a floor of 0 would
/// acknowledge writes that no copy holds, and one above `factor` could never be met.
fn min_in_sync_is_in_range(file: &RawFile) -> Check {
    let (factor, min) = (file.replication.factor, file.replication.min_in_sync());
    if !(1..=factor).contains(&min) {
        return Err(Invalid::new(
            Field::at(&["replication", "min_in_sync"]),
            format!("replication.min_in_sync: {min} is out of range; expected 1 to replication.factor ({factor})"),
        ));
    }
    Ok(())
}

/// `replication.ack_timeout_ms` is between 1 and [`MAX_ACK_TIMEOUT_MS`].
fn ack_timeout_is_in_range(file: &RawFile) -> Check {
    let ms = file.replication.ack_timeout_ms;
    if !(1..=MAX_ACK_TIMEOUT_MS).contains(&ms) {
        return Err(Invalid::new(
            Field::at(&["replication", "ack_timeout_ms"]),
            format!("replication.ack_timeout_ms: {ms} is out of range; expected 1 to {MAX_ACK_TIMEOUT_MS}"),
        ));
    }
    Ok(())
}

/// `sharding.vnodes` is between 1 and [`MAX_VNODES`].
fn vnodes_are_in_range(file: &RawFile) -> Check {
    let vnodes = file.sharding.vnodes;
    if !(1..=MAX_VNODES).contains(&vnodes) {
        return Err(Invalid::new(
            Field::at(&["sharding", "vnodes"]),
            format!("sharding.vnodes: {vnodes} is out of range; expected 1 to {MAX_VNODES}"),
        ));
    }
    Ok(())
}

/// `nodes:` has at least one node: a cluster of none cannot form.
fn there_is_a_node(file: &RawFile) -> Check {
    if file.nodes.is_empty() {
        return Err(Invalid::new(
            Field::at(&["nodes"]),
            "nodes: expected at least one node",
        ));
    }
    Ok(())
}

/// A node name is letters, digits, `-`, `_` and `.`: it becomes a directory name (through
/// `{name}` in `defaults.data_dir`) and a column in `ddb status`.
fn node_name_is_valid(nodes: &[RawNode], i: usize) -> Check {
    let name = &nodes[i].name;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(valid) {
        return Err(Invalid::new(
            Field::node(i, "name"),
            format!("nodes.name: '{name}' is not a valid node name; expected letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

/// No two nodes share a name: commands and the map name nodes by it.
fn node_name_is_unique(nodes: &[RawNode], i: usize, seen: &mut Seen) -> Check {
    let name = &nodes[i].name;
    if seen.names.insert(name.clone(), i).is_some() {
        return Err(Invalid::new(
            Field::node(i, "name"),
            format!("nodes.name: duplicate node name '{name}'; expected a name no other node has"),
        ));
    }
    Ok(())
}

/// Ports are 1 to 65535: decoding already refuses larger ones, and port 0 would mean "any free
/// port", which no peer could be told in advance.
fn ports_are_not_zero(nodes: &[RawNode], i: usize) -> Check {
    let node = &nodes[i];
    for (port, field) in [(node.rpc_port, "rpc_port"), (node.sql_port, "sql_port")] {
        if port == 0 {
            return Err(Invalid::new(
                Field::node(i, field),
                format!(
                    "nodes.{}.{field}: 0 is out of range; ports must be between 1 and 65535",
                    node.name
                ),
            ));
        }
    }
    Ok(())
}

/// No two listeners, the node's own two included, take one address and port: the second
/// could not bind. Hosts are compared by the addresses they stand for, so `localhost:7071`
/// clashes with `127.0.0.1:7071`.
fn listeners_are_free(nodes: &[RawNode], i: usize, seen: &mut Seen) -> Check {
    let node = &nodes[i];
    let host = seen.resolver.host(&node.host).clone();
    for (port, field) in [(node.rpc_port, "rpc_port"), (node.sql_port, "sql_port")] {
        for addr in &host.addresses {
            let Some((other, spelled)) = seen.listeners.get(&(addr.clone(), port)) else {
                continue;
            };
            let same = if *spelled == node.host {
                String::new()
            } else {
                format!(" (as {}:{port})", spelled)
            };
            return Err(Invalid::new(
                Field::node(i, field),
                format!(
                    "nodes.{}.{field}: {}:{port} is already used by {other}{same}; expected a port that no other listener on {} uses",
                    node.name, node.host, node.host
                ),
            ));
        }
        for addr in &host.addresses {
            seen.listeners.insert(
                (addr.clone(), port),
                (format!("{}.{field}", node.name), node.host.clone()),
            );
        }
    }
    Ok(())
}

/// No two nodes on one machine share a data directory, or keep one inside another's: each
/// node locks its directory, and the second would fail to start after the first had.
/// Directories are compared after `{name}` is filled in and the path is normalised.
fn data_dir_is_its_own(file: &RawFile, i: usize, path: &Path, seen: &mut Seen) -> Check {
    let node = &file.nodes[i];
    let machine = seen.resolver.host(&node.host).machine.clone();
    let dir = data_dir(file, i, path);
    let clash = |message: String| {
        Err(Invalid::new(
            Field::node(i, "data_dir"),
            format!(
                "nodes.{}.data_dir: {} {message}; expected a directory of its own",
                node.name,
                dir.display()
            ),
        ))
    };
    let key = (machine.clone(), dir.clone());
    if let Some(&j) = seen.dirs.get(&key) {
        return clash(format!(
            "is also the data directory of {}",
            file.nodes[j].name
        ));
    }
    if let Some(&j) = seen.holders.get(&key) {
        return clash(format!(
            "holds the data directory of {} ({})",
            file.nodes[j].name,
            data_dir(file, j, path).display()
        ));
    }
    for parent in dir.ancestors().skip(1) {
        if let Some(&j) = seen.dirs.get(&(machine.clone(), parent.to_path_buf())) {
            return clash(format!(
                "is inside the data directory of {} ({})",
                file.nodes[j].name,
                parent.display()
            ));
        }
    }
    for parent in dir.ancestors().skip(1) {
        seen.holders
            .entry((machine.clone(), parent.to_path_buf()))
            .or_insert(i);
    }
    seen.dirs.insert(key, i);
    Ok(())
}

/// A pinned `shard:` is 1 or more: shard ids start at 1.
fn shard_id_is_not_zero(nodes: &[RawNode], i: usize) -> Check {
    if nodes[i].shard == Some(0) {
        return Err(Invalid::new(
            Field::node(i, "shard"),
            format!(
                "nodes.{}.shard: shard ids start at 1; expected 1 or more",
                nodes[i].name
            ),
        ));
    }
    Ok(())
}

/// A node pinned to a shard finds room on it: a shard has at most `replication.factor`
/// nodes, and the nodes above may already have filled it, pinned or given in file order.
fn pinned_shard_is_free(
    nodes: &[RawNode],
    shards: &[ShardId],
    factor: u32,
    i: usize,
    seen: &mut Seen,
) -> Check {
    let on_shard = seen.shards.entry(shards[i]).or_default();
    let above = on_shard.clone();
    on_shard.push(i);
    let Some(shard) = nodes[i].shard else {
        return Ok(());
    };
    if above.len() >= factor as usize {
        let names: Vec<&str> = above.iter().map(|&j| nodes[j].name.as_str()).collect();
        let message = if factor == 1 {
            format!(
                "nodes.{}.shard: shard {shard} already has node {}; with replication.factor 1 each shard has one node",
                nodes[i].name, names[0]
            )
        } else {
            format!(
                "nodes.{}.shard: shard {shard} already has {factor} nodes ({}); with replication.factor {factor} a shard has at most {factor}",
                nodes[i].name,
                names.join(", ")
            )
        };
        return Err(Invalid::new(Field::node(i, "shard"), message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{err, GOOD};

    /// Asserts that `text` is refused at `line` with `message` after the position.
    fn refused(text: &str, line: usize, message: &str) {
        let e = err(text);
        assert_eq!(e, format!("/etc/ddb/cluster.yaml:{line}: {message}"));
    }

    #[test]
    fn an_empty_cluster_name_is_refused_at_its_line() {
        let message = "name: must not be empty; expected the cluster's name";
        refused(&GOOD.replace("name: demo", "name: ''"), 1, message);
        let text = format!(
            "# the cluster\n{}",
            GOOD.replace("name: demo", "name: '  '")
        );
        refused(&text, 2, message);
    }

    #[test]
    fn a_factor_out_of_range_is_refused_at_its_line() {
        refused(
            &GOOD.replace("factor: 1", "factor: 6"),
            3,
            "replication.factor: 6 is out of range; expected 1 to 5",
        );
        refused(
            &GOOD.replace("factor: 1", "factor: 0"),
            3,
            "replication.factor: 0 is out of range; expected 1 to 5",
        );
    }

    #[test]
    fn a_factor_above_one_is_accepted() {
        let text = GOOD.replace("factor: 1", "factor: 2");
        let c = crate::config::ClusterConfig::parse(&text, std::path::Path::new("cluster.yaml"))
            .unwrap_or_else(|e| panic!("refused: {e}"));
        assert_eq!(c.replication.factor, 2);
    }

    #[test]
    fn vnodes_out_of_range_are_refused_at_their_line() {
        refused(
            &GOOD.replace("vnodes: 64", "vnodes: 0"),
            6,
            "sharding.vnodes: 0 is out of range; expected 1 to 4096",
        );
        refused(
            &GOOD.replace("vnodes: 64", "vnodes: 5000 # too many"),
            6,
            "sharding.vnodes: 5000 is out of range; expected 1 to 4096",
        );
    }

    #[test]
    fn a_file_without_nodes_is_refused_at_the_nodes_line() {
        let text = &GOOD[..=GOOD.find("\nnodes:").unwrap()];
        refused(
            &format!("{text}nodes: []\n"),
            9,
            "nodes: expected at least one node",
        );
    }

    #[test]
    fn an_invalid_node_name_is_refused_at_its_line() {
        refused(
            &GOOD.replace("name: n2", "name: 'n 2'"),
            14,
            "nodes.name: 'n 2' is not a valid node name; expected letters, digits, '-', '_' or '.'",
        );
        refused(
            &GOOD.replace("name: n1", "name: ''"),
            10,
            "nodes.name: '' is not a valid node name; expected letters, digits, '-', '_' or '.'",
        );
    }

    #[test]
    fn a_duplicate_node_name_is_refused_at_the_second_entry() {
        let message = "nodes.name: duplicate node name 'n1'; expected a name no other node has";
        refused(&GOOD.replace("name: n2", "name: n1"), 14, message);
        // Quoted, or with a comment: the same name, and the same line.
        refused(
            &GOOD.replace("name: n2", "name: \"n1\" # again"),
            14,
            message,
        );
    }

    #[test]
    fn a_zero_port_is_refused_at_its_line() {
        refused(
            &GOOD.replace("rpc_port: 7072", "rpc_port: 0"),
            16,
            "nodes.n2.rpc_port: 0 is out of range; ports must be between 1 and 65535",
        );
        refused(
            &GOOD.replace("sql_port: 5441", "sql_port: 0"),
            13,
            "nodes.n1.sql_port: 0 is out of range; ports must be between 1 and 65535",
        );
    }

    #[test]
    fn two_listeners_on_one_address_are_refused_at_the_second() {
        refused(
            &GOOD.replace("rpc_port: 7072", "rpc_port: 7071"),
            16,
            "nodes.n2.rpc_port: 127.0.0.1:7071 is already used by n1.rpc_port; expected a port that no other listener on 127.0.0.1 uses",
        );
        refused(
            &GOOD.replace("sql_port: 5441", "sql_port: 7071"),
            13,
            "nodes.n1.sql_port: 127.0.0.1:7071 is already used by n1.rpc_port; expected a port that no other listener on 127.0.0.1 uses",
        );
        refused(
            &GOOD.replace("sql_port: 5442", "sql_port: 5441"),
            17,
            "nodes.n2.sql_port: 127.0.0.1:5441 is already used by n1.sql_port; expected a port that no other listener on 127.0.0.1 uses",
        );
        // Another host may use the same ports.
        super::super::fixture::parse(&GOOD.replace(
            "host: 127.0.0.1\n    rpc_port: 7072\n    sql_port: 5442",
            "host: 127.0.0.2\n    rpc_port: 7071\n    sql_port: 5441",
        ))
        .unwrap();
    }

    #[test]
    fn two_spellings_of_one_address_are_one_listener() {
        // n2 on localhost:7071 could not bind next to n1 on 127.0.0.1:7071.
        refused(
            &GOOD.replace(
                "host: 127.0.0.1\n    rpc_port: 7072",
                "host: localhost\n    rpc_port: 7071",
            ),
            16,
            "nodes.n2.rpc_port: localhost:7071 is already used by n1.rpc_port (as 127.0.0.1:7071); expected a port that no other listener on localhost uses",
        );
        refused(
            &GOOD.replace(
                "host: 127.0.0.1\n    rpc_port: 7072\n    sql_port: 5442",
                "host: 127.1\n    rpc_port: 7073\n    sql_port: 5441",
            ),
            17,
            "nodes.n2.sql_port: 127.1:5441 is already used by n1.sql_port (as 127.0.0.1:5441); expected a port that no other listener on 127.1 uses",
        );
    }

    #[test]
    fn two_nodes_with_one_data_directory_are_refused_naming_both() {
        // n1's directory comes from the default, n2 names the same one another way.
        refused(
            &GOOD.replace("data_dir: /srv/n2", "data_dir: ./data/x/../n1"),
            18,
            "nodes.n2.data_dir: /etc/ddb/data/n1 is also the data directory of n1; expected a directory of its own",
        );
        refused(
            &GOOD.replace("data_dir: /srv/n2", "data_dir: data/n1/inner"),
            18,
            "nodes.n2.data_dir: /etc/ddb/data/n1/inner is inside the data directory of n1 (/etc/ddb/data/n1); expected a directory of its own",
        );
        refused(
            &GOOD.replace("data_dir: /srv/n2", "data_dir: /etc/ddb/data"),
            18,
            "nodes.n2.data_dir: /etc/ddb/data holds the data directory of n1 (/etc/ddb/data/n1); expected a directory of its own",
        );
        // A default without `{name}` gives every node the same directory: refused at the
        // second node's entry, since the field is not in the file.
        let text = GOOD
            .replace("data_dir: ./data/{name}", "data_dir: ./data")
            .replace("    data_dir: /srv/n2\n", "");
        refused(
            &text,
            14,
            "nodes.n2.data_dir: /etc/ddb/data is also the data directory of n1; expected a directory of its own",
        );
        // The same path on two machines is two directories.
        super::super::fixture::parse(&GOOD.replace(
            "host: 127.0.0.1\n    rpc_port: 7072\n    sql_port: 5442\n    data_dir: /srv/n2",
            "host: 10.0.0.2\n    rpc_port: 7072\n    sql_port: 5442\n    data_dir: /etc/ddb/data/n1",
        ))
        .unwrap();
    }

    #[test]
    fn a_file_of_two_thousand_nodes_is_validated_at_once() {
        let mut text = "name: big\nnodes:\n".to_string();
        for i in 0..2000 {
            text += &format!(
                "  - {{ name: n{i}, host: {}, rpc_port: {}, sql_port: {} }}\n",
                if i % 2 == 0 { "127.0.0.1" } else { "localhost" },
                10000 + i,
                30000 + i
            );
        }
        let started = std::time::Instant::now();
        let c = super::super::fixture::parse(&text).unwrap();
        eprintln!("2,000 nodes validated in {:?}", started.elapsed());
        assert_eq!(c.nodes.len(), 2000);
    }

    #[test]
    fn shard_zero_is_refused_at_its_line() {
        refused(
            &GOOD.replace("    sql_port: 5442\n", "    sql_port: 5442\n    shard: 0\n"),
            18,
            "nodes.n2.shard: shard ids start at 1; expected 1 or more",
        );
    }

    #[test]
    fn a_shard_pinned_twice_is_refused_at_the_second_pin() {
        let message = "nodes.n2.shard: shard 2 already has node n1; with replication.factor 1 each shard has one node";
        let pin = |text: &str, port: &str| {
            text.replace(
                &format!("    rpc_port: {port}\n"),
                &format!("    rpc_port: {port}\n    shard: 2\n"),
            )
        };
        refused(&pin(&pin(GOOD, "7071"), "7072"), 18, message);
        // n1 takes shard 1 in file order, so n2 may not be pinned to it.
        let text = GOOD.replace("    rpc_port: 7072\n", "    rpc_port: 7072\n    shard: 1\n");
        refused(
            &text,
            17,
            "nodes.n2.shard: shard 1 already has node n1; with replication.factor 1 each shard has one node",
        );
    }

    /// A file of `n` nodes on 127.0.0.1 with `replication:` given as `replication`.
    fn nodes(replication: &str, n: usize, pins: &[(usize, u32)]) -> String {
        let mut text = format!("name: r\nreplication: {replication}\nnodes:\n");
        for i in 1..=n {
            let pin = pins
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, s)| format!(", shard: {s}"))
                .unwrap_or_default();
            text += &format!(
                "  - {{ name: n{i}, host: 127.0.0.1, rpc_port: {}, sql_port: {}{pin} }}\n",
                7000 + i,
                5000 + i
            );
        }
        text
    }

    /// Plans `text`: its settings, and the refusal that stops it from starting, if any.
    fn plan(text: &str) -> (crate::config::ClusterConfig, Option<String>) {
        let (c, unbuilt) = crate::config::ClusterConfig::parse_plan(
            text,
            std::path::Path::new("/etc/ddb/cluster.yaml"),
        )
        .unwrap_or_else(|e| panic!("refused: {e}\n{text}"));
        (c, unbuilt.map(|e| e.to_string()))
    }

    #[test]
    fn factors_up_to_5_are_planned_and_run() {
        for factor in 2..=5 {
            let (c, unbuilt) = plan(&nodes(&format!("{{ factor: {factor} }}"), 10, &[]));
            assert_eq!(c.replication.factor, factor);
            assert_eq!(unbuilt, None);
        }
        let (_, unbuilt) = plan(&nodes("{ factor: 1 }", 2, &[]));
        assert_eq!(unbuilt, None);
    }

    #[test]
    fn min_in_sync_defaults_to_a_majority_of_factor_rounded_up() {
        for (factor, min) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            let (c, _) = plan(&nodes(&format!("{{ factor: {factor} }}"), 5, &[]));
            assert_eq!(c.replication.min_in_sync, min, "factor {factor}");
            assert_eq!(c.replication.ack_timeout_ms, 1000);
        }
        let (c, _) = plan(&nodes(
            "{ factor: 3, mode: async, min_in_sync: 3, ack_timeout_ms: 250 }",
            3,
            &[],
        ));
        assert_eq!(
            (c.replication.min_in_sync, c.replication.ack_timeout_ms),
            (3, 250)
        );
        assert_eq!(c.replication.mode, crate::cluster::map::Mode::Async);
    }

    #[test]
    fn min_in_sync_outside_1_to_factor_is_refused_at_its_line() {
        let text = GOOD.replace("factor: 1\n", "factor: 1\n  min_in_sync: 2\n");
        refused(
            &text,
            4,
            "replication.min_in_sync: 2 is out of range; expected 1 to replication.factor (1)",
        );
        let text = GOOD.replace("factor: 1\n", "factor: 1\n  min_in_sync: 0\n");
        refused(
            &text,
            4,
            "replication.min_in_sync: 0 is out of range; expected 1 to replication.factor (1)",
        );
    }

    #[test]
    fn an_ack_timeout_out_of_range_is_refused_at_its_line() {
        for ms in [0, 600_001] {
            let text = GOOD.replace(
                "mode: sync\n",
                &format!("mode: sync\n  ack_timeout_ms: {ms}\n"),
            );
            refused(
                &text,
                5,
                &format!("replication.ack_timeout_ms: {ms} is out of range; expected 1 to 600000"),
            );
        }
    }

    #[test]
    fn nodes_fill_replica_groups_in_file_order_and_by_pin() {
        let (c, _) = plan(&nodes("{ factor: 2 }", 5, &[(2, 2)]));
        let shards: Vec<u32> = c.nodes.iter().map(|n| n.shard).collect();
        assert_eq!(shards, vec![1, 2, 1, 2, 3]);
        assert_eq!(
            c.short_shards(),
            vec![(3, 1)],
            "the last shard is short, not refused"
        );
    }

    #[test]
    fn a_pin_onto_a_full_replica_group_is_refused_naming_its_nodes() {
        let e = err(&nodes("{ factor: 2 }", 3, &[(3, 1)]));
        assert_eq!(
            e,
            "/etc/ddb/cluster.yaml:6: nodes.n3.shard: shard 1 already has 2 nodes (n1, n2); with replication.factor 2 a shard has at most 2"
        );
        let (c, _) = plan(&nodes("{ factor: 3 }", 3, &[(3, 1)]));
        assert!(c.nodes.iter().all(|n| n.shard == 1));
    }

    #[test]
    fn node_errors_in_flow_style_name_their_line() {
        let text = "name: x\nnodes:\n  - { name: a, host: h, rpc_port: 1, sql_port: 2 }\n  - { name: b, host: h, rpc_port: 3, sql_port: 2 }\n";
        refused(
            text,
            4,
            "nodes.b.sql_port: h:2 is already used by a.sql_port; expected a port that no other listener on h uses",
        );
    }
}
