//! `ddb stop [NODE…]`: stops nodes gracefully and waits for them to exit.

use std::time::Duration;

use clap::Args;

use super::global::GlobalArgs;
use super::nodes::{load_config, probe};
use crate::deploy::local;
use crate::error::Error;
use crate::protocol::Request;

/// Arguments of `ddb stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The nodes to stop (default: every node in the cluster file)
    pub nodes: Vec<String>,
    /// How long to wait for each node to exit, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

/// Runs `ddb stop`.
pub async fn run(args: &StopArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let nodes = if args.nodes.is_empty() {
        config.nodes.iter().collect::<Vec<_>>()
    } else {
        args.nodes
            .iter()
            .map(|n| config.node(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    for node in nodes {
        let Some((client, status)) = probe(node, &config.name).await? else {
            if !global.quiet {
                eprintln!("{} was not running", node.name);
            }
            continue;
        };
        client.call(Request::Shutdown).await?;
        drop(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        loop {
            let gone = if node.local {
                !local::alive(status.pid as i32)
            } else {
                probe(node, &config.name).await?.is_none()
            };
            if gone {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "node {} did not exit within {} s",
                    node.name, args.timeout
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !global.quiet {
            eprintln!("stopped {}", node.name);
        }
    }
    Ok(())
}
