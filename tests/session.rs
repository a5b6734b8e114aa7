//! A session's parameters as clients see them on the wire, and the ones that bound work:
//! `ParameterStatus` at startup and after `SET` (read on a raw connection, message by
//! message), `NoData` for a described statement without rows, and the three timeouts
//! (`statement_timeout` 57014, `lock_timeout` 55P03, `idle_in_transaction_session_timeout`
//! 25P03) with concurrent tokio-postgres clients holding and waiting for real locks. The
//! parameters' values and the session statements themselves are in `tests/sql/session.slt`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{sqlstate, TestCluster, TestNode};

/// A raw connection: the startup packet with `params`, and the messages up to the first
/// ReadyForQuery.
fn raw_connect(port: u16, params: &[(&str, &str)]) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", "raw"), ("database", "ddb")].iter().chain(params) {
        for part in [k, v] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    startup.extend(body);
    s.write_all(&startup).unwrap();
    let answers = read_until_ready(&mut s);
    (s, answers)
}

/// Reads messages up to ReadyForQuery, or the end of the connection.
fn read_until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).is_err() {
            return out;
        }
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        let done = head[0] == b'Z';
        out.push((head[0], body));
        if done {
            return out;
        }
    }
}

/// A frontend message.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The `ParameterStatus` messages among `answers`, as (name, value).
fn statuses(answers: &[(u8, Vec<u8>)]) -> Vec<(String, String)> {
    answers
        .iter()
        .filter(|(k, _)| *k == b'S')
        .map(|(_, body)| {
            let mut parts = body.split(|&b| b == 0);
            let mut next =
                || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            (next(), next())
        })
        .collect()
}

fn status_of<'a>(statuses: &'a [(String, String)], name: &str) -> Option<&'a str> {
    statuses
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The SQLSTATE of an ErrorResponse body.
fn code_of(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

#[test]
fn startup_reports_the_parameters_postgresql_reports_with_ddbs_one_version() {
    let node = TestNode::start();
    let (_s, answers) = raw_connect(
        node.sql_port,
        &[("application_name", "raw-test"), ("DateStyle", "ISO, DMY")],
    );
    let st = statuses(&answers);
    for name in [
        "application_name",
        "client_encoding",
        "DateStyle",
        "default_transaction_read_only",
        "in_hot_standby",
        "integer_datetimes",
        "IntervalStyle",
        "is_superuser",
        "server_encoding",
        "server_version",
        "session_authorization",
        "standard_conforming_strings",
        "TimeZone",
    ] {
        assert!(status_of(&st, name).is_some(), "no {name} in {st:?}");
    }
    assert_eq!(status_of(&st, "server_version"), Some("15.0"), "{st:?}");
    assert_eq!(status_of(&st, "application_name"), Some("raw-test"));
    assert_eq!(status_of(&st, "DateStyle"), Some("ISO, DMY"));
    assert_eq!(status_of(&st, "session_authorization"), Some("raw"));
    // BackendKeyData, then ReadyForQuery, close the startup.
    let kinds: Vec<u8> = answers.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.first(), Some(&b'R'), "{kinds:?}");
    assert_eq!(&kinds[kinds.len() - 2..], b"KZ", "{kinds:?}");
}

#[test]
fn an_unknown_startup_parameter_fails_the_connection_with_42704() {
    let node = TestNode::start();
    let (mut s, answers) = raw_connect(node.sql_port, &[("no_such_parameter", "1")]);
    let first = answers.first().expect("an answer");
    assert_eq!(first.0, b'E', "{answers:?}");
    assert_eq!(code_of(&first.1), "42704");
    let severity = first
        .1
        .split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"S"));
    assert_eq!(severity, Some(&b"FATAL"[..]));
    // pgwire follows a FATAL error with ReadyForQuery before it closes; nothing else comes.
    assert!(
        read_until_ready(&mut s).is_empty(),
        "the connection stays open"
    );
}

#[test]
fn set_of_a_reported_parameter_sends_parameter_status_before_ready_for_query() {
    let node = TestNode::start();
    let (mut s, _) = raw_connect(node.sql_port, &[]);
    s.write_all(&message(b'Q', &cstr("SET application_name = 'changed'")))
        .unwrap();
    let answers = read_until_ready(&mut s);
    let kinds: Vec<u8> = answers.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, b"CSZ", "{answers:?}");
    assert_eq!(
        statuses(&answers),
        vec![("application_name".into(), "changed".into())]
    );
    // A parameter PostgreSQL does not report changes nothing on the wire.
    s.write_all(&message(b'Q', &cstr("SET statement_timeout = '1s'")))
        .unwrap();
    let kinds: Vec<u8> = read_until_ready(&mut s).iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, b"CZ");
    // A SET undone by ROLLBACK is reported again with the old value.
    s.write_all(&message(
        b'Q',
        &cstr("BEGIN; SET application_name = 'inside'; ROLLBACK"),
    ))
    .unwrap();
    let answers = read_until_ready(&mut s);
    assert_eq!(statuses(&answers), vec![]);
    s.write_all(&message(
        b'Q',
        &cstr("BEGIN; SET application_name = 'inside'"),
    ))
    .unwrap();
    let answers = read_until_ready(&mut s);
    assert_eq!(
        statuses(&answers),
        vec![("application_name".into(), "inside".into())]
    );
    s.write_all(&message(b'Q', &cstr("ROLLBACK"))).unwrap();
    let answers = read_until_ready(&mut s);
    assert_eq!(
        statuses(&answers),
        vec![("application_name".into(), "changed".into())]
    );
}

/// Parse + Describe (statement) + Sync of `sql` on a raw connection: the answers.
fn describe(s: &mut TcpStream, sql: &str) -> Vec<u8> {
    let mut parse = cstr("");
    parse.extend(cstr(sql));
    parse.extend(0i16.to_be_bytes());
    let mut bytes = message(b'P', &parse);
    let mut target = vec![b'S'];
    target.extend(cstr(""));
    bytes.extend(message(b'D', &target));
    bytes.extend(message(b'S', &[]));
    s.write_all(&bytes).unwrap();
    read_until_ready(s).iter().map(|(k, _)| *k).collect()
}

#[test]
fn describing_a_statement_without_rows_answers_no_data() {
    let node = TestNode::start();
    let (mut s, _) = raw_connect(node.sql_port, &[]);
    s.write_all(&message(
        b'Q',
        &cstr("CREATE TABLE nd (id INT PRIMARY KEY, v INT)"),
    ))
    .unwrap();
    read_until_ready(&mut s);
    // ParseComplete, ParameterDescription, NoData, ReadyForQuery: as PostgreSQL answers.
    assert_eq!(describe(&mut s, "INSERT INTO nd VALUES ($1, $2)"), b"1tnZ");
    assert_eq!(describe(&mut s, "SET application_name = 'x'"), b"1tnZ");
    // A statement with rows is described by its RowDescription.
    assert_eq!(describe(&mut s, "SELECT v FROM nd WHERE id = $1"), b"1tTZ");
    assert_eq!(describe(&mut s, "SHOW application_name"), b"1tTZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_insert_runs_many_times_without_a_result() {
    // pgjdbc switches to a named server-side statement at the fifth execution and then
    // insists on NoData; tokio-postgres checks the same description on every execution.
    let node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE many (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let insert = c.prepare("INSERT INTO many VALUES ($1, $2)").await.unwrap();
    assert!(insert.columns().is_empty());
    for i in 0..10i32 {
        assert_eq!(c.execute(&insert, &[&i, &i]).await.unwrap(), 1);
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM many", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_drops_the_named_statements() {
    let node = TestNode::start();
    let c = node.connect().await;
    let stmt = c.prepare("SELECT 1").await.unwrap();
    c.query(&stmt, &[]).await.unwrap();
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let e = c.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"), "{e}");
    // A statement prepared afterwards works.
    let again = c.prepare("SELECT 1").await.unwrap();
    c.query(&again, &[]).await.unwrap();
}

/// A node whose own lock-wait bound is long, so only the session's bounds can end a wait.
fn node_with_long_lock_waits() -> TestNode {
    TestNode::start_with(&["--lock-timeout-ms", "60000"])
}

/// `waiter` begins first (so wait-die makes it wait for the younger `holder`, not die), then
/// `holder` locks row 1 of `kv`.
async fn hold_row_one(waiter: &tokio_postgres::Client, holder: &tokio_postgres::Client) {
    holder
        .batch_execute("CREATE TABLE IF NOT EXISTS kv (k INT PRIMARY KEY, v INT); INSERT INTO kv VALUES (1, 0)")
        .await
        .unwrap();
    waiter.batch_execute("BEGIN").await.unwrap();
    holder
        .batch_execute("BEGIN; UPDATE kv SET v = 1 WHERE k = 1")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_ends_a_lock_wait_of_that_session_with_55p03() {
    let node = node_with_long_lock_waits();
    let (waiter, holder) = (node.connect().await, node.connect().await);
    hold_row_one(&waiter, &holder).await;
    waiter
        .batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();
    let e = waiter
        .batch_execute("UPDATE kv SET v = 2 WHERE k = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    waiter.batch_execute("ROLLBACK").await.unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    let v: i32 = holder
        .query_one("SELECT v FROM kv WHERE k = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_bounds_lock_waits_on_another_shard_of_a_cluster() {
    let cluster = TestCluster::new("locktimeout", 2);
    cluster.init_env(&[("DDB_LOCK_TIMEOUT_MS", "60000")]);
    let key = cluster.keys_on("n2", 1)[0];
    // Both sessions through n1, whose own shard does not hold the key.
    let waiter = common::connect(cluster.sql_port("n1")).await;
    let holder = common::connect(cluster.sql_port("n1")).await;
    holder
        .batch_execute(&format!(
            "CREATE TABLE kv (k BIGINT PRIMARY KEY, v INT); INSERT INTO kv VALUES ({key}, 0)"
        ))
        .await
        .unwrap();
    waiter
        .batch_execute("BEGIN; SET lock_timeout = 300")
        .await
        .unwrap();
    holder
        .batch_execute(&format!("BEGIN; UPDATE kv SET v = 1 WHERE k = {key}"))
        .await
        .unwrap();
    let e = waiter
        .batch_execute(&format!("UPDATE kv SET v = 2 WHERE k = {key}"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("within 300 ms"), "{msg}");
    waiter.batch_execute("ROLLBACK").await.unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_lock_timeout_waits_until_the_lock_is_free() {
    let node = node_with_long_lock_waits();
    let (waiter, holder) = (node.connect().await, node.connect().await);
    hold_row_one(&waiter, &holder).await;
    let waiting = tokio::spawn(async move {
        let r = waiter
            .batch_execute("UPDATE kv SET v = 2 WHERE k = 1")
            .await;
        (waiter, r)
    });
    holder.batch_execute("COMMIT").await.unwrap();
    let (waiter, r) = waiting.await.unwrap();
    r.unwrap();
    waiter.batch_execute("COMMIT").await.unwrap();
    let v: i32 = holder
        .query_one("SELECT v FROM kv WHERE k = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_a_statement_with_57014_and_releases_its_locks() {
    let node = node_with_long_lock_waits();
    let (waiter, holder) = (node.connect().await, node.connect().await);
    // Set outside the block: a SET inside one is undone by its ROLLBACK.
    waiter
        .batch_execute("SET statement_timeout = 200")
        .await
        .unwrap();
    hold_row_one(&waiter, &holder).await;
    let e = waiter
        .batch_execute("UPDATE kv SET v = 2 WHERE k = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    // The block failed, as after any error.
    let e = waiter.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    waiter.batch_execute("ROLLBACK").await.unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    // An autocommit statement is cancelled too, and one that finishes in time runs.
    holder
        .batch_execute("BEGIN; UPDATE kv SET v = 3 WHERE k = 1")
        .await
        .unwrap();
    let e = waiter
        .batch_execute("UPDATE kv SET v = 4 WHERE k = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    holder.batch_execute("COMMIT").await.unwrap();
    waiter
        .batch_execute("UPDATE kv SET v = 5 WHERE k = 1")
        .await
        .unwrap();
    let v: i32 = holder
        .query_one("SELECT v FROM kv WHERE k = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_timeout_closes_the_connection_with_25p03_and_frees_its_locks() {
    let node = node_with_long_lock_waits();
    let conn_str = format!(
        "host=127.0.0.1 port={} user=tester dbname=ddb connect_timeout=10",
        node.sql_port
    );
    let (idle, connection) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap();
    let ended = tokio::spawn(connection);
    idle.batch_execute(
        "CREATE TABLE kv (k INT PRIMARY KEY, v INT); INSERT INTO kv VALUES (1, 0); \
         SET idle_in_transaction_session_timeout = '300ms'; BEGIN; UPDATE kv SET v = 1 WHERE k = 1",
    )
    .await
    .unwrap();
    // The server ends the connection: the client's connection task reports why.
    let why = tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .expect("the connection was not closed")
        .unwrap()
        .unwrap_err();
    let code = why.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("25P03"), "{why}");
    assert!(idle.is_closed());
    // Its transaction was rolled back and its lock released.
    let other = node.connect().await;
    other
        .batch_execute("UPDATE kv SET v = 2 WHERE k = 1")
        .await
        .unwrap();
    let v: i32 = other
        .query_one("SELECT v FROM kv WHERE k = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
    // Idle outside a block is not bounded.
    other
        .batch_execute("SET idle_in_transaction_session_timeout = '100ms'")
        .await
        .unwrap();
    other.batch_execute("SELECT 1").await.unwrap();
    assert!(!other.is_closed());
}

#[test]
fn psql_sees_the_session_statements_drivers_send() {
    let node = TestNode::start();
    let out = node.psql(&[
        "-A",
        "-t",
        "-c",
        "SET extra_float_digits = 3",
        "-c",
        "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",
        "-c",
        "SHOW application_name",
        "-c",
        "SELECT version()",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // psql sends its application_name at startup; RESET ALL returns to it.
    assert!(stdout.contains("\npsql\n"), "{stdout}");
    assert!(
        stdout.contains("ddb 0.1.0 on ") && stdout.contains("compatible with PostgreSQL 15.0"),
        "{stdout}"
    );
}
