//! The cluster file is checked before anything starts: a clash that would stop a node from
//! starting (two spellings of one listener address, one data directory for two nodes) is bad
//! usage (exit 2) naming both nodes, and no node is left running; a dry run of a file of
//! thousands of nodes finishes promptly. A replicated file (factor > 1) is planned into replica
//! groups by a dry run (`tests/replication.rs` runs such clusters).

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

/// A file of five local nodes with `replication:` as given; the ports come first.
fn replicated(replication: &str) -> (Vec<u16>, String) {
    let p = free_ports(10);
    let mut yaml =
        format!("name: groups\nreplication: {replication}\ndefaults:\n  data_dir: ./data/{{name}}\nnodes:\n");
    for i in 0..5 {
        yaml += &format!(
            "  - {{ name: n{}, host: 127.0.0.1, rpc_port: {}, sql_port: {} }}\n",
            i + 1,
            p[2 * i],
            p[2 * i + 1]
        );
    }
    (p, yaml)
}

#[test]
fn a_dry_run_of_a_replicated_file_shows_its_replica_groups() {
    let (p, yaml) = replicated("{ factor: 2 }");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
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
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let groups: Vec<(String, i64, String)> = plan
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["shard"].as_i64().unwrap(),
                n["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("n1", 1, "primary"),
        ("n2", 1, "replica"),
        ("n3", 2, "primary"),
        ("n4", 2, "replica"),
        ("n5", 3, "primary"),
    ]
    .map(|(n, s, r)| (n.to_string(), s, r.to_string()));
    assert_eq!(groups, want);
    let err = stderr(&out);
    assert!(
        err.contains("WARNING: shard 3 has 1 of 2 nodes in the file"),
        "{err}"
    );
    assert!(
        err.contains("3 shards of 2 copies (sync mode, min_in_sync 1)"),
        "{err}"
    );
    nothing_started(dir.path(), p[0]);
}

#[test]
fn replication_settings_out_of_range_are_refused_even_in_a_dry_run() {
    for (replication, message) in [
        (
            "{ factor: 6 }",
            "replication.factor: 6 is out of range; expected 1 to 5",
        ),
        (
            "{ factor: 2, min_in_sync: 3 }",
            "replication.min_in_sync: 3 is out of range; expected 1 to replication.factor (2)",
        ),
        (
            "{ factor: 2, ack_timeout_ms: 0 }",
            "replication.ack_timeout_ms: 0 is out of range; expected 1 to 600000",
        ),
    ] {
        let (_, yaml) = replicated(replication);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = run_ddb(
            &["init", "--dry-run", "-c", file.to_str().unwrap()],
            None,
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stdout_is_empty(&out),
            "a plan was printed for {replication}"
        );
        assert!(
            stderr(&out).contains(&format!("cluster.yaml:2: {message}")),
            "{}",
            stderr(&out)
        );
    }
}

fn stdout_is_empty(o: &std::process::Output) -> bool {
    o.stdout.is_empty()
}

#[test]
fn the_example_file_plans_three_groups_of_two_and_its_single_copy_variant_three_shards() {
    let example = std::fs::read_to_string(common::repo_path("cluster.example.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = |name: &str, yaml: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, yaml).unwrap();
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
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        let groups: Vec<(i64, String)> = rows
            .iter()
            .map(|n| {
                (
                    n["shard"].as_i64().unwrap(),
                    n["role"].as_str().unwrap().into(),
                )
            })
            .collect();
        (out.status.code(), groups)
    };
    let (code, groups) = plan("replicated.yaml", &example);
    assert_eq!(code, Some(0), "the example runs");
    let want: Vec<(i64, String)> = [1, 1, 2, 2, 3, 3]
        .iter()
        .zip(["primary", "replica"].iter().cycle())
        .map(|(s, r)| (*s, r.to_string()))
        .collect();
    assert_eq!(groups, want);
    // The commented variant, uncommented.
    let variant: String = example
        .lines()
        .skip_while(|l| !l.starts_with("# name: demo"))
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or("")))
        .collect();
    let (code, groups) = plan("plain.yaml", &variant);
    assert_eq!(code, Some(0));
    assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3]);
}
