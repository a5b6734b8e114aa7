//! Savepoints across the shards of a real three-node cluster: a rollback to a savepoint undoes
//! the writes after it on every shard the transaction touched (this node's own and the others),
//! keeps every lock, and the COMMIT that follows (two-phase, across shards) commits exactly the
//! writes that survived. A transaction that lost a participant cannot return to a savepoint.

mod common;

use std::time::Duration;

use common::{connect, sqlstate, TestCluster};

const FAST: [(&str, &str); 2] = [
    ("DDB_PREPARED_TIMEOUT_MS", "500"),
    ("DDB_LOCK_TIMEOUT_MS", "2000"),
];

/// A cluster with table `a(id, v)` and `n` keys owned by each of n1, n2, n3 (none written).
async fn cluster(name: &str, n: usize) -> (TestCluster, Vec<Vec<i64>>) {
    let cluster = TestCluster::new(name, 3);
    cluster.init_env(&FAST);
    let keys = ["n1", "n2", "n3"]
        .iter()
        .map(|node| cluster.keys_on(node, n))
        .collect();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE a (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .unwrap();
    (cluster, keys)
}

/// Every key of `keys` with its value (`None`: no row), read through `c`.
async fn values(c: &tokio_postgres::Client, keys: &[i64]) -> Vec<(i64, Option<String>)> {
    let mut out = Vec::new();
    for &k in keys {
        let row = c
            .query_opt("SELECT v FROM a WHERE id = $1", &[&k])
            .await
            .unwrap_or_else(|e| panic!("read {k}: {e}"));
        out.push((k, row.map(|r| r.get(0))));
    }
    out
}

fn expect(pairs: &[(i64, Option<&str>)]) -> Vec<(i64, Option<String>)> {
    pairs
        .iter()
        .map(|(k, v)| (*k, v.map(str::to_string)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_savepoint_undoes_the_writes_after_it_on_every_shard() {
    let (cluster, keys) = cluster("sp-shards", 3).await;
    let c = connect(cluster.sql_port("n1")).await;
    let insert = "INSERT INTO a VALUES ($1, $2)";
    c.batch_execute("BEGIN").await.unwrap();
    // Before the savepoint: one key on each shard (n1's is this gateway's own).
    for shard in &keys {
        c.execute(insert, &[&shard[0], &"before"]).await.unwrap();
    }
    c.batch_execute("SAVEPOINT sp").await.unwrap();
    // After it: the first keys changed, a second key inserted on each shard.
    for shard in &keys {
        c.execute("UPDATE a SET v = 'undone' WHERE id = $1", &[&shard[0]])
            .await
            .unwrap();
        c.execute(insert, &[&shard[1], &"undone"]).await.unwrap();
    }
    c.batch_execute("ROLLBACK TO SAVEPOINT sp").await.unwrap();

    // Every lock stays: another transaction cannot write a key whose write was undone.
    let other = connect(cluster.sql_port("n2")).await;
    other.batch_execute("SET lock_timeout = 300").await.unwrap();
    for shard in &keys {
        let e = other
            .execute("UPDATE a SET v = 'other' WHERE id = $1", &[&shard[1]])
            .await
            .expect_err("a row written after the savepoint is still locked");
        assert!(
            matches!(sqlstate(&e).as_deref(), Some("55P03" | "40001")),
            "{e:?}"
        );
    }

    // After the rollback: a third key on two shards, and the first key of n3 changed.
    c.execute(insert, &[&keys[0][2], &"after"]).await.unwrap();
    c.execute(insert, &[&keys[1][2], &"after"]).await.unwrap();
    c.execute("UPDATE a SET v = 'after' WHERE id = $1", &[&keys[2][0]])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();

    let all: Vec<i64> = keys.iter().flatten().copied().collect();
    let want = expect(&[
        (keys[0][0], Some("before")),
        (keys[0][1], None),
        (keys[0][2], Some("after")),
        (keys[1][0], Some("before")),
        (keys[1][1], None),
        (keys[1][2], Some("after")),
        (keys[2][0], Some("after")),
        (keys[2][1], None),
        (keys[2][2], None),
    ]);
    // Read through every gateway: each sees exactly the surviving writes.
    for node in ["n1", "n2", "n3"] {
        let reader = connect(cluster.sql_port(node)).await;
        assert_eq!(values(&reader, &all).await, want, "through {node}");
    }
    // And the locks went with the commit.
    other
        .execute("UPDATE a SET v = 'other' WHERE id = $1", &[&keys[1][0]])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_on_another_shard_is_undone_by_rollback_to() {
    let (cluster, keys) = cluster("sp-failed", 2).await;
    let c = connect(cluster.sql_port("n1")).await;
    c.execute("INSERT INTO a VALUES ($1, 'existing')", &[&keys[2][0]])
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO a VALUES ($1, 'kept')", &[&keys[0][0]])
        .await
        .unwrap();
    c.batch_execute("SAVEPOINT before_batch").await.unwrap();
    // One statement that writes on n1 and n2, then hits a duplicate key on n3.
    let batch = format!(
        "INSERT INTO a VALUES ({}, 'lost'), ({}, 'lost'), ({}, 'dup')",
        keys[0][1], keys[1][0], keys[2][0]
    );
    let e = c.batch_execute(&batch).await.expect_err("duplicate key");
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e:?}");
    let e = c.batch_execute("SELECT 1").await.expect_err("failed block");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e:?}");
    c.batch_execute("ROLLBACK TO before_batch").await.unwrap();
    // The block is usable again, on every shard.
    c.execute("INSERT INTO a VALUES ($1, 'retried')", &[&keys[1][1]])
        .await
        .unwrap();
    c.execute("UPDATE a SET v = 'updated' WHERE id = $1", &[&keys[2][0]])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    let reader = connect(cluster.sql_port("n3")).await;
    let all: Vec<i64> = keys.iter().flatten().copied().collect();
    assert_eq!(
        values(&reader, &all).await,
        expect(&[
            (keys[0][0], Some("kept")),
            (keys[0][1], None),
            (keys[1][0], None),
            (keys[1][1], Some("retried")),
            (keys[2][0], Some("updated")),
            (keys[2][1], None),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_lost_a_participant_cannot_return_to_a_savepoint() {
    let (cluster, keys) = cluster("sp-lost", 1).await;
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO a VALUES ($1, 'lost')", &[&keys[0][0]])
        .await
        .unwrap();
    c.execute("INSERT INTO a VALUES ($1, 'lost')", &[&keys[2][0]])
        .await
        .unwrap();
    c.batch_execute("SAVEPOINT sp").await.unwrap();
    // n3 dies: its part of the transaction (the row written before the savepoint) is gone.
    cluster.kill("n3");
    let e = c
        .execute("UPDATE a SET v = 'x' WHERE id = $1", &[&keys[2][0]])
        .await
        .expect_err("n3 is down");
    assert!(sqlstate(&e).is_some(), "{e:?}");
    // Returning to the savepoint would commit n1's row without n3's: refused, and the block
    // stays failed until it ends.
    let e = c
        .batch_execute("ROLLBACK TO sp")
        .await
        .expect_err("the transaction lost a participant");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e:?}");
    let e = c.batch_execute("ROLLBACK TO sp").await.expect_err("gone");
    assert_eq!(sqlstate(&e).as_deref(), Some("3B001"), "{e:?}");
    c.batch_execute("COMMIT").await.unwrap();
    // Nothing of it was committed, and its lock on n1's row is gone.
    let other = connect(cluster.sql_port("n1")).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        other.execute("INSERT INTO a VALUES ($1, 'other')", &[&keys[0][0]]),
    )
    .await
    .expect("the row is not locked")
    .unwrap();
}
