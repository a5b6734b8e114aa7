//! `ddb status`: one row per node, live where the node answers: the nodes of the cluster file,
//! or with `--addr` the node there and the nodes of its map.
//!
//! Each row says where the node stands in its replica group (`role`, `in_sync`, `epoch`, from
//! the map) and how far it has got (`lsn`, and `lag` behind its primary); see
//! [`node_table`]. A shard whose in-sync set is smaller than `replication.factor` runs with
//! fewer copies of its data than asked for: that is said loudly, one `WARNING:` line per shard
//! on stderr (whatever `--quiet` says: it is not chatter), and the table keeps its shape. A
//! shard whose primary answers but refuses writes gets one `WARNING:` line with the reason,
//! and a node that rolled back applied entries lost in a failover (`async` mode) says so in
//! the `rolled_back` columns and in one `NOTE:` line on stderr.

use clap::Args;

use super::global::GlobalArgs;
use super::nodes::{
    add_txn_columns, copy_warnings, node_table, refusal_warnings, rollback_notes, Targets,
};
use super::output::{Format, Printer};
use crate::error::Error;

/// Arguments of `ddb status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Add transaction counters per node: commits in one phase and in two phases as gateway,
    /// the average time of each two-phase step, and decision records kept
    #[arg(long)]
    pub txns: bool,
}

/// Runs `ddb status`: exit 0 when every node answers, 3 when any does not.
pub async fn run(args: &StatusArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = Targets::resolve(global).await?;
    let statuses = targets.statuses().await?;
    let map = targets.map().await;
    let mut table = node_table(&targets.nodes, &statuses, map.as_ref());
    if args.txns {
        add_txn_columns(&mut table, &statuses);
    }
    let mut printer = Printer::new(Format::resolve(global.format), true, true);
    printer.print(
        &table,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    for warning in copy_warnings(map.as_ref()) {
        super::console::note(format_args!("{warning}"));
    }
    for warning in refusal_warnings(&targets.nodes, &statuses, map.as_ref()) {
        super::console::note(format_args!("{warning}"));
    }
    for note in rollback_notes(&targets.nodes, &statuses) {
        super::console::note(format_args!("{note}"));
    }
    let down: Vec<&str> = targets
        .nodes
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| n.name.as_str())
        .collect();
    if !down.is_empty() {
        return Err(Error::Unreachable(format!("not answering: {}", down.join(", "))).into());
    }
    Ok(())
}
