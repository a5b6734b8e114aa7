//! Results stream (DESIGN §9): a large `SELECT` costs a gateway and a shard a bounded amount
//! of memory, rows arrive right across the batches a scan is read in, and a client that stops
//! reading past the send timeout loses its connection, its transaction and its locks.
//!
//! Memory is read from `/proc/PID/status` (VmRSS) of the real server processes while the query
//! runs; the bound is generous (64 MB for 20 MB of rows), so it is not a timing assertion: the
//! old path, which held the whole result on the shard, the gateway and in pgwire's response,
//! grew by several times the result.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, TestCluster, TestNode};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// ~100 bytes a row: two BIGINTs and 80 characters.
const PAD: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Creates `t` on the node at `port` and fills it with `rows` rows, 1,000 to a statement, over
/// four connections at once. The table has no primary key (rows get a generated row id), which
/// spares the load a uniqueness read per row.
async fn load(port: u16, rows: i64) {
    connect(port)
        .await
        .batch_execute("CREATE TABLE t (id BIGINT, n BIGINT, pad TEXT)")
        .await
        .expect("create table");
    let mut tasks = Vec::new();
    for w in 0..4 {
        tasks.push(tokio::spawn(async move {
            let client = connect(port).await;
            let mut id = w * 1000;
            while id < rows {
                let end = (id + 1000).min(rows);
                let values: Vec<String> = (id..end)
                    .map(|i| format!("({i}, {}, '{PAD}')", i % 97))
                    .collect();
                client
                    .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
                    .await
                    .expect("insert");
                id += 4000;
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader");
    }
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    rss_kib_if_alive(pid).expect("VmRSS of a running process")
}

/// The resident set of a process, in KiB, if it still runs.
fn rss_kib_if_alive(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the resident sets of `pids` every 5 ms until stopped; gives the largest of each.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(pids: Vec<i32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // A process that has exited (a CLI at its end) keeps the peak it had.
            let mut peak: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
            while !flag.load(Ordering::Relaxed) {
                for (i, p) in pids.iter().enumerate() {
                    peak[i] = peak[i].max(rss_kib_if_alive(*p).unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// Reads `SELECT * FROM t` with the extended protocol as a stream, counting the rows.
async fn count_streamed(client: &tokio_postgres::Client) -> usize {
    let rows = client
        .query_raw("SELECT * FROM t", std::iter::empty::<i64>())
        .await
        .expect("select");
    futures::pin_mut!(rows);
    let mut n = 0;
    while let Some(row) = rows.next().await {
        row.expect("row");
        n += 1;
    }
    n
}

/// Reads `SELECT * FROM t` with the simple protocol, counting the rows.
async fn count_simple(client: &tokio_postgres::Client) -> usize {
    client
        .simple_query("SELECT * FROM t")
        .await
        .expect("select")
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count()
}

const MEMORY_ROWS: i64 = 200_000;
const BOUND_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_of_200k_rows_grows_the_gateway_and_the_shard_by_less_than_64_mb() {
    let cluster = TestCluster::new("stream-memory", 2);
    cluster.init();
    let client = connect(cluster.sql_port("n1")).await;
    let t0 = Instant::now();
    load(cluster.sql_port("n1"), MEMORY_ROWS).await;
    eprintln!("loaded {MEMORY_ROWS} rows in {:?}", t0.elapsed());
    let pids = vec![
        cluster.pid("n1").expect("n1 runs"),
        cluster.pid("n2").expect("n2 runs"),
    ];
    for (protocol, simple) in [("extended", false), ("simple", true)] {
        let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
        let sampler = Sampler::start(pids.clone());
        let n = if simple {
            count_simple(&client).await
        } else {
            count_streamed(&client).await
        };
        let peak = sampler.finish();
        assert_eq!(n, MEMORY_ROWS as usize, "{protocol} protocol");
        for (i, who) in ["gateway n1", "shard n2"].iter().enumerate() {
            let growth = peak[i].saturating_sub(before[i]);
            eprintln!(
                "{protocol}: {who} {} KiB before, {} KiB peak",
                before[i], peak[i]
            );
            assert!(
                growth < BOUND_KIB,
                "{protocol} protocol: the {who} grew by {growth} KiB during a SELECT of {MEMORY_ROWS} rows"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stream_right_across_scan_batches_on_every_shard() {
    let cluster = TestCluster::new("stream-batches", 2);
    cluster.init();
    load(cluster.sql_port("n1"), 5000).await;
    let client = connect(cluster.sql_port("n1")).await;
    let one = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0)
        }
    };
    assert_eq!(one("SELECT count(*) FROM t").await, 5000);
    assert_eq!(one("SELECT sum(id) FROM t").await, 4999 * 5000 / 2);
    assert_eq!(one("SELECT count(*) FROM t WHERE n = 3").await, 52);
    assert_eq!(
        client.query("SELECT * FROM t", &[]).await.unwrap().len(),
        5000
    );
    assert_eq!(
        client
            .query("SELECT id FROM t LIMIT 7", &[])
            .await
            .unwrap()
            .len(),
        7
    );
    let ids: Vec<i64> = client
        .query("SELECT id FROM t ORDER BY id OFFSET 2990 LIMIT 20", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, (2990..3010).collect::<Vec<i64>>());
    let ids: Vec<i64> = client
        .query("SELECT id FROM t WHERE n = 5 ORDER BY id DESC", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = (0..5000).rev().filter(|i| i % 97 == 5).collect();
    assert_eq!(ids, expected);
    let skipped = client
        .query("SELECT id FROM t WHERE n < 50 OFFSET 2000", &[])
        .await
        .unwrap()
        .len();
    let passing = (0..5000).filter(|i| i % 97 < 50).count();
    assert_eq!(skipped, passing - 2000);

    // Inside a block, the scan sees the block's own writes wherever they fall in its batches.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("DELETE FROM t WHERE n = 1")
        .await
        .unwrap();
    let values: Vec<String> = (5000..7500).map(|i| format!("({i}, 1000, 'x')")).collect();
    client
        .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let deleted = (0..5000).filter(|i| i % 97 == 1).count() as i64;
    assert_eq!(one("SELECT count(*) FROM t").await, 7500 - deleted);
    assert_eq!(
        client.query("SELECT * FROM t", &[]).await.unwrap().len() as i64,
        7500 - deleted
    );
    assert_eq!(one("SELECT count(*) FROM t WHERE n = 1000").await, 2500);
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one("SELECT count(*) FROM t").await, 5000);
}

/// A PostgreSQL client that speaks just enough of the protocol to start a session and send
/// queries, with a small receive buffer, so that it can stop reading.
struct RawClient {
    socket: tokio::net::TcpStream,
}

impl RawClient {
    async fn connect(port: u16) -> Self {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let socket = sock
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        let mut client = RawClient { socket };
        let mut body = Vec::new();
        body.extend_from_slice(&196_608u32.to_be_bytes());
        for s in ["user", "ddb", "database", "ddb"] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend(body);
        client.socket.write_all(&msg).await.expect("startup");
        client.until_ready().await;
        client
    }

    /// Reads messages up to and including `ReadyForQuery`.
    async fn until_ready(&mut self) {
        loop {
            let kind = self.socket.read_u8().await.expect("message type");
            let len = self.socket.read_u32().await.expect("message length") as usize;
            let mut body = vec![0; len.saturating_sub(4)];
            self.socket.read_exact(&mut body).await.expect("message");
            assert_ne!(kind, b'E', "error: {}", String::from_utf8_lossy(&body));
            if kind == b'Z' {
                return;
            }
        }
    }

    async fn send_query(&mut self, sql: &str) {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.socket.write_all(&msg).await.expect("query");
    }

    /// Reads whatever the server sent until it closes the connection, or `deadline` passes.
    async fn closed_by_server(&mut self, deadline: Duration) -> bool {
        let mut buf = vec![0; 64 * 1024];
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection_and_its_locks_after_the_send_timeout() {
    let node = TestNode::start_with(&["--send-timeout-ms", "1500", "--lock-timeout-ms", "15000"]);
    load(node.sql_port, MEMORY_ROWS).await;
    let client = node.connect().await;

    // A transaction that reads the whole table (taking its shared lock) and never reads the
    // answer: far more than the socket buffers hold, so the server's writes stop.
    let mut stalled = RawClient::connect(node.sql_port).await;
    stalled.send_query("BEGIN").await;
    stalled.until_ready().await;
    stalled.send_query("SELECT * FROM t").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A writer on the same table waits for that lock: it gets it once the stalled connection
    // is closed and its transaction rolled back, well within its 15 s lock timeout.
    let started = Instant::now();
    client
        .batch_execute(&format!("INSERT INTO t VALUES (-1, 0, '{PAD}')"))
        .await
        .expect("the writer is not blocked forever by a client that stopped reading");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "the writer waited {waited:?}"
    );
    assert!(
        stalled.closed_by_server(Duration::from_secs(30)).await,
        "the server kept the stalled connection open"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, MEMORY_ROWS + 1);
    assert!(
        node.log_tail().contains("stopped reading"),
        "the node log does not say why it closed the connection:\n{}",
        node.log_tail()
    );
}

/// The same over the RPC port: a `ddb query` whose output nobody reads (its stdout a pipe
/// left full) stops reading the node's frames, and past the send timeout the node closes its
/// connection, rolling back its transaction, so a writer waiting for its lock goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_ddb_query_nobody_reads_loses_its_connection_and_its_locks_after_the_send_timeout() {
    let node = TestNode::start_with(&["--send-timeout-ms", "1500", "--lock-timeout-ms", "15000"]);
    load(node.sql_port, MEMORY_ROWS).await;
    let client = node.connect().await;

    let mut stalled = std::process::Command::new(common::ddb_bin())
        .args(["--addr", &node.rpc_addr(), "query", "--format", "tsv"])
        .arg("BEGIN; SELECT * FROM t; COMMIT")
        .env_remove("DDB_CONFIG")
        .env_remove("DDB_FORMAT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ddb query");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    client
        .batch_execute(&format!("INSERT INTO t VALUES (-1, 0, '{PAD}')"))
        .await
        .expect("the writer is not blocked forever by a ddb query nobody reads");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "the writer waited {waited:?}"
    );
    assert!(
        node.log_tail().contains("read nothing for 1500 ms"),
        "the node log does not say why it closed the connection:\n{}",
        node.log_tail()
    );
    let _ = stalled.kill();
    let _ = stalled.wait();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, MEMORY_ROWS + 1);
}

/// Fetches `sql` through a portal `max_rows` at a time inside `txn`, returning the first
/// column of every row, and how many fetches it took.
async fn fetch_all(
    txn: &tokio_postgres::Transaction<'_>,
    sql: &str,
    max_rows: i32,
) -> (Vec<i64>, usize) {
    let portal = txn.bind(sql, &[]).await.expect("bind");
    let mut ids = Vec::new();
    let mut fetches = 0;
    loop {
        let rows = txn.query_portal(&portal, max_rows).await.expect("fetch");
        fetches += 1;
        assert!(
            rows.len() <= max_rows as usize,
            "a fetch gave more rows than asked"
        );
        ids.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        if rows.len() < max_rows as usize {
            return (ids, fetches);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_limited_portal_streams_200k_rows_a_thousand_at_a_time_in_bounded_memory() {
    let cluster = TestCluster::new("stream-portal", 2);
    cluster.init();
    load(cluster.sql_port("n1"), MEMORY_ROWS).await;
    let mut client = connect(cluster.sql_port("n1")).await;
    let pids = vec![
        cluster.pid("n1").expect("n1 runs"),
        cluster.pid("n2").expect("n2 runs"),
    ];
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let sampler = Sampler::start(pids.clone());
    let txn = client.transaction().await.expect("begin");
    let (mut ids, fetches) = fetch_all(&txn, "SELECT * FROM t", 1000).await;
    let peak = sampler.finish();
    txn.commit().await.expect("commit");
    assert_eq!(ids.len(), MEMORY_ROWS as usize);
    assert_eq!(fetches, MEMORY_ROWS as usize / 1000 + 1);
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..MEMORY_ROWS).collect::<Vec<i64>>(),
        "every row once"
    );
    for (i, who) in ["gateway n1", "shard n2"].iter().enumerate() {
        let growth = peak[i].saturating_sub(before[i]);
        eprintln!(
            "portal (1000 rows a fetch): {who} {} KiB before, {} KiB peak",
            before[i], peak[i]
        );
        assert!(
            growth < BOUND_KIB,
            "the {who} grew by {growth} KiB during a portal fetch of {MEMORY_ROWS} rows"
        );
    }

    // In order where the query says so, across fetches of an odd size.
    let txn = client.transaction().await.expect("begin");
    let (ids, _) = fetch_all(&txn, "SELECT id FROM t WHERE n = 7 ORDER BY id DESC", 333).await;
    let expected: Vec<i64> = (0..MEMORY_ROWS).rev().filter(|i| i % 97 == 7).collect();
    assert_eq!(ids, expected);
    txn.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_portals_interleave_in_one_transaction_and_end_with_it() {
    let node = TestNode::start();
    load(node.sql_port, 5000).await;
    let mut client = node.connect().await;
    let txn = client.transaction().await.expect("begin");
    let up = txn.bind("SELECT id FROM t ORDER BY id", &[]).await.unwrap();
    let all = txn.bind("SELECT id, n FROM t", &[]).await.unwrap();
    let (mut ups, mut alls) = (Vec::new(), Vec::new());
    let (mut up_done, mut all_done) = (false, false);
    let mut round = 0;
    while !(up_done && all_done) {
        if !up_done {
            let rows = txn.query_portal(&up, 700).await.expect("fetch up");
            up_done = rows.len() < 700;
            ups.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        if !all_done {
            let rows = txn.query_portal(&all, 450).await.expect("fetch all");
            all_done = rows.len() < 450;
            alls.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        // A statement of its own between the fetches, in the same transaction.
        if round == 2 {
            let n: i64 = txn
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 5000);
        }
        round += 1;
    }
    assert_eq!(
        ups,
        (0..5000).collect::<Vec<i64>>(),
        "in order, every row once"
    );
    alls.sort_unstable();
    assert_eq!(alls, (0..5000).collect::<Vec<i64>>(), "every row once");
    // A fetched-out portal gives nothing more.
    assert!(txn.query_portal(&up, 10).await.unwrap().is_empty());

    // A portal left half-read ends with its transaction: the commit does not wait for it, and
    // the connection goes on.
    let half = txn.bind("SELECT id FROM t", &[]).await.unwrap();
    assert_eq!(txn.query_portal(&half, 100).await.unwrap().len(), 100);
    txn.commit().await.expect("commit with a portal open");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5000);

    // A failed statement in the block ends its portals too.
    let txn = client.transaction().await.expect("begin");
    let open = txn.bind("SELECT id FROM t", &[]).await.unwrap();
    assert_eq!(txn.query_portal(&open, 10).await.unwrap().len(), 10);
    let e = txn
        .batch_execute("SELECT * FROM nowhere")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e).as_deref(), Some("42P01"));
    let e = txn.query_portal(&open, 10).await.unwrap_err();
    eprintln!("fetch after the failure: {e}");
    assert!(
        common::sqlstate(&e).is_some(),
        "a fetch from a failed block is an error"
    );
    txn.rollback().await.expect("rollback");
    assert_eq!(
        client
            .query("SELECT id FROM t LIMIT 3", &[])
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Starts `ddb query --format tsv SQL` against the cluster, with its stdout and stderr piped.
fn ddb_query(cluster: &TestCluster, sql: &str) -> std::process::Child {
    std::process::Command::new(common::ddb_bin())
        .args(["query", "--format", "tsv", sql])
        .env("DDB_CONFIG", &cluster.config)
        .env_remove("DDB_ADDR")
        .env_remove("DDB_FORMAT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ddb query")
}

/// The resources locked on a node right now (its status over RPC).
async fn locks_on(cluster: &TestCluster, node: &str) -> u64 {
    let client = ddb::client::Client::connect(&cluster.rpc_addr(node), Duration::from_secs(3))
        .await
        .expect("connect");
    match client.call(ddb::protocol::Request::Status).await {
        Ok(ddb::protocol::Response::Status(s)) => s.locks,
        other => panic!("status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddb_query_streams_a_large_result_and_stops_when_its_reader_goes() {
    use std::io::{BufRead, Read};

    let cluster = TestCluster::new("stream-cli", 2);
    cluster.init();
    load(cluster.sql_port("n1"), MEMORY_ROWS).await;
    let client = connect(cluster.sql_port("n1")).await;
    client
        .batch_execute("CREATE TABLE marker (id BIGINT PRIMARY KEY)")
        .await
        .expect("create marker");
    let nodes = [
        cluster.pid("n1").expect("n1 runs"),
        cluster.pid("n2").expect("n2 runs"),
    ];

    // Every row once through a pipe, in bounded memory on the nodes and in the CLI.
    let before: Vec<u64> = nodes.iter().map(|p| rss_kib(*p)).collect();
    let mut child = ddb_query(&cluster, "SELECT * FROM t");
    let cli = child.id() as i32;
    let sampler = Sampler::start(vec![nodes[0], nodes[1], cli]);
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map(|l| l.expect("a line of output"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("reader");
    let status = child.wait().expect("ddb query exits");
    let peak = sampler.finish();
    assert!(status.success(), "ddb query failed: {status}");
    assert_eq!(lines[0], "id\tn\tpad");
    assert_eq!(
        lines.len(),
        MEMORY_ROWS as usize + 1,
        "the header and every row"
    );
    let mut ids: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.split('\t').next().unwrap().parse().expect("an id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..MEMORY_ROWS).collect::<Vec<i64>>(),
        "every row once"
    );
    eprintln!("ddb query: the CLI peaked at {} KiB", peak[2]);
    assert!(peak[2] < BOUND_KIB, "the CLI reached {} KiB", peak[2]);
    for (i, who) in ["gateway n1", "shard n2"].iter().enumerate() {
        let growth = peak[i].saturating_sub(before[i]);
        eprintln!(
            "ddb query: {who} {} KiB before, {} KiB peak",
            before[i], peak[i]
        );
        assert!(
            growth < BOUND_KIB,
            "the {who} grew by {growth} KiB while ddb query printed {MEMORY_ROWS} rows"
        );
    }

    // A statement that fails after rows were printed: the rows stay, then exit 6 with the
    // SQLSTATE.
    let out = ddb_query(&cluster, "SELECT id FROM t WHERE id < 5000; SELECT 1 / 0")
        .wait_with_output()
        .expect("ddb query");
    let printed = String::from_utf8_lossy(&out.stdout).lines().count();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert_eq!(printed, 5001, "the first statement's rows are printed");
    assert!(stderr.contains("22012"), "{stderr}");
    assert!(stderr.contains("statement 2 failed"), "{stderr}");
    let out = ddb_query(&cluster, "SELECT id, 100 / (id - 123456) FROM t")
        .wait_with_output()
        .expect("ddb query");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("22012"), "{stderr}");
    eprintln!(
        "ddb query: {} rows printed before division by zero",
        String::from_utf8_lossy(&out.stdout).lines().count()
    );

    // A reader that goes away after ten lines: the command ends quietly, and the node stops
    // the request (the statement after the SELECT never runs).
    let mut child = ddb_query(
        &cluster,
        "BEGIN; SELECT * FROM t; INSERT INTO marker VALUES (1); COMMIT",
    );
    let stdout = child.stdout.take().expect("stdout");
    tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        for _ in 0..10 {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a line");
        }
        // Dropping the reader closes the pipe, as `head` does.
    })
    .await
    .expect("reader");
    let status = child.wait().expect("ddb query exits");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Its transaction goes with its connection: the locks it held are released.
    let deadline = Instant::now() + Duration::from_secs(30);
    while locks_on(&cluster, "n1").await + locks_on(&cluster, "n2").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the locks of the closed query stay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "the node went on with the request after its reader left"
    );
}
