//! Local nodes: `ddb server` started as a detached process on this machine.
//!
//! The process gets its own session (so it outlives the terminal and the `ddb init` that
//! started it), its standard error goes to `ddb.log` in its data directory, and the server
//! writes its pid to `ddb.pid` there. Starting waits until the node answers on its RPC port,
//! and a node that dies or does not answer in time is reported with the tail of its log.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::config::NodeConfig;
use crate::error::{Error, Result};

/// The log file of a local node.
pub fn log_path(node: &NodeConfig) -> PathBuf {
    node.data_dir.join("ddb.log")
}

/// The last `lines` lines of a node's log.
pub fn log_tail(node: &NodeConfig, lines: usize) -> String {
    let text = std::fs::read_to_string(log_path(node)).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The pid the node wrote to its pid file, if any.
pub fn pid(node: &NodeConfig) -> Option<i32> {
    std::fs::read_to_string(node.data_dir.join("ddb.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a process with this pid is running (a zombie waiting to be reaped is not).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks for existence without sending anything.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // /proc/PID/stat is "pid (comm) STATE ..."; the comm may hold spaces, so split after ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// Starts `binary server …` for `node`, detached, returning its pid.
pub fn spawn(node: &NodeConfig, binary: &Path) -> Result<u32> {
    std::fs::create_dir_all(&node.data_dir).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot create data directory {} for {}: {e}",
            node.data_dir.display(),
            node.name
        ))
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(node))
        .map_err(|e| Error::Io(format!("cannot open {}: {e}", log_path(node).display())))?;
    let mut cmd = Command::new(binary);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--listen")
        .arg(node.rpc_addr())
        .arg("--sql-listen")
        .arg(node.sql_addr())
        .arg("--name")
        .arg(&node.name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env_remove("RUST_LOG");
    // SAFETY: setsid is async-signal-safe; it only detaches the child from our session.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::Io(format!(
            "cannot start {} for node {}: {e}",
            binary.display(),
            node.name
        ))
    })?;
    Ok(child.id())
}

/// Waits until `node` answers on its RPC port, or fails with its log tail.
pub async fn wait_ready(
    node: &NodeConfig,
    pid: Option<u32>,
    cluster: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match Client::connect_to(
            &node.rpc_addr(),
            Duration::from_millis(300),
            Some(cluster.to_string()),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e @ Error::Refused(_)) => return Err(e),
            Err(_) => {}
        }
        if let Some(pid) = pid {
            if !alive(pid as i32) {
                return Err(Error::Unreachable(format!(
                    "node {} exited during start-up; last lines of {}:\n{}",
                    node.name,
                    log_path(node).display(),
                    log_tail(node, 15)
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "node {} did not answer on {} within {} s; last lines of {}:\n{}",
                node.name,
                node.rpc_addr(),
                timeout.as_secs(),
                log_path(node).display(),
                log_tail(node, 15)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
