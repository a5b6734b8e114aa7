//! The drivers applications use, each through its ordinary use with its defaults, against real
//! ddb processes: pgjdbc (JDBC), node-postgres, psycopg2, psycopg 3, asyncpg and SQLAlchemy 2.
//! Each driver runs a program under `tests/drivers/` that checks every result it gets against
//! what it must be and exits non-zero on the first difference; the test here fails with that
//! program's output and the node's log. Each program runs against a single node, and the
//! cheap ones also through the gateway of a two-node cluster, whose tables span both shards.
//!
//! The drivers are installed by `.ci/run`: Debian's `default-jdk-headless` and
//! `libpostgresql-jdbc-java` (`/usr/share/java/postgresql.jar`, compiled against once per run
//! into the target directory), `nodejs`/`npm` with `pg` pinned by
//! `tests/drivers/node/package-lock.json` (`npm ci` there), and from PyPI asyncpg,
//! `psycopg[binary]`, `psycopg2-binary` and `sqlalchemy`. A missing driver fails its test with
//! what to install; set `DDB_TEST_SKIP_DRIVERS=1` to skip them all on a machine that cannot have
//! them.
//!
//! Tests marked `#[ignore]` name the ddb feature they wait for (savepoints, RETURNING, SERIAL,
//! DDL in transactions, cursors, NUMERIC, joins over `pg_catalog`); they are to pass once it is
//! merged (`cargo test --test drivers -- --ignored`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{repo_path, TestCluster, TestNode};

/// pgjdbc as Debian installs it.
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// Whether the driver tests are to be skipped (and says so).
fn skipped(what: &str) -> bool {
    let skip = std::env::var_os("DDB_TEST_SKIP_DRIVERS").is_some();
    if skip {
        eprintln!("DDB_TEST_SKIP_DRIVERS is set: {what} is skipped");
    }
    skip
}

/// Runs a driver program to its end (at most `limit`), and fails the test with its output and
/// `log` unless it exits 0 and prints `expect`. Returns its stdout.
fn run(
    cmd: Command,
    what: &str,
    expect: &str,
    limit: Duration,
    log: &dyn Fn() -> String,
) -> String {
    attempt(cmd, what, expect, limit)
        .unwrap_or_else(|failure| panic!("{failure}\nserver log:\n{}", log()))
}

/// Runs a driver program to its end (at most `limit`): its stdout if it exits 0 and prints
/// `expect`, otherwise what went wrong with its stdout and stderr.
fn attempt(mut cmd: Command, what: &str, expect: &str, limit: Duration) -> Result<String, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} cannot start: {e}"));
    // The output is read on threads, so a program that writes much cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let read_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let read_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the driver program") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = read_out.join().unwrap_or_default();
    let stderr = read_err.join().unwrap_or_default();
    let ok = matches!(status, Some(s) if s.success());
    if !(ok && stdout.contains(expect)) {
        return Err(format!(
            "{what} {} after {:?} (expected '{expect}' on stdout)\nstdout:\n{stdout}\nstderr:\n{stderr}",
            match status {
                Some(s) => format!("exited with {s}"),
                None => format!("did not finish within {limit:?}"),
            },
            started.elapsed(),
        ));
    }
    eprintln!("{what}: {:?}", started.elapsed());
    Ok(stdout)
}

/// [`run`] through a cluster's gateway. A transaction's parts on other shards used to let go
/// of their locks only after the client had its answer, so a client's next transaction could
/// lose wait-die to its own previous one (40001); the gateway now answers once they have
/// (within a bound), and this runs each program once, as any client would.
fn run_via_gateway(cmd: impl Fn() -> Command, what: &str, expect: &str, log: &dyn Fn() -> String) {
    run(cmd(), what, expect, LIMIT, log);
}

/// Fails unless `python3` can import every module of `modules`.
fn require_python(modules: &str, install: &str) {
    let have = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .expect("python3 runs");
    assert!(
        have.status.success(),
        "the Python drivers are missing ({}): python3 -m pip install {install} (as .ci/run does), or set DDB_TEST_SKIP_DRIVERS=1",
        String::from_utf8_lossy(&have.stderr).trim()
    );
}

fn python(script: &str, port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_path(&format!("tests/drivers/{script}")))
        .arg(port.to_string())
        .args(args);
    cmd
}

/// The directory of the compiled JDBC program: compiled once per run of this test binary.
fn jdbc_classes() -> &'static Path {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let compiled = CLASSES.get_or_init(|| {
        if !Path::new(PGJDBC_JAR).exists() {
            return Err(format!(
                "{PGJDBC_JAR} is missing: apt-get install libpostgresql-jdbc-java (as .ci/run does)"
            ));
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("drivers-jdbc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let out = Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .arg("-cp")
            .arg(PGJDBC_JAR)
            .arg(repo_path("tests/drivers/jdbc/DdbJdbc.java"))
            .output()
            .map_err(|e| {
                format!("javac cannot run ({e}): apt-get install default-jdk-headless (as .ci/run does)")
            })?;
        if !out.status.success() {
            return Err(format!(
                "javac failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    });
    match compiled {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

fn jdbc(port: u16, mode: &str) -> Command {
    let classes = jdbc_classes();
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}:{PGJDBC_JAR}", classes.display()))
        .arg("DdbJdbc")
        .arg(port.to_string())
        .arg(mode);
    cmd
}

/// node-postgres, as `npm ci` in tests/drivers/node installs it.
fn node_pg(port: u16) -> Command {
    let dir = repo_path("tests/drivers/node");
    assert!(
        dir.join("node_modules/pg/package.json").exists(),
        "node-postgres is not installed: (cd tests/drivers/node && npm ci), as .ci/run does, or set DDB_TEST_SKIP_DRIVERS=1"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("pg.js")).arg(port.to_string());
    cmd
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn python_drivers_run_their_session_statements() {
    if skipped("the Python session-statement test") {
        return;
    }
    require_python(
        "asyncpg, psycopg, sqlalchemy",
        "asyncpg 'psycopg[binary]' sqlalchemy",
    );
    let node = TestNode::start();
    let stdout = run(
        python("session.py", node.sql_port, &[]),
        "tests/drivers/session.py",
        "all drivers ok",
        LIMIT,
        &|| node.log_tail(),
    );
    // The script prints one line per driver it checked; each must have run.
    for driver in [
        "asyncpg pool reset ok",
        "psycopg server_version",
        "asyncpg dialect server_version_info",
    ] {
        assert!(stdout.contains(driver), "no '{driver}' in:\n{stdout}");
    }
}

#[test]
fn jdbc_with_its_default_url_prepares_past_the_fifth_execution_batches_transacts_and_fetches_in_chunks(
) {
    if skipped("the JDBC test") {
        return;
    }
    let node = TestNode::start();
    run(
        jdbc(node.sql_port, "basics"),
        "pgjdbc basics",
        "jdbc basics ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn jdbc_savepoints_roll_back_to_and_release() {
    if skipped("the JDBC savepoint test") {
        return;
    }
    let node = TestNode::start();
    run(
        jdbc(node.sql_port, "savepoints"),
        "pgjdbc savepoints",
        "jdbc savepoints ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn jdbc_get_generated_keys_returns_each_new_key() {
    if skipped("the JDBC generated-keys test") {
        return;
    }
    let node = TestNode::start();
    run(
        jdbc(node.sql_port, "generated-keys"),
        "pgjdbc getGeneratedKeys",
        "jdbc generated keys ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
#[ignore = "needs joins and pg_get_keywords() over the virtual pg_catalog (DESIGN.md section 9)"]
fn jdbc_database_metadata_finds_tables_columns_and_primary_keys() {
    if skipped("the JDBC metadata test") {
        return;
    }
    let node = TestNode::start();
    run(
        jdbc(node.sql_port, "catalog"),
        "pgjdbc DatabaseMetaData",
        "jdbc catalog ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn node_postgres_pool_parameters_transactions_errors_and_types() {
    if skipped("the node-postgres test") {
        return;
    }
    let node = TestNode::start();
    run(
        node_pg(node.sql_port),
        "node-postgres",
        "node-postgres ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
#[ignore = "needs the NUMERIC type (DESIGN.md section 9: the common types)"]
fn node_postgres_numeric_round_trips_exactly_as_strings() {
    if skipped("the node-postgres NUMERIC test") {
        return;
    }
    let node = TestNode::start();
    let mut cmd = node_pg(node.sql_port);
    cmd.arg("numeric");
    run(
        cmd,
        "node-postgres numeric",
        "node-postgres numeric ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
#[ignore = "needs DECLARE … CURSOR / FETCH / CLOSE (issue 11, point 2)"]
fn psycopg3_named_cursor_fetches_in_chunks() {
    if skipped("the psycopg 3 named cursor test") {
        return;
    }
    require_python("psycopg", "'psycopg[binary]'");
    let node = TestNode::start();
    run(
        python("psycopg3_named_cursor.py", node.sql_port, &[]),
        "tests/drivers/psycopg3_named_cursor.py",
        "psycopg named cursor ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn asyncpg_and_psycopg3_nested_transactions_use_savepoints() {
    if skipped("the nested transaction test") {
        return;
    }
    require_python("asyncpg, psycopg", "asyncpg 'psycopg[binary]'");
    let node = TestNode::start();
    run(
        python("nested_transactions.py", node.sql_port, &[]),
        "tests/drivers/nested_transactions.py",
        "nested transactions ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn psycopg3_server_side_binding_pipelines_transactions_read_only_and_types() {
    if skipped("the psycopg 3 test") {
        return;
    }
    require_python("psycopg", "'psycopg[binary]'");
    let node = TestNode::start();
    run(
        python("psycopg3_basics.py", node.sql_port, &[]),
        "tests/drivers/psycopg3_basics.py",
        "psycopg 3 ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn psycopg2_parameters_executemany_commit_rollback_errors_and_with_blocks() {
    if skipped("the psycopg2 test") {
        return;
    }
    require_python("psycopg2", "psycopg2-binary");
    let node = TestNode::start();
    run(
        python("psycopg2_basics.py", node.sql_port, &[]),
        "tests/drivers/psycopg2_basics.py",
        "psycopg2 ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn asyncpg_pool_acquired_240_times_concurrently_prepared_statements_transactions_and_types() {
    if skipped("the asyncpg test") {
        return;
    }
    require_python("asyncpg", "asyncpg");
    let node = TestNode::start();
    run(
        python("asyncpg_pool.py", node.sql_port, &[]),
        "tests/drivers/asyncpg_pool.py",
        "asyncpg pool ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

#[test]
fn sqlalchemy_core_and_orm_with_application_keys_on_psycopg2_and_psycopg() {
    if skipped("the SQLAlchemy test") {
        return;
    }
    require_python(
        "sqlalchemy, psycopg2, psycopg",
        "sqlalchemy psycopg2-binary 'psycopg[binary]'",
    );
    let node = TestNode::start();
    for driver in ["psycopg2", "psycopg"] {
        run(
            python("sqlalchemy_core_orm.py", node.sql_port, &[driver]),
            &format!("tests/drivers/sqlalchemy_core_orm.py {driver}"),
            &format!("sqlalchemy {driver} core and orm ok"),
            LIMIT,
            &|| node.log_tail(),
        );
    }
}

#[test]
#[ignore = "needs joins over pg_catalog (psycopg2's hstore lookup) and SAVEPOINT (psycopg 3's)"]
fn sqlalchemy_connects_with_the_dialects_default_hstore_lookup() {
    if skipped("the SQLAlchemy default-dialect test") {
        return;
    }
    require_python(
        "sqlalchemy, psycopg2, psycopg",
        "sqlalchemy psycopg2-binary 'psycopg[binary]'",
    );
    let node = TestNode::start();
    for driver in ["psycopg2", "psycopg"] {
        run(
            python(
                "sqlalchemy_core_orm.py",
                node.sql_port,
                &[driver, "native-hstore"],
            ),
            &format!("tests/drivers/sqlalchemy_core_orm.py {driver} native-hstore"),
            &format!("sqlalchemy {driver} core and orm ok"),
            LIMIT,
            &|| node.log_tail(),
        );
    }
}

#[test]
#[ignore = "needs INSERT … SELECT … FROM (VALUES …) (SQLAlchemy's insertmanyvalues for ORM batches); SERIAL, RETURNING, DDL in blocks and SAVEPOINT are built"]
fn sqlalchemy_orm_with_autoincrement_keys_server_defaults_and_begin_nested() {
    if skipped("the SQLAlchemy ORM autoincrement test") {
        return;
    }
    require_python("sqlalchemy, psycopg2", "sqlalchemy psycopg2-binary");
    let node = TestNode::start();
    run(
        python(
            "sqlalchemy_orm_autoincrement.py",
            node.sql_port,
            &["psycopg2"],
        ),
        "tests/drivers/sqlalchemy_orm_autoincrement.py",
        "orm autoincrement ok",
        LIMIT,
        &|| node.log_tail(),
    );
}

/// The same programs through the gateway of a two-node cluster: rows on both shards, so the
/// statements, transactions and chunked fetches the drivers send take the distributed path.
#[test]
fn drivers_through_the_gateway_of_a_two_node_cluster() {
    if skipped("the cluster driver test") {
        return;
    }
    require_python(
        "asyncpg, psycopg, psycopg2",
        "asyncpg 'psycopg[binary]' psycopg2-binary",
    );
    let cluster = TestCluster::new("drivers", 2);
    cluster.init();
    let port = cluster.sql_port("n1");
    let logs = || cluster.logs();
    run_via_gateway(
        || node_pg(port),
        "node-postgres via the gateway",
        "node-postgres ok",
        &logs,
    );
    for (script, expect) in [
        ("psycopg2_basics.py", "psycopg2 ok"),
        ("psycopg3_basics.py", "psycopg 3 ok"),
        ("asyncpg_pool.py", "asyncpg pool ok"),
    ] {
        run_via_gateway(
            || python(script, port, &[]),
            &format!("tests/drivers/{script} via the gateway"),
            expect,
            &logs,
        );
    }
    run_via_gateway(
        || jdbc(port, "basics"),
        "pgjdbc via the gateway",
        "jdbc basics ok",
        &logs,
    );
}

#[test]
fn python_drivers_nest_transactions_and_run_ddl_in_them() {
    if skipped("the Python nested-transaction test") {
        return;
    }
    let node = TestNode::start();
    run(
        python("nested.py", node.sql_port, &[]),
        "tests/drivers/nested.py",
        "all nested ok",
        LIMIT,
        &|| node.log_tail(),
    );
}
