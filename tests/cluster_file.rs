//! The cluster file is checked before anything starts: a clash that would stop a node from
//! starting (two spellings of one listener address, one data directory for two nodes) is bad
//! usage (exit 2) naming both nodes, and no node is left running; a dry run of a file of
//! thousands of nodes finishes promptly.

mod common;

use std::time::Instant;

use common::{free_ports, run_ddb};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `yaml` as `cluster.yaml` in a new directory and runs `ddb init` on it.
fn init(yaml: &str) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = run_ddb(&["init", "-c", file.to_str().unwrap()], None, &[]);
    (dir, out)
}

/// Asserts that nothing listens on `port` and no node wrote a data directory under `dir`.
fn nothing_started(dir: &std::path::Path, port: u16) {
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a node was started on port {port}"
    );
    assert!(
        !dir.join("data").exists(),
        "a data directory was created: nothing should have started"
    );
}

#[test]
fn a_listener_taken_through_another_spelling_of_its_address_is_refused_before_anything_starts() {
    let p = free_ports(3);
    let yaml = format!(
        "name: spell\ndefaults:\n  data_dir: ./data/{{name}}\nnodes:\n  \
         - {{ name: n1, host: 127.0.0.1, rpc_port: {}, sql_port: {} }}\n  \
         - {{ name: n2, host: localhost, rpc_port: {}, sql_port: {} }}\n",
        p[0], p[1], p[2], p[1]
    );
    let (dir, out) = init(&yaml);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cluster.yaml:6: nodes.n2.sql_port: localhost:{} is already used by n1.sql_port (as 127.0.0.1:{})",
            p[1], p[1]
        )),
        "{err}"
    );
    nothing_started(dir.path(), p[0]);
}

#[test]
fn two_nodes_with_one_data_directory_are_refused_before_anything_starts() {
    let p = free_ports(4);
    let yaml = format!(
        "name: dirs\nnodes:\n  \
         - {{ name: n1, host: 127.0.0.1, rpc_port: {}, sql_port: {}, data_dir: ./data/shared }}\n  \
         - {{ name: n2, host: 127.0.0.1, rpc_port: {}, sql_port: {}, data_dir: data/x/../shared/ }}\n",
        p[0], p[1], p[2], p[3]
    );
    let (dir, out) = init(&yaml);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cluster.yaml:4: nodes.n2.data_dir: ")
            && err.contains("/data/shared is also the data directory of n1"),
        "{err}"
    );
    nothing_started(dir.path(), p[0]);
}

#[test]
fn a_dry_run_of_two_thousand_nodes_finishes() {
    let mut yaml = "name: big\nnodes:\n".to_string();
    for i in 0..2000u32 {
        yaml += &format!(
            "  - {{ name: n{i}, host: 127.0.0.1, rpc_port: {}, sql_port: {} }}\n",
            10_000 + i,
            20_000 + i
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
    let started = Instant::now();
    let out = run_ddb(
        &[
            "init",
            "--dry-run",
            "--format",
            "json",
            "-c",
            file.to_str().unwrap(),
        ],
        None,
        &[],
    );
    // A figure, not an assertion: the test binary may be a debug build on a busy machine.
    eprintln!("ddb init --dry-run, 2,000 nodes: {:?}", started.elapsed());
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.len(), 2000);
    let tokens: i64 = plan.iter().map(|n| n["tokens"].as_i64().unwrap()).sum();
    assert_eq!(tokens, 2000 * 128);
}
