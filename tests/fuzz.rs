//! A bounded randomized run against a real node (a CI gate): generated SQL, valid and broken,
//! through parse → plan → execute on the SQL port, and garbage into the PostgreSQL and RPC
//! frame decoders. After every case the node must still answer, and every statement must get
//! rows or an error with a SQLSTATE; at the end the node process must still be running.
//!
//! The generation is proptest's (a grammar of expressions and statements, then random edits of
//! the text). The run is bounded by a fixed number of cases and a time cap of about 60 s, and
//! its seed is printed, and taken from `DDB_FUZZ_SEED` when set, so a failure can be replayed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestNode;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The wall-clock budget of each part of the run.
const BUDGET: Duration = Duration::from_secs(25);

fn ident() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_string()),
        Just("v".to_string()),
        Just("s".to_string()),
        Just("nosuch".to_string()),
        "[a-z]{1,3}",
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "'[a-z0-9 ]{0,6}'",
        Just("NULL".to_string()),
        Just("true".to_string()),
        Just("'1e309'::float8".to_string()),
        Just("1e39::real".to_string()),
        (1u32..4).prop_map(|n| format!("${n}")),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![literal(), ident()];
    leaf.prop_recursive(6, 64, 4, |inner| {
        let op = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
            Just("="),
            Just("<"),
            Just(">="),
            Just("<>"),
            Just("AND"),
            Just("OR"),
            Just("||"),
            Just("LIKE"),
        ];
        let ty = prop_oneof![
            Just("int"),
            Just("bigint"),
            Just("smallint"),
            Just("real"),
            Just("float8"),
            Just("text"),
            Just("varchar(3)"),
            Just("char(2)"),
            Just("bool"),
            Just("timestamp"),
        ];
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(l, o, r)| format!("{l} {o} {r}")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("-{e}")),
            (inner.clone(), ty).prop_map(|(e, t)| format!("{e}::{t}")),
            inner.clone().prop_map(|e| format!("{e} IS NULL")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("{a} BETWEEN {b} AND {c}")),
            (inner.clone(), prop::collection::vec(inner.clone(), 1..4))
                .prop_map(|(e, l)| format!("{e} IN ({})", l.join(", "))),
            (
                prop_oneof![
                    Just("abs"),
                    Just("lower"),
                    Just("length"),
                    Just("coalesce"),
                    Just("count"),
                    Just("sum"),
                    Just("max"),
                    Just("nosuch")
                ],
                prop::collection::vec(inner, 0..3)
            )
                .prop_map(|(f, a)| format!("{f}({})", a.join(", "))),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    let e = expr;
    prop_oneof![
        (prop::collection::vec(e(), 1..4), e())
            .prop_map(|(p, w)| format!("SELECT {} FROM f WHERE {w}", p.join(", "))),
        (e(), e()).prop_map(|(p, g)| format!("SELECT {p}, count(*) FROM f GROUP BY {g}")),
        e().prop_map(|p| format!("SELECT {p}")),
        (e(), e(), e()).prop_map(|(a, b, c)| format!("INSERT INTO f VALUES ({a}, {b}, {c})")),
        (ident(), e(), e()).prop_map(|(c, v, w)| format!("UPDATE f SET {c} = {v} WHERE {w}")),
        e().prop_map(|w| format!("DELETE FROM f WHERE {w}")),
        (ident(), ident()).prop_map(|(t, c)| format!("CREATE TABLE {t} ({c} INT PRIMARY KEY)")),
        ident().prop_map(|t| format!("DROP TABLE {t}")),
        Just("BEGIN".to_string()),
        Just("COMMIT".to_string()),
        Just("ROLLBACK".to_string()),
        Just("-- only a comment".to_string()),
        Just(";".to_string()),
    ]
}

/// A statement, possibly broken by random edits of its text (cut, duplicated, spliced bytes).
fn sql() -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        3 => Just(None),
        1 => (any::<prop::sample::Index>(), "[()',;:*$\\-+a-z0-9 ]{1,4}")
            .prop_map(|(i, s)| Some((i, s))),
    ];
    (statement(), edit).prop_map(|(mut s, edit)| {
        if let Some((i, insert)) = edit {
            let mut at = i.index(s.len() + 1);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.insert_str(at, &insert);
        }
        s
    })
}

/// The seed of the run: `DDB_FUZZ_SEED`, or one made from the clock. Printed either way.
fn runner(part: &str, cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("DDB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("fuzz {part}: seed {seed} (replay with DDB_FUZZ_SEED={seed})");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config::with_cases(cases);
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Whether the node answers `SELECT 1` on a new connection.
async fn answers(port: u16) -> bool {
    match common::try_connect(port).await {
        Ok(c) => c
            .simple_query("SELECT 1")
            .await
            .is_ok_and(|m| !m.is_empty()),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_sql_always_gets_an_answer_with_a_sqlstate() {
    let mut node = TestNode::start();
    let c = node.connect().await;
    c.batch_execute("CREATE TABLE f (id INT PRIMARY KEY, v BIGINT, s TEXT)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO f VALUES (1, 10, 'a'), (2, 20, 'b'), (3, NULL, NULL)")
        .await
        .unwrap();
    let mut runner = runner("sql", 15_000);
    let strategy = sql();
    let started = Instant::now();
    let (mut ran, mut failed) = (0, 0);
    while ran < 15_000 && started.elapsed() < BUDGET {
        let sql = strategy.new_tree(&mut runner).unwrap().current();
        match c.simple_query(&sql).await {
            Ok(_) => {}
            Err(e) => {
                assert!(
                    e.code().is_some(),
                    "no SQLSTATE for {sql:?}: {e}\nnode log:\n{}",
                    node.log_tail()
                );
                failed += 1;
            }
        }
        // A statement in a failed block would only get 25P02 from here on.
        if ran % 20 == 0 {
            let _ = c.simple_query("ROLLBACK").await;
            assert!(
                answers(node.sql_port).await,
                "the node stopped answering after {sql:?}"
            );
        }
        ran += 1;
    }
    eprintln!(
        "fuzz sql: {ran} statements, {failed} errors, in {:?}",
        started.elapsed()
    );
    assert!(answers(node.sql_port).await);
    assert!(
        node.wait_ready(Duration::from_secs(1)),
        "the node process ended"
    );
}

/// The bytes of a PostgreSQL startup message for user `fuzz`.
fn startup() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for s in ["user", "fuzz", "database", "ddb", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// Frames that look like protocol messages: a message type (often a real one), a length
/// (often right), and random bytes.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![prop::sample::select(b"QPBEDSCHXpdcf".to_vec()), any::<u8>()];
    (
        kind,
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(|(kind, body, right_length)| {
            let len = if right_length {
                body.len() as i32 + 4
            } else {
                (body.len() as i32).wrapping_mul(977).wrapping_sub(3)
            };
            let mut out = vec![kind];
            out.extend_from_slice(&len.to_be_bytes());
            out.extend(body);
            out
        })
}

/// Sends `bytes` on a new connection to `port` after `prefix`, reads what comes back for a
/// moment, and closes.
fn send_raw(port: u16, prefix: &[u8], bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.write_all(prefix);
    let _ = s.write_all(bytes);
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_on_both_ports_never_stop_the_node() {
    let mut node = TestNode::start();
    let (sql_port, rpc_port) = (node.sql_port, node.rpc_port);
    let mut runner = runner("frames", 5_000);
    let frames = prop::collection::vec(frame(), 1..4);
    let started = Instant::now();
    let mut sent = 0;
    while sent < 5_000 && started.elapsed() < BUDGET {
        let bytes: Vec<u8> = frames.new_tree(&mut runner).unwrap().current().concat();
        // The PostgreSQL decoder after a valid startup, and before one; the RPC decoder.
        let (pg, rpc) = (bytes.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || {
            send_raw(sql_port, &startup(), &pg);
            send_raw(sql_port, &[], &pg);
            send_raw(rpc_port, &[], &rpc);
        })
        .await
        .unwrap();
        if sent % 25 == 0 {
            assert!(
                answers(sql_port).await,
                "the node stopped answering after {bytes:?}"
            );
        }
        sent += 1;
    }
    eprintln!("fuzz frames: {sent} cases in {:?}", started.elapsed());
    assert!(answers(sql_port).await);
    let out = node.ddb(&["query", "SELECT 1"], None);
    assert!(out.status.success(), "the RPC port stopped answering");
    assert!(
        node.wait_ready(Duration::from_secs(1)),
        "the node process ended"
    );
}
