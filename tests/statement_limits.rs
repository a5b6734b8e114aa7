//! The engine's limits, end to end: statements too complex to run (54001) and values or names too
//! large to store (54000) are refused with their SQLSTATE through every way in (the SQL port, the
//! RPC port, `ddb query -f`), and the node keeps serving and writing afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{sqlstate, TestCluster, TestNode};
use ddb::client::Client;
use ddb::protocol::{Request, Response};
use ddb::types::nesting::MAX_DEPTH;

/// `SELECT 1+1+…+1` with `terms` terms.
fn plus_chain(terms: usize) -> String {
    format!("SELECT 1{}", "+1".repeat(terms - 1))
}

/// `SELECT 1::int::int…` with `casts` casts.
fn cast_chain(casts: usize) -> String {
    format!("SELECT 1{}", "::int".repeat(casts))
}

/// A filter of `terms` `AND`ed comparisons on column `id`.
fn and_chain(terms: usize) -> String {
    let mut s = String::from("id >= 0");
    for i in 1..terms {
        s.push_str(if i % 2 == 0 {
            " AND id >= 0"
        } else {
            " AND v < 1000000"
        });
    }
    s
}

/// The value of a one-row, one-column simple query.
async fn scalar(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    for m in c.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("NULL").to_string());
        }
    }
    Ok(String::new())
}

async fn expect_code(c: &tokio_postgres::Client, sql: &str, code: &str) {
    let started = Instant::now();
    let err = c
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("a statement of {} bytes ran", sql.len()));
    assert_eq!(sqlstate(&err).as_deref(), Some(code), "{err}");
    eprintln!("{} bytes: {code} in {:?}", sql.len(), started.elapsed());
}

async fn node_answers(c: &tokio_postgres::Client) {
    assert_eq!(scalar(c, "SELECT 1").await.unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_nested_too_deep_get_54001_and_the_node_keeps_serving() {
    let node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)")
        .await
        .unwrap();
    // Ten times the sizes that used to abort the node.
    expect_code(&c, &plus_chain(15_000), "54001").await;
    node_answers(&c).await;
    expect_code(&c, &cast_chain(100_000), "54001").await;
    node_answers(&c).await;
    // The same through the extended protocol (Parse) and inside a transaction block, which fails.
    let err = c.prepare(&plus_chain(15_000)).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54001"), "{err}");
    c.batch_execute("BEGIN").await.unwrap();
    expect_code(&c, &cast_chain(100_000), "54001").await;
    expect_code(&c, "SELECT 1", "25P02").await;
    c.batch_execute("ROLLBACK").await.unwrap();

    // Right at the limit, a statement runs: as a constant, and over rows.
    let depth = MAX_DEPTH as usize;
    assert_eq!(
        scalar(&c, &plus_chain(depth - 10)).await.unwrap(),
        (depth - 10).to_string()
    );
    let sum = format!("SELECT sum(v{}) FROM t", "+0".repeat(depth - 20));
    assert_eq!(scalar(&c, &sum).await.unwrap(), "60");

    // Long AND chains are not deep: 500,000 terms (ten times what crashed) run.
    let started = Instant::now();
    let filter = and_chain(500_000);
    let n = scalar(&c, &format!("SELECT count(*) FROM t WHERE {filter}"))
        .await
        .unwrap();
    assert_eq!(n, "3");
    eprintln!(
        "500,000 AND terms ({} bytes): ran in {:?}",
        filter.len(),
        started.elapsed()
    );
    // Nested BETWEENs bind and evaluate their operand once: 40 levels used to double the tree
    // 40 times (2^40 nodes) and never answer.
    let nested = format!("SELECT true{}", " BETWEEN false AND true".repeat(40));
    assert_eq!(scalar(&c, &nested).await.unwrap(), "t");
    let or = format!(
        "SELECT count(*) FROM t WHERE {}",
        "id = 2 OR ".repeat(100_000) + "id = 3"
    );
    assert_eq!(scalar(&c, &or).await.unwrap(), "2");
    node_answers(&c).await;
}

#[test]
fn ddb_query_from_a_file_gets_54001_for_a_statement_nested_too_deep() {
    let node = TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.sql");
    std::fs::write(&file, plus_chain(15_000)).unwrap();
    let out = node.ddb(&["query", "-f", file.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("54001"), "{stderr}");
    std::fs::write(&file, cast_chain(100_000)).unwrap();
    let out = node.ddb(&["query", "-f", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(6));
    let out = node.ddb(&["query", "SELECT 1"], None);
    assert!(out.status.success(), "the node stopped answering");
}

/// A two-shard cluster with rows on both shards.
async fn two_shards() -> (TestCluster, tokio_postgres::Client) {
    let cluster = TestCluster::new("limits", 2);
    cluster.init();
    let c = common::connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .unwrap();
    for id in 0..40i64 {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&id, &(id * 10)])
            .await
            .unwrap();
    }
    (cluster, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_filters_and_shipped_statements_cross_the_rpc_port_within_the_limit() {
    let (cluster, c) = two_shards().await;
    let depth = MAX_DEPTH as usize;
    // A filter at the limit is pushed down to both shards, bound (deeper than written) and
    // decoded there.
    let deep = format!("v{} >= 0", "+0".repeat(depth - 20));
    let q = format!("SELECT count(*) FROM t WHERE {deep}");
    assert_eq!(scalar(&c, &q).await.unwrap(), "40");
    let q = format!("SELECT count(*) FROM t WHERE {}", and_chain(500_000));
    assert_eq!(scalar(&c, &q).await.unwrap(), "40");
    // Point statements on every key are shipped to the key's shard whole.
    for id in 0..40i64 {
        let q = format!(
            "UPDATE t SET v = v{} WHERE id = {id}",
            "+1".repeat(depth - 20)
        );
        c.batch_execute(&q).await.unwrap();
    }
    let q = "SELECT sum(v) FROM t";
    let expected = (0..40).map(|i| i * 10 + (depth as i64 - 20)).sum::<i64>();
    assert_eq!(scalar(&c, q).await.unwrap(), expected.to_string());
    // Through the RPC port, as `ddb query` sends SQL.
    let rpc = Client::connect_to(
        &cluster.rpc_addr("n2"),
        Duration::from_secs(5),
        Some(cluster.name.clone()),
    )
    .await
    .unwrap();
    let reply = rpc
        .call(Request::Sql {
            session: 1,
            sql: plus_chain(15_000),
        })
        .await
        .unwrap();
    match reply {
        Response::Sql { error: Some(e), .. } => assert_eq!(e.error.sqlstate(), "54001"),
        other => panic!("unexpected {other:?}"),
    }
    node_answers(&c).await;
    let c2 = common::connect(cluster.sql_port("n2")).await;
    node_answers(&c2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_an_expression_nested_too_deep_is_refused_and_the_node_survives() {
    use ddb::sql::ast::{BinaryOp, Expr, Literal, Statement};
    let node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    // A shipped statement nested far deeper than any statement can be, as a hostile or broken
    // peer would send it: built, encoded and dropped on a thread with room for its depth.
    let addr = node.rpc_addr();
    let reply = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || {
            let mut e = Expr::Literal(Literal::Int(1));
            for _ in 0..100_000 {
                let one = Box::new(Expr::Literal(Literal::Int(1)));
                e = Expr::Binary(BinaryOp::Add, Box::new(e), one);
            }
            let stmt = Statement::Update {
                returning: None,
                table: "t".into(),
                sets: vec![("v".into(), e)],
                filter: None,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let rpc = Client::connect(&addr, Duration::from_secs(5))
                    .await
                    .unwrap();
                let request = Request::Execute {
                    stmt,
                    params: vec![],
                    param_types: vec![],
                    catalog_version: 0,
                };
                tokio::time::timeout(Duration::from_secs(30), rpc.call(request)).await
            })
        })
        .unwrap()
        .join()
        .unwrap();
    // Not applied: the frame is refused (the connection then closes).
    let reply = reply.expect("the node answered or closed the connection in time");
    assert!(
        !matches!(reply, Ok(Response::Executed(_))),
        "a statement nested 100,000 deep ran: {reply:?}"
    );
    node_answers(&c).await;
    assert_eq!(scalar(&c, "SELECT v FROM t").await.unwrap(), "1");
}

/// Asserts that the node still takes writes: a new table, a row in it, read back.
async fn node_writes(c: &tokio_postgres::Client, table: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, s TEXT); INSERT INTO {table} VALUES (1, 'ok')"
    ))
    .await
    .unwrap_or_else(|e| panic!("the node stopped writing: {e}"));
    let s = scalar(c, &format!("SELECT s FROM {table} WHERE id = 1")).await;
    assert_eq!(s.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_keys_too_long_to_store_get_54000_and_the_node_keeps_writing() {
    let node = TestNode::start();
    let c = node.connect().await;
    // A table name longer than its catalog key can be.
    let name = "t".repeat(66_000);
    let err = c
        .batch_execute(&format!("CREATE TABLE {name} (id INT PRIMARY KEY)"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err}");
    assert!(format!("{err:?}").contains("65529 bytes"), "{err:?}");
    node_writes(&c, "after_name").await;

    // A primary key longer than the engine's key limit, as a literal and as a parameter.
    c.batch_execute("CREATE TABLE k (id TEXT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let long = "x".repeat(70_000);
    let err = c
        .batch_execute(&format!("INSERT INTO k VALUES ('{long}', 1)"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err}");
    assert!(format!("{err:?}").contains("65535 bytes"), "{err:?}");
    let err = c
        .execute("INSERT INTO k VALUES ($1, 2)", &[&long])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err}");
    // An UPDATE that would move a row to a key too long.
    c.batch_execute("INSERT INTO k VALUES ('short', 3)")
        .await
        .unwrap();
    let err = c
        .execute("UPDATE k SET id = $1 WHERE id = 'short'", &[&long])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err}");
    // Inside a block the error fails the block, as any error does.
    c.batch_execute("BEGIN; INSERT INTO k VALUES ('in block', 4)")
        .await
        .unwrap();
    let err = c
        .execute("INSERT INTO k VALUES ($1, 5)", &[&long])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Reading a key that long finds nothing; nothing of the refused statements was written.
    let n = c
        .query_one("SELECT count(*) FROM k WHERE id = $1", &[&long])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 0);
    assert_eq!(scalar(&c, "SELECT count(*) FROM k").await.unwrap(), "1");
    node_writes(&c, "after_key").await;
    // The same through `ddb query`.
    let out = node.ddb(
        &["query", &format!("INSERT INTO k VALUES ('{long}', 6)")],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("54000"), "{stderr}");
    node_writes(&c, "after_cli").await;
}

/// Needs the crash points compiled in (`--features failpoints`).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_panics_fails_alone_with_xx000_and_releases_its_locks() {
    let cluster = TestCluster::new("panics", 1);
    cluster.init_env(&[("FAILPOINTS", "executor-after-write=1*panic")]);
    let port = cluster.sql_port("n1");
    let c = common::connect(port).await;
    c.batch_execute("CREATE TABLE p (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    // The first row written panics the statement, which holds the row's lock.
    let err = c
        .batch_execute("INSERT INTO p VALUES (1, 1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("XX000"), "{err}");
    // The connection goes on; nothing was written, and the lock was released.
    assert_eq!(scalar(&c, "SELECT count(*) FROM p").await.unwrap(), "0");
    c.batch_execute("INSERT INTO p VALUES (1, 2)")
        .await
        .unwrap();
    assert_eq!(
        scalar(&c, "SELECT v FROM p WHERE id = 1").await.unwrap(),
        "2"
    );
    let other = common::connect(port).await;
    other
        .batch_execute("UPDATE p SET v = 3 WHERE id = 1")
        .await
        .unwrap();
    node_writes(&other, "after_panic").await;
}
