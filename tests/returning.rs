//! Writes that return rows, through real clients: tokio-postgres (extended protocol: the
//! statement is described with its RETURNING columns, `query` returns the rows, `execute`
//! counts them from the command tag, and a row-limited portal hands them out in parts) and
//! psql (simple protocol: the command tags `INSERT 0 n` / `UPDATE n` / `DELETE n`), on a
//! standalone node and through a cluster gateway where the rows live on several shards.

mod common;

use common::{connect, TestCluster, TestNode};
use tokio_postgres::types::Type;

/// The keys of `rows`, sorted.
fn ids(rows: &[tokio_postgres::Row]) -> Vec<i64> {
    let mut v: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    v.sort();
    v
}

/// The checks every deployment must pass, through a client of `port`; `keys` are six keys
/// (on several shards in a cluster).
async fn returns_rows(port: u16, keys: &[i64]) {
    let mut c = connect(port).await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT, n INT DEFAULT 5)")
        .await
        .unwrap();
    // Describe gives the RETURNING columns and their types.
    let insert = c
        .prepare("INSERT INTO t (id, v) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING id, v || '!' AS bang, n")
        .await
        .unwrap();
    let cols: Vec<(&str, Type)> = insert
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_().clone()))
        .collect();
    assert_eq!(
        cols,
        vec![("id", Type::INT8), ("bang", Type::TEXT), ("n", Type::INT4)]
    );
    let (a, b, d) = (keys[0], keys[1], keys[2]);
    let rows = c
        .query(&insert, &[&a, &"a", &b, &"b", &d, &"d"])
        .await
        .unwrap();
    assert_eq!(ids(&rows), {
        let mut k = vec![a, b, d];
        k.sort();
        k
    });
    for r in &rows {
        let id: i64 = r.get(0);
        let bang: &str = r.get(1);
        let n: i32 = r.get(2);
        let want = if id == a {
            "a!"
        } else if id == b {
            "b!"
        } else {
            "d!"
        };
        assert_eq!((bang, n), (want, 5), "row {id}");
    }
    // `execute` counts from the command tag: the rows written.
    let (e, f, g) = (keys[3], keys[4], keys[5]);
    let n = c
        .execute(&insert, &[&e, &"e", &f, &"f", &g, &"g"])
        .await
        .unwrap();
    assert_eq!(n, 3);
    // A point write on each key (shipped to its shard in a cluster) returns its row.
    for &k in keys {
        let row = c
            .query_one(
                "UPDATE t SET n = n + 1 WHERE id = $1 RETURNING id, n",
                &[&k],
            )
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (k, 6));
    }
    // A row-limited portal of a write returns all its rows, two at a time; the write happened
    // once.
    let txn = c.transaction().await.unwrap();
    let upd = txn
        .prepare("UPDATE t SET n = n * 10 RETURNING id, n")
        .await
        .unwrap();
    let portal = txn.bind(&upd, &[]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        let part = txn.query_portal(&portal, 2).await.unwrap();
        if part.is_empty() {
            break;
        }
        assert!(part.len() <= 2);
        got.extend(part);
    }
    assert_eq!(ids(&got).len(), 6);
    assert!(got.iter().all(|r| r.get::<_, i32>(1) == 60));
    txn.commit().await.unwrap();
    let sum: i64 = c
        .query_one("SELECT sum(n) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 360);
    // DELETE returns the old rows across every shard.
    let rows = c
        .query("DELETE FROM t WHERE n = 60 RETURNING id, v", &[])
        .await
        .unwrap();
    let mut want = keys.to_vec();
    want.sort();
    assert_eq!(ids(&rows), want);
}

/// The command tags, as psql prints them after the rows (simple protocol).
fn tags(psql: std::process::Output, want: &[&str]) {
    let out = String::from_utf8_lossy(&psql.stdout);
    assert!(
        psql.status.success(),
        "psql failed: {out} {:?}",
        psql.stderr
    );
    for w in want {
        assert!(out.lines().any(|l| l == *w), "no `{w}` in:\n{out}");
    }
}

const TAGGED: &str = "CREATE TABLE g (id INT PRIMARY KEY, v TEXT); \
     INSERT INTO g VALUES (1, 'a'), (2, 'b'), (3, 'c') RETURNING *; \
     UPDATE g SET v = 'z' WHERE id < 3 RETURNING id; \
     DELETE FROM g WHERE id = 3 RETURNING v";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_return_their_rows_on_a_node() {
    let node = TestNode::start();
    returns_rows(node.sql_port, &[1, 2, 3, 4, 5, 6]).await;
    tags(
        node.psql(&["-c", TAGGED]),
        &["INSERT 0 3", "UPDATE 2", "DELETE 1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_return_their_rows_from_every_shard_of_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = TestCluster::new("ret", 3);
        cluster.init();
        cluster
    })
    .await
    .unwrap();
    // Two keys on each shard: the gateway (n1) owns two, the others are remote.
    let keys: Vec<i64> = ["n1", "n2", "n3"]
        .iter()
        .flat_map(|n| cluster.keys_on(n, 2))
        .collect();
    returns_rows(cluster.sql_port("n1"), &keys).await;
}
