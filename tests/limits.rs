//! What a connection may cost a node, on both ports: frames and messages of bounded size,
//! larger messages split into frames instead of refused, handshakes and startups that must
//! finish in time, a handshake that names the right cluster, and `max_connections` on the SQL
//! port answered with SQLSTATE 53300.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{sqlstate, try_connect, wait_until, TestCluster, TestNode};
use ddb::client::Client;
use ddb::error::Error;
use ddb::protocol::{Caller, Envelope, Request, PROTOCOL_VERSION};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One frame as the RPC port reads it: length, flag, piece.
fn frame(flag: u8, piece: &[u8]) -> Vec<u8> {
    let mut f = ((piece.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(flag);
    f.extend_from_slice(piece);
    f
}

/// A raw RPC connection that has sent a valid CLI handshake and read the answer.
fn greeted(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let hello = Envelope {
        id: 0,
        body: Request::Hello {
            protocol: PROTOCOL_VERSION,
            caller: Caller::Cli { cluster: None },
            max_frame: 1 << 20,
        },
    };
    s.write_all(&frame(0, &postcard::to_stdvec(&hello).unwrap()))
        .unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).unwrap();
    s
}

/// Whether the node closed `s` within `timeout` (a read sees the end, or an error).
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_rows_exceed_the_frame_limit_commits_across_shards() {
    let cluster = TestCluster::new("chunks", 2);
    // Every node reads frames of at most 1 KiB: each row below takes several.
    cluster.init_env(&[("DDB_MAX_FRAME", "1024")]);
    let c = common::connect(cluster.sql_port("n1")).await;
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    let body = |id: i32| format!("{id}:").repeat(2000);
    c.batch_execute("BEGIN").await.unwrap();
    for id in 0..20 {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&id, &body(id)])
            .await
            .unwrap();
    }
    c.batch_execute("COMMIT").await.unwrap();
    let (_, status) = cluster.status_txns();
    let two_phase: i64 = status
        .iter()
        .map(|n| n["two_phase"].as_i64().unwrap_or(0))
        .sum();
    assert!(two_phase >= 1, "not a two-shard commit: {status:?}");
    // Read back from the other node: scans of both shards, replies of many frames.
    let c2 = common::connect(cluster.sql_port("n2")).await;
    let rows = c2
        .query("SELECT id, body FROM t ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.get::<_, i32>(0), i as i32);
        assert_eq!(r.get::<_, String>(1), body(i as i32));
    }
    // The CLI's request of 30 KB crosses in frames the node accepts, and its answer comes back.
    let sql = format!("INSERT INTO t VALUES (100, '{}')", "x".repeat(30_000));
    let out = cluster.ddb(&["query", &sql]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.ddb(&["query", "--no-header", "SELECT body FROM t WHERE id = 100"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim().len(), 30_000);
}

#[test]
fn rpc_connections_that_announce_too_much_or_trickle_are_cut_and_memory_stays_bounded() {
    let node = TestNode::start_with(&[
        "--max-frame",
        "1048576",
        "--max-message",
        "4194304",
        "--frame-timeout-ms",
        "1000",
        "--startup-timeout-ms",
        "1000",
    ]);
    let pid = node.pid().unwrap();
    let addr = node.rpc_addr();
    let before = rss_kib(pid);
    let mut conns = Vec::new();
    // 1. A 256 MiB frame announced before the handshake, and 64 MiB of it sent.
    // 2. The same after the handshake: both refused when the length is read.
    // 3. Frames of 1 MiB flagged "more", 64 MiB of them: refused past 4 MiB.
    let chunk = vec![7u8; 1 << 20];
    let mut senders = Vec::new();
    for kind in 0..3 {
        for _ in 0..4 {
            let s = if kind == 0 {
                TcpStream::connect(&addr).unwrap()
            } else {
                greeted(&addr)
            };
            let mut w = s.try_clone().unwrap();
            conns.push(s);
            let chunk = chunk.clone();
            senders.push(std::thread::spawn(move || {
                let _ = w.set_write_timeout(Some(Duration::from_secs(5)));
                if kind < 2 {
                    let _ = w.write_all(&(256u32 << 20).to_be_bytes());
                }
                for _ in 0..64 {
                    let piece = if kind < 2 {
                        chunk.clone()
                    } else {
                        frame(1, &chunk[..(1 << 20) - 1])
                    };
                    if w.write_all(&piece).is_err() {
                        return;
                    }
                }
            }));
        }
    }
    // 4. A frame begun and never finished, trickling a byte every 100 ms.
    let mut trickled = Vec::new();
    for _ in 0..4 {
        let s = greeted(&addr);
        let mut w = s.try_clone().unwrap();
        trickled.push(s);
        senders.push(std::thread::spawn(move || {
            let _ = w.write_all(&[0, 8, 0, 0, 0]);
            for _ in 0..300 {
                if w.write_all(&[1]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // 5. A connection that never sends its handshake.
    let mut silent = TcpStream::connect(&addr).unwrap();

    for (i, s) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "connection {i} was not cut"
        );
    }
    let peak = rss_kib(pid);
    for (i, s) in trickled.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "trickling connection {i} was not cut"
        );
    }
    assert!(
        closed_within(&mut silent, Duration::from_secs(20)),
        "a connection without a handshake was not cut"
    );
    let after = rss_kib(pid);
    for t in senders {
        let _ = t.join();
    }
    eprintln!("node RSS: {before} KiB before, {peak} KiB while attacked, {after} KiB after");
    // 16 connections offered 3 GiB between them; the node may hold a few MiB per connection.
    assert!(
        peak.max(after) < before + 128 * 1024,
        "RSS grew from {before} KiB to {} KiB",
        peak.max(after)
    );
    // The node still answers.
    let out = node.ddb(&["query", "--no-header", "SELECT 1"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1\n",
        "{}",
        stderr(&out)
    );
}

/// Many connections that each begin a message as large as `--max-message` and hold it
/// unfinished: what they make the node hold together is bounded by `--max-joined`, not by
/// their number; the ones that find no room are closed, and the node keeps answering.
#[test]
fn messages_being_joined_on_many_connections_share_one_node_wide_budget() {
    const MIB: usize = 1 << 20;
    let node = TestNode::start_with(&[
        "--max-frame",
        "1048576",
        "--max-message",
        "8388608",
        "--max-joined",
        "8388608",
        "--frame-timeout-ms",
        "3000",
    ]);
    let pid = node.pid().unwrap();
    let addr = node.rpc_addr();
    let before = rss_kib(pid);
    // 12 connections, each sends 7 MiB of a message in frames of 1 MiB, then holds.
    let piece = frame(1, &vec![7u8; MIB - 1]);
    let mut conns: Vec<TcpStream> = (0..12).map(|_| greeted(&addr)).collect();
    let senders: Vec<_> = conns
        .iter()
        .map(|s| {
            let mut w = s.try_clone().unwrap();
            let piece = piece.clone();
            std::thread::spawn(move || {
                let _ = w.set_write_timeout(Some(Duration::from_secs(10)));
                for _ in 0..7 {
                    if w.write_all(&piece).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    // The peak while they hold (their frame timeout is 3 s; sample for 2.5 s).
    let mut peak = before;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in senders {
        let _ = t.join();
    }
    eprintln!("node RSS: {before} KiB before, {peak} KiB at the peak");
    // Without the budget the node held 84 MiB of pieces; with it at most 8 MiB of pieces and
    // one frame's buffer per connection (12 MiB).
    assert!(
        peak < before + 48 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    // Every one of them is closed once its frame timeout passes (those that hold the budget
    // too: their messages never finish).
    for (i, s) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "connection {i} was not cut"
        );
    }
    let out = node.ddb(&["query", "--no-header", "SELECT 1"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1\n",
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_must_name_the_cluster_id_and_the_cli_may_name_the_cluster() {
    let cluster = TestCluster::new("ids", 1);
    cluster.init();
    let addr = cluster.rpc_addr("n1");
    let t = Duration::from_secs(5);
    let map = {
        let c = Client::connect(&addr, t).await.unwrap();
        match c.call(Request::GetMap).await.unwrap() {
            ddb::protocol::Response::Map(Some(m)) => m,
            other => panic!("no map: {other:?}"),
        }
    };
    // The right id is let in; a wrong or empty one is refused, as is any peer of a node
    // outside a cluster.
    Client::connect_peer(&addr, t, &map.cluster_id)
        .await
        .unwrap();
    for wrong in ["", "ids", "ids-0000000000000000"] {
        match Client::connect_peer(&addr, t, wrong).await {
            Err(Error::Refused(m)) => assert!(m.contains("not to the caller's cluster id"), "{m}"),
            Err(e) => panic!("peer id {wrong:?}: {e}"),
            Ok(_) => panic!("peer id {wrong:?} was let in"),
        }
    }
    let lone = TestNode::start();
    match Client::connect_peer(&lone.rpc_addr(), t, &map.cluster_id).await {
        Err(Error::Refused(m)) => assert!(m.contains("not part of a cluster"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a node outside a cluster let a peer in"),
    }
    // The CLI: no name (--addr) or the right one is let in; another name is refused (exit 4).
    Client::connect_to(&addr, t, None).await.unwrap();
    Client::connect_to(&addr, t, Some("ids".into()))
        .await
        .unwrap();
    assert!(matches!(
        Client::connect_to(&addr, t, Some("other".into())).await,
        Err(Error::Refused(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_port_answers_53300_past_max_connections_and_closes_a_slow_startup() {
    let node = TestNode::start_with(&["--max-connections", "3", "--startup-timeout-ms", "1000"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(try_connect(node.sql_port).await.unwrap());
    }
    let Err(e) = try_connect(node.sql_port).await else {
        panic!("a fourth connection was let in");
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    // psql (no SSL) and a client asking for SSL first get the same answer, not a hang.
    let out = node.psql(&["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("too many clients"),
        "{}",
        stderr(&out)
    );
    let mut s = TcpStream::connect(("127.0.0.1", node.sql_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap(); // SSLRequest
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    assert_eq!(&n, b"N");
    let mut startup = vec![0, 3, 0, 0];
    startup.extend_from_slice(b"user\0tester\0database\0ddb\0\0");
    let mut packet = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    s.write_all(&packet).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&answer).contains("53300"));

    // A place freed is a place to take.
    held.pop();
    assert!(
        {
            let mut ok = false;
            for _ in 0..100 {
                if try_connect(node.sql_port).await.is_ok() {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ok
        },
        "a freed place was not given to a new client"
    );

    // A startup that trickles in is cut after the startup timeout, and its place freed.
    drop(held);
    let mut slow = TcpStream::connect(("127.0.0.1", node.sql_port)).unwrap();
    slow.write_all(&[0, 0]).unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(20)),
        "a connection that never finished its startup was not closed"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", node.sql_port)).is_ok()
    }));
}
