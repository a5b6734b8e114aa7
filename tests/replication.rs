//! Replica groups on real processes (DESIGN §6.1, issue 9): clusters with `replication:
//! { factor: 2 }` started by `ddb init`, written through real PostgreSQL clients, with
//! replicas killed (`kill -9`), frozen (`SIGSTOP`) and restarted, and primaries killed.
//!
//! What a copy holds is read from the node itself: its status carries the applied LSN and a
//! checksum of every row it stores, so a replica "holds exactly its primary's rows" when both
//! agree with the primary's. Every write the client saw acknowledged is kept in a set and
//! checked key by key on the primary; the checksum then says the replica has the same rows.
//!
//! The clusters have three nodes, so the map's Raft group keeps a quorum when one node is
//! killed or frozen: shard 1 is n1 (primary) and n2, shard 2 is n3 alone (short of copies),
//! except the first test, which has two full groups of two and writes through all four, and
//! the last, which has two nodes on purpose: freezing one loses the map's quorum, and the write
//! must be answered (40003) within the commit bound rather than hang.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{connect, same_copy, sqlstate, status_of, TestCluster};
use ddb::client::Client;
use ddb::cluster::map::ClusterMap;
use ddb::protocol::{Request, Response};

const SCHEMA: &str = "CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)";

/// The map of the node at `addr`.
async fn map_of(addr: &str) -> Option<ClusterMap> {
    let client = Client::connect(addr, Duration::from_secs(2)).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(2), client.call(Request::GetMap)).await {
        Ok(Ok(Response::Map(Some(map)))) => Some(*map),
        _ => None,
    }
}

/// Polls `f` every 100 ms until it holds or `timeout` passes; whether it held.
async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The in-sync set of shard 1, as the map on `node` has it.
async fn in_sync(cluster: &TestCluster, node: &str) -> Option<Vec<String>> {
    let map = map_of(&cluster.rpc_addr(node)).await?;
    map.shards.get(&1).map(|s| s.in_sync.clone())
}

/// The shard that owns key `k` of table `t` (table id 1) under `map`.
fn shard_of(map: &ClusterMap, k: i64) -> u32 {
    let key = ddb::storage::keycode::row_key(1, &[ddb::types::Value::Int(k)]);
    let token = ddb::storage::keycode::token_of_key(&key).expect("a row key");
    map.shard_of_token(token).expect("an owner")
}

/// The first `n` keys from 0 up that shard `shard` owns under `map`.
fn keys_of(map: &ClusterMap, shard: u32, n: usize) -> Vec<i64> {
    (0..)
        .filter(|k| shard_of(map, *k) == shard)
        .take(n)
        .collect()
}

/// Creates table `t` through `node`'s SQL port and returns `node`'s map.
async fn with_schema(cluster: &TestCluster, node: &str) -> ClusterMap {
    connect(cluster.sql_port(node))
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    map_of(&cluster.rpc_addr(node)).await.unwrap()
}

/// Inserts keys `keys` one statement at a time through `port` until they are all tried or
/// `budget` has passed; returns the keys whose insert was acknowledged. Failures (a node
/// going away under the load) are counted, not fatal; a failed connection is reopened.
async fn write(port: u16, keys: Vec<i64>, budget: Duration) -> (BTreeSet<i64>, usize) {
    let deadline = Instant::now() + budget;
    let mut acked = BTreeSet::new();
    let mut failed = 0;
    let mut client = connect(port).await;
    for k in keys {
        if Instant::now() > deadline {
            break;
        }
        let v = k * 7;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&k, &v];
        let insert = client.execute("INSERT INTO t VALUES ($1, $2)", &params);
        match tokio::time::timeout(Duration::from_secs(20), insert).await {
            Ok(Ok(1)) => {
                acked.insert(k);
            }
            Ok(Ok(n)) => panic!("insert of {k} touched {n} rows"),
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("write of {k} through port {port} failed: {e:?}");
                }
                failed += 1;
                if client.is_closed() {
                    client = connect(port).await;
                }
                // A client backs off a little: an outage does not use up the keys at once.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                failed += 1;
                client = connect(port).await;
            }
        }
    }
    (acked, failed)
}

/// Asserts that every key of `acked` is stored, with its value, as read through `port`.
async fn assert_all_there(port: u16, acked: &BTreeSet<i64>) {
    let c = connect(port).await;
    let rows = c.query("SELECT k, v FROM t", &[]).await.expect("select");
    let stored: std::collections::BTreeMap<i64, i64> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for k in acked {
        assert_eq!(
            stored.get(k),
            Some(&(k * 7)),
            "acknowledged key {k} is missing"
        );
    }
}

fn signal(cluster: &TestCluster, node: &str, sig: &str) {
    let pid = cluster.pid(node).expect("a pid");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_exactly_their_primarys_rows_after_writes_through_every_gateway() {
    let cluster = TestCluster::replicated("copies", 4, "{ factor: 2 }");
    cluster.init();
    let (_, status) = cluster.status();
    let roles: Vec<(&str, &str)> = status
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("n1", "primary"),
            ("n2", "replica"),
            ("n3", "primary"),
            ("n4", "replica")
        ]
    );
    connect(cluster.sql_port("n1"))
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    // Every gateway's catalog follows the map a moment after the CREATE TABLE returns.
    for (node, _, _) in cluster.nodes() {
        let g = connect(cluster.sql_port(&node)).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                g.simple_query("SELECT k FROM t WHERE k = -1").await.is_ok()
            })
            .await,
            "{node} does not know table t"
        );
    }
    let mut tasks = Vec::new();
    for (i, (node, _, _)) in cluster.nodes().into_iter().enumerate() {
        let port = cluster.sql_port(&node);
        let keys: Vec<i64> = (0..300).map(|j| j * 4 + i as i64).collect();
        tasks.push(tokio::spawn(write(port, keys, Duration::from_secs(90))));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        let (a, failed) = t.await.unwrap();
        assert_eq!(failed, 0, "no write fails with every node up");
        acked.extend(a);
    }
    assert_eq!(acked.len(), 1200);
    assert_all_there(cluster.sql_port("n2"), &acked).await;
    for (primary, replica) in [("n1", "n2"), ("n3", "n4")] {
        assert!(
            eventually(Duration::from_secs(20), || same_copy(
                &cluster, primary, replica
            ))
            .await,
            "{replica} does not hold {primary}'s rows:\n{:?}\n{:?}\n{}",
            status_of(&cluster.rpc_addr(primary)).await,
            status_of(&cluster.rpc_addr(replica)).await,
            cluster.logs()
        );
    }
    let p1 = status_of(&cluster.rpc_addr("n1")).await.unwrap();
    let p3 = status_of(&cluster.rpc_addr("n3")).await.unwrap();
    assert_eq!(p1.keys + p3.keys, 1200, "each row is on one shard");
    // ddb status: every node in sync, the replicas caught up (no lag) as their primary sees.
    let (code, status) = cluster.status();
    assert_eq!(code, Some(0));
    for n in &status {
        assert_eq!(n["in_sync"], true, "{n}");
        assert_eq!(n["lag"].as_i64(), Some(0), "{n}");
        assert_eq!(n["lag_ms"].as_i64(), Some(0), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_catches_up_from_the_log_and_rejoins_the_in_sync_set() {
    let cluster = TestCluster::replicated("catchup", 3, "{ factor: 2, ack_timeout_ms: 500 }");
    cluster.init();
    let map = with_schema(&cluster, "n1").await;
    let keys: Vec<i64> = keys_of(&map, 1, 1500);
    let load = tokio::spawn(write(
        cluster.sql_port("n3"),
        keys,
        Duration::from_secs(120),
    ));
    // Kill the replica once the load is under way.
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n2"))
                .await
                .is_some_and(|s| s.applied_lsn >= 200)
        })
        .await,
        "the load did not reach the replica"
    );
    cluster.kill("n2");
    // Writes go on without it once it has left the in-sync set.
    assert!(
        eventually(Duration::from_secs(10), || async {
            in_sync(&cluster, "n1").await.is_some_and(|s| s == ["n1"])
        })
        .await,
        "the killed replica did not leave the in-sync set:\n{}",
        cluster.logs()
    );
    let before = status_of(&cluster.rpc_addr("n1")).await.unwrap().lsn;
    assert!(
        eventually(Duration::from_secs(10), || async {
            status_of(&cluster.rpc_addr("n1"))
                .await
                .is_some_and(|s| s.lsn > before + 50)
        })
        .await,
        "writes stopped without the replica"
    );
    // Restarted (ddb init starts the nodes that are down), it catches up from the log.
    cluster.init();
    let (acked, _failed) = load.await.unwrap();
    assert!(
        acked.len() > 1000,
        "only {} writes acknowledged",
        acked.len()
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            in_sync(&cluster, "n1")
                .await
                .is_some_and(|s| s.contains(&"n2".to_string()))
        })
        .await,
        "the restarted replica did not rejoin the in-sync set:\n{}",
        cluster.logs()
    );
    assert_all_there(cluster.sql_port("n3"), &acked).await;
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the restarted replica does not hold its primary's rows:\n{:?}\n{:?}",
        status_of(&cluster.rpc_addr("n1")).await,
        status_of(&cluster.rpc_addr("n2")).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_leaves_the_in_sync_set_within_the_ack_timeout_and_rejoins_when_thawed() {
    const ACK_TIMEOUT_MS: u64 = 500;
    let cluster = TestCluster::replicated("frozen", 3, "{ factor: 2, ack_timeout_ms: 500 }");
    cluster.init();
    let map = with_schema(&cluster, "n1").await;
    let keys: Vec<i64> = keys_of(&map, 1, 4000);
    // Four writers, so more than a window of appends (MAX_IN_FLIGHT) is unanswered while the
    // replica is frozen.
    let loads: Vec<_> = keys
        .chunks(1000)
        .map(|chunk| {
            tokio::spawn(write(
                cluster.sql_port("n1"),
                chunk.to_vec(),
                Duration::from_secs(60),
            ))
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n2"))
                .await
                .is_some_and(|s| s.applied_lsn >= 100)
        })
        .await,
        "the load did not reach the replica"
    );
    signal(&cluster, "n2", "-STOP");
    let frozen = Instant::now();
    let left = eventually(Duration::from_secs(10), || async {
        in_sync(&cluster, "n1").await.is_some_and(|s| s == ["n1"])
    })
    .await;
    let took = frozen.elapsed();
    if !left {
        signal(&cluster, "n2", "-CONT");
        panic!(
            "the frozen replica did not leave the in-sync set:\n{}",
            cluster.logs()
        );
    }
    // The ack timeout, a tick, a Raft commit and this test's polling.
    assert!(
        took < Duration::from_millis(ACK_TIMEOUT_MS + 2000),
        "left the set after {took:?}"
    );
    let before = status_of(&cluster.rpc_addr("n1"))
        .await
        .unwrap()
        .applied_lsn;
    let moved = eventually(Duration::from_secs(10), || async {
        status_of(&cluster.rpc_addr("n1"))
            .await
            .is_some_and(|s| s.applied_lsn > before + 20)
    })
    .await;
    // Frozen for well over the reply timeout: the primary gives the stream up (it would
    // otherwise wait on its full window for good) and must redial once the replica is back.
    let gave_up = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(cluster.data_dir("n1").join("ddb.log"))
            .is_ok_and(|log| log.contains("giving the stream up"))
    })
    .await;
    signal(&cluster, "n2", "-CONT");
    assert!(moved, "writes did not go on without the frozen replica");
    assert!(
        gave_up,
        "the primary kept waiting on the frozen replica's stream:\n{}",
        cluster.logs()
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            in_sync(&cluster, "n1")
                .await
                .is_some_and(|s| s.contains(&"n2".to_string()))
        })
        .await,
        "the thawed replica did not rejoin the in-sync set:\n{}",
        cluster.logs()
    );
    let mut acked = BTreeSet::new();
    for load in loads {
        acked.extend(load.await.unwrap().0);
    }
    assert_all_there(cluster.sql_port("n1"), &acked).await;
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the thawed replica does not hold its primary's rows"
    );
    eprintln!("the frozen replica left the in-sync set after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_in_sync_writes_fail_with_53000_and_reads_go_on() {
    let cluster = TestCluster::replicated(
        "floor",
        3,
        "{ factor: 2, min_in_sync: 2, ack_timeout_ms: 500 }",
    );
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n1")).await.unwrap();
    let keys: Vec<i64> = keys_of(&map, 1, 40);
    for k in &keys[..20] {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[k, &(k * 7)])
            .await
            .unwrap();
    }
    cluster.kill("n2");
    // A write in flight when the replica stops cannot commit with one copy: once the replica
    // has left the set (the write's ack timed out), its client hears 40003, outcome unknown.
    // Its entry stays in the log, pending, invisible.
    let in_flight = keys[20];
    let e = tokio::time::timeout(
        Duration::from_secs(15),
        c.execute(
            "INSERT INTO t VALUES ($1, $2)",
            &[&in_flight, &(in_flight * 7)],
        ),
    )
    .await
    .expect("the write in flight is answered")
    .expect_err("a write that lost its second copy");
    assert_eq!(sqlstate(&e).as_deref(), Some("40003"), "{e}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            in_sync(&cluster, "n1").await.is_some_and(|s| s == ["n1"])
        })
        .await,
        "the stopped replica did not leave the in-sync set:\n{}",
        cluster.logs()
    );
    // New writes are refused at once.
    let e = c
        .execute("INSERT INTO t VALUES ($1, 0)", &[&keys[23]])
        .await
        .expect_err("a write below min_in_sync");
    assert_eq!(sqlstate(&e).as_deref(), Some("53000"), "{e}");
    // Through another gateway too.
    let g = connect(cluster.sql_port("n3")).await;
    let e = g
        .execute("INSERT INTO t VALUES ($1, 0)", &[&keys[21]])
        .await
        .expect_err("a write below min_in_sync");
    assert_eq!(sqlstate(&e).as_deref(), Some("53000"), "{e}");
    // Reads still work. (A scan of the whole table would wait for the pending entry's row
    // lock, which is held until the entry commits or is dropped: point reads go on.)
    for k in &keys[..20] {
        let v: i64 = c
            .query_one("SELECT v FROM t WHERE k = $1", &[k])
            .await
            .expect("a read below min_in_sync")
            .get(0);
        assert_eq!(v, k * 7);
    }
    let none = c
        .query_opt("SELECT v FROM t WHERE k = $1", &[&keys[23]])
        .await
        .expect("a read below min_in_sync");
    assert!(none.is_none(), "a refused write is not there");
    // Back with its copy, writes are taken again, and the entry left pending commits.
    cluster.init();
    assert!(
        eventually(Duration::from_secs(30), || async {
            c.execute("INSERT INTO t VALUES ($1, 0)", &[&keys[22]])
                .await
                .is_ok()
        })
        .await,
        "writes were not taken again after the replica came back:\n{}",
        cluster.logs()
    );
    let v: i64 = c
        .query_one("SELECT v FROM t WHERE k = $1", &[&in_flight])
        .await
        .expect("the pending entry committed once the set grew back")
        .get(0);
    assert_eq!(v, in_flight * 7);
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the replica does not hold its primary's rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_restarts_without_losing_an_acknowledged_write() {
    let cluster = TestCluster::replicated("primary", 3, "{ factor: 2 }");
    cluster.init();
    let map = with_schema(&cluster, "n3").await;
    let keys: Vec<i64> = keys_of(&map, 1, 3000);
    let probe = *keys.last().unwrap();
    // Acknowledged before the crash: all of them must be read right after the restart (the
    // apply is not fsynced, so the restarted primary holds them only in its log's tail).
    let (before, _) = write(
        cluster.sql_port("n3"),
        keys[..500].to_vec(),
        Duration::from_secs(60),
    )
    .await;
    let load = tokio::spawn(write(
        cluster.sql_port("n3"),
        keys[500..2000].to_vec(),
        Duration::from_secs(60),
    ));
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n1"))
                .await
                .is_some_and(|s| s.applied_lsn >= 200)
        })
        .await,
        "the load did not start"
    );
    cluster.kill("n1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.init();
    // The first read that succeeds after the restart holds every acknowledged write: until
    // the old tail is applied again the shard refuses reads (57P03), it never misses rows.
    let c = connect(cluster.sql_port("n3")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut refused, mut read) = (0, None);
    while Instant::now() < deadline {
        match c.query("SELECT k, v FROM t", &[]).await {
            Ok(rows) => {
                read = Some(rows);
                break;
            }
            Err(e) => {
                if e.code().map(|c| c.code()) == Some("57P03") {
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let rows = read.expect("no read succeeded within 30 s of the restart");
    let stored: std::collections::BTreeMap<i64, i64> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for k in &before {
        assert_eq!(
            stored.get(k),
            Some(&(k * 7)),
            "acknowledged key {k} is missing from the first read after the restart"
        );
    }
    eprintln!("the first read after the restart came after {refused} refusals (57P03)");
    // The restarted primary commits its old tail through its replica, then serves again.
    assert!(
        eventually(Duration::from_secs(30), || async {
            c.execute("INSERT INTO t VALUES ($1, $2)", &[&probe, &(probe * 7)])
                .await
                .is_ok()
        })
        .await,
        "the restarted primary does not take writes:\n{}",
        cluster.logs()
    );
    let (mut acked, failed) = load.await.unwrap();
    acked.extend(before);
    acked.insert(probe);
    eprintln!("{} writes acknowledged, {failed} failed", acked.len());
    assert_all_there(cluster.sql_port("n3"), &acked).await;
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the replica does not hold the restarted primary's rows"
    );
}

/// Inserts `n` rows of about 2 KB into `big` through `port`, four connections at once, keys
/// from `from` up; returns the keys acknowledged.
async fn write_big(port: u16, from: i64, n: i64) -> BTreeSet<i64> {
    let mut tasks = Vec::new();
    for w in 0..4 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port).await;
            let pad = "x".repeat(2000);
            let mut acked = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut k = from + w;
            while k < from + n && Instant::now() < deadline {
                if c.execute("INSERT INTO big VALUES ($1, $2)", &[&k, &pad])
                    .await
                    .is_ok()
                {
                    acked.insert(k);
                }
                k += 4;
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_truncated_log_catches_up_by_snapshot_while_writes_go_on() {
    let cluster = TestCluster::replicated("snapshot", 3, "{ factor: 2, ack_timeout_ms: 500 }");
    // The primary keeps at most 300 entries behind its head for a lagging replica.
    cluster.init_env(&[("DDB_LOG_RETENTION", "300")]);
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE big (k BIGINT PRIMARY KEY, pad TEXT NOT NULL)")
        .await
        .unwrap();
    let mut acked = write_big(cluster.sql_port("n1"), 0, 400).await;
    cluster.kill("n2");
    // Well past the retention, and several MiB: the snapshot takes many batches.
    acked.extend(write_big(cluster.sql_port("n1"), 400, 4000).await);
    assert!(
        acked.len() >= 4000,
        "only {} writes acknowledged",
        acked.len()
    );
    // Restarted while writes go on, it cannot resume from the log: a snapshot brings it back.
    let load = tokio::spawn(write_big(cluster.sql_port("n1"), 10_000, 1000));
    cluster.init_env(&[("DDB_LOG_RETENTION", "300")]);
    let rejoined = eventually(Duration::from_secs(60), || async {
        in_sync(&cluster, "n1")
            .await
            .is_some_and(|s| s.contains(&"n2".to_string()))
    })
    .await;
    acked.extend(load.await.unwrap());
    assert!(
        rejoined,
        "the replica did not rejoin the in-sync set:\n{}",
        cluster.logs()
    );
    let log = |node: &str| {
        std::fs::read_to_string(cluster.data_dir(node).join("ddb.log")).unwrap_or_default()
    };
    let sent = log("n1")
        .lines()
        .find(|l| l.contains("snapshot at") && l.contains("batches"))
        .map(str::to_string);
    let sent = sent.expect("the primary sent no snapshot");
    eprintln!("{sent}");
    let batches: u64 = sent
        .split(" batches")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a batch count");
    assert!(batches >= 4, "the snapshot took {batches} batches");
    assert!(
        log("n2").contains("installed a snapshot"),
        "the replica installed no snapshot"
    );
    let rows = c.query("SELECT k FROM big", &[]).await.unwrap();
    let stored: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    for k in &acked {
        assert!(stored.contains(k), "acknowledged key {k} is missing");
    }
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the replica does not hold its primary's rows after the snapshot"
    );
}

/// Entries a node's log holds, from its status (`log_start..=lsn`).
fn held(s: &ddb::protocol::NodeStatus) -> u64 {
    (s.lsn + 1).saturating_sub(s.log_start)
}

/// A replica truncates its own log (issue 9, point 5): with a retention of 50 entries it keeps
/// at least 50 and at most 50 + `TRUNCATE_MIN` behind its applied LSN once it has caught up,
/// however many rows were written; killed with `kill -9` after truncating, it restarts from
/// its log's base and resumes from the last entry it shares with its primary (no snapshot);
/// killed again under load, and left down until its primary's log has moved past it, it
/// catches up by a snapshot installed over its truncated log.
/// Each time it holds exactly its primary's rows and every acknowledged key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_keeps_its_log_within_the_retention_and_catches_up_after_kill_9() {
    const RETENTION: u64 = 50;
    let slack = ddb::server::repl_replica::TRUNCATE_MIN;
    let env = [("DDB_LOG_RETENTION", "50")];
    let cluster = TestCluster::replicated("trunc", 3, "{ factor: 2, ack_timeout_ms: 500 }");
    cluster.init_env(&env);
    let map = with_schema(&cluster, "n1").await;
    let keys: Vec<i64> = (0..20_000).filter(|k| shard_of(&map, *k) == 1).collect();
    assert!(keys.len() > 3500, "{} keys on shard 1", keys.len());

    // Thousands of rows, while the most entries the replica's log holds is watched.
    let most = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watch = {
        let (addr, most) = (cluster.rpc_addr("n2"), most.clone());
        tokio::spawn(async move {
            loop {
                if let Some(s) = status_of(&addr).await {
                    most.fetch_max(held(&s), std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = Instant::now();
    let (mut acked, failed) = write(
        cluster.sql_port("n1"),
        keys[..2500].to_vec(),
        Duration::from_secs(120),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    watch.abort();
    assert_eq!(failed, 0, "writes failed with both copies up");
    assert_eq!(
        acked.len(),
        2500,
        "only {} writes acknowledged",
        acked.len()
    );
    let bounded = |s: &ddb::protocol::NodeStatus| {
        s.log_start > 1000 && held(s) >= RETENTION && held(s) <= RETENTION + slack
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            same_copy(&cluster, "n1", "n2").await
                && status_of(&cluster.rpc_addr("n2"))
                    .await
                    .is_some_and(|s| bounded(&s))
        })
        .await,
        "the replica's log is not bounded by the retention: {:?}\n{}",
        status_of(&cluster.rpc_addr("n2")).await,
        cluster.logs()
    );
    let before = status_of(&cluster.rpc_addr("n2")).await.unwrap();
    let primary = status_of(&cluster.rpc_addr("n1")).await.unwrap();
    eprintln!(
        "2500 rows in {seconds:.1} s; replica n2 held at most {} entries under the load, then \
         lsn {} log_start {} ({} held); primary n1: lsn {} log_start {} ({} held)",
        most.load(std::sync::atomic::Ordering::Relaxed),
        before.lsn,
        before.log_start,
        held(&before),
        primary.lsn,
        primary.log_start,
        held(&primary)
    );
    // ddb status shows the same log start.
    let (_, rows) = cluster.status();
    let row = rows
        .iter()
        .find(|r| r["name"] == "n2")
        .expect("a row for n2");
    assert!(
        row["log_start"]
            .as_u64()
            .is_some_and(|l| l >= before.log_start),
        "{row}"
    );

    // kill -9 after truncating, no writes meanwhile: the primary's log still covers it.
    cluster.kill("n2");
    cluster.init_env(&env);
    assert!(
        eventually(Duration::from_secs(30), || async {
            in_sync(&cluster, "n1")
                .await
                .is_some_and(|s| s.contains(&"n2".to_string()))
                && same_copy(&cluster, "n1", "n2").await
        })
        .await,
        "the restarted replica did not catch up:\n{}",
        cluster.logs()
    );
    let after = status_of(&cluster.rpc_addr("n2")).await.unwrap();
    assert!(
        after.log_start >= before.log_start,
        "the log's base went back from {} to {} across the restart",
        before.log_start,
        after.log_start
    );
    let log = |node: &str| {
        std::fs::read_to_string(cluster.data_dir(node).join("ddb.log")).unwrap_or_default()
    };
    assert!(
        !log("n2").contains("installed a snapshot"),
        "the replica needed a snapshot though the primary's log covered it"
    );

    // kill -9 under load: it catches up by snapshot, and its log stays bounded.
    let load = tokio::spawn(write(
        cluster.sql_port("n3"),
        keys[2500..3500].to_vec(),
        Duration::from_secs(120),
    ));
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n2"))
                .await
                .is_some_and(|s| s.applied_lsn > after.applied_lsn + 100)
        })
        .await,
        "the load did not reach the replica"
    );
    cluster.kill("n2");
    // The replica holds no entry past the primary's last one now; once the primary's log has
    // moved past that, only a snapshot can bring it back.
    let gone = status_of(&cluster.rpc_addr("n1")).await.unwrap().lsn;
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n1"))
                .await
                .is_some_and(|s| s.log_start > gone + 1)
        })
        .await,
        "the primary's log was not truncated past the killed replica"
    );
    cluster.init_env(&env);
    let (more, _failed) = load.await.unwrap();
    assert!(more.len() > 900, "only {} writes acknowledged", more.len());
    acked.extend(more);
    assert!(
        eventually(Duration::from_secs(30), || async {
            in_sync(&cluster, "n1")
                .await
                .is_some_and(|s| s.contains(&"n2".to_string()))
                && same_copy(&cluster, "n1", "n2").await
                && status_of(&cluster.rpc_addr("n2"))
                    .await
                    .is_some_and(|s| held(&s) <= RETENTION + slack)
        })
        .await,
        "the replica killed under load did not catch up within its retention: {:?}\n{}",
        status_of(&cluster.rpc_addr("n2")).await,
        cluster.logs()
    );
    assert!(
        log("n2").contains("installed a snapshot"),
        "the replica caught up from a log that no longer reached back to it"
    );
    assert_all_there(cluster.sql_port("n3"), &acked).await;
}

/// `async` (DESIGN §6.1): an entry is committed once the primary has it on disk, so writes go
/// on while the shard's only replica is frozen; but a 2PC `Prepared` entry or decision record
/// waits for one replica even so, so a transaction across two shards that needs the frozen
/// replica's shard does not commit until the replica is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_commits_on_the_primarys_fsync_but_two_phase_entries_wait_for_a_replica() {
    // A long ack timeout, so the frozen replica stays a member: what is tested is the mode.
    let cluster = TestCluster::replicated(
        "async",
        4,
        "{ factor: 2, mode: async, ack_timeout_ms: 60000 }",
    );
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n1")).await.unwrap();
    let on = |shard: u32| -> Vec<i64> { keys_of(&map, shard, 20) };
    let (one, two) = (on(1), on(2));
    // Every gateway knows the table before the replica is frozen.
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.simple_query("SELECT k FROM t WHERE k = -1").await.is_ok()
        })
        .await
    );
    signal(&cluster, "n2", "-STOP");
    // One-shard writes on shard 1 commit on n1's fsync alone.
    for &k in &one[..10] {
        let v = k * 7;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&k, &v];
        let insert = c.execute("INSERT INTO t VALUES ($1, $2)", &params);
        match tokio::time::timeout(Duration::from_secs(10), insert).await {
            Ok(Ok(1)) => {}
            other => {
                signal(&cluster, "n2", "-CONT");
                panic!("a one-shard write in async mode with the replica frozen: {other:?}");
            }
        }
    }
    // A transaction across shards 1 and 2 prepares or decides on shard 1: it waits for n2.
    let port = cluster.sql_port("n3");
    let (a, b) = (one[10], two[0]);
    let across = tokio::spawn(async move {
        let c = connect(port).await;
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO t VALUES ({a}, {}); INSERT INTO t VALUES ({b}, {}); COMMIT",
            a * 7,
            b * 7
        ))
        .await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waited = !across.is_finished();
    signal(&cluster, "n2", "-CONT");
    assert!(
        waited,
        "a two-shard commit finished while the only replica of one of its shards was frozen: {:?}",
        across.await
    );
    let done = tokio::time::timeout(Duration::from_secs(30), across)
        .await
        .expect("the two-shard commit finishes once the replica is back")
        .unwrap();
    done.expect("the two-shard commit");
    let acked: BTreeSet<i64> = one[..11].iter().copied().chain([b]).collect();
    assert_all_there(cluster.sql_port("n1"), &acked).await;
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the thawed replica does not hold its primary's rows"
    );
}

/// Any node takes SQL, a replica too (DESIGN §1): its gateway sends writes to the primaries.
/// A table without a primary key gets row ids from the gateway, which a replica keeps beside
/// its log (the log holds only its primary's entries), so inserts through a replica work and
/// its ids never repeat, across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_gateway_writes_rows_with_and_without_a_primary_key() {
    let cluster = TestCluster::replicated("via-replica", 3, "{ factor: 2 }");
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute("CREATE TABLE h (v BIGINT)").await.unwrap();
    let r = connect(cluster.sql_port("n2")).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            r.simple_query("SELECT v FROM h WHERE v = -1").await.is_ok()
        })
        .await
    );
    let mut acked = BTreeSet::new();
    for k in 0..40i64 {
        let v = k * 7;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&k, &v];
        r.execute("INSERT INTO t VALUES ($1, $2)", &params)
            .await
            .unwrap_or_else(|e| panic!("insert of {k} through the replica: {e:?}"));
        acked.insert(k);
        r.execute("INSERT INTO h VALUES ($1)", &[&k])
            .await
            .unwrap_or_else(|e| panic!("keyless insert through the replica: {e:?}"));
    }
    cluster.kill("n2");
    cluster.init();
    let r = connect(cluster.sql_port("n2")).await;
    for k in 40..60i64 {
        assert!(
            eventually(Duration::from_secs(20), || async {
                r.execute("INSERT INTO h VALUES ($1)", &[&k]).await.is_ok()
            })
            .await,
            "keyless insert {k} through the restarted replica"
        );
    }
    assert_all_there(cluster.sql_port("n1"), &acked).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM h", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 60, "a row id was given twice");
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_leaves_its_copy_of_an_in_doubt_transaction_to_its_primary() {
    let cluster = TestCluster::replicated("indoubt", 3, "{ factor: 2, ack_timeout_ms: 500 }");
    // Whichever node is the gateway of a two-shard commit dies once every participant has
    // prepared (the others never run that code); the participants wait 3 s before they ask.
    let crash = [
        ("FAILPOINTS", "gateway-after-all-prepares=return"),
        ("DDB_PREPARED_TIMEOUT_MS", "3000"),
    ];
    cluster.init_env(&crash);
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n1")).await.unwrap();
    let k1 = keys_of(&map, 1, 1)[0];
    let k2 = keys_of(&map, 2, 1)[0];
    for k in [k1, k2] {
        c.execute("INSERT INTO t VALUES ($1, 0)", &[&k])
            .await
            .unwrap();
    }
    // Through n3 (shard 2's primary; shard 2, written first, is the anchor): shard 1's
    // primary n1 prepares, and so does its replica n2 hold the prepared record, when the
    // gateway dies.
    let g = connect(cluster.sql_port("n3")).await;
    let block = format!(
        "BEGIN; UPDATE t SET v = 1 WHERE k = {k2}; UPDATE t SET v = 1 WHERE k = {k1}; COMMIT"
    );
    let e = g.batch_execute(&block).await.expect_err("the gateway died");
    assert!(e.as_db_error().is_none(), "the connection was lost: {e}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            status_of(&cluster.rpc_addr("n3")).await.is_none()
        })
        .await,
        "the gateway is still up"
    );
    let p1 = status_of(&cluster.rpc_addr("n1")).await.unwrap();
    assert_eq!(p1.prepared, 1, "n1 holds the transaction prepared");
    // The replica restarts with the prepared record in its store; n3 comes back too.
    cluster.kill("n2");
    cluster.init_env(&[("DDB_PREPARED_TIMEOUT_MS", "500")]);
    // The primary resolves the transaction (aborted: the gateway never decided) and nothing
    // stays in doubt anywhere, the replica included.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let mut prepared = 0;
            for node in ["n1", "n2", "n3"] {
                match status_of(&cluster.rpc_addr(node)).await {
                    Some(s) => prepared += s.prepared,
                    None => return false,
                }
            }
            prepared == 0
        })
        .await,
        "a transaction stayed in doubt: {:?}\n{}",
        status_of(&cluster.rpc_addr("n2")).await.map(|s| s.prepared),
        cluster.logs()
    );
    for k in [k1, k2] {
        let v: i64 = c
            .query_one("SELECT v FROM t WHERE k = $1", &[&k])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 0, "the undecided transaction is aborted");
    }
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the replica does not hold its primary's rows"
    );
}

/// Resumes a stopped node when dropped, so a failing assertion never leaves it frozen.
struct Thaw<'a>(&'a TestCluster, &'a str);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid(self.1) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_two_node_cluster_whose_map_lost_its_quorum_fails_with_40003_instead_of_hanging(
) {
    let cluster = TestCluster::replicated("stall", 2, "{ factor: 2, ack_timeout_ms: 500 }");
    let out = cluster.init();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at least 3 nodes"),
        "ddb init warns about a 2-member map with factor 2:\n{stderr}"
    );
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n1")).await.unwrap();
    let info = map.shards.get(&1).expect("shard 1").clone();
    assert_eq!(info.primary, "n1");
    assert_eq!(info.replicas, ["n2"]);
    let keys: Vec<i64> = keys_of(&map, 1, 60);
    let mut acked = BTreeSet::new();
    for k in &keys[..20] {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[k, &(k * 7)])
            .await
            .unwrap();
        acked.insert(*k);
    }
    // Both map members are needed for a Raft quorum: with n2 frozen, the primary cannot take
    // it out of the in-sync set, so the write can never commit while n2 is away. On a loaded
    // machine n2 may have left the set (an ack later than 500 ms) and not be back yet: then the
    // write would rightly commit on n1 alone. So freeze it only while it is in the set, and
    // look again once it is frozen (a change it acked just before may still apply on n1).
    let thaw = Thaw(&cluster, "n2");
    let mut frozen_in_sync = false;
    for _ in 0..20 {
        assert!(
            eventually(Duration::from_secs(30), || async {
                in_sync(&cluster, "n1").await.is_some_and(|s| s.len() == 2)
            })
            .await,
            "n2 did not come back into the in-sync set:\n{}",
            cluster.logs()
        );
        signal(&cluster, "n2", "-STOP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if in_sync(&cluster, "n1").await.is_some_and(|s| s.len() == 2) {
            frozen_in_sync = true;
            break;
        }
        signal(&cluster, "n2", "-CONT");
    }
    assert!(
        frozen_in_sync,
        "n2 never stayed in the in-sync set long enough to be frozen in it"
    );
    let started = Instant::now();
    let stuck = keys[20];
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&stuck, &(stuck * 7)]),
    )
    .await
    .unwrap_or_else(|_| panic!("the write hung for a minute:\n{}", cluster.logs()))
    .expect_err("a write that cannot reach its in-sync set");
    let took = started.elapsed();
    assert_eq!(sqlstate(&e).as_deref(), Some("40003"), "{e:?}");
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("n2") && m.contains("in-sync set")),
        "the error names the cause: {message:?}"
    );
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    // The next write is refused at once, not after another bound.
    let started = Instant::now();
    let e = c
        .execute("INSERT INTO t VALUES ($1, 0)", &[&keys[21]])
        .await
        .expect_err("a write while the primary is stalled");
    let refused_in = started.elapsed();
    assert_eq!(sqlstate(&e).as_deref(), Some("53000"), "{e:?}");
    let refusal = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        refused_in < Duration::from_secs(2),
        "refused after {refused_in:?}"
    );
    // The unknown-outcome write keeps its row lock while its entry may still commit: a read
    // of its key is refused (wait-die makes the younger reader give up, 40001; or its lock
    // wait times out, 55P03) instead of seeing a row that may never commit, or missing one
    // that will.
    let r = connect(cluster.sql_port("n1")).await;
    r.batch_execute("SET lock_timeout = 300").await.unwrap();
    let e = r
        .query_opt("SELECT v FROM t WHERE k = $1", &[&stuck])
        .await
        .expect_err("the pending entry's row is locked");
    assert!(
        matches!(sqlstate(&e).as_deref(), Some("40001" | "55P03")),
        "{e:?}"
    );
    // Back: writes are taken again, and everything the log holds is applied on both copies.
    drop(thaw);
    let mut next = 22;
    assert!(
        eventually(Duration::from_secs(30), || {
            let k = keys[next];
            next += 1;
            let c = &c;
            async move {
                c.execute("INSERT INTO t VALUES ($1, $2)", &[&k, &(k * 7)])
                    .await
                    .is_ok()
            }
        })
        .await,
        "writes were not taken again after the replica came back:\n{}",
        cluster.logs()
    );
    acked.insert(keys[next - 1]);
    for k in &keys[next..next + 10] {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[k, &(k * 7)])
            .await
            .unwrap();
        acked.insert(*k);
    }
    assert_all_there(cluster.sql_port("n1"), &acked).await;
    assert!(
        eventually(Duration::from_secs(20), || same_copy(&cluster, "n1", "n2")).await,
        "the replica does not hold its primary's rows:\n{:?}\n{:?}",
        status_of(&cluster.rpc_addr("n1")).await,
        status_of(&cluster.rpc_addr("n2")).await
    );
    let stuck_there = c
        .query_opt("SELECT v FROM t WHERE k = $1", &[&stuck])
        .await
        .expect("a read")
        .is_some();
    eprintln!(
        "40003 after {took:?} ({message:?}), 53000 after {refused_in:?} ({refusal:?}); the \
         write answered 40003 {} committed",
        if stuck_there { "was" } else { "was not" }
    );
}

/// Runs `ddb promote ARGS… --format json` and returns its exit code, its one result row (if
/// it printed one) and its stderr.
fn promote(cluster: &TestCluster, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["promote"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = cluster.ddb(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_default();
    (
        out.status.code(),
        rows.into_iter().next().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Inserts `probe` through `port` until it is acknowledged (a new primary takes writes), for
/// at most 30 s; whether it was.
async fn writes_resume(port: u16, probe: i64) -> bool {
    let c = connect(port).await;
    eventually(Duration::from_secs(30), || async {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&probe, &(probe * 7)])
            .await
            .is_ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_force_replaces_a_killed_primary_twice_without_losing_an_acknowledged_write() {
    let cluster = TestCluster::replicated("failover", 3, "{ factor: 2 }");
    cluster.init();
    let gateway = cluster.sql_port("n3");
    let map = with_schema(&cluster, "n3").await;
    let keys: Vec<i64> = keys_of(&map, 1, 6000);
    let (mut acked, _) = write(gateway, keys[..300].to_vec(), Duration::from_secs(60)).await;

    // Refused, each with exit 4 and nothing changed: the primary answers (--force is for a
    // primary that is down), the node already is a primary, the expected primary is another,
    // the node is not in the map.
    for (args, why) in [
        (vec!["n2", "--force"], "answers"),
        (vec!["n3", "--force"], "already is the primary"),
        (vec!["n2", "--force", "--expected-primary", "n3"], "not n3"),
        (vec!["n9", "--force"], "not in the cluster map"),
    ] {
        let started = Instant::now();
        let (code, _, stderr) = promote(&cluster, &args);
        assert_eq!(code, Some(4), "ddb promote {args:?}: {stderr}");
        assert!(stderr.contains(why), "ddb promote {args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    let (code, row, stderr) = promote(&cluster, &["n2", "--force", "--dry-run"]);
    assert_eq!(code, Some(4), "a dry run checks the primary too: {stderr}");
    assert!(row.is_null());
    assert_eq!(
        map_of(&cluster.rpc_addr("n3")).await.unwrap().shards[&1].epoch,
        1
    );

    // Two failovers: n1 killed under load, n2 promoted; n1 back as a replica; n2 killed under
    // load, n1 promoted.
    let mut next = 300;
    for (round, (dead, target)) in [("n1", "n2"), ("n2", "n1")].into_iter().enumerate() {
        let epoch = round as u64 + 2;
        let load = tokio::spawn(write(
            gateway,
            keys[next..next + 2000].to_vec(),
            Duration::from_secs(60),
        ));
        next += 2000;
        let before = status_of(&cluster.rpc_addr(dead))
            .await
            .unwrap()
            .applied_lsn;
        assert!(
            eventually(Duration::from_secs(30), || async {
                status_of(&cluster.rpc_addr(dead))
                    .await
                    .is_some_and(|s| s.applied_lsn >= before + 200)
            })
            .await,
            "the load did not start"
        );
        cluster.kill(dead);
        let (code, row, stderr) = promote(&cluster, &[target, "--dry-run", "--force"]);
        assert_eq!(code, Some(0), "dry run: {stderr}");
        assert_eq!(row["new_primary"], target, "{row}");
        assert_eq!(row["pause_ms"], serde_json::Value::Null, "{row}");
        let started = Instant::now();
        let (code, row, stderr) =
            promote(&cluster, &[target, "--force", "--expected-primary", dead]);
        assert_eq!(
            code,
            Some(0),
            "ddb promote {target} --force: {stderr}\n{}",
            cluster.logs()
        );
        eprintln!(
            "round {round}: promote --force took {:?}: {row}",
            started.elapsed()
        );
        assert_eq!(row["shard"], 1, "{row}");
        assert_eq!(row["old_primary"], dead, "{row}");
        assert_eq!(row["new_primary"], target, "{row}");
        assert_eq!(row["epoch"], epoch, "{row}");
        assert_eq!(row["lost_entries"], 0, "{row}");
        assert!(row["pause_ms"].as_i64().is_some(), "{row}");
        let shard = map_of(&cluster.rpc_addr("n3")).await.unwrap().shards[&1].clone();
        assert_eq!((shard.epoch, shard.primary.as_str()), (epoch, target));
        assert_eq!(shard.in_sync, [target]);
        // A re-run (the CLI killed after the change) finds it done.
        let (code, _, stderr) = promote(&cluster, &[target, "--force"]);
        assert_eq!(code, Some(4), "{stderr}");
        assert!(stderr.contains("already is the primary"), "{stderr}");

        let probe = 1_000_000 + round as i64;
        assert!(
            writes_resume(gateway, probe).await,
            "the new primary {target} takes no writes:\n{}",
            cluster.logs()
        );
        acked.insert(probe);
        let (done, failed) = load.await.unwrap();
        eprintln!(
            "round {round}: {} writes acknowledged, {failed} failed",
            done.len()
        );
        acked.extend(done);
        assert_all_there(gateway, &acked).await;

        // The old primary comes back as a replica: it drops the tail it alone had, catches
        // up, and re-enters the in-sync set with the new primary's rows.
        cluster.init();
        assert!(
            eventually(Duration::from_secs(30), || async {
                in_sync(&cluster, "n3")
                    .await
                    .is_some_and(|s| s.len() == 2 && s.contains(&dead.to_string()))
                    && same_copy(&cluster, target, dead).await
            })
            .await,
            "{dead} did not rejoin as {target}'s replica:\n{}",
            cluster.logs()
        );
    }
    assert_all_there(cluster.sql_port("n1"), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_replaced_by_promote_force_loses_no_write_when_thawed_and_becomes_a_replica(
) {
    let cluster = TestCluster::replicated("zombie", 3, "{ factor: 2 }");
    cluster.init();
    let gateway = cluster.sql_port("n3");
    let map = with_schema(&cluster, "n3").await;
    let keys: Vec<i64> = keys_of(&map, 1, 3000);
    let (mut acked, _) = write(gateway, keys[..300].to_vec(), Duration::from_secs(60)).await;
    // A client of the old primary's own gateway, connected before it froze.
    let zombie_client = connect(cluster.sql_port("n1")).await;
    signal(&cluster, "n1", "-STOP");
    let (code, row, stderr) = promote(&cluster, &["n2", "--force"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    assert_eq!(row["epoch"], 2, "{row}");
    assert!(
        writes_resume(gateway, 1_000_000).await,
        "{}",
        cluster.logs()
    );
    acked.insert(1_000_000);
    // Writes through the new primary go on while the old one thaws and is sent writes too.
    let load = tokio::spawn(write(
        gateway,
        keys[300..1300].to_vec(),
        Duration::from_secs(30),
    ));
    signal(&cluster, "n1", "-CONT");
    let (mut zombie_acked, mut zombie_failed) = (BTreeSet::new(), 0);
    for &k in &keys[1300..1500] {
        let v = k * 7;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&k, &v];
        let insert = zombie_client.execute("INSERT INTO t VALUES ($1, $2)", &params);
        match tokio::time::timeout(Duration::from_secs(20), insert).await {
            Ok(Ok(_)) => {
                zombie_acked.insert(k);
            }
            Ok(Err(e)) => {
                if zombie_failed == 0 {
                    eprintln!("the thawed primary's gateway refused {k}: {e:?}");
                }
                zombie_failed += 1;
            }
            Err(_) => zombie_failed += 1,
        }
        if zombie_client.is_closed() {
            break;
        }
    }
    let (done, failed) = load.await.unwrap();
    eprintln!(
        "{} writes through the new primary acknowledged, {failed} failed; through the thawed \
         primary's gateway {} acknowledged, {zombie_failed} failed",
        done.len(),
        zombie_acked.len()
    );
    acked.extend(done);
    // What the old primary's gateway acknowledged after it thawed went to the new primary
    // (it learned the map): every acknowledged write is there, whoever acknowledged it.
    acked.extend(zombie_acked);
    assert_all_there(gateway, &acked).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            map_of(&cluster.rpc_addr("n1"))
                .await
                .is_some_and(|m| m.shards[&1].epoch == 2)
                && in_sync(&cluster, "n3")
                    .await
                    .is_some_and(|s| s.len() == 2 && s.contains(&"n1".to_string()))
                && same_copy(&cluster, "n2", "n1").await
        })
        .await,
        "the thawed primary did not become n2's replica:\n{}",
        cluster.logs()
    );
    assert_all_there(cluster.sql_port("n1"), &acked).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_takes_up_an_in_doubt_transaction_of_its_dead_primary_and_resolves_it() {
    // Shard 1 is n1 (primary) and n2, shard 2 is n3 and n4; n1..n3 vote in the map, so the
    // map keeps its quorum when the gateway n4 and then n1 are gone.
    let cluster = TestCluster::replicated("indoubt-promote", 4, "{ factor: 2 }");
    let crash = [
        ("FAILPOINTS", "gateway-after-all-prepares=return"),
        ("DDB_PREPARED_TIMEOUT_MS", "3000"),
    ];
    cluster.init_env(&crash);
    let c = connect(cluster.sql_port("n3")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n3")).await.unwrap();
    let k1 = keys_of(&map, 1, 1)[0];
    let k2 = keys_of(&map, 2, 1)[0];
    for k in [k1, k2] {
        c.execute("INSERT INTO t VALUES ($1, 0)", &[&k])
            .await
            .unwrap();
    }
    // Through n4: shard 2 (written first) anchors, shard 1's primary n1 prepares, and its
    // replica n2 holds the prepared record, when the gateway dies.
    let g = connect(cluster.sql_port("n4")).await;
    let block = format!(
        "BEGIN; UPDATE t SET v = 1 WHERE k = {k2}; UPDATE t SET v = 1 WHERE k = {k1}; COMMIT"
    );
    let e = g.batch_execute(&block).await.expect_err("the gateway died");
    assert!(e.as_db_error().is_none(), "the connection was lost: {e}");
    let p1 = status_of(&cluster.rpc_addr("n1")).await.unwrap();
    assert_eq!(p1.prepared, 1, "n1 holds the transaction prepared");
    // Its primary dies before it resolves it; n2 is promoted and takes it up.
    cluster.kill("n1");
    let (code, row, stderr) = promote(&cluster, &["n2", "--force"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    assert_eq!(row["lost_entries"], 0, "{row}");
    let log = std::fs::read_to_string(cluster.data_dir("n2").join("ddb.log")).unwrap();
    assert!(
        log.contains("reloaded a prepared transaction"),
        "the promoted replica did not take up the prepared transaction:\n{}",
        cluster.logs()
    );
    // It asks the anchor, which never heard a decision: aborted, and nothing stays in doubt.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let mut prepared = 0;
            for node in ["n2", "n3"] {
                match status_of(&cluster.rpc_addr(node)).await {
                    Some(s) => prepared += s.prepared,
                    None => return false,
                }
            }
            prepared == 0
        })
        .await,
        "a transaction stayed in doubt:\n{}",
        cluster.logs()
    );
    for k in [k1, k2] {
        let v: i64 = c
            .query_one("SELECT v FROM t WHERE k = $1", &[&k])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 0, "the undecided transaction is aborted");
    }
    // Its locks are gone with it: the row it held takes a write at once.
    c.execute("UPDATE t SET v = 2 WHERE k = $1", &[&k1])
        .await
        .unwrap();
}

/// A two-shard transaction whose anchor's primary dies right after its commit entry is
/// committed (on its in-sync replica too): once the replica is promoted, the prepared
/// participant learns the decision from it and commits, so the transaction is committed
/// everywhere although its client heard nothing; the old anchor rejoins as a replica.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_of_the_anchor_after_its_commit_entry_leaves_the_transaction_committed() {
    // Shard 1 is n1 (primary) and n2, shard 2 is n3 and n4; n1..n3 vote in the map, so it
    // keeps its quorum without n3.
    let cluster = TestCluster::replicated("anchor-failover", 4, "{ factor: 2 }");
    cluster.init_env(&[
        ("FAILPOINTS", "anchor-after-commit=return"),
        ("DDB_PREPARED_TIMEOUT_MS", "3000"),
    ]);
    let c = connect(cluster.sql_port("n2")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n2")).await.unwrap();
    let k1 = keys_of(&map, 1, 1)[0];
    let k2 = keys_of(&map, 2, 1)[0];
    for k in [k1, k2] {
        c.execute("INSERT INTO t VALUES ($1, 0)", &[&k])
            .await
            .unwrap();
    }
    // Shard 2 (written first) anchors: its primary n3 commits the decision, n4 holds it, and
    // n3 dies before anyone hears of it.
    let block = format!(
        "BEGIN; UPDATE t SET v = 1 WHERE k = {k2}; UPDATE t SET v = 1 WHERE k = {k1}; COMMIT"
    );
    let e = c.batch_execute(&block).await.expect_err("the anchor died");
    assert_eq!(
        sqlstate(&e),
        Some("40003".into()),
        "the outcome is unknown: {e}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            status_of(&cluster.rpc_addr("n3")).await.is_none()
        })
        .await,
        "the anchor n3 did not crash at its crash point"
    );
    assert_eq!(
        status_of(&cluster.rpc_addr("n1")).await.unwrap().prepared,
        1,
        "the participant n1 waits prepared for the decision"
    );
    let (code, row, stderr) = promote(&cluster, &["n4", "--force", "--expected-primary", "n3"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    assert_eq!(row["lost_entries"], 0, "{row}");
    // The participant asks the new anchor primary, whose log holds the commit decision.
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n1"))
                .await
                .is_some_and(|s| s.prepared == 0)
        })
        .await,
        "the participant stayed in doubt:\n{}",
        cluster.logs()
    );
    for k in [k1, k2] {
        let v: i64 = c
            .query_one("SELECT v FROM t WHERE k = $1", &[&k])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 1, "key {k}: the committed transaction is there");
    }
    // The old anchor comes back (without the crash point) as n4's replica with its rows.
    cluster.init();
    assert!(
        settled(&cluster, "n4", "n3").await,
        "n3 did not rejoin as n4's replica:\n{}",
        cluster.logs()
    );
}

/// In `async` mode a forced promotion never picks a replica that lacks a two-phase commit
/// record another replica holds, `--allow-data-loss` or not: a replica down while a
/// transaction across shards committed (its anchor's decision on the primary and the other
/// replica only), back once the primary is dead, is refused, the one holding the decision is promoted, and the transaction
/// is committed on both shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_promotion_refuses_a_replica_lacking_a_decision_record_another_one_holds() {
    // Shard 1 is n1 (primary), n2 and n3; shard 2 is n4 and n5 (short of a copy). All five
    // vote in the map, so it keeps its quorum without n1 and n3.
    let cluster = TestCluster::replicated("async-decision", 5, "{ factor: 3, mode: async }");
    cluster.init();
    let c = connect(cluster.sql_port("n5")).await;
    c.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n5")).await.unwrap();
    let (shard, info) = map.shard_of_node("n1").unwrap();
    assert_eq!(
        (info.primary.as_str(), info.replicas.len()),
        ("n1", 2),
        "{info:?}"
    );
    let other = 3 - shard;
    let k1 = keys_of(&map, shard, 1)[0];
    let k2 = keys_of(&map, other, 1)[0];
    for k in [k1, k2] {
        c.execute("INSERT INTO t VALUES ($1, 0)", &[&k])
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            same_copy(&cluster, "n1", "n3").await
        })
        .await,
        "n3 did not catch up"
    );
    // n3 is down while the transaction commits: shard 1 anchors (written first), and its
    // decision waits for one replica's ack only (n2's). (A frozen n3 would not do: what the
    // kernel buffered for it while it was stopped would reach its log when it thaws.)
    cluster.kill("n3");
    c.batch_execute(&format!(
        "BEGIN; UPDATE t SET v = 1 WHERE k = {k1}; UPDATE t SET v = 1 WHERE k = {k2}; COMMIT"
    ))
    .await
    .unwrap();
    cluster.kill("n1");
    cluster.start_node("n3");
    let (code, row, stderr) = promote(&cluster, &["n3", "--force", "--allow-data-loss"]);
    assert_eq!(code, Some(4), "{row} {stderr}");
    assert!(
        stderr.contains("two-phase commit record") && stderr.contains("promote n2 instead"),
        "{stderr}"
    );
    assert_eq!(
        map_of(&cluster.rpc_addr("n5")).await.unwrap().shards[&shard].epoch,
        1,
        "the refused promotion changed nothing"
    );
    let (code, row, stderr) = promote(&cluster, &["n2", "--force", "--allow-data-loss"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    assert_eq!(row["new_primary"], "n2", "{row}");
    assert!(
        writes_resume(cluster.sql_port("n5"), 5000).await,
        "n2 takes no writes:\n{}",
        cluster.logs()
    );
    for k in [k1, k2] {
        let v: i64 = c
            .query_one("SELECT v FROM t WHERE k = $1", &[&k])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 1, "key {k}: the transaction is committed on both shards");
    }
}

/// `async` mode, issue 10 points 3 and 5: the primary n1 commits 300 writes while its replica
/// n2 is down (each on n1's fsync alone), then is killed; n2 is promoted with
/// `--allow-data-loss`. When n1 returns it finds where its log parts from n2's, rolls back the
/// applied entries after that point (a rebuild from a snapshot of n2) and reports exactly
/// their LSN range, in its status and in `ddb status`; the acknowledged writes missing are
/// exactly those 300, and n1 ends with n2's rows, back in the in-sync set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_old_primary_rolls_back_exactly_the_lost_range_and_reports_it() {
    let cluster = TestCluster::replicated("async-rollback", 3, "{ factor: 2, mode: async }");
    cluster.init();
    let gateway = cluster.sql_port("n3");
    let map = with_schema(&cluster, "n3").await;
    let keys = keys_of(&map, 1, 1200);
    let (kept, failed) = write(gateway, keys[..200].to_vec(), Duration::from_secs(60)).await;
    assert_eq!((kept.len(), failed), (200, 0));
    assert!(
        eventually(Duration::from_secs(30), || async {
            same_copy(&cluster, "n1", "n2").await
        })
        .await,
        "n2 did not catch up"
    );
    let shared = status_of(&cluster.rpc_addr("n2")).await.unwrap().lsn;
    // (Killed, not frozen: what the kernel buffered for a frozen replica would reach its log
    // when it thaws.)
    cluster.kill("n2");
    let (lost, failed) = write(gateway, keys[200..500].to_vec(), Duration::from_secs(60)).await;
    assert_eq!(
        (lost.len(), failed),
        (300, 0),
        "async writes with the replica down"
    );
    let before = status_of(&cluster.rpc_addr("n1")).await.unwrap();
    assert_eq!(before.applied_lsn, shared + 300, "one entry per insert");
    cluster.kill("n1");
    cluster.start_node("n2");
    let (code, _, stderr) = promote(&cluster, &["n2", "--force"]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("--allow-data-loss"), "{stderr}");
    let (code, row, stderr) = promote(&cluster, &["n2", "--force", "--allow-data-loss"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    assert_eq!(row["epoch"], 2, "{row}");
    let mut acked = kept.clone();
    assert!(
        writes_resume(gateway, 1_000_000).await,
        "{}",
        cluster.logs()
    );
    acked.insert(1_000_000);
    let (after, _) = write(gateway, keys[500..700].to_vec(), Duration::from_secs(60)).await;
    acked.extend(after);

    // Exactly the writes acknowledged while n2 was down are missing.
    let c = connect(gateway).await;
    let stored: BTreeSet<i64> = c
        .query("SELECT k FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.intersection(&lost).count(), 0, "n2 never had them");
    assert_all_there(gateway, &acked).await;

    cluster.start_node("n1");
    assert!(
        eventually(Duration::from_secs(60), || async {
            in_sync(&cluster, "n3")
                .await
                .is_some_and(|s| s.len() == 2 && s.contains(&"n1".to_string()))
                && same_copy(&cluster, "n2", "n1").await
        })
        .await,
        "n1 did not rejoin as n2's replica:\n{}",
        cluster.logs()
    );
    let record = status_of(&cluster.rpc_addr("n1"))
        .await
        .unwrap()
        .rolled_back
        .unwrap_or_else(|| panic!("n1 reports no rollback:\n{}", cluster.logs()));
    assert_eq!(
        (
            record.first_lsn,
            record.last_lsn,
            record.count(),
            record.epoch,
            record.by_epoch,
            record.exact,
            record.dropped
        ),
        (shared + 1, before.applied_lsn, 300, 1, 2, true, 0),
        "{record:?}"
    );
    assert!(
        cluster.log("n1").contains(&format!(
            "rolling back 300 entries (LSN {}..={}",
            shared + 1,
            before.applied_lsn
        )),
        "the rollback is in n1's log"
    );
    assert_eq!(
        status_of(&cluster.rpc_addr("n2"))
            .await
            .unwrap()
            .rolled_back,
        None
    );
    // `ddb status` says it too, as columns and as a note.
    let out = cluster.ddb(&["status", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let n1 = rows.iter().find(|r| r["name"] == "n1").unwrap();
    assert_eq!(n1["rolled_back"], 300, "{n1}");
    assert_eq!(
        n1["rolled_back_lsns"],
        format!("{}..={}", shared + 1, before.applied_lsn),
        "{n1}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("n1 rolled back 300 entries"), "{stderr}");
    assert_all_there(cluster.sql_port("n1"), &acked).await;
}

/// A deposed primary rolls back the open parts gateways had on it: a block that wrote a row
/// there and stayed open across two switchovers (away and back) leaves no lock behind, so
/// another client writes the row at once when the node is the primary again, and the block's
/// COMMIT fails with a definite error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_primary_keeps_no_lock_of_an_open_transaction() {
    let cluster = TestCluster::replicated("deposed-locks", 3, "{ factor: 2 }");
    cluster.init();
    let gateway = cluster.sql_port("n3");
    let a = connect(gateway).await;
    a.batch_execute(SCHEMA).await.unwrap();
    let map = map_of(&cluster.rpc_addr("n3")).await.unwrap();
    let k = keys_of(&map, 1, 1)[0];
    a.execute("INSERT INTO t VALUES ($1, 0)", &[&k])
        .await
        .unwrap();
    assert!(settled(&cluster, "n1", "n2").await, "{}", cluster.logs());
    // The block's part on n1 holds the row's lock.
    a.batch_execute(&format!("BEGIN; UPDATE t SET v = 1 WHERE k = {k}"))
        .await
        .unwrap();
    for to in ["n2", "n1"] {
        let (code, _, stderr) = promote(&cluster, &[to]);
        assert_eq!(
            code,
            Some(0),
            "ddb promote {to}: {stderr}\n{}",
            cluster.logs()
        );
        let from = if to == "n1" { "n2" } else { "n1" };
        assert!(settled(&cluster, to, from).await, "{}", cluster.logs());
    }
    // n1 is the primary again: the row takes another client's write.
    let b = connect(gateway).await;
    b.execute("UPDATE t SET v = 2 WHERE k = $1", &[&k])
        .await
        .expect("the row is not locked by the open block");
    let e = a
        .batch_execute("COMMIT")
        .await
        .expect_err("its part is gone");
    let code = sqlstate(&e);
    assert!(
        code.as_deref() != Some("40003"),
        "the block's commit is definitely refused: {e:?}"
    );
    let v: i64 = b
        .query_one("SELECT v FROM t WHERE k = $1", &[&k])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
}

/// A replica that dies after the map made it the primary, before it took its log over, takes
/// it over when it restarts (decided from its log, not from memory the crash lost): it serves
/// writes with every acknowledged one there, and the old primary comes back as its replica.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_it_is_promoted_takes_over_when_it_restarts() {
    let cluster = TestCluster::replicated("promote-crash", 3, "{ factor: 2 }");
    cluster.init_env(&[("FAILPOINTS", "promote-before-take-over=1*return")]);
    let gateway = cluster.sql_port("n3");
    let map = with_schema(&cluster, "n3").await;
    let keys: Vec<i64> = keys_of(&map, 1, 1500);
    let (mut acked, _) = write(gateway, keys[..300].to_vec(), Duration::from_secs(60)).await;
    let load = tokio::spawn(write(
        gateway,
        keys[300..].to_vec(),
        Duration::from_secs(60),
    ));
    let before = status_of(&cluster.rpc_addr("n1"))
        .await
        .unwrap()
        .applied_lsn;
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr("n1"))
                .await
                .is_some_and(|s| s.applied_lsn >= before + 100)
        })
        .await,
        "the load did not start"
    );
    cluster.kill("n1");
    // n2 dies at the crash point: the map names it the primary, and its log is not its own.
    let (code, _, stderr) = promote(&cluster, &["n2", "--force", "--timeout", "10"]);
    assert_ne!(code, Some(0), "the target died: {stderr}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            status_of(&cluster.rpc_addr("n2")).await.is_none()
        })
        .await,
        "n2 did not reach the crash point:\n{}",
        cluster.logs()
    );
    let shard = map_of(&cluster.rpc_addr("n3")).await.unwrap().shards[&1].clone();
    assert_eq!((shard.epoch, shard.primary.as_str()), (2, "n2"));
    // Both come back: n2 as the primary, n1 as its replica.
    cluster.init();
    let probe = 2_000_000;
    assert!(
        writes_resume(gateway, probe).await,
        "the restarted n2 takes no writes:\n{}",
        cluster.logs()
    );
    acked.insert(probe);
    let (done, _) = load.await.unwrap();
    acked.extend(done);
    assert_all_there(gateway, &acked).await;
    let log = std::fs::read_to_string(cluster.data_dir("n2").join("ddb.log")).unwrap();
    assert!(
        log.contains("promoted; this node becomes the primary"),
        "{}",
        cluster.logs()
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            in_sync(&cluster, "n3").await.is_some_and(|s| s.len() == 2)
                && same_copy(&cluster, "n2", "n1").await
        })
        .await,
        "n1 did not rejoin as n2's replica:\n{}",
        cluster.logs()
    );
}

/// With three copies and `min_in_sync: 2`, the replica that stays in sync stays in the set
/// through a promotion, so the new primary takes writes as soon as `ddb promote` returns,
/// and the old primary rejoins as a third copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_keeps_the_other_in_sync_replica_so_min_in_sync_holds_at_once() {
    let cluster = TestCluster::replicated("promote-f3", 3, "{ factor: 3, min_in_sync: 2 }");
    cluster.init();
    let map = map_of(&cluster.rpc_addr("n3")).await.unwrap();
    let (shard, info) = map.shard_of_node("n1").unwrap();
    let dead = info.primary.clone();
    let target = info.replicas[0].clone();
    let other = info.replicas[1].clone();
    let gateway = cluster.sql_port(&other);
    connect(gateway).await.batch_execute(SCHEMA).await.unwrap();
    let keys: Vec<i64> = (0..3000).collect();
    let (mut acked, _) = write(gateway, keys[..300].to_vec(), Duration::from_secs(60)).await;
    let load = tokio::spawn(write(
        gateway,
        keys[300..].to_vec(),
        Duration::from_secs(60),
    ));
    let before = status_of(&cluster.rpc_addr(&dead))
        .await
        .unwrap()
        .applied_lsn;
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&cluster.rpc_addr(&dead))
                .await
                .is_some_and(|s| s.applied_lsn >= before + 100)
        })
        .await,
        "the load did not start"
    );
    cluster.kill(&dead);
    let (code, row, stderr) = promote(&cluster, &[&target, "--force"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    assert_eq!(row["lost_entries"], 0, "{row}");
    // It returned once the new primary takes writes: nothing refuses them now.
    let status = status_of(&cluster.rpc_addr(&target)).await.unwrap();
    assert_eq!(status.write_refusal, None, "{status:?}");
    let info = map_of(&cluster.rpc_addr(&other)).await.unwrap().shards[&shard].clone();
    assert_eq!(info.primary, target);
    let mut expected = vec![target.clone(), other.clone()];
    expected.sort();
    let mut members = info.in_sync.clone();
    members.sort();
    assert_eq!(
        members, expected,
        "the old primary left the set, the other stayed"
    );
    assert!(
        writes_resume(gateway, 1_000_000).await,
        "{}",
        cluster.logs()
    );
    acked.insert(1_000_000);
    let (done, _) = load.await.unwrap();
    acked.extend(done);
    assert_all_there(gateway, &acked).await;
    cluster.init();
    assert!(
        eventually(Duration::from_secs(30), || async {
            in_sync(&cluster, &other)
                .await
                .is_some_and(|s| s.len() == 3)
                && same_copy(&cluster, &target, &dead).await
                && same_copy(&cluster, &target, &other).await
        })
        .await,
        "{dead} did not rejoin:\n{}",
        cluster.logs()
    );
}

/// Whether `replica` is in the in-sync set of `primary`'s shard (as the map on `primary` has
/// it) and holds the same rows, within 30 s.
async fn settled(cluster: &TestCluster, primary: &str, replica: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        let Some(map) = map_of(&cluster.rpc_addr(primary)).await else {
            return false;
        };
        map.shard_of_node(primary)
            .is_some_and(|(_, s)| s.in_sync.len() == 2 && s.in_sync.contains(&replica.to_string()))
            && same_copy(cluster, primary, replica).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_load_loses_no_write_and_the_old_primary_becomes_a_replica() {
    let cluster = TestCluster::replicated("switchover", 3, "{ factor: 2 }");
    cluster.init();
    let gateway = cluster.sql_port("n3");
    let map = with_schema(&cluster, "n3").await;
    let keys: Vec<i64> = keys_of(&map, 1, 9200);
    let (mut acked, _) = write(gateway, keys[..200].to_vec(), Duration::from_secs(60)).await;
    assert!(settled(&cluster, "n1", "n2").await, "{}", cluster.logs());

    // A dry run checks and changes nothing.
    let (code, row, stderr) = promote(&cluster, &["n2", "--dry-run"]);
    assert_eq!(code, Some(0), "dry run: {stderr}");
    assert_eq!(row["new_primary"], "n2", "{row}");
    assert_eq!(row["pause_ms"], serde_json::Value::Null, "{row}");
    assert!(stderr.contains("dry run"), "{stderr}");
    assert_eq!(
        map_of(&cluster.rpc_addr("n3")).await.unwrap().shards[&1].epoch,
        1
    );

    // Three switchovers, each under a write load through another node's gateway and one
    // through the old primary's own (which runs the writes itself until it is deposed).
    let mut next = 200;
    let mut pauses = Vec::new();
    for (round, (from, to)) in [("n1", "n2"), ("n2", "n1"), ("n1", "n2")]
        .into_iter()
        .enumerate()
    {
        let epoch = round as u64 + 2;
        let load = tokio::spawn(write(
            gateway,
            keys[next..next + 2000].to_vec(),
            Duration::from_secs(60),
        ));
        let local = tokio::spawn(write(
            cluster.sql_port(from),
            keys[next + 2000..next + 3000].to_vec(),
            Duration::from_secs(60),
        ));
        next += 3000;
        let before = status_of(&cluster.rpc_addr(from))
            .await
            .unwrap()
            .applied_lsn;
        assert!(
            eventually(Duration::from_secs(30), || async {
                status_of(&cluster.rpc_addr(from))
                    .await
                    .is_some_and(|s| s.applied_lsn >= before + 200)
            })
            .await,
            "the load did not start"
        );
        let (code, row, stderr) = promote(&cluster, &[to, "--expected-primary", from]);
        assert_eq!(
            code,
            Some(0),
            "ddb promote {to}: {stderr}\n{}",
            cluster.logs()
        );
        eprintln!("round {round}: {row}");
        assert_eq!(row["shard"], 1, "{row}");
        assert_eq!(row["old_primary"], from, "{row}");
        assert_eq!(row["new_primary"], to, "{row}");
        assert_eq!(row["epoch"], epoch, "{row}");
        assert_eq!(row["lost_entries"], 0, "{row}");
        pauses.push(row["pause_ms"].as_i64().expect("pause_ms"));
        let shard = map_of(&cluster.rpc_addr("n3")).await.unwrap().shards[&1].clone();
        assert_eq!((shard.epoch, shard.primary.as_str()), (epoch, to));
        // A re-run finds it done.
        let (code, _, stderr) = promote(&cluster, &[to]);
        assert_eq!(code, Some(4), "{stderr}");
        assert!(stderr.contains("already is the primary"), "{stderr}");

        let (done, failed) = load.await.unwrap();
        let (done_locally, failed_locally) = local.await.unwrap();
        eprintln!(
            "round {round}: {} + {} writes acknowledged, {failed} + {failed_locally} failed",
            done.len(),
            done_locally.len()
        );
        // The gateways retry what the pause refused (57P03), on the new primary: the
        // switchover is invisible to their clients.
        assert_eq!(
            (failed, failed_locally),
            (0, 0),
            "writes failed across the switchover"
        );
        assert!(done.len() > 200, "the load stopped: {}", cluster.logs());
        acked.extend(done);
        acked.extend(done_locally);
        assert_all_there(gateway, &acked).await;
        // The old primary is the new one's replica, in sync, with the same rows.
        assert!(
            settled(&cluster, to, from).await,
            "{from} did not become {to}'s replica:\n{}",
            cluster.logs()
        );
    }
    eprintln!("switchover pauses (ms): {pauses:?}");
    assert_all_there(cluster.sql_port("n1"), &acked).await;
    assert_all_there(cluster.sql_port("n2"), &acked).await;
}

/// The old primary killed while its switchover's map change is pending (the map has no
/// quorum: three of its five voters are frozen) and restarted before the change commits. It
/// must not take writes in the old epoch meanwhile: the promotion, once it commits, begins the
/// next epoch right after what n2 held when it was proposed, so anything n1 committed past
/// that would be lost. It finds its durable switchover marker, stays paused, proposes the
/// change again, and the switchover completes when the map is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_while_its_switchover_is_pending_takes_no_write_until_it_is_done() {
    restarted_while_the_switchover_is_pending("sync").await;
}

/// The same in `async` mode, where a restarted primary that took up its tail without the cap
/// would commit (and acknowledge) it on its own fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_primary_restarted_while_its_switchover_is_pending_takes_no_write_either() {
    restarted_while_the_switchover_is_pending("async").await;
}

async fn restarted_while_the_switchover_is_pending(mode: &str) {
    let cluster = TestCluster::replicated(
        &format!("switch-restart-{mode}"),
        5,
        &format!("{{ factor: 2, mode: {mode} }}"),
    );
    cluster.init();
    let gateway = cluster.sql_port("n2");
    let map = with_schema(&cluster, "n2").await;
    let (shard, info) = map.shard_of_node("n1").unwrap();
    assert_eq!(
        (info.primary.as_str(), info.replicas.as_slice()),
        ("n1", ["n2".to_string()].as_slice())
    );
    let keys = keys_of(&map, shard, 400);
    let (mut acked, _) = write(gateway, keys[..100].to_vec(), Duration::from_secs(60)).await;
    assert!(settled(&cluster, "n1", "n2").await, "{}", cluster.logs());
    let voters = ["n3", "n4", "n5"];
    for n in voters {
        signal(&cluster, n, "-STOP");
    }
    let cli_err = cluster.data_dir("n1").with_file_name("promote.err");
    let mut cli = cluster
        .command(&["promote", "n2", "--timeout", "60"])
        .stderr(std::fs::File::create(&cli_err).expect("a file"))
        .spawn()
        .expect("spawn");
    let proposed = eventually(Duration::from_secs(40), || async {
        cluster
            .log("n1")
            .contains("switchover: proposing the next epoch")
    })
    .await;
    if !proposed {
        for n in voters {
            signal(&cluster, n, "-CONT");
        }
        let _ = cli.kill();
        panic!(
            "n1 did not propose the switchover; ddb promote said: {}\nn1: {}",
            std::fs::read_to_string(&cli_err).unwrap_or_default(),
            cluster
                .log("n1")
                .lines()
                .filter(|l| l.contains("ddb::"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    cluster.kill("n1");
    let _ = cli.kill();
    let _ = cli.wait();
    cluster.start_node("n1");
    // Writes while the change is pending: none may be acknowledged by n1 in epoch 1.
    let (during, failed) = write(gateway, keys[100..130].to_vec(), Duration::from_secs(8)).await;
    eprintln!(
        "while the switchover was pending: {} writes acknowledged, {failed} failed",
        during.len()
    );
    let restored = cluster
        .log("n1")
        .contains("switchover proposed before this node restarted");
    for n in voters {
        signal(&cluster, n, "-CONT");
    }
    assert!(
        restored,
        "n1 did not take up its switchover:\n{}",
        cluster.logs()
    );
    assert!(
        during.is_empty(),
        "n1 acknowledged {during:?} in the old epoch while its switchover was pending"
    );
    acked.extend(during);
    assert!(
        eventually(Duration::from_secs(60), || async {
            map_of(&cluster.rpc_addr("n3"))
                .await
                .is_some_and(|m| m.shards[&shard].epoch == 2 && m.shards[&shard].primary == "n2")
        })
        .await,
        "the switchover did not complete:\n{}",
        cluster.logs()
    );
    let (after, _) = write(gateway, keys[130..230].to_vec(), Duration::from_secs(60)).await;
    assert!(!after.is_empty(), "n2 takes no writes:\n{}", cluster.logs());
    acked.extend(after);
    assert_all_there(gateway, &acked).await;
    assert!(
        settled(&cluster, "n2", "n1").await,
        "n1 did not become n2's replica:\n{}",
        cluster.logs()
    );
    assert_all_there(cluster.sql_port("n1"), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_whose_cli_is_killed_finishes_and_a_rerun_converges() {
    let cluster = TestCluster::replicated("switchkill", 3, "{ factor: 2 }");
    cluster.init();
    let gateway = cluster.sql_port("n3");
    let map = with_schema(&cluster, "n3").await;
    let keys: Vec<i64> = keys_of(&map, 1, 6000);
    let (mut acked, _) = write(gateway, keys[..200].to_vec(), Duration::from_secs(60)).await;
    let mut next = 200;
    let (mut primary, mut replica) = ("n1", "n2");
    // The CLI killed at several points: right away, during the drain, and near its end.
    for (round, after_ms) in [0u64, 5, 20, 60].into_iter().enumerate() {
        assert!(
            settled(&cluster, primary, replica).await,
            "{}",
            cluster.logs()
        );
        let load = tokio::spawn(write(
            gateway,
            keys[next..next + 1000].to_vec(),
            Duration::from_secs(60),
        ));
        next += 1000;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut cli = cluster
            .command(&["promote", replica])
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let _ = cli.kill();
        let _ = cli.wait();
        // Whatever the CLI got to, writes are taken again within the drain bound (1 s) and a
        // little, by one primary or the other.
        let probe = 2_000_000 + round as i64;
        assert!(
            writes_resume(gateway, probe).await,
            "round {round}: no writes after the CLI was killed:\n{}",
            cluster.logs()
        );
        acked.insert(probe);
        // A re-run finishes the switchover, or finds it done.
        let (code, row, stderr) = promote(&cluster, &[replica]);
        match code {
            Some(0) => assert_eq!(row["new_primary"], replica, "{row}"),
            Some(4) => assert!(stderr.contains("already is the primary"), "{stderr}"),
            _ => panic!(
                "round {round}: re-run: {code:?} {stderr}\n{}",
                cluster.logs()
            ),
        }
        let shard = map_of(&cluster.rpc_addr("n3")).await.unwrap().shards[&1].clone();
        assert_eq!(shard.primary, replica, "round {round}");
        let (done, _) = load.await.unwrap();
        acked.extend(done);
        assert_all_there(gateway, &acked).await;
        std::mem::swap(&mut primary, &mut replica);
    }
    assert!(
        settled(&cluster, primary, replica).await,
        "{}",
        cluster.logs()
    );
    assert_all_there(cluster.sql_port("n1"), &acked).await;
}
