//! The bank test: transfers across three shards under `kill -9`.
//!
//! 30 accounts spread over 3 shards; clients do random transfers over the PostgreSQL
//! protocol (`BEGIN; UPDATE; UPDATE; INSERT INTO ledger; COMMIT`) while 2 others read
//! `SELECT sum(balance)`. Meanwhile nodes are killed with SIGKILL and restarted, including the
//! gateways the clients use; a client whose node dies reconnects to another one. A transfer
//! that was definitely rolled back (an error before COMMIT, or an error with any SQLSTATE but
//! 40003 at COMMIT) is retried as a new transfer; one whose outcome is unknown (40003, or the
//! connection lost during COMMIT) is not. Each kill waits for the cluster to have made
//! progress since the last restart.
//!
//! Two clusters: three nodes of one copy each, any of them killed (the kills must leave
//! transactions in doubt, all resolved); and three shards of two copies (DESIGN §6.1, `sync`),
//! where every shard's replica is killed, leaves the in-sync set while its shard's writes go
//! on, is restarted and rejoins, and one primary is killed (no promotion yet: its shard's
//! transfers fail until it is back, none begun while it is down is acknowledged).
//!
//! At the end: every reader saw the right total, the total is conserved, nothing is in doubt
//! or locked, and the ledger matches the balances exactly: every acknowledged transfer is in it
//! with its accounts and amount, none that failed with a definite error is, and it holds no
//! transfer that was never attempted. With copies, each replica holds exactly its primary's
//! rows (the same applied LSN, row count and checksum).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{same_copy, sqlstate, status_of, try_connect, wait_until, TestCluster};

const ACCOUNTS_PER_SHARD: usize = 10;
const INITIAL: i64 = 1000;
const WRITERS: u64 = 8;
const READERS: usize = 2;
/// No statement may take longer than this: nothing hangs, even across crashes.
const STATEMENT_LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Outcomes {
    /// Transfers whose COMMIT was acknowledged: id → (src, dst, amount).
    committed: BTreeMap<i64, (i64, i64, i64)>,
    /// When each acknowledged transfer sent its BEGIN and when its COMMIT was answered.
    acked_at: BTreeMap<i64, (Instant, Instant)>,
    /// Transfers that definitely did not commit (failed before COMMIT, or at COMMIT with
    /// anything but 40003 or a lost connection): id → (src, dst, amount).
    failed: BTreeMap<i64, (i64, i64, i64)>,
    /// Transfers whose outcome the client could not know.
    unknown: BTreeSet<i64>,
    /// Why outcomes were unknown, and a few reasons for rollbacks (printed at the end).
    reasons: Vec<String>,
}

/// A tiny deterministic generator (the test must not depend on a random crate's versions).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Step {
    /// Definitely rolled back: safe to retry.
    RolledBack(String),
    /// The commit's outcome is unknown.
    Unknown(String),
    Committed,
}

async fn statement(c: &tokio_postgres::Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    match tokio::time::timeout(STATEMENT_LIMIT, c.batch_execute(sql)).await {
        Ok(r) => r,
        Err(_) => panic!("statement hung for {STATEMENT_LIMIT:?}: {sql}"),
    }
}

async fn transfer(c: &tokio_postgres::Client, id: i64, src: i64, dst: i64, amount: i64) -> Step {
    let body = [
        "BEGIN".to_string(),
        format!("UPDATE accounts SET balance = balance - {amount} WHERE id = {src}"),
        format!("UPDATE accounts SET balance = balance + {amount} WHERE id = {dst}"),
        format!("INSERT INTO ledger VALUES ({id}, {src}, {dst}, {amount})"),
    ];
    for sql in &body {
        if let Err(e) = statement(c, sql).await {
            let _ = tokio::time::timeout(STATEMENT_LIMIT, c.batch_execute("ROLLBACK")).await;
            return Step::RolledBack(format!("{sql}: {}", describe(&e)));
        }
    }
    match statement(c, "COMMIT").await {
        Ok(()) => Step::Committed,
        // The outcome is unknown only when the server says so, or cannot say anything.
        Err(e) if sqlstate(&e).as_deref() == Some("40003") || e.as_db_error().is_none() => {
            Step::Unknown(describe(&e))
        }
        Err(e) => Step::RolledBack(format!("COMMIT: {}", describe(&e))),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn connect_any(ports: &[u16], start: usize) -> (tokio_postgres::Client, usize) {
    for attempt in 0.. {
        let i = (start + attempt) % ports.len();
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), try_connect(ports[i])).await
        {
            return (c, i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(attempt < 2000, "no node accepted a connection for too long");
    }
    unreachable!()
}

async fn writer(
    n: u64,
    ports: Vec<u16>,
    accounts: Arc<Vec<i64>>,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let (mut c, mut at) = connect_any(&ports, n as usize).await;
    let mut seq = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let src = accounts[rng.below(accounts.len() as u64) as usize];
        let mut dst = src;
        while dst == src {
            dst = accounts[rng.below(accounts.len() as u64) as usize];
        }
        let amount = 1 + rng.below(50) as i64;
        // Retry the same transfer (under a new ledger id) until it commits or its outcome is
        // unknown.
        loop {
            seq += 1;
            let id = n as i64 * 1_000_000 + seq;
            let began = Instant::now();
            let step = transfer(&c, id, src, dst, amount).await;
            let done = {
                let mut o = outcomes.lock().unwrap();
                match step {
                    Step::Committed => {
                        o.committed.insert(id, (src, dst, amount));
                        o.acked_at.insert(id, (began, Instant::now()));
                        true
                    }
                    Step::Unknown(why) => {
                        o.unknown.insert(id);
                        o.reasons.push(format!("unknown: {why}"));
                        true
                    }
                    Step::RolledBack(why) => {
                        o.failed.insert(id, (src, dst, amount));
                        if o.failed.len() % 500 == 1 {
                            o.reasons.push(format!("rolled back: {why}"));
                        }
                        false
                    }
                }
            };
            if done {
                break;
            }
            if c.is_closed() {
                (c, at) = connect_any(&ports, at + 1).await;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if c.is_closed() {
            (c, at) = connect_any(&ports, at + 1).await;
        }
    }
}

/// Reads the total until stopped; returns (reads that succeeded, totals that were wrong).
async fn reader(n: usize, ports: Vec<u16>, total: i64, stop: Arc<AtomicBool>) -> (u64, Vec<i64>) {
    let (mut c, mut at) = connect_any(&ports, n).await;
    let (mut reads, mut wrong) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let q = tokio::time::timeout(
            STATEMENT_LIMIT,
            c.query_one("SELECT sum(balance) FROM accounts", &[]),
        )
        .await
        .expect("a sum hung");
        match q {
            Ok(row) => {
                reads += 1;
                let sum: i64 = row.get(0);
                if sum != total {
                    eprintln!(
                        "reader {n} through port {} saw {sum} at {:?}",
                        ports[at % ports.len()],
                        std::time::SystemTime::now()
                    );
                    wrong.push(sum);
                }
            }
            Err(_) if c.is_closed() => (c, at) = connect_any(&ports, at + 1).await,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (reads, wrong)
}

/// A bank on a running cluster: its accounts, their total, and the load that moves money
/// between them (writers and readers spread over the gateways `ports`).
struct Bank {
    ports: Vec<u16>,
    accounts: Arc<Vec<i64>>,
    total: i64,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    readers: Vec<tokio::task::JoinHandle<(u64, Vec<i64>)>>,
}

impl Bank {
    /// Creates the tables, gives every account `INITIAL`, and starts `writers` writers (the
    /// n-th first connects to gateway n, modulo their number) and `READERS` readers.
    async fn open(ports: Vec<u16>, accounts: Vec<i64>, writers: u64) -> Bank {
        let total = INITIAL * accounts.len() as i64;
        {
            let (c, _) = connect_any(&ports, 0).await;
            c.batch_execute(
                "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL); \
                 CREATE TABLE ledger (id BIGINT PRIMARY KEY, src BIGINT NOT NULL, dst BIGINT NOT NULL, amount BIGINT NOT NULL)",
            )
            .await
            .unwrap();
            let values: Vec<String> = accounts
                .iter()
                .map(|a| format!("({a}, {INITIAL})"))
                .collect();
            c.batch_execute(&format!(
                "INSERT INTO accounts VALUES {}",
                values.join(", ")
            ))
            .await
            .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let accounts = Arc::new(accounts);
        let writers = (0..writers)
            .map(|n| {
                tokio::spawn(writer(
                    n,
                    ports.clone(),
                    accounts.clone(),
                    stop.clone(),
                    outcomes.clone(),
                ))
            })
            .collect();
        let readers = (0..READERS)
            .map(|n| tokio::spawn(reader(n, ports.clone(), total, stop.clone())))
            .collect();
        Bank {
            ports,
            accounts,
            total,
            stop,
            outcomes,
            writers,
            readers,
        }
    }

    /// Acknowledged transfers that touch one of `accounts`.
    fn committed_touching(&self, accounts: &[i64]) -> usize {
        let o = self.outcomes.lock().unwrap();
        touching(o.committed.values(), accounts)
    }

    /// Attempts that touched one of `accounts` and were definitely rolled back.
    fn failed_touching(&self, accounts: &[i64]) -> usize {
        let o = self.outcomes.lock().unwrap();
        touching(o.failed.values(), accounts)
    }

    /// Waits until `more` transfers touching one of `accounts` have been acknowledged since
    /// the call (60 s at most).
    async fn progress_on(&self, accounts: &[i64], more: usize) {
        let from = self.committed_touching(accounts);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.committed_touching(accounts);
            if now >= from + more {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress: {} of {more} transfers committed after 60 s",
                now - from
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `more` transfers have been acknowledged since the call (60 s at most).
    async fn progress(&self, more: usize) {
        let all = self.accounts.clone();
        self.progress_on(&all, more).await;
    }

    /// Stops the load; asserts that every reader saw the right total; the sums read.
    async fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers.drain(..) {
            w.await.expect("a writer panicked");
        }
        let mut reads = 0;
        for r in self.readers.drain(..) {
            let (n, wrong) = r.await.expect("a reader panicked");
            assert!(
                wrong.is_empty(),
                "a reader saw wrong totals: {wrong:?} (want {})",
                self.total
            );
            reads += n;
        }
        reads
    }

    /// With the load stopped: the total is conserved, nothing is locked, the ledger explains
    /// every balance, every acknowledged transfer is in it with its accounts and amount, none
    /// that failed definitely is, and it holds no transfer that was never attempted.
    async fn check(&self, reads: u64) {
        let (c, _) = connect_any(&self.ports, 0).await;
        let sum: i64 = c
            .query_one("SELECT sum(balance) FROM accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sum, self.total, "the total is conserved");
        // No lock remains anywhere: one statement that writes every account, and one that
        // writes every ledger row, commit at once (a lock left behind would fail them after
        // the lock timeout).
        statement(&c, "UPDATE accounts SET balance = balance")
            .await
            .unwrap();
        statement(&c, "UPDATE ledger SET amount = amount")
            .await
            .unwrap();

        let mut balances: BTreeMap<i64, i64> = BTreeMap::new();
        for row in c
            .query("SELECT id, balance FROM accounts", &[])
            .await
            .unwrap()
        {
            balances.insert(row.get(0), row.get(1));
        }
        let mut expected: BTreeMap<i64, i64> =
            self.accounts.iter().map(|&a| (a, INITIAL)).collect();
        let mut ledger = BTreeMap::new();
        for row in c
            .query("SELECT id, src, dst, amount FROM ledger", &[])
            .await
            .unwrap()
        {
            let (id, src, dst, amount): (i64, i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            ledger.insert(id, (src, dst, amount));
            *expected.get_mut(&src).expect("ledger names an account") -= amount;
            *expected.get_mut(&dst).expect("ledger names an account") += amount;
        }
        assert_eq!(
            balances, expected,
            "the ledger explains every balance exactly"
        );

        let o = self.outcomes.lock().unwrap();
        let wrong: Vec<_> = o
            .committed
            .iter()
            .filter(|(id, t)| ledger.get(id) != Some(t))
            .map(|(id, t)| (id, t, ledger.get(id)))
            .collect();
        assert!(
            wrong.is_empty(),
            "acknowledged transfers lost or changed, (id, sent, in the ledger): {wrong:?}"
        );
        let phantom: Vec<_> = o
            .failed
            .keys()
            .filter(|id| ledger.contains_key(id))
            .collect();
        assert!(
            phantom.is_empty(),
            "transfers that failed definitely were applied: {phantom:?}"
        );
        let never: Vec<_> = ledger
            .keys()
            .filter(|id| {
                !o.committed.contains_key(id)
                    && !o.unknown.contains(id)
                    && !o.failed.contains_key(id)
            })
            .collect();
        assert!(never.is_empty(), "ledger rows never attempted: {never:?}");
        let unknown_applied = o
            .unknown
            .iter()
            .filter(|id| ledger.contains_key(id))
            .count();
        eprintln!(
            "bank: {} committed, {} rolled back and retried, {} unknown ({} of them applied), {reads} consistent sums",
            o.committed.len(),
            o.failed.len(),
            o.unknown.len(),
            unknown_applied
        );
        for r in &o.reasons {
            eprintln!("  {r}");
        }
        assert!(
            o.committed.len() > 50,
            "too little work got done to mean anything"
        );
        assert!(reads > 10, "too few sums were read");
    }
}

/// How many of `transfers` move money from or to one of `accounts`.
fn touching<'a>(transfers: impl Iterator<Item = &'a (i64, i64, i64)>, accounts: &[i64]) -> usize {
    transfers
        .filter(|(src, dst, _)| accounts.contains(src) || accounts.contains(dst))
        .count()
}

/// Runs `f` on the cluster off the async threads (the CLI and `kill` block).
async fn blocking<T: Send + 'static>(
    cluster: &Arc<TestCluster>,
    f: impl FnOnce(&TestCluster) -> T + Send + 'static,
) -> T {
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || f(&c))
        .await
        .expect("a blocking step panicked")
}

/// Waits until no node has a transaction in doubt (every node of `cluster` up, 30 s at most).
async fn assert_all_resolved(cluster: &Arc<TestCluster>) {
    let resolved = blocking(cluster, |c| {
        wait_until(Duration::from_secs(30), || {
            let (_, status) = c.status();
            status.iter().all(|n| n["prepared"] == 0)
        })
    })
    .await;
    assert!(
        resolved,
        "transactions stayed prepared:\n{}",
        cluster.logs()
    );
}

const ENV: [(&str, &str); 2] = [
    ("DDB_PREPARED_TIMEOUT_MS", "500"),
    ("DDB_LOCK_TIMEOUT_MS", "2000"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_across_shards_survive_kill_9_of_any_node() {
    let cluster = Arc::new(TestCluster::new("bank", 3));
    cluster.init_env(&ENV);
    let mut accounts = Vec::new();
    for node in ["n1", "n2", "n3"] {
        accounts.extend(cluster.keys_on(node, ACCOUNTS_PER_SHARD));
    }
    let ports: Vec<u16> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| cluster.sql_port(n))
        .collect();
    let mut bank = Bank::open(ports, accounts, WRITERS).await;

    // Kill and restart nodes: every node once (n1, the first gateway, first), then two more
    // chosen at random. Each kill waits until transfers committed since the last restart, and
    // looks for the transactions it left in doubt on the nodes still up.
    let mut rng = Rng(0xDDB0_2024);
    let mut victims = vec!["n1", "n2", "n3"];
    for _ in 0..2 {
        victims.push(["n1", "n2", "n3"][rng.below(3) as usize]);
    }
    let mut in_doubt = Vec::new();
    for victim in victims {
        bank.progress(20 + rng.below(20) as usize).await;
        let seen = blocking(&cluster, move |c| {
            c.kill(victim);
            // The most prepared transactions seen on the live nodes within a second.
            let mut most = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while std::time::Instant::now() < deadline && most == 0 {
                let (_, status) = c.status();
                most = most.max(
                    status
                        .iter()
                        .filter_map(|n| n["prepared"].as_i64())
                        .sum::<i64>(),
                );
            }
            c.init_env(&ENV);
            most
        })
        .await;
        eprintln!("killed and restarted {victim}; {seen} transactions in doubt");
        in_doubt.push(seen);
    }
    // The cluster works after the last restart.
    bank.progress(20).await;
    let reads = bank.stop().await;
    // Recovery resolves everything in doubt.
    assert_all_resolved(&cluster).await;
    assert!(
        in_doubt.iter().sum::<i64>() > 0,
        "no kill left a transaction in doubt: {in_doubt:?}"
    );
    bank.check(reads).await;
}

/// Whether `ddb status` shows `node` in (`want`) or out of its shard's in-sync set.
/// The SQL port of every node, in the cluster file's order.
fn sql_ports(cluster: &TestCluster) -> Vec<u16> {
    cluster
        .nodes()
        .iter()
        .map(|(n, _, _)| cluster.sql_port(n))
        .collect()
}

fn in_sync_is(cluster: &TestCluster, node: &str, want: bool) -> bool {
    let (_, status) = cluster.status();
    status
        .iter()
        .any(|n| n["name"] == node && n["in_sync"] == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_across_shards_survive_kill_9_of_replicas_on_three_shards_of_two() {
    // Shards: n1 (primary) and n2, n3 and n4, n5 and n6; every commit waits for both copies
    // while both are in the in-sync set.
    let cluster = Arc::new(TestCluster::replicated(
        "bank3x2",
        6,
        "{ factor: 2, mode: sync, ack_timeout_ms: 500 }",
    ));
    cluster.init_env(&ENV);
    let groups = [("n1", "n2"), ("n3", "n4"), ("n5", "n6")];
    let mut shard_accounts = BTreeMap::new();
    for (primary, _) in groups {
        shard_accounts.insert(primary, cluster.keys_on(primary, ACCOUNTS_PER_SHARD));
    }
    let accounts: Vec<i64> = shard_accounts.values().flatten().copied().collect();
    let ports = sql_ports(&cluster);
    // One writer per gateway to begin with.
    let mut bank = Bank::open(ports, accounts, 6).await;

    // Every shard's replica once, then one chosen at random; the primary of shard 2 in the
    // middle.
    let mut rng = Rng(0xDDB0_3232);
    let mut victims = vec![("n2", "n1"), ("n4", "n3"), ("n3", "n3"), ("n6", "n5")];
    victims.push([("n2", "n1"), ("n4", "n3"), ("n6", "n5")][rng.below(3) as usize]);
    for (victim, primary) in victims {
        let on_shard = shard_accounts[primary].clone();
        bank.progress(20 + rng.below(20) as usize).await;
        let t0 = Instant::now();
        if victim == primary {
            // No promotion yet: the shard's writes wait or fail until its primary is back.
            let dead = blocking(&cluster, move |c| {
                c.kill(victim);
                Instant::now()
            })
            .await;
            // Its transfers fail (every writer ends up retrying one, since a transfer is
            // retried until it commits).
            let from = bank.failed_touching(&on_shard);
            let deadline = Instant::now() + Duration::from_secs(30);
            while bank.failed_touching(&on_shard) < from + 20 {
                assert!(
                    Instant::now() < deadline,
                    "transfers on {primary}'s shard neither failed nor went on while it was down"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let restarted = Instant::now();
            blocking(&cluster, |c| c.init_env(&ENV)).await;
            let o = bank.outcomes.lock().unwrap();
            let impossible: Vec<_> = o
                .committed
                .iter()
                .filter(|(_, (src, dst, _))| on_shard.contains(src) || on_shard.contains(dst))
                .filter(|(id, _)| {
                    let (began, acked) = o.acked_at[*id];
                    began > dead && acked < restarted
                })
                .collect();
            assert!(
                impossible.is_empty(),
                "transfers on {primary}'s shard begun and acknowledged while it was down: {impossible:?}"
            );
        } else {
            blocking(&cluster, move |c| c.kill(victim)).await;
            let left = blocking(&cluster, move |c| {
                wait_until(Duration::from_secs(15), || in_sync_is(c, victim, false))
            })
            .await;
            assert!(
                left,
                "killed {victim} did not leave the in-sync set:\n{}",
                cluster.logs()
            );
            // Writes on its shard go on with the primary alone.
            bank.progress_on(&on_shard, 10).await;
            blocking(&cluster, |c| c.init_env(&ENV)).await;
        }
        let back = blocking(&cluster, move |c| {
            wait_until(Duration::from_secs(30), || {
                in_sync_is(c, victim, true) && in_sync_is(c, primary, true)
            })
        })
        .await;
        assert!(
            back,
            "restarted {victim} did not rejoin the in-sync set:\n{}",
            cluster.logs()
        );
        bank.progress_on(&on_shard, 10).await;
        eprintln!(
            "killed {victim} ({}), restarted, back in sync: {:?}",
            if victim == primary {
                "primary"
            } else {
                "replica"
            },
            t0.elapsed()
        );
    }
    bank.progress(20).await;
    let reads = bank.stop().await;
    assert_all_resolved(&cluster).await;
    bank.check(reads).await;
    // Each replica holds exactly its primary's rows, and is in its shard's in-sync set.
    for (primary, replica) in groups {
        let mut same = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !same && Instant::now() < deadline {
            same = same_copy(&cluster, primary, replica).await;
            if !same {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(
            same,
            "{replica} does not hold {primary}'s rows:\n{:?}\n{:?}",
            status_of(&cluster.rpc_addr(primary)).await,
            status_of(&cluster.rpc_addr(replica)).await
        );
    }
    let (_, status) = blocking(&cluster, |c| c.status()).await;
    for n in &status {
        assert_eq!(n["in_sync"], true, "{n}");
    }
}

/// The primary of the shard `node` belongs to, as the map on the cluster says.
fn primary_of(cluster: &TestCluster, node: &str) -> String {
    let (_, status) = cluster.status();
    let shard = status
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| n["shard"].clone())
        .expect("the node is in the status");
    status
        .iter()
        .find(|n| n["shard"] == shard && n["role"] == "primary")
        .and_then(|n| n["name"].as_str())
        .expect("the shard has a primary")
        .to_string()
}

/// Ten more transfers on `accounts` within 45 s, else a failure with the nodes' logs.
async fn progress_or_logs(bank: &Bank, cluster: &TestCluster, accounts: &[i64], when: &str) {
    let wait = bank.progress_on(accounts, 10);
    if tokio::time::timeout(Duration::from_secs(45), wait)
        .await
        .is_err()
    {
        let reasons = {
            let o = bank.outcomes.lock().unwrap();
            o.reasons[o.reasons.len().saturating_sub(10)..].join("\n")
        };
        let mut states = String::new();
        for (node, _, _) in cluster.nodes() {
            if let Some(s) = status_of(&cluster.rpc_addr(&node)).await {
                states.push_str(&format!(
                    "{node}: prepared {} (oldest {} ms), decisions {}, lsn {}, applied {}, refusal {:?}\n",
                    s.prepared, s.oldest_prepared_ms, s.decisions, s.lsn, s.applied_lsn, s.write_refusal
                ));
            }
        }
        panic!(
            "no progress {when}; last reasons:\n{reasons}\n{states}{}",
            cluster.logs()
        );
    }
}

// It found three bugs when it was written: a deposed primary's open parts kept their locks; a
// cross-shard read across a switchover was not serializable (read-only parts are now checked
// at commit, refused by a node that is handing over or no longer serves the shard, and the old
// primary refuses reads from the moment it proposes); the local part was not checked. It
// passed 12 runs of 12 after the fixes before joining CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_across_shards_survive_switchovers_and_failovers_on_three_shards_of_two() {
    // Shards: n1 (primary) and n2, n3 and n4, n5 and n6, in sync mode; n1..n5 vote in the map.
    let cluster = Arc::new(TestCluster::replicated(
        "bankpromote",
        6,
        "{ factor: 2, mode: sync, ack_timeout_ms: 500 }",
    ));
    cluster.init_env(&ENV);
    let groups = [("n1", "n2"), ("n3", "n4"), ("n5", "n6")];
    let mut shard_accounts = BTreeMap::new();
    for (primary, replica) in groups {
        let keys = cluster.keys_on(primary, ACCOUNTS_PER_SHARD);
        shard_accounts.insert(primary, keys.clone());
        shard_accounts.insert(replica, keys);
    }
    let accounts: Vec<i64> = groups
        .iter()
        .flat_map(|(p, _)| shard_accounts[p].clone())
        .collect();
    let ports = sql_ports(&cluster);
    let mut bank = Bank::open(ports, accounts, 6).await;

    // Switchovers and forced failovers (kill -9 of the primary, then `ddb promote --force`),
    // on every shard, while transfers across all of them go on; a killed primary restarts and
    // rejoins as its shard's replica.
    let steps = [
        ("n2", false),
        ("n4", true),
        ("n6", false),
        ("n1", false),
        ("n3", true),
        ("n2", true),
    ];
    for (target, force) in steps {
        let on_shard = shard_accounts[target].clone();
        let all = bank.accounts.clone();
        progress_or_logs(&bank, &cluster, &all, "before the step").await;
        let t0 = Instant::now();
        eprintln!(
            "step: promote {target}{} at {:?}",
            if force { " --force" } else { "" },
            std::time::SystemTime::now()
        );
        let old = blocking(&cluster, move |c| primary_of(c, target)).await;
        assert_ne!(old, target, "{target} is a replica before its promotion");
        let out = if force {
            let dead = old.clone();
            blocking(&cluster, move |c| {
                c.kill(&dead);
                c.ddb(&["promote", target, "--force", "--expected-primary", &dead])
            })
            .await
        } else {
            blocking(&cluster, move |c| c.ddb(&["promote", target])).await
        };
        assert!(
            out.status.success(),
            "ddb promote {target}{}: {}\n{}",
            if force { " --force" } else { "" },
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
        // The shard's transfers go on on the new primary.
        progress_or_logs(&bank, &cluster, &on_shard, "after the promotion").await;
        if force {
            blocking(&cluster, |c| c.init_env(&ENV)).await;
        }
        let back = blocking(&cluster, move |c| {
            wait_until(Duration::from_secs(30), || {
                in_sync_is(c, &old, true) && in_sync_is(c, target, true)
            })
        })
        .await;
        assert!(back, "the old primary did not rejoin:\n{}", cluster.logs());
        progress_or_logs(&bank, &cluster, &on_shard, "after the rejoin").await;
        eprintln!(
            "promoted {target}{}: {:?}",
            if force { " --force" } else { "" },
            t0.elapsed()
        );
    }
    bank.progress(20).await;
    let reads = bank.stop().await;
    assert_all_resolved(&cluster).await;
    bank.check(reads).await;
    for (a, b) in groups {
        let primary = blocking(&cluster, move |c| primary_of(c, a)).await;
        let replica = if primary == a { b } else { a };
        let mut same = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !same && Instant::now() < deadline {
            same = same_copy(&cluster, &primary, replica).await;
            if !same {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(same, "{replica} does not hold {primary}'s rows");
    }
}
