//! `ddb stop [NODE…]`: stops nodes gracefully and waits for them to exit.
//!
//! It acts on what it is told and nothing else: the named nodes of the cluster file (all of
//! them without names), or, with `--addr` (`DDB_ADDR`), the one node at that address, whatever
//! file `DDB_CONFIG` names. Names together with `--addr` are refused: they would have to be
//! looked up in a file that `--addr` says not to use.

use std::time::Duration;

use clap::Args;

use super::console::note;
use super::global::GlobalArgs;
use super::nodes::{load_config, probe, Target};
use crate::client::Client;
use crate::deploy::local;
use crate::error::Error;
use crate::protocol::{Request, Response};

/// Arguments of `ddb stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The nodes to stop (default: every node in the cluster file; with --addr, the node there)
    pub nodes: Vec<String>,
    /// How long to wait for each node to exit, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

/// Runs `ddb stop`.
pub async fn run(args: &StopArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (targets, cluster) = match &global.addr {
        Some(addr) => {
            if !args.nodes.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "ddb stop {}: with --addr {addr} (the option or DDB_ADDR) ddb stop stops the node at that address and takes no node names; name nodes with a cluster file instead",
                    args.nodes.join(" ")
                ))
                .into());
            }
            let client = Client::connect(addr, super::nodes::PROBE_TIMEOUT * 3).await?;
            let status = match client.call(Request::Status).await? {
                Response::Status(s) => s,
                other => {
                    return Err(Error::Corrupt(format!(
                        "unexpected answer to a status request: {other:?}"
                    ))
                    .into())
                }
            };
            let target = Target {
                name: status.name.clone(),
                rpc_addr: addr.clone(),
                sql_addr: status.sql_addr.clone(),
                shard: None,
                local: super::nodes::addr_is_local(addr),
            };
            stop_one(&target, client, status.pid, None, args.timeout).await?;
            if !global.quiet {
                note(format_args!("stopped {} (at {addr})", target.name));
            }
            return Ok(());
        }
        None => {
            let config = load_config(global)?;
            let nodes = if args.nodes.is_empty() {
                config.nodes.iter().collect::<Vec<_>>()
            } else {
                args.nodes
                    .iter()
                    .map(|n| config.node(n))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let targets: Vec<Target> = nodes.into_iter().map(Target::from).collect();
            (targets, config.name.clone())
        }
    };
    for node in &targets {
        let Some((client, status)) = probe(&node.rpc_addr, Some(&cluster)).await? else {
            if !global.quiet {
                note(format_args!("{} was not running", node.name));
            }
            continue;
        };
        stop_one(node, client, status.pid, Some(&cluster), args.timeout).await?;
        if !global.quiet {
            note(format_args!("stopped {}", node.name));
        }
    }
    Ok(())
}

/// Asks the node behind `client` to shut down and waits until it has exited: its process gone
/// when it runs here, else its RPC port no longer answering.
async fn stop_one(
    node: &Target,
    client: Client,
    pid: u32,
    cluster: Option<&str>,
    timeout: u64,
) -> anyhow::Result<()> {
    client.call(Request::Shutdown).await?;
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let gone = if node.local {
            !local::alive(pid as i32)
        } else {
            probe(&node.rpc_addr, cluster).await?.is_none()
        };
        if gone {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "node {} did not exit within {timeout} s",
                node.name
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
