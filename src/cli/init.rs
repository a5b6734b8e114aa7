//! `ddb init`: starts every node of the cluster file and forms the cluster.
//!
//! Steps, each safe to repeat: start the nodes that are not running (local processes), join
//! each one to the cluster (it persists its identity), initialise the map's Raft group on the
//! first node with the initial map, and wait until every node has the map. Re-running on a
//! formed cluster starts the nodes that are down and changes nothing else.
//!
//! Nodes form replica groups as the file says (`replication.factor` nodes per shard, in file
//! order or by `shard:`; the first of each its primary, see `config::shards`). `--dry-run`
//! prints that plan and starts nothing. Replicated shards keep their copies with log shipping
//! (`server::repl`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::global::GlobalArgs;
use super::nodes::{
    copy_warnings, fetch_map, load_config, node_table, probe, refuse_addr, statuses, Target,
};
use super::output::{Format, Printer};
use crate::client::Client;
use crate::cluster::map::ClusterMap;
use crate::cluster::meta::Identity;
use crate::cluster::ring::spread;
use crate::config::ClusterConfig;
use crate::deploy::local;
use crate::error::{Error, Result};
use crate::protocol::{Request, Response};
use crate::types::value::{DataType, Value};
use crate::types::OutputColumn;
use crate::types::QueryResult;

/// Arguments of `ddb init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Print the plan (nodes, shards, ring shares) and start nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for each node to start, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

fn spinner(quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// A new cluster id: the name and a time-based suffix, unique enough to tell clusters apart.
fn new_cluster_id(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix =
        xxhash_rust::xxh3::xxh3_64(format!("{name}/{nanos}/{}", std::process::id()).as_bytes());
    format!("{name}-{mix:016x}")
}

/// The plan of `ddb init --dry-run`: one row per node, with its shard, its role in the
/// shard's replica group, and the shard's tokens and share of the ring.
fn plan_table(map: &ClusterMap, config: &ClusterConfig) -> QueryResult {
    let shares = map.ring.shares();
    let tokens = map.ring.token_counts();
    let columns = [
        "name", "rpc_addr", "sql_addr", "shard", "role", "tokens", "share", "data_dir",
    ]
    .iter()
    .zip([
        DataType::Text,
        DataType::Text,
        DataType::Text,
        DataType::Int,
        DataType::Text,
        DataType::Int,
        DataType::Double,
        DataType::Text,
    ])
    .map(|(n, t)| OutputColumn {
        name: n.to_string(),
        data_type: t,
    })
    .collect();
    let rows = config
        .nodes
        .iter()
        .map(|n| {
            let primary = map
                .shards
                .get(&n.shard)
                .is_some_and(|s| s.primary == n.name);
            vec![
                Value::Text(n.name.clone()),
                Value::Text(n.rpc_addr()),
                Value::Text(n.sql_addr()),
                Value::Int(n.shard.into()),
                Value::Text(if primary { "primary" } else { "replica" }.into()),
                Value::Int(tokens.get(&n.shard).copied().unwrap_or(0) as i64),
                Value::Float(
                    (shares.get(&n.shard).copied().unwrap_or(0.0) * 10000.0).round() / 10000.0,
                ),
                Value::Text(n.data_dir.display().to_string()),
            ]
        })
        .collect();
    QueryResult {
        columns,
        rows,
        tag: String::new(),
    }
}

/// The warnings about a file's replica groups: a shard with fewer nodes than
/// `replication.factor` is allowed (its replicas may join later) but short of copies; and a
/// replicated cluster whose map has fewer than 3 members (every node of the file is one) loses
/// the map's Raft quorum with any one node, and then cannot take the lost node out of an
/// in-sync set: the shard's writes stop (40003, then 53000) until the node is back.
fn plan_warnings(config: &ClusterConfig) -> Vec<String> {
    let factor = config.replication.factor;
    let mut warnings: Vec<String> = config
        .short_shards()
        .into_iter()
        .map(|(shard, n)| {
            format!("WARNING: shard {shard} has {n} of {factor} nodes in the file; it has fewer copies than replication.factor until replicas join")
        })
        .collect();
    let members = config.nodes.len();
    if factor > 1 && members < 3 {
        warnings.push(format!(
            "WARNING: the cluster map has {members} member(s) with replication.factor {factor}: losing one node loses the map's quorum, so no in-sync set can change and that shard's writes stop until the node is back; a replicated cluster needs at least 3 nodes to ride out a node loss"
        ));
    }
    warnings
}

/// `ddb init --dry-run`: prints the plan, starts nothing. A file that could be planned but not
/// started (replicas, before replication is built) is refused after its plan is shown.
fn dry_run(global: &GlobalArgs, format: Format) -> anyhow::Result<()> {
    let (config, unbuilt) = ClusterConfig::load_plan(&global.config)?;
    let map = config.initial_map("dry-run".into());
    let mut printer = Printer::new(format, true, true);
    printer.print(
        &plan_table(&map, &config),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    for warning in plan_warnings(&config) {
        super::console::note(format_args!("{warning}"));
    }
    if !global.quiet {
        let r = &config.replication;
        super::console::note(format_args!(
            "plan: cluster '{}', {} nodes, {} shards of {} copies ({} mode, min_in_sync {}), {} vnodes per shard, ring spread {:.2}%; nothing was started",
            config.name,
            config.nodes.len(),
            map.shards.len(),
            r.factor,
            r.mode.as_str(),
            r.min_in_sync,
            config.vnodes,
            spread(&map.ring.shares()) * 100.0
        ));
    }
    match unbuilt {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Runs `ddb init`.
pub async fn run(args: &InitArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    refuse_addr(
        global,
        "init",
        "starts and forms the nodes of the cluster file",
    )?;
    let format = Format::resolve(global.format);
    if args.dry_run {
        return dry_run(global, format);
    }
    let config = load_config(global)?;
    for warning in plan_warnings(&config) {
        super::console::note(format_args!("{warning}"));
    }
    if let Some(remote) = config.nodes.iter().find(|n| !n.local) {
        return Err(Error::InvalidInput(format!(
            "node {} is on host {}: deployment over SSH is not built yet; only local nodes (127.0.0.1, localhost) can be started",
            remote.name, remote.host
        ))
        .into());
    }
    let binary = std::env::current_exe()
        .map_err(|e| Error::Io(format!("cannot find the ddb binary: {e}")))?;
    let pb = spinner(global.quiet);

    // 1. Start the nodes that are down.
    let mut started = Vec::new();
    for node in &config.nodes {
        pb.set_message(format!("checking {}", node.name));
        if probe(&node.rpc_addr(), Some(&config.name)).await?.is_some() {
            continue;
        }
        pb.set_message(format!("starting {}", node.name));
        let pid = local::spawn(node, &binary)?;
        local::wait_ready(
            node,
            Some(pid),
            &config.name,
            Duration::from_secs(args.timeout),
        )
        .await?;
        started.push(node.name.clone());
    }

    // 2. Already formed? Then nothing else changes.
    let before = statuses(&config).await?;
    let formed = before.iter().all(|s| {
        s.as_ref().is_some_and(|s| {
            s.cluster.as_deref() == Some(config.name.as_str()) && s.map_version > 0
        })
    });
    if !formed {
        pb.set_message("forming the cluster");
        form(&config).await?;
    }
    pb.finish_and_clear();

    let after = statuses(&config).await?;
    let map = fetch_map(&config).await;
    let mut printer = Printer::new(format, true, true);
    printer.print(
        &node_table(
            &config.nodes.iter().map(Target::from).collect::<Vec<_>>(),
            &after,
            map.as_ref(),
        ),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    for warning in copy_warnings(map.as_ref()) {
        super::console::note(format_args!("{warning}"));
    }
    if !global.quiet {
        let started = if started.is_empty() {
            "no node needed starting".to_string()
        } else {
            format!("started {}", started.join(", "))
        };
        if formed {
            super::console::note(format_args!(
                "cluster '{}' was already formed; {started}; nothing else changed",
                config.name
            ));
        } else {
            super::console::note(format_args!(
                "cluster '{}' formed with {} nodes; {started}",
                config.name,
                config.nodes.len()
            ));
        }
    }
    Ok(())
}

/// Joins every node and forms the cluster, reusing the id of a partly formed cluster.
async fn form(config: &ClusterConfig) -> Result<()> {
    let cluster_id = match fetch_map(config).await {
        Some(map) => map.cluster_id,
        None => new_cluster_id(&config.name),
    };
    let map = config.initial_map(cluster_id.clone());
    let mut clients = Vec::new();
    for node in &config.nodes {
        let client = Client::connect_to(
            &node.rpc_addr(),
            Duration::from_secs(3),
            Some(config.name.clone()),
        )
        .await?;
        let info = map
            .node(&node.name)
            .ok_or_else(|| Error::Internal(format!("{} missing from the map", node.name)))?;
        let identity = Identity {
            cluster_id: cluster_id.clone(),
            cluster_name: config.name.clone(),
            node_name: node.name.clone(),
            raft_id: info.raft_id,
        };
        client.call(Request::Join(identity)).await?;
        clients.push(client);
    }
    let first = clients
        .first()
        .ok_or_else(|| Error::InvalidInput("the cluster file has no nodes".into()))?;
    match tokio::time::timeout(
        Duration::from_secs(60),
        first.call(Request::Initialize(Box::new(map))),
    )
    .await
    {
        Ok(r) => {
            r?;
        }
        Err(_) => {
            return Err(Error::Timeout(
                "forming the cluster took more than 60 s".into(),
            ))
        }
    }
    // Every node has the map once it is applied everywhere.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (node, client) in config.nodes.iter().zip(&clients) {
        loop {
            if let Ok(Response::Status(s)) = client.call(Request::Status).await {
                if s.map_version > 0 {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "node {} did not receive the cluster map in time",
                    node.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
