//! The drivers applications use, each with its defaults, against a real node:
//! `tests/drivers/session.py` runs asyncpg's pool (acquire, release with its reset query,
//! acquire again), psycopg 3 past its auto-prepare threshold and then a rollback (which sends
//! `DEALLOCATE ALL`), and SQLAlchemy 2's version parse with the psycopg and asyncpg dialects.
//!
//! The drivers come from PyPI: `.ci/run` installs them (`pip install asyncpg 'psycopg[binary]'
//! 'sqlalchemy[asyncio]'`). Without them this test fails and says what to install; set
//! `DDB_TEST_SKIP_DRIVERS=1` to skip it on a machine that cannot have them.

mod common;

use std::process::Command;

use common::{repo_path, TestNode};

#[test]
fn python_drivers_run_their_session_statements() {
    if std::env::var_os("DDB_TEST_SKIP_DRIVERS").is_some() {
        eprintln!("DDB_TEST_SKIP_DRIVERS is set: the Python driver test is skipped");
        return;
    }
    let have = Command::new("python3")
        .args(["-c", "import asyncpg, psycopg, sqlalchemy"])
        .output()
        .expect("python3 runs");
    assert!(
        have.status.success(),
        "the Python drivers are missing ({}): pip install asyncpg 'psycopg[binary]' 'sqlalchemy[asyncio]', or set DDB_TEST_SKIP_DRIVERS=1",
        String::from_utf8_lossy(&have.stderr).trim()
    );
    let node = TestNode::start();
    let out = Command::new("python3")
        .arg(repo_path("tests/drivers/session.py"))
        .arg(node.sql_port.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tests/drivers/session.py failed\nstdout:\n{stdout}\nstderr:\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail()
    );
    // The script prints one line per driver it checked; each must have run.
    for driver in [
        "asyncpg pool reset ok",
        "psycopg server_version",
        "asyncpg dialect server_version_info",
        "all drivers ok",
    ] {
        assert!(stdout.contains(driver), "no '{driver}' in:\n{stdout}");
    }
}

#[test]
fn python_drivers_nest_transactions_and_run_ddl_in_them() {
    if std::env::var_os("DDB_TEST_SKIP_DRIVERS").is_some() {
        eprintln!("DDB_TEST_SKIP_DRIVERS is set: the Python driver test is skipped");
        return;
    }
    let node = TestNode::start();
    let out = Command::new("python3")
        .arg(repo_path("tests/drivers/nested.py"))
        .arg(node.sql_port.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tests/drivers/nested.py failed\nstdout:\n{stdout}\nstderr:\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail()
    );
    for step in [
        "asyncpg nested ok",
        "psycopg nested ok",
        "sqlalchemy begin_nested ok",
        "all nested ok",
    ] {
        assert!(stdout.contains(step), "no '{step}' in:\n{stdout}");
    }
}
