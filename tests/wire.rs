//! The PostgreSQL wire protocol answers as PostgreSQL does for edge inputs: an empty query,
//! values out of range, text that cannot be stored.

mod common;

use common::{sqlstate, TestNode};
use tokio_postgres::SimpleQueryMessage;

/// Reads one backend message: its type and body.
fn read_message(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}

/// Sends one simple query over a raw connection and returns the types of the messages that
/// answer it, up to ReadyForQuery.
fn simple_query_raw(port: u16, query: &str) -> Vec<u8> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut body = 196608i32.to_be_bytes().to_vec();
    for part in ["user", "raw", "database", "ddb", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    startup.extend(body);
    s.write_all(&startup).unwrap();
    while read_message(&mut s).0 != b'Z' {}
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((query.len() + 5) as i32).to_be_bytes());
    q.extend_from_slice(query.as_bytes());
    q.push(0);
    s.write_all(&q).unwrap();
    let mut types = Vec::new();
    loop {
        let (t, _) = read_message(&mut s);
        types.push(t);
        if t == b'Z' {
            return types;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_inputs_get_postgresql_answers() {
    let node = TestNode::start();
    let c = node.connect().await;
    // A query of only a comment is an empty query: EmptyQueryResponse ('I'), then ready.
    for q in ["-- only a comment", "/* nothing */", ";"] {
        let port = node.sql_port;
        let q = q.to_string();
        let types = tokio::task::spawn_blocking(move || simple_query_raw(port, &q))
            .await
            .unwrap();
        assert_eq!(types, b"IZ", "{}", String::from_utf8_lossy(&types));
    }
    // psql reports the EmptyQueryResponse as nothing at all.
    let out = node.psql(&["-c", "-- only a comment"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Floats out of range for their type are 22003, not infinity.
    for q in [
        "SELECT 1e39::real",
        "SELECT '1e309'::float8",
        "SELECT '1e39'::real",
        "SELECT 1e-50::real",
    ] {
        let err = c.simple_query(q).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("22003"), "{q}: {err:?}");
    }
    // Infinity spelled out is still a value.
    let rows = c.simple_query("SELECT 'infinity'::float8").await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("Infinity"));

    // NUL cannot be stored in text: 22021, not stored or cut.
    c.batch_execute("CREATE TABLE w (id INT PRIMARY KEY, s TEXT)")
        .await
        .unwrap();
    let err = c
        .execute("INSERT INTO w VALUES (1, $1)", &[&"a\0b"])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22021"), "{err:?}");
    let n = c.query_one("SELECT count(*) FROM w", &[]).await.unwrap();
    assert_eq!(n.get::<_, i64>(0), 0);
}
