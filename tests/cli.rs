//! The `ddb` command line as a script sees it: output formats, input sources, exit codes,
//! help text, and the shell completion files.

mod common;

use std::time::{Duration, Instant};

use common::{run_ddb, TestCluster, TestNode};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn seeded() -> TestNode {
    let node = TestNode::start();
    let out = node.ddb(
        &[
            "query",
            "CREATE TABLE t (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN); \
                    INSERT INTO t VALUES (1, 'a,b', 1.5, true), (2, NULL, NULL, false)",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    node
}

#[test]
fn query_prints_every_format() {
    let node = seeded();
    let q = "SELECT id, name, score, ok FROM t ORDER BY id";
    let json = node.ddb(&["query", "--format", "json", q], None);
    assert_eq!(
        stdout(&json),
        "[{\"id\":1,\"name\":\"a,b\",\"score\":1.5,\"ok\":true},{\"id\":2,\"name\":null,\"score\":null,\"ok\":false}]\n"
    );
    assert_eq!(stderr(&json), "(2 rows)\n");
    let ndjson = node.ddb(&["query", "--format", "ndjson", q], None);
    assert_eq!(
        stdout(&ndjson),
        "{\"id\":1,\"name\":\"a,b\",\"score\":1.5,\"ok\":true}\n{\"id\":2,\"name\":null,\"score\":null,\"ok\":false}\n"
    );
    let csv = node.ddb(&["query", "--format", "csv", q], None);
    assert_eq!(stdout(&csv), "id,name,score,ok\n1,\"a,b\",1.5,t\n2,,,f\n");
    let csv = node.ddb(&["query", "--format", "csv", "--no-header", q], None);
    assert_eq!(stdout(&csv), "1,\"a,b\",1.5,t\n2,,,f\n");
    // Piped output defaults to TSV.
    let tsv = node.ddb(&["query", q], None);
    assert_eq!(
        stdout(&tsv),
        "id\tname\tscore\tok\n1\ta,b\t1.5\tt\n2\t\t\tf\n"
    );
    // DDB_FORMAT is honoured; --quiet drops the row count.
    let table = run_ddb(
        &["query", "-q", q],
        None,
        &[("DDB_ADDR", &node.rpc_addr()), ("DDB_FORMAT", "table")],
    );
    assert!(stdout(&table).contains("a,b"), "{}", stdout(&table));
    assert_eq!(stderr(&table), "");
}

#[test]
fn query_reads_sql_from_a_file_and_from_stdin() {
    let node = seeded();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(&file, "SELECT count(*) AS n FROM t;\n").unwrap();
    let out = node.ddb(
        &["query", "--no-header", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(stdout(&out), "2\n");
    let out = node.ddb(&["query", "--no-header"], Some("SELECT max(id) FROM t"));
    assert_eq!(stdout(&out), "2\n");
}

#[test]
fn statements_run_in_order_in_one_transaction_scope() {
    let node = seeded();
    let out = node.ddb(&["query", "BEGIN; UPDATE t SET name = 'x' WHERE id = 2; ROLLBACK; SELECT name FROM t WHERE id = 2"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "name\n\n");
    assert!(
        stderr(&out).contains("BEGIN\nUPDATE 1\nROLLBACK\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failing_statement_exits_6_naming_it_and_stops_the_rest() {
    let node = seeded();
    let out = node.ddb(
        &["query", "INSERT INTO t (id) VALUES (10); INSERT INTO t (id) VALUES (1); INSERT INTO t (id) VALUES (11)"],
        None,
    );
    assert_eq!(out.status.code(), Some(6));
    let err = stderr(&out);
    assert!(
        err.contains("statement 2 failed: INSERT INTO t (id) VALUES (1)"),
        "{err}"
    );
    assert!(err.contains("SQLSTATE 23505"), "{err}");
    let out = node.ddb(
        &["query", "--no-header", "SELECT id FROM t WHERE id >= 10"],
        None,
    );
    assert_eq!(
        stdout(&out),
        "10\n",
        "the first statement ran, the third did not"
    );

    let out = node.ddb(&["query", "SELEC 1"], None);
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("SQLSTATE 42601"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_node_exits_3_quickly() {
    let port = common::free_port();
    let started = Instant::now();
    let out = run_ddb(
        &["query", "--addr", &format!("127.0.0.1:{port}"), "SELECT 1"],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach node"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_usage_exits_2() {
    let out = run_ddb(&["query", "--no-such-flag"], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_ddb(&["query", "SELECT 1"], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--addr"), "{}", stderr(&out));
    let out = run_ddb(
        &["query", "--addr", "127.0.0.1:1", "-f", "/no/such/file.sql"],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run_ddb(&["server", "--listen", "not-an-address"], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
    for flag in ["--lock-timeout-ms", "--prepared-timeout-ms"] {
        let out = run_ddb(&["server", flag, "0"], None, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{flag} must be at least 1")),
            "{}",
            stderr(&out)
        );
    }
    let out = run_ddb(
        &[
            "query",
            "--addr",
            "127.0.0.1:1",
            "--format",
            "xml",
            "SELECT 1",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_the_exit_codes() {
    let out = run_ddb(&["--help"], None, &[]);
    let text = stdout(&out);
    for line in [
        "0  success",
        "2  bad usage",
        "3  cannot reach",
        "6  the SQL statement failed",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn completion_files_are_up_to_date() {
    for (shell, file) in [
        ("bash", "completions/ddb.bash"),
        ("zsh", "completions/_ddb"),
        ("fish", "completions/ddb.fish"),
    ] {
        let out = run_ddb(&["completions", shell], None, &[]);
        assert!(out.status.success());
        let committed = std::fs::read_to_string(common::repo_path(file)).unwrap_or_default();
        assert!(
            committed == stdout(&out),
            "{file} is stale: regenerate with `cargo run -- completions {shell} > {file}`"
        );
    }
    for shell in ["elvish", "powershell"] {
        assert!(run_ddb(&["completions", shell], None, &[]).status.success());
    }
}

/// Needs the crash points compiled in (`--features failpoints`), to make the node slow.
#[cfg(feature = "failpoints")]
#[test]
fn a_node_that_does_not_answer_in_time_exits_5() {
    let cluster = TestCluster::new("slow", 1);
    // The node waits 3 s before it listens, so it cannot answer within 0 s of being started
    // (without the wait, a fast start sometimes answered the first probe).
    let out = cluster.ddb_env(
        &["init", "--timeout", "0"],
        &[("FAILPOINTS", "server-before-listen=sleep(3000)")],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not answer"), "{}", stderr(&out));
    // The node was started anyway and comes up; once it answers, init forms the cluster
    // with it (and the node is killed when the cluster is dropped).
    let rpc = cluster.rpc_addr("n1");
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(&rpc).is_ok()
        }),
        "the node started by the timed-out init never answered:\n{}",
        cluster.logs()
    );
    cluster.init();
}

#[test]
fn an_io_error_exits_1() {
    let cluster = TestCluster::new("ioerr", 1);
    // The node's log file cannot be opened: a directory is in its place.
    std::fs::create_dir_all(cluster.data_dir("n1").join("ddb.log")).unwrap();
    let out = cluster.ddb(&["init"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot open"), "{}", stderr(&out));
    assert!(cluster.pid("n1").is_none(), "a node was started");
}

/// Runs `ddb ARGS…` with stdout and/or stderr on a pipe whose reader has gone, the way
/// `ddb … | head -0` leaves it: every write there fails with EPIPE. Returns the exit status
/// and whatever reached the stream that stayed open.
fn run_with_broken_pipe(
    args: &[&str],
    env: &[(&str, &str)],
    stdout_broken: bool,
    stderr_broken: bool,
) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(common::ddb_bin());
    cmd.args(args)
        .env_remove("DDB_ADDR")
        .env_remove("DDB_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let open = if stdout_broken {
        cmd.stdout(writer.try_clone().unwrap());
        cmd.stderr(if stderr_broken {
            Stdio::from(writer)
        } else {
            Stdio::piped()
        });
        "stderr"
    } else {
        cmd.stdout(Stdio::piped());
        cmd.stderr(writer);
        "stdout"
    };
    let out = cmd.spawn().unwrap().wait_with_output().unwrap();
    let text = if open == "stdout" {
        &out.stdout
    } else {
        &out.stderr
    };
    (out.status, String::from_utf8_lossy(text).into_owned())
}

#[test]
fn a_closed_stdout_or_stderr_ends_the_command_quietly() {
    let cluster = TestCluster::new("pipes", 1);
    cluster.init();
    let addr = cluster.rpc_addr("n1");
    let env = [("DDB_ADDR", addr.as_str())];
    let out = run_ddb(
        &["query", "CREATE TABLE t (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN); INSERT INTO t VALUES (1, NULL, NULL, NULL), (2, NULL, NULL, NULL)"],
        None,
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The reader of stdout went away: exit 0, no panic, nothing on stderr.
    for args in [
        &["status"][..],
        &["ring"][..],
        &["query", "SELECT id FROM t"][..],
        &["completions", "bash"][..],
    ] {
        let (status, err) = run_with_broken_pipe(args, &env, true, false);
        assert_eq!(status.code(), Some(0), "ddb {args:?}: {err}");
        assert!(!err.contains("panicked"), "ddb {args:?}: {err}");
        assert_eq!(err, "", "ddb {args:?}");
    }
    // Both gone: still quiet, and still exit 0.
    let (status, _) = run_with_broken_pipe(&["status"], &env, true, true);
    assert_eq!(status.code(), Some(0));
    // stderr gone: the data still comes out in full, and errors keep their exit codes.
    let (status, out) = run_with_broken_pipe(
        &["query", "SELECT id FROM t ORDER BY id; SELECT 7 AS x"],
        &env,
        false,
        true,
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "id\n1\n2\n\nx\n7\n");
    let (status, _) = run_with_broken_pipe(&["query", "SELEC 1"], &env, false, true);
    assert_eq!(status.code(), Some(6));
    let port = common::free_port();
    let (status, _) = run_with_broken_pipe(
        &["--addr", &format!("127.0.0.1:{port}"), "status"],
        &[],
        false,
        true,
    );
    assert_eq!(status.code(), Some(3));
    // stdout closed outright (`>&-`): the socket to the node must not take its place.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec \"$0\" --addr {addr} query 'INSERT INTO t VALUES (3, NULL, NULL, NULL)' >&-"
        ))
        .arg(common::ddb_bin())
        .env_remove("DDB_ADDR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_ddb(
        &["query", "--no-header", "SELECT count(*) FROM t"],
        None,
        &env,
    );
    assert_eq!(stdout(&out), "3\n", "{}", stderr(&out));
}

#[test]
fn an_addr_that_does_not_parse_is_bad_usage_and_one_that_does_not_answer_is_unreachable() {
    for bad in [
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "a b:1",
    ] {
        for cmd in ["status", "ring", "stop", "query"] {
            let out = run_ddb(
                &["--addr", bad, cmd, "SELECT 1"][..if cmd == "query" { 4 } else { 3 }],
                None,
                &[],
            );
            assert_eq!(
                out.status.code(),
                Some(2),
                "--addr {bad} {cmd}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("is not a HOST:PORT address"),
                "{}",
                stderr(&out)
            );
        }
        let out = run_ddb(&["status"], None, &[("DDB_ADDR", bad)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "DDB_ADDR={bad}: {}",
            stderr(&out)
        );
    }
    let port = common::free_port();
    for cmd in ["status", "ring", "stop"] {
        let out = run_ddb(&["--addr", &format!("127.0.0.1:{port}"), cmd], None, &[]);
        assert_eq!(out.status.code(), Some(3), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach node"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn addr_picks_the_one_node_status_ring_and_stop_act_on_whatever_file_is_set() {
    let cluster = TestCluster::new("addressed", 2);
    cluster.init();
    let lone = TestNode::start();
    let config = cluster.config.to_str().unwrap().to_string();
    let with_file = [("DDB_CONFIG", config.as_str())];

    // status and ring from one node of the cluster, with no file at all: its map's nodes.
    let no_file = [("DDB_CONFIG", "/no/such/cluster.yaml")];
    let out = run_ddb(
        &[
            "--addr",
            &cluster.rpc_addr("n2"),
            "status",
            "--format",
            "json",
        ],
        None,
        &no_file,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n1", "n2"]);
    assert!(rows.iter().all(|r| r["state"] == "up"), "{rows:?}");
    let out = run_ddb(
        &[
            "--addr",
            &cluster.rpc_addr("n1"),
            "ring",
            "--format",
            "json",
        ],
        None,
        &no_file,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    // A node outside any cluster: its own row; it has no ring.
    let out = run_ddb(
        &["--addr", &lone.rpc_addr(), "status", "--format", "json"],
        None,
        &with_file,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["rpc_addr"], lone.rpc_addr());
    let out = run_ddb(&["--addr", &lone.rpc_addr(), "ring"], None, &with_file);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // Names with --addr: refused, nothing stopped. init does not take --addr.
    let out = run_ddb(
        &["--addr", &lone.rpc_addr(), "stop", "n1"],
        None,
        &with_file,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("takes no node names"),
        "{}",
        stderr(&out)
    );
    let out = run_ddb(
        &["init"],
        None,
        &[
            ("DDB_CONFIG", config.as_str()),
            ("DDB_ADDR", lone.rpc_addr().as_str()),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not take --addr"),
        "{}",
        stderr(&out)
    );
    let (code, _) = cluster.status();
    assert_eq!(code, Some(0), "a node of the file was stopped");

    // stop with --addr (and DDB_ADDR) and the file set: that node stops, the file's do not.
    let lone_pid = lone.pid().unwrap() as i32;
    let out = run_ddb(
        &["stop"],
        None,
        &[
            ("DDB_CONFIG", config.as_str()),
            ("DDB_ADDR", lone.rpc_addr().as_str()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        common::wait_until(Duration::from_secs(10), || std::fs::metadata(format!(
            "/proc/{lone_pid}"
        ))
        .is_err()
            || std::fs::read_to_string(format!("/proc/{lone_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z"))),
        "the node at --addr is still running"
    );
    let (code, status) = cluster.status();
    assert_eq!(code, Some(0), "{status:?}");
    let out = run_ddb(
        &["--addr", &cluster.rpc_addr("n2"), "stop"],
        None,
        &with_file,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, status) = cluster.status();
    assert_eq!(code, Some(3));
    let states: Vec<&str> = status
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["up", "down"]);
}
