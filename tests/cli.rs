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
