//! DDL inside transaction blocks on a real standalone node: committed or rolled back with the
//! block (and so after a crash), invisible to other sessions until the commit, a dropped
//! table locked until then, one name never created twice, and table ids never shared by
//! blocks that commit in another order than they created.

mod common;

use std::time::Duration;

use common::{sqlstate, TestNode};

async fn count(c: &tokio_postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_committed_in_a_block_survives_a_crash_and_rolled_back_ddl_leaves_nothing() {
    let mut node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute(
        "BEGIN; CREATE TABLE kept (id INT PRIMARY KEY, v TEXT);
         INSERT INTO kept VALUES (1, 'a'), (2, 'b'); COMMIT",
    )
    .await
    .unwrap();
    c.batch_execute(
        "BEGIN; CREATE TABLE lost (id INT PRIMARY KEY); INSERT INTO lost VALUES (1);
         DROP TABLE kept; ROLLBACK",
    )
    .await
    .unwrap();
    drop(c);
    node.restart();
    let c = node.connect().await;
    assert_eq!(count(&c, "kept").await, 2);
    let e = c.query("SELECT * FROM lost", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"), "{e:?}");
    // A table created after the restart gets an id of its own: kept's rows stay kept's.
    c.batch_execute("CREATE TABLE after (id INT PRIMARY KEY); INSERT INTO after VALUES (7)")
        .await
        .unwrap();
    assert_eq!(count(&c, "kept").await, 2);
    assert_eq!(count(&c, "after").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_in_a_block_is_locked_until_the_commit_and_then_gone() {
    let node = TestNode::start();
    let a = node.connect().await;
    a.batch_execute("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    a.batch_execute("BEGIN; DROP TABLE t").await.unwrap();
    let b = node.connect().await;
    let mut reader = tokio::spawn(async move {
        let r = b.query("SELECT * FROM t", &[]).await;
        (b, r)
    });
    // The reader waits for the drop's exclusive lock: no answer within 300 ms.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut reader)
            .await
            .is_err(),
        "a reader did not wait for the drop"
    );
    a.batch_execute("COMMIT").await.unwrap();
    let (_b, r) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader ends once the drop commits")
        .unwrap();
    let e = r.expect_err("the table is gone");
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_blocks_never_both_create_one_name() {
    let node = TestNode::start();
    let a = node.connect().await;
    let b = node.connect().await;
    a.batch_execute("BEGIN; CREATE TABLE x (from_a INT PRIMARY KEY)")
        .await
        .unwrap();
    b.batch_execute("SET lock_timeout = 200; BEGIN")
        .await
        .unwrap();
    // The name is a's until it commits: b waits and gives up, or loses wait-die.
    let e = b
        .batch_execute("CREATE TABLE x (from_b INT PRIMARY KEY)")
        .await
        .expect_err("the name is taken by a block in flight");
    assert!(
        matches!(sqlstate(&e).as_deref(), Some("55P03" | "40001")),
        "{e:?}"
    );
    b.batch_execute("ROLLBACK").await.unwrap();
    a.batch_execute("INSERT INTO x VALUES (1); COMMIT")
        .await
        .unwrap();
    let e = b
        .batch_execute("CREATE TABLE x (from_b INT PRIMARY KEY)")
        .await
        .expect_err("x exists now");
    assert_eq!(sqlstate(&e).as_deref(), Some("42P07"), "{e:?}");
    let row = b.query_one("SELECT from_a FROM x", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_that_commit_out_of_order_get_distinct_table_ids() {
    let mut node = TestNode::start();
    let a = node.connect().await;
    let b = node.connect().await;
    // a takes its table's id first, b (autocommit) the next one and commits first.
    a.batch_execute("BEGIN; CREATE TABLE p (id INT PRIMARY KEY); INSERT INTO p VALUES (1), (2)")
        .await
        .unwrap();
    b.batch_execute("CREATE TABLE q (id INT PRIMARY KEY); INSERT INTO q VALUES (10)")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("CREATE TABLE r (id INT PRIMARY KEY); INSERT INTO r VALUES (20), (21), (22)")
        .await
        .unwrap();
    assert_eq!(
        (
            count(&a, "p").await,
            count(&a, "q").await,
            count(&a, "r").await
        ),
        (2, 1, 3)
    );
    drop((a, b));
    node.restart();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE s (id INT PRIMARY KEY); INSERT INTO s VALUES (30)")
        .await
        .unwrap();
    assert_eq!(
        (
            count(&c, "p").await,
            count(&c, "q").await,
            count(&c, "r").await,
            count(&c, "s").await
        ),
        (2, 1, 3, 1)
    );
}
