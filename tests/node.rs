//! One node, end to end: durability across `kill -9`, clean shutdown, the data directory lock,
//! transactions under concurrency (the bank invariant, deadlocks), prepared statements with
//! parameters of every type, and real clients (psql).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sqlstate, TestNode};
use ddb::client::Client;
use ddb::protocol::{Request, Response};

async fn locks_held(node: &TestNode) -> u64 {
    let client = Client::connect(&node.rpc_addr(), Duration::from_secs(5))
        .await
        .expect("rpc connect");
    match client.call(Request::Status).await.expect("status") {
        Response::Status(s) => s.locks,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_during_a_write_load() {
    let mut node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, writer INT, payload TEXT)")
        .await
        .unwrap();

    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let attempted: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6i64 {
        let (acked, attempted, killed, port) = (
            acked.clone(),
            attempted.clone(),
            killed.clone(),
            node.sql_port,
        );
        writers.push(tokio::spawn(async move {
            let c = common::try_connect(port)
                .await
                .map_err(|e| format!("writer {w} could not connect: {e}"))?;
            for i in 0..400_000i64 {
                let id = w * 1_000_000 + i;
                // Alternate autocommit inserts and two-row explicit transactions.
                let (r, ids) = if i % 2 == 0 {
                    attempted.lock().unwrap().insert(id);
                    let r = c
                        .execute("INSERT INTO t VALUES ($1, $2, 'x')", &[&id, &(w as i32)])
                        .await
                        .map(|_| ());
                    (r, vec![id])
                } else {
                    let id2 = id + 500_000;
                    attempted.lock().unwrap().extend([id, id2]);
                    let r = c
                        .batch_execute(&format!(
                            "BEGIN; INSERT INTO t VALUES ({id}, {w}, 'y'); \
                             INSERT INTO t VALUES ({id2}, {w}, 'y'); COMMIT"
                        ))
                        .await;
                    (r, vec![id, id2])
                };
                match r {
                    Ok(()) => acked.lock().unwrap().extend(ids),
                    // The writer was still writing when the node died.
                    Err(_) if killed.load(Ordering::SeqCst) => return Ok(()),
                    Err(e) => return Err(format!("writer {w} failed before the kill: {e}")),
                }
            }
            Err(format!("writer {w} finished before the kill"))
        }));
    }
    // Let the load run, then crash the node in the middle of it.
    assert!(common::wait_until(Duration::from_secs(20), || acked
        .lock()
        .unwrap()
        .len()
        > 300));
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "a writer stopped before the kill"
    );
    killed.store(true, Ordering::SeqCst);
    node.kill();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("writer did not stop after the crash")
            .expect("writer panicked")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    node.restart();
    let c = node.connect().await;
    let rows = c.query("SELECT id FROM t", &[]).await.unwrap();
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost after kill -9, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let phantom: Vec<_> = present.difference(&attempted).collect();
    assert!(
        phantom.is_empty(),
        "rows that were never written: {phantom:?}"
    );
    // Transactions are atomic across the crash: both rows of a pair or neither, either way
    // round.
    for id in &attempted {
        let (w, i) = (id / 1_000_000, id % 1_000_000);
        if i % 2 == 1 && i < 500_000 {
            let second = w * 1_000_000 + i + 500_000;
            assert_eq!(
                present.contains(id),
                present.contains(&second),
                "half of transaction ({id}, {second}) survived"
            );
        }
    }
    assert!(acked.len() > 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_rolls_back_open_transactions() {
    let mut node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'committed')",
    )
    .await
    .unwrap();
    let open = node.connect().await;
    open.batch_execute("BEGIN; INSERT INTO t VALUES (2, 'uncommitted')")
        .await
        .unwrap();

    let status = node.terminate();
    assert_shut_down_cleanly(&node, status);

    node.restart();
    let c = node.connect().await;
    let rows = c
        .query("SELECT id, v FROM t ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "committed".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let node = TestNode::start();
    let ports = common::free_ports(2);
    let out = std::process::Command::new(common::ddb_bin())
        .arg("server")
        .arg("--data-dir")
        .arg(&node.dir)
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--sql-listen", &format!("127.0.0.1:{}", ports[1])])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another ddb process"), "{stderr}");
    // The first node is unharmed.
    let c = node.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_the_total_and_nobody_hangs() {
    const ACCOUNTS: i64 = 10;
    const TOTAL: i64 = ACCOUNTS * 1000;
    let node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)")
        .await
        .unwrap();
    for id in 0..ACCOUNTS {
        c.execute("INSERT INTO accounts VALUES ($1, 1000)", &[&id])
            .await
            .unwrap();
    }

    let mut tasks = Vec::new();
    // Committed transfers that moved money: (from, to, amount).
    let moved: Arc<Mutex<Vec<(i64, i64, i64)>>> = Arc::default();
    let retried = Arc::new(Mutex::new(0u64));
    for w in 0..6i64 {
        let (port, moved, retried) = (node.sql_port, moved.clone(), retried.clone());
        tasks.push(tokio::spawn(async move {
            let c = common::connect(port).await;
            let mut n = 0;
            while n < 40 {
                let from = (w * 7 + n * 3) % ACCOUNTS;
                let to = (from + 1 + n % (ACCOUNTS - 1)) % ACCOUNTS;
                let amount = 1 + (n % 50);
                let result: Result<bool, tokio_postgres::Error> = async {
                    c.batch_execute("BEGIN").await?;
                    let row = c
                        .query_one("SELECT balance FROM accounts WHERE id = $1", &[&from])
                        .await?;
                    let balance: i64 = row.get(0);
                    let moves = balance >= amount;
                    if moves {
                        c.execute(
                            "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                            &[&amount, &from],
                        )
                        .await?;
                        c.execute(
                            "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                            &[&amount, &to],
                        )
                        .await?;
                    }
                    c.batch_execute("COMMIT").await?;
                    Ok(moves)
                }
                .await;
                match result {
                    Ok(moves) => {
                        n += 1;
                        if moves {
                            moved.lock().unwrap().push((from, to, amount));
                        }
                    }
                    Err(e) => {
                        // A conflict, or (under a slow machine's load) a lock wait timed out.
                        assert!(
                            matches!(sqlstate(&e).as_deref(), Some("40001" | "55P03")),
                            "unexpected error: {e}"
                        );
                        *retried.lock().unwrap() += 1;
                        c.batch_execute("ROLLBACK").await.unwrap();
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let port = node.sql_port;
        tasks.push(tokio::spawn(async move {
            let c = common::connect(port).await;
            for _ in 0..60 {
                let row = c
                    .query_one("SELECT sum(balance) FROM accounts", &[])
                    .await
                    .expect("sum");
                let sum: i64 = row.get(0);
                assert_eq!(sum, TOTAL, "a reader saw a wrong total");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a client hung")
            .expect("client task failed");
    }
    let row = c
        .query_one("SELECT sum(balance), count(*) FROM accounts", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), TOTAL);
    assert_eq!(row.get::<_, i64>(1), ACCOUNTS);
    // Money moved, and exactly as the committed transfers say.
    let moved = moved.lock().unwrap().clone();
    assert!(
        moved.len() > 100,
        "only {} transfers moved money",
        moved.len()
    );
    let mut expected = vec![1000i64; ACCOUNTS as usize];
    for (from, to, amount) in &moved {
        expected[*from as usize] -= amount;
        expected[*to as usize] += amount;
    }
    let balances: Vec<i64> = c
        .query("SELECT balance FROM accounts ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        balances, expected,
        "balances differ from the committed transfers"
    );
    assert_ne!(balances, vec![1000; ACCOUNTS as usize], "no money moved");
    assert!(common::wait_until(Duration::from_secs(5), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| rt.block_on(locks_held(&node))) == 0
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_lock_order_gives_one_40001_and_one_commit() {
    let node = TestNode::start();
    let setup = node.connect().await;
    setup
        .batch_execute("CREATE TABLE r (id INT PRIMARY KEY, v INT); INSERT INTO r VALUES (1, 0)")
        .await
        .unwrap();
    let older = node.connect().await;
    let younger = node.connect().await;
    older
        .batch_execute("BEGIN; UPDATE r SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    younger
        .batch_execute("BEGIN; INSERT INTO r VALUES (2, 2)")
        .await
        .unwrap();
    // The older transaction takes row 3 (nobody's) and waits for row 2, the younger one's...
    let before = locks_held(&node).await;
    let waiting = tokio::spawn(async move {
        let r = older
            .batch_execute("INSERT INTO r VALUES (3, 1), (2, 1)")
            .await;
        (older, r)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while locks_held(&node).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the older one never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !waiting.is_finished(),
        "the older one did not wait for row 2"
    );
    // ...so the younger one, asking for the older one's row, dies instead of deadlocking.
    let err = younger
        .batch_execute("UPDATE r SET v = 2 WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("40001"), "{err}");
    younger.batch_execute("ROLLBACK").await.unwrap();
    let (older, r) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("older hung")
        .unwrap();
    r.unwrap();
    older.batch_execute("COMMIT").await.unwrap();
    let rows = setup
        .query("SELECT id, v FROM r ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1)))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 1), (3, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_transaction_releases_its_locks() {
    let node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE r (id INT PRIMARY KEY, v INT); INSERT INTO r VALUES (1, 0)")
        .await
        .unwrap();
    {
        let gone = node.connect().await;
        gone.batch_execute("BEGIN; UPDATE r SET v = 99 WHERE id = 1")
            .await
            .unwrap();
    }
    // The dropped client's transaction is rolled back; this update does not wait for it.
    let n = tokio::time::timeout(
        Duration::from_secs(3),
        c.execute("UPDATE r SET v = v + 1 WHERE id = 1", &[]),
    )
    .await
    .expect("update waited for a dead client's lock")
    .unwrap();
    assert_eq!(n, 1);
    let v: i32 = c
        .query_one("SELECT v FROM r WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters_of_every_type() {
    let node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute(
        "CREATE TABLE every (id BIGINT PRIMARY KEY, s SMALLINT, i INT, r REAL, d DOUBLE PRECISION, \
         b BOOLEAN, t TEXT, v VARCHAR(10), ch CHAR(3), ts TIMESTAMP)",
    )
    .await
    .unwrap();
    let ts = chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_micro_opt(13, 14, 15, 250_000)
        .unwrap();
    let insert = c
        .prepare("INSERT INTO every VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .await
        .unwrap();
    c.execute(
        &insert,
        &[
            &1i64, &-7i16, &42i32, &1.5f32, &-2.25f64, &true, &"it's", &"varchar", &"ab", &ts,
        ],
    )
    .await
    .unwrap();
    let none: Option<i32> = None;
    let no_text: Option<&str> = None;
    c.execute(
        "INSERT INTO every (id, i, t) VALUES ($1, $2, $3)",
        &[&2i64, &none, &no_text],
    )
    .await
    .unwrap();

    let row = c
        .query_one(
            "SELECT s, i, r, d, b, t, v, ch, ts FROM every WHERE id = $1",
            &[&1i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), -7);
    assert_eq!(row.get::<_, i32>(1), 42);
    assert_eq!(row.get::<_, f32>(2), 1.5);
    assert_eq!(row.get::<_, f64>(3), -2.25);
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, String>(5), "it's");
    assert_eq!(row.get::<_, String>(6), "varchar");
    assert_eq!(row.get::<_, String>(7), "ab ");
    assert_eq!(row.get::<_, chrono::NaiveDateTime>(8), ts);

    let row = c
        .query_one("SELECT i, t FROM every WHERE id = $1", &[&2i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);

    // Parameters in expressions, comparisons, LIMIT; the statement is reused.
    let stmt = c
        .prepare("SELECT id FROM every WHERE i > $1 OR b = $2 ORDER BY id LIMIT $3")
        .await
        .unwrap();
    for _ in 0..3 {
        let rows = c.query(&stmt, &[&0i32, &false, &10i64]).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(),
            vec![1]
        );
    }
    // Comparing with a string longer than the column is allowed, and matches nothing.
    let rows = c
        .query(
            "SELECT id FROM every WHERE v = $1",
            &[&"much too long for varchar"],
        )
        .await
        .expect("comparison with a long string is allowed");
    assert!(rows.is_empty(), "{} rows matched", rows.len());
    let rows = c
        .query(
            "SELECT id FROM every WHERE v <> $1",
            &[&"much too long for varchar"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the row with a v is not equal to it");
    // A value too long for the column is an error, not a crash.
    let err = c
        .execute(
            "INSERT INTO every (id, v) VALUES ($1, $2)",
            &[&3i64, &"much too long for varchar"],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_creates_inserts_and_reads() {
    let node = TestNode::start();
    let out = node.psql(&[
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "CREATE TABLE p (id INT PRIMARY KEY, name TEXT, at TIMESTAMP)",
        "-c",
        "INSERT INTO p VALUES (1, 'one', '2024-01-02 03:04:05'), (2, NULL, NULL)",
        "-At",
        "-c",
        "SELECT id, coalesce(name, '-'), at FROM p ORDER BY id",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1|one|2024-01-02 03:04:05\n2|-|\n"),
        "{stdout}"
    );

    let out = node.psql(&[
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "INSERT INTO p VALUES (1, 'dup', NULL)",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("duplicate key value violates unique constraint \"p_pkey\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_rpc_port_does_not_harm_the_node() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::start();
    for payload in [
        &b"\x00\x00\x00\x05hello"[..],
        &b"\xff\xff\xff\xff"[..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(node.rpc_addr())
            .await
            .unwrap();
        let _ = s.write_all(payload).await;
        drop(s);
    }
    // A client speaking another protocol version is refused with a clear error.
    let c = node.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
    let client = Client::connect(&node.rpc_addr(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(
        client.call(Request::Status).await.unwrap(),
        Response::Status(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_node_cleanly() {
    let mut node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let status = node.interrupt();
    assert_shut_down_cleanly(&node, status);
    node.restart();
    let c = node.connect().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// `--lock-timeout-ms` bounds a lock wait: an older reader waits for a younger writer's row
/// (wait-die lets the older one wait) and gives up with 55P03 (lock_not_available, as
/// PostgreSQL's lock_timeout) once the timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gives_up_after_the_lock_timeout_set_by_the_flag() {
    let node = TestNode::start_with(&["--lock-timeout-ms", "400"]);
    let setup = node.connect().await;
    setup
        .batch_execute("CREATE TABLE r (id INT PRIMARY KEY, v INT); INSERT INTO r VALUES (1, 0)")
        .await
        .unwrap();
    let reader = node.connect().await;
    let writer = node.connect().await;
    reader.batch_execute("BEGIN").await.unwrap();
    writer
        .batch_execute("BEGIN; UPDATE r SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        reader.query_one("SELECT v FROM r WHERE id = 1", &[]),
    )
    .await
    .expect("the reader waited past its lock timeout")
    .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(sqlstate(&err).as_deref(), Some("55P03"), "{err}");
    let message = err.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("within 400 ms")),
        "{message:?}"
    );
    assert!(
        waited >= Duration::from_millis(400),
        "gave up after {waited:?}, before the timeout"
    );
    reader.batch_execute("ROLLBACK").await.unwrap();
    writer.batch_execute("COMMIT").await.unwrap();
    let v: i32 = reader
        .query_one("SELECT v FROM r WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
}

/// Shutdown lets a running statement finish, then rolls back the open transactions: a
/// statement blocked on another transaction's row when SIGTERM arrives completes (the other
/// transaction, idle, is rolled back and lets go of the row), and its own transaction is then
/// rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_running_statement_and_rolls_back_open_transactions() {
    let mut node = TestNode::start_with(&["--lock-timeout-ms", "60000"]);
    let setup = node.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE r (id INT PRIMARY KEY, v TEXT); INSERT INTO r VALUES (0, 'kept')",
        )
        .await
        .unwrap();
    // The older transaction, so that it waits for the younger one (wait-die).
    let running = node.connect().await;
    running.batch_execute("BEGIN").await.unwrap();
    let idle = node.connect().await;
    idle.batch_execute("BEGIN; INSERT INTO r VALUES (1, 'idle')")
        .await
        .unwrap();
    let before = locks_held(&node).await;
    let statement = tokio::spawn(async move {
        // Locks row 2 (a resource nobody held), then waits for row 1.
        let r = running
            .execute("INSERT INTO r VALUES (2, 'running'), (1, 'running')", &[])
            .await;
        (running, r)
    });
    // The statement is running once it holds row 2.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while locks_held(&node).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the statement never started"
        );
        assert!(!statement.is_finished(), "the statement did not wait");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!statement.is_finished(), "the statement did not wait");

    let status = tokio::task::block_in_place(|| node.terminate());
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        node.log_tail()
    );
    let (_, r) = tokio::time::timeout(Duration::from_secs(30), statement)
        .await
        .expect("the running statement hung")
        .unwrap();
    assert_eq!(
        r.expect("the statement running at shutdown was cut short"),
        2
    );

    node.restart();
    let c = node.connect().await;
    let rows: Vec<(i32, String)> = c
        .query("SELECT id, v FROM r ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![(0, "kept".to_string())],
        "open transactions were rolled back"
    );
}

/// The node exited 0 and says in its log that it shut down cleanly.
fn assert_shut_down_cleanly(node: &TestNode, status: std::process::ExitStatus) {
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        node.log_tail()
    );
    assert!(
        node.log_tail().contains("shut down cleanly"),
        "{}",
        node.log_tail()
    );
}

/// A node killed while it builds its store on its very first start starts the next time, with
/// a store built again. Needs the crash points (`--features failpoints`).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_its_first_start_starts_again() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let ports = common::free_ports(2);
    let mut child = std::process::Command::new(common::ddb_bin())
        .arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--sql-listen", &format!("127.0.0.1:{}", ports[1])])
        .env("FAILPOINTS", "store-before-publish=return")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node did not crash at store-before-publish");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status.signal(),
        Some(9),
        "killed at the crash point: {status:?}"
    );
    assert!(dir.join("store.new").exists() && !dir.join("store").exists());

    let mut node = TestNode::start_at(&dir, &[]);
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    drop(c);
    node.kill();
    let node = TestNode::start_at(&dir, &[]);
    let rows = node
        .connect()
        .await
        .query("SELECT k FROM t", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!dir.join("store.new").exists());
}
