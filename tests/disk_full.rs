//! A full disk is survivable: a node whose data directory fills up under a load of
//! acknowledged inserts stops itself with a clear message (it must not go on after a failed
//! write or fsync), the client whose commit failed gets an error rather than an
//! acknowledgement, and once space is freed a restart recovers with every acknowledged row.
//!
//! The data directory is a small tmpfs mounted by the test, so it needs root (CI runs as
//! root); without root it says so and passes without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_until, TestNode};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs on {path:?}");
        Tmpfs(path.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs on {:?}", self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Whether the process `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_stops_clearly_and_a_restart_recovers_every_acknowledged_row() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs as the data directory needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The node's log goes beside its data directory, outside the small disk.
    let disk = tmp.path().join("disk");
    let fs = Tmpfs::mount(&disk, "24m");
    let mut node = TestNode::start_at(&disk, &[]);
    let pid = node.pid().unwrap();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    let body = |id: i32| format!("{id:08}").repeat(1000);

    // Insert until a commit fails (bounded in count and time: 24 MiB holds well under 10,000
    // rows of 8 KB, whatever the engine's overhead).
    let mut acknowledged = Vec::new();
    let mut failure = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    for id in 0..10_000 {
        if Instant::now() > deadline {
            break;
        }
        match c
            .execute("INSERT INTO t VALUES ($1, $2)", &[&id, &body(id)])
            .await
        {
            Ok(_) => acknowledged.push(id),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.unwrap_or_else(|| {
        panic!(
            "the disk never filled ({} rows acknowledged); log:\n{}",
            acknowledged.len(),
            node.log_tail()
        )
    });
    assert!(!acknowledged.is_empty(), "nothing was acknowledged");
    eprintln!(
        "{} rows acknowledged before the disk filled; the client got: {:?} (SQLSTATE {:?})",
        acknowledged.len(),
        failure.as_db_error().map(|e| e.message()),
        common::sqlstate(&failure)
    );
    // The client was told its commit did not happen, and why: an error with a SQLSTATE that
    // names the full disk, not a connection that just went away.
    let code = common::sqlstate(&failure)
        .unwrap_or_else(|| panic!("the failed commit got no SQLSTATE: {failure}"));
    let message = failure
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("No space left on device") || message.contains("a full or failing disk"),
        "SQLSTATE {code}: {message}; log:\n{}",
        node.log_tail()
    );
    // 53100 (disk_full) when the failed write itself reported ENOSPC; 58030 (io_error) when an
    // earlier background flush found the disk full first and the engine only says it failed.
    assert!(
        code == "53100" || code == "58030",
        "a failed write to a full disk is SQLSTATE {code}, not disk_full or io_error: {message}"
    );

    // The node stops itself, and its log says why.
    assert!(
        wait_until(Duration::from_secs(30), || exited(pid)),
        "the node went on after a failed write; log:\n{}",
        node.log_tail()
    );
    let log = node.log_tail();
    eprintln!("the node's log:\n{log}");
    assert!(
        log.contains("No space left on device") && log.contains("stopping the node"),
        "the log does not say why the node stopped:\n{log}"
    );
    assert!(
        !log.contains("panicked"),
        "the node panicked instead of stopping:\n{log}"
    );

    // Space is freed; the node starts again and has every acknowledged row, whole.
    fs.resize("256m");
    node.restart();
    let c = node.connect().await;
    for &id in &acknowledged {
        let rows = c
            .query("SELECT body FROM t WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "acknowledged row {id} is missing");
        assert_eq!(rows[0].get::<_, String>(0), body(id), "row {id} changed");
    }
    // And it takes writes again.
    c.execute("INSERT INTO t VALUES ($1, $2)", &[&-1i32, &"after"])
        .await
        .unwrap();
    node.terminate();
}
