//! Transactions across shards: two-phase commit on real clusters, crash points at every step,
//! deadlocks across shards, and what `ddb status` shows of in-doubt transactions.
//!
//! The crash-point tests need the `failpoints` feature (`cargo test --features failpoints`,
//! which `.ci/run` uses): the nodes then crash (as `kill -9` would) at the point named in
//! `FAILPOINTS`.

mod common;

use std::time::{Duration, Instant};

use common::{connect, sqlstate, wait_until, TestCluster};

/// Environment for the nodes of these tests: short timeouts so recovery and lock waits are
/// quick.
const FAST: [(&str, &str); 2] = [
    ("DDB_PREPARED_TIMEOUT_MS", "500"),
    ("DDB_LOCK_TIMEOUT_MS", "2000"),
];

async fn balances(c: &tokio_postgres::Client, ids: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        let r = c
            .query_one("SELECT balance FROM a WHERE id = $1", &[id])
            .await
            .unwrap_or_else(|e| panic!("read {id}: {e}"));
        out.push(r.get(0));
    }
    out
}

/// A 3-node cluster with table `a(id, balance)` holding `[k1, k2, k3]`, one key on each of
/// n1, n2, n3, at balance 100.
async fn bank3(name: &str) -> (TestCluster, [i64; 3]) {
    let cluster = TestCluster::new(name, 3);
    cluster.init_env(&FAST);
    let keys = [
        cluster.keys_on("n1", 1)[0],
        cluster.keys_on("n2", 1)[0],
        cluster.keys_on("n3", 1)[0],
    ];
    let c = connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE a (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)")
        .await
        .unwrap();
    c.batch_execute(&format!(
        "INSERT INTO a VALUES ({}, 100), ({}, 100), ({}, 100)",
        keys[0], keys[1], keys[2]
    ))
    .await
    .unwrap();
    (cluster, keys)
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn prepared(cluster: &TestCluster) -> Vec<i64> {
    cluster
        .status()
        .1
        .iter()
        .map(|n| n["prepared"].as_i64().unwrap_or(-1))
        .collect()
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn wait_resolved(cluster: &TestCluster) {
    assert!(
        wait_until(Duration::from_secs(20), || prepared(cluster)
            == vec![0, 0, 0]),
        "in-doubt transactions were not resolved: {:?}\n{}",
        cluster.status().1,
        cluster.logs()
    );
}

/// Decision records kept per node (`ddb status --txns`).
fn decisions(cluster: &TestCluster) -> Vec<i64> {
    cluster
        .status_txns()
        .1
        .iter()
        .map(|n| n["decisions"].as_i64().unwrap_or(-1))
        .collect()
}

/// Waits until every decision record has been garbage-collected.
fn wait_collected(cluster: &TestCluster) {
    assert!(
        wait_until(Duration::from_secs(30), || decisions(cluster)
            == vec![0, 0, 0]),
        "decision records were not collected: {:?}",
        decisions(cluster)
    );
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn node_down(cluster: &TestCluster, node: &str) -> bool {
    std::net::TcpStream::connect(cluster.rpc_addr(node)).is_err()
}

/// The cell of a `--format table` output in the row whose first cell is `row`, under the
/// header `column`.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn table_cell(text: &str, row: &str, column: &str) -> Option<String> {
    let cells = |line: &str| -> Vec<String> {
        line.split(['│', '|', '┆'])
            .map(|c| c.trim().to_string())
            .collect()
    };
    let lines: Vec<Vec<String>> = text.lines().map(cells).filter(|c| c.len() > 2).collect();
    let header = lines.iter().find(|c| c.iter().any(|x| x == column))?;
    let at = header.iter().position(|x| x == column)?;
    let first = header.iter().position(|x| !x.is_empty())?;
    lines
        .iter()
        .find(|c| c.get(first).map(String::as_str) == Some(row))
        .and_then(|c| c.get(at).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_blocks_that_span_shards_commit_atomically() {
    let (cluster, [k1, k2, k3]) = bank3("span").await;
    let c = connect(cluster.sql_port("n2")).await;
    // An explicit block over three shards.
    c.batch_execute(&format!(
        "BEGIN; UPDATE a SET balance = balance - 30 WHERE id = {k1}; \
         UPDATE a SET balance = balance + 10 WHERE id = {k2}; \
         UPDATE a SET balance = balance + 20 WHERE id = {k3}; COMMIT"
    ))
    .await
    .unwrap();
    assert_eq!(balances(&c, &[k1, k2, k3]).await, vec![70, 110, 120]);
    // Single statements whose rows span shards: UPDATE and DELETE without the key, multi-row
    // INSERT.
    c.batch_execute("UPDATE a SET balance = balance * 2")
        .await
        .unwrap();
    assert_eq!(balances(&c, &[k1, k2, k3]).await, vec![140, 220, 240]);
    let more: Vec<i64> = cluster
        .keys_on("n3", 3)
        .into_iter()
        .chain(cluster.keys_on("n1", 3))
        .filter(|k| ![k1, k2, k3].contains(k))
        .collect();
    let values: Vec<String> = more.iter().map(|k| format!("({k}, 1)")).collect();
    c.batch_execute(&format!("INSERT INTO a VALUES {}", values.join(", ")))
        .await
        .unwrap();
    // A multi-row INSERT that fails on one shard (duplicate key) leaves nothing on the others.
    let dup = format!(
        "INSERT INTO a VALUES ({}, 5), ({k1}, 5)",
        cluster.keys_on("n2", 5)[4]
    );
    let err = c.batch_execute(&dup).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("23505"), "{err}");
    let r = c.query_one("SELECT count(*) FROM a", &[]).await.unwrap();
    assert_eq!(r.get::<_, i64>(0), 3 + more.len() as i64);
    c.batch_execute("DELETE FROM a WHERE balance = 1")
        .await
        .unwrap();
    let r = c
        .query_one("SELECT count(*), sum(balance) FROM a", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 3);
    assert_eq!(r.get::<_, i64>(1), 600);
    // A rolled-back block leaves nothing anywhere.
    c.batch_execute(&format!(
        "BEGIN; UPDATE a SET balance = 0 WHERE id = {k1}; UPDATE a SET balance = 0 WHERE id = {k3}; ROLLBACK"
    ))
    .await
    .unwrap();
    assert_eq!(balances(&c, &[k1, k2, k3]).await, vec![140, 220, 240]);

    // The gateways counted their commits, and the anchors' records are gone once applied.
    let out = cluster.ddb(&["status", "--txns", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let n2 = rows.iter().find(|r| r["name"] == "n2").unwrap();
    assert!(n2["two_phase"].as_i64().unwrap() >= 4, "{n2}");
    wait_collected(&cluster);
    // Each 2PC step's average time is measured: prepares, the anchor's decision, the finish.
    let rows = cluster.status_txns().1;
    let n2 = rows.iter().find(|r| r["name"] == "n2").unwrap();
    for step in ["prepare_ms", "decide_ms", "finish_ms"] {
        let ms = n2[step].as_f64().unwrap_or(-1.0);
        assert!(ms > 0.0 && ms < 60_000.0, "{step}: {n2}");
    }

    let (_, status) = cluster.status();
    let two_phase: i64 = status.iter().map(|n| n["prepared"].as_i64().unwrap()).sum();
    assert_eq!(two_phase, 0, "nothing stays prepared: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_shard_deadlock_kills_one_and_commits_the_other() {
    let (cluster, [k1, _, k3]) = bank3("deadlock").await;
    let a = connect(cluster.sql_port("n1")).await;
    let b = connect(cluster.sql_port("n2")).await;
    // A is older: it begins and locks k1 (shard 1) first.
    a.batch_execute(&format!(
        "BEGIN; UPDATE a SET balance = balance + 1 WHERE id = {k1}"
    ))
    .await
    .unwrap();
    b.batch_execute(&format!(
        "BEGIN; UPDATE a SET balance = balance + 2 WHERE id = {k3}"
    ))
    .await
    .unwrap();
    // A waits for k3 (held by the younger B); B then asks for k1, held by the older A: B dies.
    let a_wait = tokio::spawn(async move {
        let r = a
            .batch_execute(&format!(
                "UPDATE a SET balance = balance + 1 WHERE id = {k3}; COMMIT"
            ))
            .await;
        (a, r)
    });
    // Whether or not A is already waiting, B (younger) dies when it asks for A's row.
    let err = b
        .batch_execute(&format!(
            "UPDATE a SET balance = balance + 2 WHERE id = {k1}"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("40001"), "{err}");
    b.batch_execute("ROLLBACK").await.unwrap();
    let started = Instant::now();
    let (a, r) = a_wait.await.unwrap();
    r.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the survivor hung"
    );
    assert_eq!(balances(&a, &[k1, k3]).await, vec![101, 101]);
}

/// Runs the transfer `k2 → k3 → k1` (anchor: the shard of k2, n2) through gateway n1 with a
/// crash point switched on at `node`, and returns what the client saw.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
async fn crash_during_commit(
    cluster: &TestCluster,
    keys: [i64; 3],
    node: &str,
    failpoint: &str,
) -> Result<(), tokio_postgres::Error> {
    let [k1, k2, k3] = keys;
    crash_during(
        cluster,
        &[k2, k3, k1],
        &[node],
        &format!("{failpoint}=1*return"),
        node,
    )
    .await
}

/// Restarts `restart` with `failpoints` switched on (the `fail` crate's syntax), updates
/// `updates` in that order in one transaction through gateway n1, and waits until `crashes`
/// is down.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
async fn crash_during(
    cluster: &TestCluster,
    updates: &[i64],
    restart: &[&str],
    failpoints: &str,
    crashes: &str,
) -> Result<(), tokio_postgres::Error> {
    for node in restart {
        cluster.kill(node);
    }
    let mut env = FAST.to_vec();
    env.push(("FAILPOINTS", failpoints));
    cluster.init_env(&env);
    let c = connect(cluster.sql_port("n1")).await;
    let body: Vec<String> = updates
        .iter()
        .map(|k| format!("UPDATE a SET balance = balance + 1 WHERE id = {k}; "))
        .collect();
    let result = c
        .batch_execute(&format!("BEGIN; {}COMMIT", body.concat()))
        .await;
    assert!(
        wait_until(Duration::from_secs(10), || node_down(cluster, crashes)),
        "failpoints {failpoints} did not crash {crashes}: {result:?}\n{}",
        cluster.logs()
    );
    assert_crashed_at(cluster, crashes, failpoints);
    result
}

/// Asserts that `node`'s log says it crashed at one of `failpoints` (not for another reason).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn assert_crashed_at(cluster: &TestCluster, node: &str, failpoints: &str) {
    let log = std::fs::read_to_string(cluster.data_dir(node).join("ddb.log")).unwrap_or_default();
    assert!(
        failpoints
            .split(';')
            .filter_map(|f| f.split('=').next())
            .any(|name| log.contains(&format!("failpoint {name}: crashing"))),
        "{node} died, but not at {failpoints}:\n{}",
        cluster.logs()
    );
}

/// Restarts every node that is down (without crash points), waits for recovery, and checks
/// that the transfer is applied on every shard or on none (`committed` says which), that no
/// lock remains and that new transactions on those rows work.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
async fn recover_and_check(cluster: &TestCluster, keys: [i64; 3], committed: bool) {
    let want = if committed { 101 } else { 100 };
    recover_and_expect(cluster, keys, [want; 3]).await
}

/// As [`recover_and_check`], with the balances expected after recovery.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
async fn recover_and_expect(cluster: &TestCluster, keys: [i64; 3], want: [i64; 3]) {
    cluster.init_env(&FAST);
    wait_resolved(cluster);
    let c = connect(cluster.sql_port("n3")).await;
    assert_eq!(
        balances(&c, &keys).await,
        want.to_vec(),
        "\n{}",
        cluster.logs()
    );
    // No lock remains: a new transaction over the same rows commits at once.
    let [k1, k2, k3] = keys;
    c.batch_execute(&format!(
        "BEGIN; UPDATE a SET balance = balance + 10 WHERE id = {k1}; \
         UPDATE a SET balance = balance + 10 WHERE id = {k2}; \
         UPDATE a SET balance = balance + 10 WHERE id = {k3}; COMMIT"
    ))
    .await
    .unwrap();
    assert_eq!(
        balances(&c, &keys).await,
        want.iter().map(|w| w + 10).collect::<Vec<_>>()
    );
    assert_eq!(prepared(cluster), vec![0, 0, 0]);
}

#[cfg(feature = "failpoints")]
mod crash_points {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_crash_after_some_prepares_aborts_everywhere() {
        let (cluster, keys) = bank3("fp-some-prep").await;
        let r = crash_during_commit(&cluster, keys, "n1", "gateway-after-some-prepares").await;
        assert!(r.is_err(), "the client saw its gateway die");
        recover_and_check(&cluster, keys, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_crash_after_all_prepares_aborts_everywhere() {
        let (cluster, keys) = bank3("fp-all-prep").await;
        let r = crash_during_commit(&cluster, keys, "n1", "gateway-after-all-prepares").await;
        assert!(r.is_err());
        recover_and_check(&cluster, keys, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_crash_after_the_anchor_commit_commits_everywhere() {
        let (cluster, keys) = bank3("fp-anchor").await;
        let r = crash_during_commit(&cluster, keys, "n1", "gateway-after-anchor-commit").await;
        assert!(r.is_err());
        recover_and_check(&cluster, keys, true).await;
        // The gateway died before it could say so: the anchor collects its record itself once
        // no participant holds the transaction prepared.
        wait_collected(&cluster);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_crash_after_some_commits_commits_everywhere() {
        let (cluster, keys) = bank3("fp-some-commit").await;
        // The client is answered once the anchor's record is durable, so it may or may not
        // have seen the commit before its gateway died; either way the transfer is committed.
        let _ = crash_during_commit(&cluster, keys, "n1", "gateway-after-some-commits").await;
        recover_and_check(&cluster, keys, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_participant_that_crashes_while_prepared_learns_the_abort() {
        let (cluster, keys) = bank3("fp-part").await;
        let r = crash_during_commit(&cluster, keys, "n3", "participant-after-prepare").await;
        let err = r.expect_err("the commit cannot succeed without a vote");
        assert_eq!(sqlstate(&err).as_deref(), Some("40001"), "{err}");
        recover_and_check(&cluster, keys, false).await;
    }

    /// The anchor dies after the gateway asked it to commit, before its commit entry is
    /// written: the gateway cannot know the outcome (40003), and since no record was written
    /// the transaction is aborted everywhere (presumed abort).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_anchor_crash_before_its_commit_entry_aborts_everywhere() {
        let (cluster, keys) = bank3("fp-anchor-before").await;
        let r = crash_during_commit(&cluster, keys, "n2", "anchor-before-commit").await;
        let err = r.expect_err("the anchor died before the commit point");
        assert_eq!(sqlstate(&err).as_deref(), Some("40003"), "{err}");
        recover_and_check(&cluster, keys, false).await;
    }

    /// A participant dies when the commit reaches it, before applying it: the client already
    /// had its answer (the anchor's record is the commit point), and the participant applies
    /// the commit when it is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_participant_that_crashes_on_receiving_the_commit_applies_it_when_back() {
        let (cluster, keys) = bank3("fp-part-commit").await;
        let r =
            crash_during_commit(&cluster, keys, "n3", "participant-after-commit-received").await;
        r.expect("the commit point was passed before the participant died");
        recover_and_check(&cluster, keys, true).await;
        wait_collected(&cluster);
    }

    /// Recovery itself crashes: the gateway dies after every prepare; the participant n3 asks
    /// the anchor, which writes ABORTED, and n3 dies before applying the answer. Back up, n3
    /// asks again and gets the same answer from the anchor's record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_participant_that_crashes_during_recovery_learns_the_outcome_again() {
        let (cluster, [k1, k2, k3]) = bank3("fp-recovery").await;
        // The setup's own two-phase insert must be finished everywhere, or n3 would reload it
        // prepared and crash recovering it.
        wait_collected(&cluster);
        let r = crash_during(
            &cluster,
            &[k2, k3, k1],
            &["n1", "n3"],
            "gateway-after-all-prepares=1*return;recovery-before-apply=1*return",
            "n1",
        )
        .await;
        assert!(r.is_err(), "the client saw its gateway die");
        assert!(
            wait_until(Duration::from_secs(20), || node_down(&cluster, "n3")),
            "n3 did not crash during recovery\n{}",
            cluster.logs()
        );
        assert_crashed_at(&cluster, "n3", "recovery-before-apply");
        recover_and_check(&cluster, [k1, k2, k3], false).await;
    }

    /// The gateway holds none of the rows (the transfer is between n2 and n3) and dies after
    /// the anchor's commit: the transaction commits on both shards, and k1 is untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_that_holds_none_of_the_rows_dies_after_the_anchor_commit() {
        let (cluster, [k1, k2, k3]) = bank3("fp-bare-gw").await;
        let r = crash_during(
            &cluster,
            &[k2, k3],
            &["n1"],
            "gateway-after-anchor-commit=1*return",
            "n1",
        )
        .await;
        assert!(r.is_err(), "the client saw its gateway die");
        recover_and_expect(&cluster, [k1, k2, k3], [100, 101, 101]).await;
        wait_collected(&cluster);
    }

    /// The same gateway dies after every prepare: aborted on both shards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_that_holds_none_of_the_rows_dies_after_the_prepares() {
        let (cluster, [k1, k2, k3]) = bank3("fp-bare-gw-prep").await;
        let r = crash_during(
            &cluster,
            &[k2, k3],
            &["n1"],
            "gateway-after-all-prepares=1*return",
            "n1",
        )
        .await;
        assert!(r.is_err(), "the client saw its gateway die");
        recover_and_check(&cluster, [k1, k2, k3], false).await;
    }

    /// `--prepared-timeout-ms` (here through its variable, as `ddb init` starts the nodes)
    /// is how long a participant holds a prepared transaction before recovery asks the
    /// anchor: at 4 s the in-doubt transaction stays prepared that long, then is aborted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_prepared_timeout_is_how_long_recovery_waits_before_asking() {
        let (cluster, [k1, k2, k3]) = bank3("fp-prep-timeout").await;
        wait_collected(&cluster);
        for node in ["n1", "n3"] {
            cluster.kill(node);
        }
        cluster.init_env(&[
            ("DDB_PREPARED_TIMEOUT_MS", "4000"),
            ("DDB_LOCK_TIMEOUT_MS", "2000"),
            ("FAILPOINTS", "gateway-after-all-prepares=1*return"),
        ]);
        let c = connect(cluster.sql_port("n1")).await;
        let r = c
            .batch_execute(&format!(
                "BEGIN; UPDATE a SET balance = balance + 1 WHERE id = {k2}; \
                 UPDATE a SET balance = balance + 1 WHERE id = {k3}; \
                 UPDATE a SET balance = balance + 1 WHERE id = {k1}; COMMIT"
            ))
            .await;
        assert!(r.is_err(), "the client saw its gateway die");
        assert!(wait_until(Duration::from_secs(10), || node_down(
            &cluster, "n1"
        )));
        // n3 holds it prepared until the timeout, then asks the anchor (n2, up), which aborts.
        let mut oldest = 0.0f64;
        let resolved = wait_until(Duration::from_secs(30), || {
            let status = cluster.status().1;
            let n3 = status.iter().find(|n| n["name"] == "n3").unwrap();
            if n3["prepared"] == 0 {
                return true;
            }
            oldest = oldest.max(n3["oldest_prepared_s"].as_f64().unwrap_or(0.0));
            false
        });
        assert!(resolved, "n3 never resolved\n{}", cluster.logs());
        assert!(
            oldest >= 3.5,
            "n3 asked its anchor after {oldest} s, before the 4 s timeout"
        );
        // n3 has the crash point too (it was started with it): restart it without.
        cluster.kill("n3");
        recover_and_check(&cluster, [k1, k2, k3], false).await;
    }

    /// The CLI says so too: a transaction whose outcome the gateway cannot know ends
    /// `ddb query` with exit code 5 (timed out, outcome unknown; DESIGN §10.1) and SQLSTATE
    /// 40003, not with 6, because the transaction committed after all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_outcome_ends_ddb_query_with_exit_code_5() {
        let (cluster, [k1, k2, k3]) = bank3("fp-unknown-exit").await;
        cluster.kill("n2");
        let mut env = FAST.to_vec();
        env.push(("FAILPOINTS", "anchor-after-commit=1*return"));
        cluster.init_env(&env);
        // The first row written is on n2, so n2 is the anchor; n1 (the first node of the
        // file, which the CLI reaches) is the gateway.
        let sql = format!(
            "BEGIN; UPDATE a SET balance = balance + 1 WHERE id = {k2}; \
             UPDATE a SET balance = balance + 1 WHERE id = {k3}; \
             UPDATE a SET balance = balance + 1 WHERE id = {k1}; COMMIT"
        );
        let out = cluster.ddb(&["query", &sql]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            wait_until(Duration::from_secs(10), || node_down(&cluster, "n2")),
            "the anchor did not crash: {stderr}\n{}",
            cluster.logs()
        );
        assert_eq!(out.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains("40003"), "{stderr}");
        recover_and_check(&cluster, [k1, k2, k3], true).await;
    }

    /// The anchor dies right after its commit entry: the gateway cannot know the outcome
    /// (40003); the prepared participants stay in doubt, visible in `ddb status`, keep their
    /// locks (a newer transaction waits and gives up: a prepared transaction is never the
    /// victim), and commit once the anchor is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_anchor_crash_after_its_commit_entry_is_in_doubt_then_committed() {
        let (cluster, keys) = bank3("fp-anchor-crash").await;
        let r = crash_during_commit(&cluster, keys, "n2", "anchor-after-commit").await;
        let err = r.expect_err("the gateway cannot know the outcome");
        assert_eq!(sqlstate(&err).as_deref(), Some("40003"), "{err}");

        let (code, status) = cluster.status();
        assert_eq!(code, Some(3), "a node is down");
        let mut ages = Vec::new();
        for n in ["n1", "n3"] {
            let row = status.iter().find(|r| r["name"] == n).unwrap();
            assert_eq!(row["prepared"], 1, "{status:?}");
            ages.push(
                row["oldest_prepared_s"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no age of the oldest prepared: {row}")),
            );
        }
        // The people's table shows the same: 1 under "prepared" for n1 and n3, nothing for
        // the node that is down.
        let table = cluster.ddb(&["status", "--format", "table"]);
        let text = String::from_utf8_lossy(&table.stdout);
        for (n, want) in [("n1", "1"), ("n2", "NULL"), ("n3", "1")] {
            assert_eq!(
                table_cell(&text, n, "prepared").as_deref(),
                Some(want),
                "{n} in:\n{text}"
            );
        }
        // The in-doubt row stays locked: a new writer gives up with 55P03 after its lock wait.
        let c = connect(cluster.sql_port("n3")).await;
        let err = c
            .batch_execute(&format!("UPDATE a SET balance = 0 WHERE id = {}", keys[2]))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("55P03"), "{err}");
        // That wait took the lock timeout (2 s): the in-doubt transaction has aged meanwhile.
        let status = cluster.status().1;
        let row = status.iter().find(|r| r["name"] == "n3").unwrap();
        let age = row["oldest_prepared_s"].as_f64().unwrap();
        assert!(age >= ages[1] + 1.5, "aged from {} s to {age} s", ages[1]);
        recover_and_check(&cluster, keys, true).await;
        wait_collected(&cluster);
    }
}

fn lsns(cluster: &TestCluster) -> Vec<i64> {
    cluster
        .status()
        .1
        .iter()
        .map(|n| n["lsn"].as_i64().unwrap_or(-1))
        .collect()
}

fn commits_at(cluster: &TestCluster, node: &str) -> (i64, i64) {
    let out = cluster.ddb(&["status", "--txns", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.iter().find(|r| r["name"] == node).unwrap();
    (
        row["one_phase"].as_i64().unwrap(),
        row["two_phase"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_write_nothing_and_one_written_shard_commits_in_one_phase() {
    let (cluster, [k1, k2, k3]) = bank3("phases").await;
    let c = connect(cluster.sql_port("n1")).await;
    // The setup's insert was a two-phase commit whose last steps run in the background: let
    // them land (every record collected) before counting log entries.
    wait_collected(&cluster);
    // Reads n2, writes n1 and n3: two-phase, and n2 logs nothing.
    let before = lsns(&cluster);
    let (one, two) = commits_at(&cluster, "n1");
    c.batch_execute(&format!(
        "BEGIN; SELECT balance FROM a WHERE id = {k2}; \
         UPDATE a SET balance = balance + 1 WHERE id = {k1}; \
         UPDATE a SET balance = balance + 1 WHERE id = {k3}; \
         UPDATE a SET balance = 0 WHERE id = -12345; COMMIT"
    ))
    .await
    .unwrap();
    wait_collected(&cluster);
    let after = lsns(&cluster);
    assert_eq!(
        after[1], before[1],
        "the reader logged nothing: {before:?} → {after:?}"
    );
    assert!(
        after[0] > before[0] && after[2] > before[2],
        "{before:?} → {after:?}"
    );
    assert_eq!(commits_at(&cluster, "n1"), (one, two + 1));
    // Writes n3 only (the update of a missing key writes nothing): one phase.
    c.batch_execute(&format!(
        "BEGIN; SELECT balance FROM a WHERE id = {k2}; SELECT balance FROM a WHERE id = {k1}; \
         UPDATE a SET balance = balance + 1 WHERE id = {k3}; \
         UPDATE a SET balance = 0 WHERE id = -12345; COMMIT"
    ))
    .await
    .unwrap();
    assert_eq!(commits_at(&cluster, "n1"), (one + 1, two + 1));
    assert_eq!(balances(&c, &[k1, k2, k3]).await, vec![101, 100, 102]);
    // Nothing stays locked: each row can be written at once from another gateway.
    let d = connect(cluster.sql_port("n3")).await;
    for k in [k1, k2, k3] {
        d.batch_execute(&format!("UPDATE a SET balance = balance WHERE id = {k}"))
            .await
            .unwrap();
    }
}
