//! Sharded clusters from one file, end to end: `ddb init` on real processes, routing through
//! every gateway, the Raft-backed map under node loss, restarts, and the CLI's view of it all.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{connect, sqlstate, TestCluster, TestNode};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs queries through simple query protocol and renders every row as text.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for m in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    out
}

const ROWS: i64 = 10_000;

/// Inserts ROWS rows (id, grp, v) through one connection per task, concurrently.
async fn load(port: u16) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port).await;
            let stmt = c
                .prepare("INSERT INTO t VALUES ($1, $2, $3)")
                .await
                .unwrap();
            let mut id = w;
            while id < ROWS {
                let grp = format!("g{}", id % 7);
                let v = (id * 7919) % 1000;
                c.execute(&stmt, &[&id, &grp, &v]).await.unwrap();
                id += 4;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

const SCHEMA: &str = "CREATE TABLE t (id BIGINT PRIMARY KEY, grp TEXT NOT NULL, v BIGINT)";

const QUERIES: &[&str] = &[
    "SELECT count(*), sum(v), min(v), max(v), avg(v) FROM t",
    "SELECT grp, count(*), sum(v), min(id) FROM t GROUP BY grp ORDER BY grp",
    "SELECT id, v FROM t ORDER BY v DESC, id LIMIT 10 OFFSET 5",
    "SELECT id FROM t WHERE v BETWEEN 100 AND 105 ORDER BY id",
    "SELECT grp, avg(v) AS a FROM t GROUP BY grp HAVING count(*) > 1000 ORDER BY a DESC, grp",
    "SELECT count(*) FROM t WHERE grp LIKE 'g1%' AND v > 500",
    "SELECT v, count(*) FROM t GROUP BY v ORDER BY 2 DESC, 1 LIMIT 3",
    "SELECT count(DISTINCT grp), count(DISTINCT v) FROM t",
    "SELECT count(*), sum(v), avg(v), min(grp) FROM t WHERE id < 0",
    "SELECT id, grp FROM t WHERE v = 17 ORDER BY grp DESC, id LIMIT 4",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_shards_rows_and_answers_like_a_single_node() {
    let cluster = TestCluster::new("alpha", 3);
    let out = cluster.init();
    assert!(
        stderr(&out).contains("cluster 'alpha' formed with 3 nodes"),
        "{}",
        stderr(&out)
    );

    // ddb status --format json, with the stable field names.
    let (code, status) = cluster.status();
    assert_eq!(code, Some(0));
    assert_eq!(status.len(), 3);
    let leaders = status.iter().filter(|n| n["raft"] == "leader").count();
    assert_eq!(leaders, 1, "{status:?}");
    for (i, n) in status.iter().enumerate() {
        assert_eq!(n["name"], format!("n{}", i + 1));
        assert_eq!(n["shard"], i as i64 + 1);
        assert_eq!(n["role"], "primary");
        assert_eq!(n["state"], "up");
        assert!(n["map_version"].as_i64().unwrap() >= 1);
        for field in [
            "rpc_addr",
            "sql_addr",
            "lsn",
            "log_start",
            "lag",
            "keys",
            "prepared",
        ] {
            assert!(n.get(field).is_some(), "missing {field}");
        }
        // One copy per shard: every node is its shard's primary, in sync, at epoch 1, with no
        // lag.
        assert_eq!(n["in_sync"], true);
        assert_eq!((n["epoch"].as_i64(), n["lag"].as_i64()), (Some(1), Some(0)));
        assert_eq!(n["lag_ms"].as_i64(), Some(0), "{n}");
    }

    let gw = connect(cluster.sql_port("n1")).await;
    gw.batch_execute(SCHEMA).await.unwrap();
    let started = Instant::now();
    load(cluster.sql_port("n1")).await;
    eprintln!(
        "loaded {ROWS} rows through one gateway in {:?}",
        started.elapsed()
    );

    // Each shard holds its ring share of the rows (a third, within a few percent).
    let (_, status) = cluster.status();
    let keys: Vec<i64> = status.iter().map(|n| n["keys"].as_i64().unwrap()).collect();
    assert_eq!(keys.iter().sum::<i64>(), ROWS);
    for k in &keys {
        let share = *k as f64 / ROWS as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.04, "uneven shards: {keys:?}");
    }

    // Aggregates over DISTINCT values, merged across shards: v takes every value in 0..1000
    // (7919 is prime to 1000), each ten times.
    assert_eq!(
        rows(
            &gw,
            "SELECT sum(DISTINCT v), avg(DISTINCT v), min(DISTINCT v), max(DISTINCT v), \
             count(DISTINCT v), sum(v) FROM t"
        )
        .await,
        vec![vec![
            Some("499500".into()),
            Some("499.5".into()),
            Some("0".into()),
            Some("999".into()),
            Some("1000".into()),
            Some("4995000".into())
        ]]
    );

    // The same data on a single node is the reference for every query.
    let single = TestNode::start();
    let reference = single.connect().await;
    reference.batch_execute(SCHEMA).await.unwrap();
    load(single.sql_port).await;

    for node in ["n1", "n2", "n3"] {
        let c = connect(cluster.sql_port(node)).await;
        for q in QUERIES {
            assert_eq!(
                rows(&c, q).await,
                rows(&reference, q).await,
                "{q} through {node}"
            );
        }
        // Point reads through every gateway reach every shard.
        for id in [0i64, 1, 2, 3, 4999, 9998, 9999] {
            let r = c
                .query_one("SELECT v FROM t WHERE id = $1", &[&id])
                .await
                .unwrap();
            assert_eq!(r.get::<_, i64>(0), (id * 7919) % 1000);
        }
    }

    // A transaction that writes to two shards commits on both, through two-phase commit.
    let ring = cluster.ddb(&["ring", "--key", "1", "--format", "json"]);
    let owner1: serde_json::Value = serde_json::from_slice(&ring.stdout).unwrap();
    let other = (2..100)
        .find(|k| {
            let r = cluster.ddb(&["ring", "--key", &k.to_string(), "--format", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
            v[0]["shard"] != owner1[0]["shard"]
        })
        .unwrap();
    gw.batch_execute(&format!(
        "BEGIN; UPDATE t SET v = -1 WHERE id = 1; UPDATE t SET v = -2 WHERE id = {other}; COMMIT"
    ))
    .await
    .unwrap();
    for node in ["n2", "n3"] {
        let c = connect(cluster.sql_port(node)).await;
        assert_eq!(
            rows(
                &c,
                &format!("SELECT id, v FROM t WHERE id IN (1, {other}) ORDER BY id")
            )
            .await,
            vec![
                vec![Some("1".into()), Some("-1".into())],
                vec![Some(other.to_string()), Some("-2".into())]
            ]
        );
    }
    let (_, status) = cluster.status();
    assert!(
        status.iter().all(|n| n["prepared"] == 0),
        "nothing stays prepared: {status:?}"
    );
    // Reads across shards in one transaction are fine, with a write to one of them.
    gw.batch_execute(&format!(
        "BEGIN; SELECT sum(v) FROM t; UPDATE t SET v = v + 1 WHERE id = {other}; COMMIT"
    ))
    .await
    .unwrap();

    // Stop everything, init again: the map and the data are all there.
    let stop = cluster.ddb(&["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let (code, _) = cluster.status();
    assert_eq!(code, Some(3), "status exits 3 when nodes are down");
    let again = cluster.init();
    assert!(
        stderr(&again).contains("already formed"),
        "{}",
        stderr(&again)
    );
    let c = connect(cluster.sql_port("n2")).await;
    assert_eq!(
        rows(&c, "SELECT count(*) FROM t").await,
        vec![vec![Some(ROWS.to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_accepts_changes_with_any_one_voter_down_and_a_restarted_node_catches_up() {
    let cluster = TestCluster::new("beta", 3);
    cluster.init();
    for (i, down) in ["n1", "n2", "n3"].iter().enumerate() {
        cluster.kill(down);
        let alive = if *down == "n1" { "n2" } else { "n1" };
        let c = connect(cluster.sql_port(alive)).await;
        let started = Instant::now();
        c.batch_execute(&format!("CREATE TABLE t{i} (id INT PRIMARY KEY)"))
            .await
            .unwrap_or_else(|e| {
                panic!("CREATE TABLE with {down} down: {e}\n{}", cluster.logs());
            });
        eprintln!("CREATE TABLE with {down} down took {:?}", started.elapsed());
        // Bring it back: init starts the nodes that are down and changes nothing else.
        let out = cluster.init();
        assert!(
            stderr(&out).contains(&format!("started {down}")),
            "{}",
            stderr(&out)
        );
        // The restarted node catches up with the change it missed.
        let back = connect(cluster.sql_port(down)).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match back
                .simple_query(&format!("SELECT count(*) FROM t{i}"))
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"), "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{down} never saw t{i}: {e}"),
            }
        }
    }
    let (code, status) = cluster.status();
    assert_eq!(code, Some(0));
    let versions: Vec<i64> = status
        .iter()
        .map(|n| n["map_version"].as_i64().unwrap())
        .collect();
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_fails_only_the_statements_that_need_its_shard_and_quickly() {
    let cluster = TestCluster::new("gamma", 3);
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for k in 0..60i64 {
        c.execute("INSERT INTO kv VALUES ($1, 'x')", &[&k])
            .await
            .unwrap();
    }
    let mut owner: BTreeMap<i64, String> = BTreeMap::new();
    for k in 0..60i64 {
        let r = cluster.ddb(&[
            "ring",
            "--key",
            &k.to_string(),
            "--table",
            "kv",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        owner.insert(k, v[0]["node"].as_str().unwrap().to_string());
    }
    cluster.kill("n3");
    let on_live = owner
        .iter()
        .find(|(_, n)| *n == "n2")
        .map(|(k, _)| *k)
        .unwrap();
    let on_dead = owner
        .iter()
        .find(|(_, n)| *n == "n3")
        .map(|(k, _)| *k)
        .unwrap();

    let r = c
        .query_one("SELECT v FROM kv WHERE k = $1", &[&on_live])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "x");
    c.execute("UPDATE kv SET v = 'y' WHERE k = $1", &[&on_live])
        .await
        .unwrap();

    for sql in [
        format!("SELECT v FROM kv WHERE k = {on_dead}"),
        "SELECT count(*) FROM kv".to_string(),
    ] {
        let started = Instant::now();
        let err = c.simple_query(&sql).await.unwrap_err();
        let code = sqlstate(&err).unwrap_or_default();
        assert!(
            code.starts_with("08") || code.starts_with("57"),
            "{sql}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{sql} took {:?}",
            started.elapsed()
        );
    }
    let out = run_query(&cluster, &format!("SELECT v FROM kv WHERE k = {on_dead}"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("SQLSTATE 08"), "{}", stderr(&out));

    // ddb status shows the node down and exits 3; the table is still printed.
    let status = cluster.ddb(&["status", "--format", "csv"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(
        stdout(&status).contains("n3,") && stdout(&status).contains(",down,"),
        "{}",
        stdout(&status)
    );
}

fn run_query(cluster: &TestCluster, sql: &str) -> std::process::Output {
    cluster.ddb(&["query", sql])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_moves_to_the_next_node_when_one_is_down() {
    let cluster = TestCluster::new("delta", 3);
    cluster.init();
    let out = run_query(&cluster, "CREATE TABLE t (id INT PRIMARY KEY)");
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.kill("n1");
    let out = cluster.ddb(&["query", "--no-header", "SELECT 40 + 2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_cluster_refuse_to_join() {
    let cluster = TestCluster::new("one", 1);
    cluster.init();
    let text = std::fs::read_to_string(&cluster.config)
        .unwrap()
        .replace("name: one", "name: two");
    let other = cluster.dir.path().join("other.yaml");
    std::fs::write(&other, text).unwrap();
    let out = common::run_ddb(&["init", "-c", other.to_str().unwrap()], None, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("belongs to cluster 'one', not 'two'"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_dry_run_prints_the_plan_and_starts_nothing() {
    let cluster = TestCluster::new("plan", 3);
    let out = cluster.ddb(&["init", "--dry-run", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.len(), 3);
    let total: f64 = plan.iter().map(|n| n["share"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-3);
    assert!(stderr(&out).contains("nothing was started"));
    assert!(
        !cluster.data_dir("n1").exists(),
        "dry run created a data directory"
    );
    let (code, _) = cluster.status();
    assert_eq!(code, Some(3));
}

#[test]
fn an_invalid_cluster_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "name: x\nnodes:\n  - name: n1\n    host: 127.0.0.1\n    rpc_port: 1\n    sql_prot: 2\n",
    )
    .unwrap();
    let out = common::run_ddb(&["init", "-c", file.to_str().unwrap()], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml:6") && err.contains("unknown field `sql_prot`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_reports_shares_and_key_owners() {
    let cluster = TestCluster::new("ringo", 3);
    cluster.init();
    let out = cluster.ddb(&["ring", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shards: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shards.len(), 3);
    for s in &shards {
        assert_eq!(s["tokens"], 64);
        assert!((s["share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 0.01);
    }
    assert!(stderr(&out).contains("spread"));
    // The owner it names is where the row goes: insert it, and only that node holds a key.
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE words (w TEXT PRIMARY KEY)")
        .await
        .unwrap();
    for word in ["hello", "ring", "shard"] {
        let key = cluster.ddb(&[
            "ring", "--key", word, "--table", "words", "--format", "json",
        ]);
        assert!(key.status.success(), "{}", stderr(&key));
        let owner: Vec<serde_json::Value> = serde_json::from_slice(&key.stdout).unwrap();
        let (_, before) = cluster.status();
        c.execute("INSERT INTO words VALUES ($1)", &[&word])
            .await
            .unwrap();
        let (_, after) = cluster.status();
        let grew: Vec<&serde_json::Value> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a["keys"].as_i64() > b["keys"].as_i64())
            .map(|(_, a)| &a["name"])
            .collect();
        assert_eq!(
            grew,
            vec![&owner[0]["node"]],
            "ring --key {word} named {} but the row went elsewhere",
            owner[0]
        );
        assert_eq!(
            after
                .iter()
                .find(|n| n["name"] == owner[0]["node"])
                .unwrap()["shard"],
            owner[0]["shard"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_three_nodes_vote_and_the_rest_are_learners() {
    let cluster = TestCluster::new("quad", 4);
    cluster.init();
    // Roles settle within a heartbeat or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, status) = cluster.status();
        assert_eq!(code, Some(0));
        let roles: Vec<String> = status
            .iter()
            .map(|n| n["raft"].as_str().unwrap().to_string())
            .collect();
        let voters_ok = roles[..3].iter().filter(|r| *r == "leader").count() == 1
            && roles[..3].iter().all(|r| r == "leader" || r == "follower");
        if voters_ok && roles[3] == "learner" {
            break;
        }
        assert!(Instant::now() < deadline, "roles {roles:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The learner receives every change: the table is there through it at once.
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let learner = connect(cluster.sql_port("n4")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while learner
        .simple_query("SELECT count(*) FROM t")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the learner never saw the table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_is_reported_with_its_log() {
    let cluster = TestCluster::new("broken", 2);
    // Something else holds n2's SQL port.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", cluster.sql_port("n2"))).unwrap();
    let out = cluster.ddb(&["init", "--timeout", "10"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("node n2 exited during start-up") && err.contains("cannot listen for SQL"),
        "{err}"
    );
}

/// The map of the node at `addr`, asked over the RPC port.
async fn map_of(addr: &str, cluster: &str) -> ddb::cluster::map::ClusterMap {
    use ddb::client::Client;
    use ddb::protocol::{Request, Response};
    let client = Client::connect_to(addr, Duration::from_secs(2), Some(cluster.into()))
        .await
        .unwrap();
    match client.call(Request::GetMap).await.unwrap() {
        Response::Map(Some(map)) => *map,
        other => panic!("expected a map, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_answers_wrong_shard_for_keys_it_does_not_own() {
    use ddb::client::Client;
    use ddb::protocol::{Request, Response};
    use ddb::protocol::{ShardOp, ShardReply, ShardRequest};
    use ddb::storage::keycode;
    use ddb::txn::Intent;
    use ddb::types::Value;

    let cluster = TestCluster::new("fence", 2);
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    let map = map_of(&cluster.rpc_addr("n1"), "fence").await;
    let (version, placement) = (map.version, map.placement);
    assert!(
        version > placement,
        "CREATE TABLE raised the version, not the placement"
    );
    let table_id = 1;
    // A key owned by shard 2 (n2), asked of n1 as if n1 owned it.
    let on_n2 = cluster.keys_on("n2", 1)[0];
    let on_n1 = cluster.keys_on("n1", 1)[0];
    let key = keycode::row_key(table_id, &[Value::Int(on_n2)]);
    let client = Client::connect_to(
        &cluster.rpc_addr("n1"),
        Duration::from_secs(2),
        Some("fence".into()),
    )
    .await
    .unwrap();
    let ask = |shard: u32, key: Vec<u8>, epoch: u64, map_version: u64, placement: u64| {
        Request::Shard(ShardRequest {
            txn: 1,
            age: 1,
            shard,
            map_version,
            placement,
            epoch,
            lock_timeout_ms: None,
            op: ShardOp::Get {
                table: table_id,
                key,
                intent: Intent::Read,
            },
        })
    };
    let own = keycode::row_key(table_id, &[Value::Int(on_n1)]);
    // The wrong shard id for this node, a key of another shard, a stale epoch (a message meant
    // for an older primary), and another placement, older or newer (who serves which keys
    // differs between sender and shard): all are fenced.
    for req in [
        ask(2, key.clone(), 1, version, placement),
        ask(1, key, 1, version, placement),
        ask(1, own.clone(), 0, version, placement),
        ask(1, own.clone(), 1, version, placement - 1),
        ask(1, own.clone(), 1, version, placement + 1),
    ] {
        match client.call(req).await.unwrap() {
            Response::Shard(ShardReply::WrongShard { version: v }) => assert!(v >= version),
            other => panic!("expected WrongShard, got {other:?}"),
        }
    }
    // A prepare, an anchor's commit and a one-phase commit routed under another placement are
    // fenced too, before they touch anything.
    for op in [
        ShardOp::Prepare {
            anchor: 2,
            participants: vec![1, 2],
        },
        ShardOp::CommitAnchor {
            participants: vec![1, 2],
        },
        ShardOp::Commit,
    ] {
        let req = Request::Shard(ShardRequest {
            txn: 2,
            age: 2,
            shard: 1,
            map_version: version,
            placement: placement + 1,
            epoch: 1,
            lock_timeout_ms: None,
            op: op.clone(),
        });
        match client.call(req).await.unwrap() {
            Response::Shard(ShardReply::WrongShard { .. }) => {}
            other => panic!("expected WrongShard for {op:?}, got {other:?}"),
        }
    }
    // An older map version under the same placement and epoch is served: DDL fences nothing.
    match client
        .call(ask(1, own, 1, version - 1, placement))
        .await
        .unwrap()
    {
        Response::Shard(ShardReply::Row(None)) => {}
        other => panic!("expected the (missing) row, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_shard_transaction_commits_across_a_create_table_from_another_session() {
    let cluster = TestCluster::new("ddlmix", 3);
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE acct (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .unwrap();
    let keys: Vec<i64> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| cluster.keys_on(n, 1)[0])
        .collect();
    for k in &keys {
        c.execute("INSERT INTO acct VALUES ($1, 100)", &[k])
            .await
            .unwrap();
    }
    let map_version = |c: &TestCluster| -> Vec<i64> {
        c.status()
            .1
            .iter()
            .map(|n| n["map_version"].as_i64().unwrap())
            .collect()
    };
    // A transaction writes on every shard (n2 and n3 remotely), and stays open.
    let txn = connect(cluster.sql_port("n1")).await;
    txn.batch_execute("BEGIN").await.unwrap();
    for k in &keys[1..] {
        txn.execute("UPDATE acct SET v = v - 10 WHERE id = $1", &[k])
            .await
            .unwrap();
    }
    // Another session creates a table: a new map version on every node.
    let before = map_version(&cluster);
    let other = connect(cluster.sql_port("n3")).await;
    other
        .batch_execute("CREATE TABLE unrelated (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(20), || map_version(&cluster)
            .iter()
            .zip(&before)
            .all(|(now, was)| now > was)),
        "CREATE TABLE never reached every map: {:?}",
        map_version(&cluster)
    );
    // The transaction goes on under its older map, and commits by two-phase commit.
    txn.execute("UPDATE acct SET v = v + 20 WHERE id = $1", &[&keys[0]])
        .await
        .unwrap();
    txn.batch_execute("COMMIT").await.unwrap_or_else(|e| {
        panic!(
            "the transaction failed across a CREATE TABLE ({:?}): {e}",
            sqlstate(&e)
        )
    });
    let mut total = 0;
    for (k, want) in keys.iter().zip([120, 90, 90]) {
        let v: i64 = c
            .query_one("SELECT v FROM acct WHERE id = $1", &[k])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, want, "key {k}");
        total += v;
    }
    assert_eq!(total, 300);
    let (_, status) = cluster.status_txns();
    assert!(
        status
            .iter()
            .find(|n| n["name"] == "n1")
            .is_some_and(|n| n["two_phase"].as_i64() >= Some(1)),
        "the commit was not a two-phase commit: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_table_waits_for_open_transactions_and_then_holds_on_every_node() {
    let cluster = TestCluster::new("dropper", 3);
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    for id in 0..30i64 {
        c.execute("INSERT INTO t VALUES ($1, 0)", &[&id])
            .await
            .unwrap();
    }
    // An open transaction on another node holds locks on the table.
    let holder = connect(cluster.sql_port("n2")).await;
    holder
        .batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 3; SELECT count(*) FROM t")
        .await
        .unwrap();
    let version = |c: &TestCluster| -> Vec<i64> {
        c.status()
            .1
            .iter()
            .map(|n| n["map_version"].as_i64().unwrap())
            .collect()
    };
    let before = version(&cluster);
    let port = cluster.sql_port("n3");
    let dropper = tokio::spawn(async move {
        let c = connect(port).await;
        c.batch_execute("DROP TABLE t").await
    });
    // The drop is in the map once every node's map is newer...
    assert!(
        common::wait_until(Duration::from_secs(20), || version(&cluster)
            .iter()
            .zip(&before)
            .all(|(now, was)| now > was)),
        "DROP TABLE never reached the map: {:?}",
        version(&cluster)
    );
    // ...but it waits for the open transaction: the table and its own write are still there
    // for it (a read of a row it holds takes no new lock), and it commits.
    assert!(!dropper.is_finished(), "DROP TABLE did not wait");
    let v: i32 = holder
        .query_one("SELECT v FROM t WHERE id = 3", &[])
        .await
        .expect("the open transaction lost its table to a DROP that should wait for it")
        .get(0);
    assert_eq!(v, 1);
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), dropper)
        .await
        .expect("DROP TABLE hung")
        .unwrap()
        .unwrap();
    for node in ["n1", "n2", "n3"] {
        let c = connect(cluster.sql_port(node)).await;
        let err = c.simple_query("SELECT count(*) FROM t").await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("42P01"), "{node}: {err}");
    }
    // No rows of the dropped table remain anywhere.
    let (_, status) = cluster.status();
    assert!(status.iter().all(|n| n["keys"] == 0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_vote_once_there_are_five_or_more() {
    let cluster = TestCluster::new("six", 6);
    cluster.init();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, status) = cluster.status();
        assert_eq!(code, Some(0));
        let roles: Vec<String> = status
            .iter()
            .map(|n| n["raft"].as_str().unwrap().to_string())
            .collect();
        let voters = &roles[..5];
        if voters.iter().filter(|r| *r == "leader").count() == 1
            && voters.iter().all(|r| r == "leader" || r == "follower")
            && roles[5] == "learner"
        {
            break;
        }
        assert!(Instant::now() < deadline, "roles {roles:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddb_stop_node_stops_that_node_cleanly_and_no_other() {
    let cluster = TestCluster::new("stopper", 3);
    cluster.init();
    let out = cluster.ddb(&["stop", "n2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, status) = cluster.status();
    assert_eq!(code, Some(3), "a node is down");
    let states: Vec<&str> = status
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["up", "down", "up"]);
    let log = std::fs::read_to_string(cluster.data_dir("n2").join("ddb.log")).unwrap();
    assert!(log.contains("shut down cleanly"), "{log}");
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
}

/// A port of the file taken by another process before `ddb init` binds it: the harness's
/// first init starts over on new ports (what keeps tests from failing when a port chosen as
/// free is taken meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_moves_a_new_cluster_off_a_port_taken_before_init() {
    let cluster = TestCluster::new("squatted", 2);
    let taken = cluster.sql_port("n2");
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    cluster.init();
    assert_ne!(cluster.sql_port("n2"), taken);
    let c = connect(cluster.sql_port("n2")).await;
    c.simple_query("SELECT 1").await.unwrap();
    let (code, status) = cluster.status();
    assert_eq!(code, Some(0), "{status:?}");
}

/// A client's transactions one after another on one connection never conflict with each other:
/// the gateway answers a commit or a rollback only once the other shards have let go of its
/// locks (DESIGN §7), so the next, younger transaction does not lose wait-die to them. Before,
/// a scan's read-only parts were released after the answer, and about one `BEGIN; INSERT` in
/// 300 after a scan got 40001 from its own previous statement.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_next_transaction_never_meets_its_own_previous_ones_locks() {
    let cluster = TestCluster::new("settle", 3);
    cluster.init();
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    for id in 0..300i64 {
        if Instant::now() > deadline {
            break;
        }
        // A scan (shared locks on every shard), then a write that the gateway sends to
        // whichever shard owns the key; then the same after an explicit ROLLBACK.
        c.query_one("SELECT count(*) FROM t", &[]).await.unwrap();
        c.batch_execute("BEGIN").await.unwrap();
        if let Err(e) = c.execute("INSERT INTO t VALUES ($1, 0)", &[&id]).await {
            panic!("round {id}: the insert after a scan failed: {e:?}");
        }
        c.batch_execute("COMMIT").await.unwrap();
        c.batch_execute("BEGIN").await.unwrap();
        c.query_one("SELECT count(*) FROM t", &[]).await.unwrap();
        c.batch_execute("ROLLBACK").await.unwrap();
        if let Err(e) = c
            .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&id])
            .await
        {
            panic!("round {id}: the update after a rolled-back scan failed: {e:?}");
        }
        rounds += 1;
    }
    assert!(rounds >= 50, "only {rounds} rounds ran in 60 s");
    let n: i64 = c
        .query_one("SELECT count(*) FROM t WHERE v = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, rounds);
}
