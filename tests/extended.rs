//! The extended query protocol answers as PostgreSQL 15 answers, message by message: unknown
//! portals and statements, names used twice, parameters that do not decode, fetches in a
//! failed block, when a portal's rows are fixed and how far a cursor gets before a bad row,
//! command tags and field descriptions, over-long settings.
//!
//! Each script runs on raw frames over a `TcpStream` (so every message is seen, in order) and
//! asserts its expectations; it runs on a ddb node and on a real PostgreSQL (started by
//! `tests/common/postgres.rs`), so the expectations are PostgreSQL's own answers.

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestNode;
use postgres::Postgres;

/// A client that speaks the protocol frame by frame.
struct Raw {
    s: TcpStream,
    /// The backend id and secret key of `BackendKeyData`, for a cancel request.
    key: (i32, i32),
}

impl Raw {
    /// Connects and reads up to the first `ReadyForQuery`. A server that is still starting
    /// (PostgreSQL answers FATAL 57P03 and closes) is tried again, for up to 30 s.
    fn connect(port: u16, user: &str, database: &str) -> Raw {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Self::try_connect(port, user, database) {
                Ok(raw) => return raw,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("connecting to port {port}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot connect to port {port}: {e}"),
            }
        }
    }

    fn try_connect(port: u16, user: &str, database: &str) -> std::io::Result<Raw> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut body = 196608i32.to_be_bytes().to_vec();
        for part in ["user", user, "database", database, ""] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend(body);
        s.write_all(&startup)?;
        let mut raw = Raw { s, key: (0, 0) };
        loop {
            let (t, body) = raw.try_read()?;
            match t {
                b'Z' => return Ok(raw),
                b'K' if body.len() == 8 => {
                    let pid = i32::from_be_bytes(body[0..4].try_into().unwrap());
                    let secret = i32::from_be_bytes(body[4..8].try_into().unwrap());
                    raw.key = (pid, secret);
                }
                b'E' => return Err(std::io::Error::other(line(t, &body))),
                _ => {}
            }
        }
    }

    fn send(&mut self, t: u8, body: &[u8]) {
        let mut m = vec![t];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        self.s.write_all(&m).unwrap();
    }

    fn parse(&mut self, name: &str, sql: &str) {
        let mut b = cstr(name);
        b.extend(cstr(sql));
        b.extend_from_slice(&0i16.to_be_bytes());
        self.send(b'P', &b);
    }

    fn bind(&mut self, portal: &str, stmt: &str, params: &[&str]) {
        let mut b = cstr(portal);
        b.extend(cstr(stmt));
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&(p.len() as i32).to_be_bytes());
            b.extend_from_slice(p.as_bytes());
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        self.send(b'B', &b);
    }

    fn execute(&mut self, portal: &str, max_rows: i32) {
        let mut b = cstr(portal);
        b.extend_from_slice(&max_rows.to_be_bytes());
        self.send(b'E', &b);
    }

    /// `Describe` of a statement (`b'S'`) or a portal (`b'P'`).
    fn describe(&mut self, kind: u8, name: &str) {
        let mut b = vec![kind];
        b.extend(cstr(name));
        self.send(b'D', &b);
    }

    /// Sends `Sync` and returns what answered everything since the last `ReadyForQuery`.
    fn sync(&mut self) -> Vec<String> {
        self.send(b'S', &[]);
        self.until_ready()
    }

    /// A simple query and its answer.
    fn query(&mut self, sql: &str) -> Vec<String> {
        self.send(b'Q', &cstr(sql));
        self.until_ready()
    }

    fn read(&mut self) -> (u8, Vec<u8>) {
        self.try_read().expect("read a message")
    }

    fn try_read(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head)?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.s.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    /// The messages up to `ReadyForQuery`, each as a short line (notices and
    /// `ParameterStatus` left out).
    fn until_ready(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let (t, body) = self.read();
            match t {
                b'N' | b'S' => {}
                b'Z' => {
                    out.push(format!("Z {}", body[0] as char));
                    return out;
                }
                _ => out.push(line(t, &body)),
            }
        }
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A backend message as a line: `E <code> <message>`, `C <tag>`, `D a|b`, `T name:oid:len:mod`,
/// or its type letter.
fn line(t: u8, body: &[u8]) -> String {
    match t {
        b'E' => {
            let mut code = String::new();
            let mut message = String::new();
            for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                let text = String::from_utf8_lossy(&field[1..]).to_string();
                match field[0] {
                    b'C' => code = text,
                    b'M' => message = text,
                    _ => {}
                }
            }
            format!("E {code} {message}")
        }
        b'C' => format!("C {}", String::from_utf8_lossy(&body[..body.len() - 1])),
        b'D' => {
            let n = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            let mut values = Vec::new();
            for _ in 0..n {
                let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                at += 4;
                if len < 0 {
                    values.push("NULL".to_string());
                } else {
                    let len = len as usize;
                    values.push(String::from_utf8_lossy(&body[at..at + len]).to_string());
                    at += len;
                }
            }
            format!("D {}", values.join("|"))
        }
        b'T' => {
            let n = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            let mut fields = Vec::new();
            for _ in 0..n {
                let end = at + body[at..].iter().position(|b| *b == 0).unwrap();
                let name = String::from_utf8_lossy(&body[at..end]).to_string();
                at = end + 1;
                let f = &body[at..at + 18];
                let oid = u32::from_be_bytes(f[6..10].try_into().unwrap());
                let size = i16::from_be_bytes(f[10..12].try_into().unwrap());
                let modifier = i32::from_be_bytes(f[12..16].try_into().unwrap());
                at += 18;
                fields.push(format!("{name}:{oid}:{size}:{modifier}"));
            }
            format!("T {}", fields.join(","))
        }
        other => (other as char).to_string(),
    }
}

/// Runs `script` on a ddb node and on PostgreSQL (unless it is not installed and
/// `DDB_TEST_SKIP_POSTGRES=1` says to skip it), with a connection to each.
fn on_ddb_and_postgres(script: fn(&mut Raw, &str)) {
    match Postgres::binaries() {
        Ok(bin) => {
            let pg = Postgres::start(&bin);
            eprintln!("on PostgreSQL");
            script(
                &mut Raw::connect(pg.port, "postgres", "postgres"),
                "postgres",
            );
        }
        Err(why) if std::env::var(postgres::SKIP_VAR).as_deref() == Ok("1") => {
            eprintln!("\n*** NOT checked against PostgreSQL: {why} ***\n");
        }
        Err(why) => panic!("{why} (set {}=1 to skip PostgreSQL)", postgres::SKIP_VAR),
    }
    let node = TestNode::start();
    eprintln!("on ddb");
    script(&mut Raw::connect(node.sql_port, "raw", "ddb"), "ddb");
}

const ABORTED: &str =
    "E 25P02 current transaction is aborted, commands ignored until end of transaction block";

/// What a case sends, and the error it gets.
type Case = (&'static str, fn(&mut Raw), &'static str);

/// An unknown portal or statement inside a block fails the block: the error, status 'E',
/// 25P02 for what follows, and COMMIT rolls back.
fn unknown_names_fail_the_block(c: &mut Raw, server: &str) {
    c.query("CREATE TABLE ext_names (id INT PRIMARY KEY)");
    let cases: [Case; 4] = [
        (
            "Execute",
            |c| c.execute("nope", 0),
            "E 34000 portal \"nope\" does not exist",
        ),
        (
            "Describe portal",
            |c| c.describe(b'P', "nope"),
            "E 34000 portal \"nope\" does not exist",
        ),
        (
            "Describe statement",
            |c| c.describe(b'S', "nope"),
            "E 26000 prepared statement \"nope\" does not exist",
        ),
        (
            "Bind",
            |c| c.bind("", "nope", &[]),
            "E 26000 prepared statement \"nope\" does not exist",
        ),
    ];
    for (i, (what, send, error)) in cases.into_iter().enumerate() {
        c.query("BEGIN");
        c.query(&format!("INSERT INTO ext_names VALUES ({i})"));
        send(c);
        assert_eq!(c.sync(), [error, "Z E"], "{server}: {what}");
        assert_eq!(c.query("SELECT 1"), [ABORTED, "Z E"], "{server}: {what}");
        assert_eq!(c.query("COMMIT"), ["C ROLLBACK", "Z I"], "{server}: {what}");
    }
    assert_eq!(
        c.query("SELECT count(*) FROM ext_names"),
        ["T count:20:8:-1", "D 0", "C SELECT 1", "Z I"],
        "{server}: a failed block commits nothing"
    );
    // The unnamed portal is "" in the message, outside a block too (which stays idle).
    c.execute("", 0);
    assert_eq!(
        c.sync(),
        ["E 34000 portal \"\" does not exist", "Z I"],
        "{server}"
    );
}

#[test]
fn an_unknown_portal_or_statement_fails_the_transaction_block() {
    on_ddb_and_postgres(unknown_names_fail_the_block);
}

/// A named statement or portal cannot be created again before it is closed.
fn names_used_twice(c: &mut Raw, server: &str) {
    c.parse("s1", "SELECT 1");
    c.parse("s1", "SELECT 2");
    assert_eq!(
        c.sync(),
        [
            "1",
            "E 42P05 prepared statement \"s1\" already exists",
            "Z I"
        ],
        "{server}"
    );
    // The first one is still there, and the unnamed statement can be replaced at will.
    c.parse("", "SELECT 3");
    c.parse("", "SELECT 4");
    c.bind("", "", &[]);
    c.execute("", 0);
    assert_eq!(
        c.sync(),
        ["1", "1", "2", "D 4", "C SELECT 1", "Z I"],
        "{server}"
    );
    c.query("BEGIN");
    c.bind("p1", "s1", &[]);
    c.execute("p1", 1);
    c.bind("p1", "s1", &[]);
    assert_eq!(
        c.sync(),
        [
            "2",
            "D 1",
            "s",
            "E 42P03 cursor \"p1\" already exists",
            "Z E"
        ],
        "{server}"
    );
    c.query("ROLLBACK");
    // Outside a block a named portal ends with its implicit transaction, at Sync.
    c.bind("p1", "s1", &[]);
    assert_eq!(c.sync(), ["2", "Z I"], "{server}");
    c.bind("p1", "s1", &[]);
    c.execute("p1", 0);
    assert_eq!(c.sync(), ["2", "D 1", "C SELECT 1", "Z I"], "{server}");
}

#[test]
fn a_named_statement_or_portal_cannot_be_created_twice() {
    on_ddb_and_postgres(names_used_twice);
}

/// Parameters are decoded at Bind: a bad one fails it before BindComplete, with the
/// SQLSTATE of the value's type.
fn bad_parameters(c: &mut Raw, server: &str) {
    let cases = [
        (
            "int4",
            "99999999999",
            "E 22003 value \"99999999999\" is out of range for type integer",
        ),
        (
            "int2",
            "99999",
            "E 22003 value \"99999\" is out of range for type smallint",
        ),
        (
            "int8",
            "99999999999999999999",
            "E 22003 value \"99999999999999999999\" is out of range for type bigint",
        ),
        (
            "int4",
            "abc",
            "E 22P02 invalid input syntax for type integer: \"abc\"",
        ),
    ];
    for (ty, value, error) in cases {
        c.parse("", &format!("SELECT $1::{ty}"));
        c.bind("", "", &[value]);
        c.execute("", 0);
        assert_eq!(c.sync(), ["1", error, "Z I"], "{server}: {ty} {value}");
    }
    // In a block the failed Bind fails the block.
    c.query("BEGIN");
    c.parse("", "SELECT $1::int4");
    c.bind("", "", &["99999999999"]);
    assert_eq!(c.sync()[2], "Z E", "{server}");
    assert_eq!(c.query("SELECT 1"), [ABORTED, "Z E"], "{server}");
    c.query("ROLLBACK");
}

#[test]
fn a_bad_parameter_fails_the_bind_before_bind_complete() {
    on_ddb_and_postgres(bad_parameters);
}

/// A portal of a failed block is refused with 25P02 (it is not "unknown"), until the block
/// ends; then it is gone.
fn fetch_in_failed_block(c: &mut Raw, server: &str) {
    c.query("CREATE TABLE ext_fetch (id INT PRIMARY KEY)");
    c.query("INSERT INTO ext_fetch VALUES (1), (2), (3)");
    c.query("BEGIN");
    c.parse("q", "SELECT id FROM ext_fetch");
    c.bind("p", "q", &[]);
    c.execute("p", 1);
    let first = c.sync();
    assert_eq!(first.len(), 5, "{server}: {first:?}");
    assert_eq!(&first[3..], ["s", "Z T"], "{server}");
    let failed = c.query("SELECT 1/0");
    assert_eq!(
        failed.last().map(String::as_str),
        Some("Z E"),
        "{server}: {failed:?}"
    );
    c.execute("p", 1);
    assert_eq!(c.sync(), [ABORTED, "Z E"], "{server}");
    assert_eq!(c.query("ROLLBACK"), ["C ROLLBACK", "Z I"], "{server}");
    c.execute("p", 1);
    assert_eq!(
        c.sync(),
        ["E 34000 portal \"p\" does not exist", "Z I"],
        "{server}"
    );
}

#[test]
fn a_fetch_in_a_failed_block_is_25p02() {
    on_ddb_and_postgres(fetch_in_failed_block);
}

/// A portal's rows are its statement's as of its Bind: a write in the same transaction
/// between its Bind and its first Execute is not in them.
fn rows_as_of_bind(c: &mut Raw, server: &str) {
    c.query("CREATE TABLE ext_snap (id INT PRIMARY KEY)");
    c.query("INSERT INTO ext_snap VALUES (1), (2), (3)");
    c.query("BEGIN");
    c.parse("count", "SELECT count(*) FROM ext_snap");
    c.bind("counted", "count", &[]);
    c.parse("", "INSERT INTO ext_snap VALUES (4)");
    c.bind("", "", &[]);
    c.execute("", 0);
    c.execute("counted", 0);
    assert_eq!(
        c.sync(),
        [
            "1",
            "2",
            "1",
            "2",
            "C INSERT 0 1",
            "D 3",
            "C SELECT 1",
            "Z T"
        ],
        "{server}"
    );
    // A statement bound after the write sees it.
    assert_eq!(
        c.query("SELECT count(*) FROM ext_snap")[1],
        "D 4",
        "{server}"
    );
    c.query("ROLLBACK");
}

#[test]
fn a_portals_rows_are_fixed_at_its_bind() {
    on_ddb_and_postgres(rows_as_of_bind);
}

/// A cursor over a result with a bad row (a division by zero) hands out the rows before it:
/// the fetch that reaches it fails, not an earlier one.
fn cursor_reaches_bad_row(c: &mut Raw, server: &str) {
    c.query("CREATE TABLE ext_bad (id INT PRIMARY KEY)");
    let values: Vec<String> = (1..=10).map(|i| format!("({i})")).collect();
    c.query(&format!("INSERT INTO ext_bad VALUES {}", values.join(", ")));
    // The 8th row in scan order is the bad one (ddb scans in hash order, PostgreSQL in
    // insertion order).
    let order: Vec<String> = c
        .query("SELECT id FROM ext_bad")
        .into_iter()
        .filter_map(|l| l.strip_prefix("D ").map(str::to_string))
        .collect();
    assert_eq!(order.len(), 10, "{server}");
    let bad = &order[7];
    c.query("BEGIN");
    c.parse("q", &format!("SELECT id, 10 / (id - {bad}) FROM ext_bad"));
    c.bind("p", "q", &[]);
    c.execute("p", 5);
    let first = c.sync();
    assert_eq!(first.len(), 2 + 5 + 2, "{server}: {first:?}");
    assert!(
        first[2..7].iter().all(|l| l.starts_with("D ")),
        "{server}: {first:?}"
    );
    assert_eq!(&first[7..], ["s", "Z T"], "{server}");
    c.execute("p", 5);
    let second = c.sync();
    assert_eq!(second.len(), 4, "{server}: {second:?}");
    assert!(
        second[..2].iter().all(|l| l.starts_with("D ")),
        "{server}: {second:?}"
    );
    assert_eq!(
        &second[2..],
        ["E 22012 division by zero", "Z E"],
        "{server}"
    );
    c.query("ROLLBACK");
}

#[test]
fn a_cursor_fails_at_the_fetch_that_reaches_the_bad_row() {
    on_ddb_and_postgres(cursor_reaches_bad_row);
}

/// `SHOW` completes with the tag `SHOW`, and field descriptions carry PostgreSQL's type
/// lengths (-1 for variable-length types) and `varchar(n)` modifiers.
fn tags_and_fields(c: &mut Raw, server: &str) {
    assert_eq!(
        c.query("SHOW standard_conforming_strings"),
        [
            "T standard_conforming_strings:25:-1:-1",
            "D on",
            "C SHOW",
            "Z I"
        ],
        "{server}"
    );
    // The same through the extended protocol, which describes at Describe.
    c.parse("", "SHOW standard_conforming_strings");
    c.bind("", "", &[]);
    c.execute("", 0);
    assert_eq!(c.sync(), ["1", "2", "D on", "C SHOW", "Z I"], "{server}");
    c.query("CREATE TABLE ext_types (a INT PRIMARY KEY, b BIGINT, c SMALLINT, d BOOLEAN, e DOUBLE PRECISION, f REAL, g TEXT, h VARCHAR(3), i TIMESTAMP)");
    let expected = "T a:23:4:-1,b:20:8:-1,c:21:2:-1,d:16:1:-1,e:701:8:-1,f:700:4:-1,g:25:-1:-1,h:1043:-1:7,i:1114:8:-1";
    assert_eq!(
        c.query("SELECT * FROM ext_types"),
        [expected, "C SELECT 0", "Z I"],
        "{server}"
    );
    c.parse("", "SELECT * FROM ext_types");
    c.describe(b'S', "");
    let described = c.sync();
    assert_eq!(described[0], "1", "{server}");
    assert_eq!(described[2], expected, "{server}: {described:?}");
}

#[test]
fn show_has_its_tag_and_fields_their_type_lengths() {
    on_ddb_and_postgres(tags_and_fields);
}

/// `SET application_name` to a very long value keeps its first 63 bytes (and the connection);
/// ddb refuses other values past its limit, the connection stays.
fn long_settings(c: &mut Raw, server: &str) {
    let long = "x".repeat(70_000);
    let set = c.query(&format!("SET application_name = '{long}'"));
    assert_eq!(set, ["C SET", "Z I"], "{server}");
    assert_eq!(
        c.query("SHOW application_name")[1],
        format!("D {}", "x".repeat(63)),
        "{server}"
    );
    if server == "ddb" {
        let refused = c.query(&format!("SET search_path = '{long}'"));
        assert!(refused[0].starts_with("E 22023 "), "{refused:?}");
        assert_eq!(refused[1], "Z I");
    }
    assert_eq!(c.query("SELECT 1")[1], "D 1", "{server}");
}

#[test]
fn an_overlong_setting_is_cut_or_refused_and_the_connection_stays() {
    on_ddb_and_postgres(long_settings);
}

/// Sends a `CancelRequest` for backend `pid` with `secret` on a connection of its own.
fn cancel_request(port: u16, pid: i32, secret: i32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut m = 16i32.to_be_bytes().to_vec();
    m.extend_from_slice(&80877102i32.to_be_bytes());
    m.extend_from_slice(&pid.to_be_bytes());
    m.extend_from_slice(&secret.to_be_bytes());
    s.write_all(&m).unwrap();
    // The server closes the request's connection without an answer.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "a cancel request is not answered: {rest:?}"
    );
}

/// A cancel request with a connection's key (`BackendKeyData`) cancels the statement running
/// on that connection with 57014 (here one waiting for a row lock), and only that one; a
/// request with a wrong key does nothing. The cancelled connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_cancels_the_running_statement_of_its_connection_only() {
    let node = TestNode::start_with(&["--lock-timeout-ms", "60000"]);
    let port = node.sql_port;
    let holder = node.connect().await;
    holder
        .batch_execute(
            "CREATE TABLE ext_cancel (id INT PRIMARY KEY, v INT);
             INSERT INTO ext_cancel VALUES (1, 0)",
        )
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; UPDATE ext_cancel SET v = 1 WHERE id = 1")
        .await
        .unwrap();

    // Two connections wait for the row: one through tokio-postgres, one on raw frames.
    let waiter = node.connect().await;
    let token = waiter.cancel_token();
    let mut waiting = tokio::spawn(async move {
        let r = waiter
            .execute("UPDATE ext_cancel SET v = 2 WHERE id = 1", &[])
            .await;
        (waiter, r)
    });
    let mut other = tokio::task::spawn_blocking(move || Raw::connect(port, "raw", "ddb"))
        .await
        .unwrap();
    let (pid, secret) = other.key;
    assert_ne!(pid, 0, "BackendKeyData was sent");
    let mut other_waiting = tokio::task::spawn_blocking(move || {
        let answer = other.query("UPDATE ext_cancel SET v = 3 WHERE id = 1");
        (other, answer)
    });
    let still_waiting = tokio::time::timeout(Duration::from_millis(500), &mut waiting).await;
    assert!(still_waiting.is_err(), "the update waits for the lock");

    // The right backend id with a wrong secret: nothing happens.
    tokio::task::spawn_blocking(move || cancel_request(port, pid, secret.wrapping_add(1)))
        .await
        .unwrap();
    let after_wrong_key =
        tokio::time::timeout(Duration::from_millis(500), &mut other_waiting).await;
    assert!(after_wrong_key.is_err(), "a wrong key cancels nothing");

    // tokio-postgres's cancel: that statement fails with 57014, the other one waits on.
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (waiter, result) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the cancelled statement ends")
        .unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    assert_eq!(
        err.as_db_error().map(|e| e.message()),
        Some("canceling statement due to user request")
    );
    let untouched = tokio::time::timeout(Duration::from_millis(500), &mut other_waiting).await;
    assert!(
        untouched.is_err(),
        "the other connection's statement was not cancelled"
    );

    // The holder commits: the other update goes through; the cancelled connection goes on.
    holder.batch_execute("COMMIT").await.unwrap();
    let (_other, answer) = tokio::time::timeout(Duration::from_secs(30), other_waiting)
        .await
        .expect("the other update ends")
        .unwrap();
    assert_eq!(answer, ["C UPDATE 1", "Z I"]);
    let v: i32 = waiter
        .query_one("SELECT v FROM ext_cancel WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 3, "the cancelled update wrote nothing");
}

/// Constraint violations carry PostgreSQL's fields: the detail line, schema, table, and the
/// constraint (23505) or the column (23502).
async fn violation_fields(c: &tokio_postgres::Client, server: &str) {
    c.batch_execute(
        "CREATE TABLE ext_err (id INT PRIMARY KEY, name TEXT NOT NULL, v INT);
         INSERT INTO ext_err VALUES (1, 'a', 2)",
    )
    .await
    .unwrap();
    let err = c
        .execute("INSERT INTO ext_err VALUES ($1, 'b', 3)", &[&1i32])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "23505", "{server}");
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"ext_err_pkey\"",
        "{server}"
    );
    assert_eq!(
        db.detail(),
        Some("Key (id)=(1) already exists."),
        "{server}"
    );
    assert_eq!(db.schema(), Some("public"), "{server}");
    assert_eq!(db.table(), Some("ext_err"), "{server}");
    assert_eq!(db.constraint(), Some("ext_err_pkey"), "{server}");
    assert_eq!(db.column(), None, "{server}");

    let err = c
        .batch_execute("UPDATE ext_err SET name = NULL WHERE id = 1")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "23502", "{server}");
    assert_eq!(
        db.message(),
        "null value in column \"name\" of relation \"ext_err\" violates not-null constraint",
        "{server}"
    );
    assert_eq!(
        db.detail(),
        Some("Failing row contains (1, null, 2)."),
        "{server}"
    );
    assert_eq!(db.table(), Some("ext_err"), "{server}");
    assert_eq!(db.column(), Some("name"), "{server}");
    assert_eq!(db.constraint(), None, "{server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violations_name_their_table_column_and_constraint() {
    match Postgres::binaries() {
        Ok(bin) => {
            let pg = tokio::task::spawn_blocking(move || Postgres::start(&bin))
                .await
                .unwrap();
            violation_fields(&pg.connect("postgres").await, "postgres").await;
        }
        Err(why) if std::env::var(postgres::SKIP_VAR).as_deref() == Ok("1") => {
            eprintln!("\n*** NOT checked against PostgreSQL: {why} ***\n");
        }
        Err(why) => panic!("{why} (set {}=1 to skip PostgreSQL)", postgres::SKIP_VAR),
    }
    let node = TestNode::start();
    violation_fields(&node.connect().await, "ddb").await;
}
