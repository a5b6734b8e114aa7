//! The bank test: transfers across three shards under `kill -9`.
//!
//! 30 accounts spread over 3 shards; 8 clients do random transfers over the PostgreSQL
//! protocol (`BEGIN; UPDATE; UPDATE; INSERT INTO ledger; COMMIT`) while 2 others read
//! `SELECT sum(balance)`. Meanwhile random nodes are killed with SIGKILL and restarted,
//! including the gateways the clients use; a client whose node dies reconnects to another one.
//! A transfer that was definitely rolled back (an error before COMMIT, or an error with any
//! SQLSTATE but 40003 at COMMIT) is retried as a new transfer; one whose outcome is unknown
//! (40003, or the connection lost during COMMIT) is not. Each kill waits for the cluster to
//! have made progress since the last restart, and looks for the in-doubt transactions it left.
//!
//! At the end: every reader saw the right total, the total is conserved, the kills left
//! transactions in doubt and all were resolved, nothing is locked, and the ledger matches the
//! balances exactly: every acknowledged transfer is in it with its accounts and amount, none
//! that failed with a definite error is, and it holds no transfer that was never attempted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sqlstate, try_connect, wait_until, TestCluster};

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
    /// Transfers that definitely did not commit (failed before COMMIT, or at COMMIT with
    /// anything but 40003 or a lost connection).
    failed: BTreeSet<i64>,
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
            let step = transfer(&c, id, src, dst, amount).await;
            let done = {
                let mut o = outcomes.lock().unwrap();
                match step {
                    Step::Committed => {
                        o.committed.insert(id, (src, dst, amount));
                        true
                    }
                    Step::Unknown(why) => {
                        o.unknown.insert(id);
                        o.reasons.push(format!("unknown: {why}"));
                        true
                    }
                    Step::RolledBack(why) => {
                        o.failed.insert(id);
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

/// Waits until at least `n` transfers have committed (60 s at most).
async fn wait_for_progress(outcomes: &Mutex<Outcomes>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = outcomes.lock().unwrap().committed.len();
        if now >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress: {now} of {n} transfers committed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_across_shards_survive_kill_9_of_any_node() {
    let env = [
        ("DDB_PREPARED_TIMEOUT_MS", "500"),
        ("DDB_LOCK_TIMEOUT_MS", "2000"),
    ];
    let cluster = Arc::new(TestCluster::new("bank", 3));
    cluster.init_env(&env);
    let mut accounts = Vec::new();
    for node in ["n1", "n2", "n3"] {
        accounts.extend(cluster.keys_on(node, ACCOUNTS_PER_SHARD));
    }
    let total = INITIAL * accounts.len() as i64;
    let ports: Vec<u16> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| cluster.sql_port(n))
        .collect();
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
    let writers: Vec<_> = (0..WRITERS)
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
    let readers: Vec<_> = (0..READERS)
        .map(|n| tokio::spawn(reader(n, ports.clone(), total, stop.clone())))
        .collect();

    // Kill and restart nodes: every node once (n1, the first gateway, first), then two more
    // chosen at random. Each kill waits until transfers committed since the last restart, and
    // looks for the transactions it left in doubt on the nodes still up.
    let mut rng = Rng(0xDDB0_2024);
    let mut victims = vec!["n1", "n2", "n3"];
    for _ in 0..2 {
        victims.push(["n1", "n2", "n3"][rng.below(3) as usize]);
    }
    let committed = |o: &Mutex<Outcomes>| o.lock().unwrap().committed.len();
    let mut in_doubt = Vec::new();
    for victim in victims {
        wait_for_progress(
            &outcomes,
            committed(&outcomes) + 20 + rng.below(20) as usize,
        )
        .await;
        let c = cluster.clone();
        let seen = tokio::task::spawn_blocking(move || {
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
            c.init_env(&env);
            most
        })
        .await
        .unwrap();
        eprintln!("killed and restarted {victim}; {seen} transactions in doubt");
        in_doubt.push(seen);
    }
    // The cluster works after the last restart.
    wait_for_progress(&outcomes, committed(&outcomes) + 20).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("a writer panicked");
    }
    let mut reads = 0;
    for r in readers {
        let (n, wrong) = r.await.expect("a reader panicked");
        assert!(
            wrong.is_empty(),
            "a reader saw wrong totals: {wrong:?} (want {total})"
        );
        reads += n;
    }

    // Recovery resolves everything in doubt.
    let c2 = cluster.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(30), || {
            let (_, status) = c2.status();
            status.len() == 3 && status.iter().all(|n| n["prepared"] == 0)
        })
    })
    .await
    .unwrap();
    assert!(
        resolved,
        "transactions stayed prepared:\n{}",
        cluster.logs()
    );

    assert!(
        in_doubt.iter().sum::<i64>() > 0,
        "no kill left a transaction in doubt: {in_doubt:?}"
    );

    let (c, _) = connect_any(&ports, 0).await;
    let sum: i64 = c
        .query_one("SELECT sum(balance) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, total, "the total is conserved");
    // No lock remains anywhere: one statement that writes every account, and one that writes
    // every ledger row, commit at once (a lock left behind would fail them after the lock
    // timeout).
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
    let mut expected: BTreeMap<i64, i64> = accounts.iter().map(|&a| (a, INITIAL)).collect();
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

    let o = outcomes.lock().unwrap();
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
        .iter()
        .filter(|id| ledger.contains_key(id))
        .collect();
    assert!(
        phantom.is_empty(),
        "transfers that failed definitely were applied: {phantom:?}"
    );
    let never: Vec<_> = ledger
        .keys()
        .filter(|id| {
            !o.committed.contains_key(id) && !o.unknown.contains(id) && !o.failed.contains(id)
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
