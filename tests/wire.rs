//! The PostgreSQL wire protocol answers as PostgreSQL does for edge inputs: malformed messages
//! (08P01 before the connection closes), text that is not UTF-8 or holds NUL (22021), an empty
//! query, values out of range. Malformed messages are written by hand on a raw connection.

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

/// A raw connection after its startup (ReadyForQuery read).
fn started(port: u16) -> std::net::TcpStream {
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
    s
}

/// A frontend message with a correct length.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The SQLSTATE of an ErrorResponse body.
fn code_of(body: &[u8]) -> String {
    let mut fields = body.split(|&b| b == 0);
    fields
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// Sends `bytes` and returns the answers up to ReadyForQuery or the end of the connection.
fn answers_to(s: &mut std::net::TcpStream, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    use std::io::{Read, Write};
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).is_err() {
            return out;
        }
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        let done = head[0] == b'Z';
        out.push((head[0], body));
        if done {
            return out;
        }
    }
}

/// Asserts that the answer ends with an ErrorResponse 08P01 and the connection then closes
/// (no ReadyForQuery).
fn violation(port: u16, bytes: &[u8]) {
    let mut s = started(port);
    let answers = answers_to(&mut s, bytes);
    let last = answers.last().expect("an answer before the close");
    assert_eq!(last.0, b'E', "{answers:?}");
    assert_eq!(code_of(&last.1), "08P01", "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_08p01_before_the_connection_closes() {
    let node = TestNode::start();
    let port = node.sql_port;
    tokio::task::spawn_blocking(move || {
        // A Query without its NUL terminator.
        violation(port, &message(b'Q', b"SELECT 1"));
        // An unknown message type.
        violation(port, &message(b'z', b"whatever"));
        // A length that cannot be.
        violation(port, &[b'Q', 0, 0, 0, 1]);
        // Bind: a format code that is neither text nor binary.
        let parse = message(b'P', b"\0SELECT $1::int\0\0\0");
        let bind = [
            &b"\0\0"[..],
            &[0, 1, 0, 7],
            &[0, 1, 0, 0, 0, 1, b'1'],
            &[0, 0],
        ]
        .concat();
        violation(port, &[parse.clone(), message(b'B', &bind)].concat());
        // Bind: a parameter count with no parameters after it (pgwire's decoder panicked).
        violation(
            port,
            &message(b'B', &[&b"\0\0"[..], &[0, 0], &[0, 9]].concat()),
        );
        // Bind: more parameters than the statement has is an error, not a crash.
        let mut s = started(port);
        let bind = [
            &b"\0\0"[..],
            &[0, 0],
            &[0, 2, 0, 0, 0, 1, b'1', 0, 0, 0, 1, b'2'],
            &[0, 0],
        ]
        .concat();
        let execute = message(b'E', b"\0\0\0\0\0");
        let bytes = [parse, message(b'B', &bind), execute, message(b'S', b"")].concat();
        let answers = answers_to(&mut s, &bytes);
        let error = answers.iter().find(|(t, _)| *t == b'E').expect("an error");
        assert_eq!(code_of(&error.1), "08P01", "{answers:?}");

        // Invalid UTF-8 in a query fails the statement (22021); the connection goes on.
        let mut s = started(port);
        let answers = answers_to(&mut s, &message(b'Q', b"SELECT '\xff\xfe'\0"));
        assert_eq!(answers[0].0, b'E', "{answers:?}");
        assert_eq!(code_of(&answers[0].1), "22021", "{answers:?}");
        let answers = answers_to(&mut s, &message(b'Q', "SELECT '\u{FFFD}'\0".as_bytes()));
        assert!(answers.iter().any(|(t, _)| *t == b'D'), "{answers:?}");
        // The same in a Parse.
        let bytes = [message(b'P', b"\0SELECT '\xff'\0\0\0"), message(b'S', b"")].concat();
        let answers = answers_to(&mut s, &bytes);
        assert_eq!(code_of(&answers[0].1), "22021", "{answers:?}");
        // And in a Parse's statement name: the Parse fails, nothing is stored under the name
        // made valid, and the connection goes on.
        let bytes = [message(b'P', b"s\xff\0SELECT 1\0\0\0"), message(b'S', b"")].concat();
        let answers = answers_to(&mut s, &bytes);
        assert_eq!(answers[0].0, b'E', "{answers:?}");
        assert_eq!(code_of(&answers[0].1), "22021", "{answers:?}");
        let bind = [&b"\0"[..], "s\u{FFFD}\0".as_bytes(), &[0, 0, 0, 0, 0, 0]].concat();
        let bytes = [message(b'B', &bind), message(b'S', b"")].concat();
        let answers = answers_to(&mut s, &bytes);
        assert_eq!(answers[0].0, b'E', "{answers:?}");
        assert_eq!(code_of(&answers[0].1), "26000", "{answers:?}");
        let answers = answers_to(&mut s, &message(b'Q', b"SELECT 1\0"));
        assert!(answers.iter().any(|(t, _)| *t == b'D'), "{answers:?}");
    })
    .await
    .unwrap();
    // The node is fine.
    let c = node.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
}
