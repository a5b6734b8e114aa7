//! A check of the PostgreSQL frontend messages before pgwire decodes them.
//!
//! pgwire 0.42 decodes some malformed messages into something else instead of refusing them: a
//! `Query` without its NUL terminator becomes an empty query, invalid UTF-8 in a query is
//! replaced by U+FFFD, and a truncated `Bind` or `Execute` panics the connection's task in the
//! `bytes` getters. PostgreSQL answers the first and the last with an `ErrorResponse` 08P01
//! (protocol violation) and closes the connection, and refuses invalid UTF-8 with 22021.
//!
//! [`Checked`] wraps the connection's stream. It cuts the bytes it reads into messages and
//! checks each one's structure against the protocol before handing it on: a known message
//! type, a length in range, C strings terminated inside the message, counts that match the
//! bytes that follow, format codes 0 or 1. A message that fails is reported as an I/O error of
//! kind `InvalidData`, which the connection loop ([`super::pg::serve`]) answers with a FATAL
//! 08P01 before it closes. The text of every `Query` and `Parse` is checked for UTF-8 too; that
//! verdict goes into a queue the handlers read in the same order ([`Verdicts`]), because a bad
//! encoding fails the statement, not the connection. A `Parse` whose statement name is not
//! UTF-8 goes on with a query text that is not either, so it fails the same way.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest frontend message PostgreSQL (and pgwire) accepts: 1 GB − 1.
const MAX_MESSAGE: usize = 0x3fff_ffff;

/// The longest startup packet.
const MAX_STARTUP: usize = 10_000;

/// The request codes that keep a connection in its startup phase (SSL, GSS encryption, cancel).
const NEGOTIATION_CODES: [i32; 3] = [80_877_103, 80_877_104, 80_877_102];

/// Whether the text of `Query` and `Parse` messages was valid UTF-8, in their order, for the
/// messages whose text pgwire hands on with U+FFFD in it: every one that was invalid (pgwire
/// replaces each bad sequence with U+FFFD), and the valid ones that really hold U+FFFD. The
/// handlers consult it only for such texts, so messages pgwire answers without a handler (an
/// empty query) cannot put it out of step.
#[derive(Clone, Default)]
pub struct Verdicts {
    queries: Arc<Mutex<VecDeque<bool>>>,
    parses: Arc<Mutex<VecDeque<bool>>>,
}

impl Verdicts {
    /// Whether `text`, of the next `Query` the handler takes, was valid UTF-8 on the wire.
    pub fn query_was_utf8(&self, text: &str) -> bool {
        !text.contains('\u{FFFD}') || pop(&self.queries)
    }

    /// Whether `text`, of the next `Parse` the handler takes, was valid UTF-8 on the wire.
    pub fn parse_was_utf8(&self, text: &str) -> bool {
        !text.contains('\u{FFFD}') || pop(&self.parses)
    }
}

fn pop(q: &Mutex<VecDeque<bool>>) -> bool {
    q.lock()
        .ok()
        .and_then(|mut q| q.pop_front())
        .unwrap_or(true)
}

/// Records the verdict on `text` if the handler will ask for it (see [`Verdicts`]).
fn push(q: &Mutex<VecDeque<bool>>, text: &[u8]) {
    let valid = std::str::from_utf8(text);
    if valid.is_ok_and(|t| !t.contains('\u{FFFD}')) {
        return;
    }
    if let Ok(mut q) = q.lock() {
        q.push_back(valid.is_ok());
    }
}

/// A stream whose reads deliver only well-formed frontend messages.
pub struct Checked<S> {
    inner: S,
    /// Bytes read and not yet checked.
    raw: BytesMut,
    /// Checked bytes, for the reader.
    ready: BytesMut,
    startup_done: bool,
    /// The violation to report on the next read; after it, reads see the end of the stream.
    violation: Option<String>,
    ended: bool,
    verdicts: Verdicts,
}

impl<S> Checked<S> {
    /// Wraps `inner`; `already_read` are bytes the caller read from it before (they come first).
    pub fn new(inner: S, already_read: BytesMut, verdicts: Verdicts) -> Self {
        Checked {
            inner,
            raw: already_read,
            ready: BytesMut::new(),
            startup_done: false,
            violation: None,
            ended: false,
            verdicts,
        }
    }

    /// Moves the next complete message from `raw` to `ready`: `Ok(false)` when none is complete.
    fn cut(&mut self) -> Result<bool, String> {
        if !self.startup_done {
            let Some(len) = self.raw.get(..4).map(be_i32) else {
                return Ok(false);
            };
            if !(8..=MAX_STARTUP as i32).contains(&len) {
                return Err(format!("invalid length of startup packet: {len}"));
            }
            if self.raw.len() < len as usize {
                return Ok(false);
            }
            let code = be_i32(&self.raw[4..8]);
            self.startup_done = !NEGOTIATION_CODES.contains(&code);
            let frame = self.raw.split_to(len as usize);
            self.ready.extend_from_slice(&frame);
            return Ok(true);
        }
        if self.raw.len() < 5 {
            return Ok(false);
        }
        let kind = self.raw[0];
        let len = be_i32(&self.raw[1..5]);
        if !b"QPBEDCSHXpdcfF".contains(&kind) {
            return Err(format!("invalid frontend message type {}", printable(kind)));
        }
        if len < 4 || len as usize > MAX_MESSAGE {
            return Err(format!(
                "invalid message length {len} for message type {}",
                printable(kind)
            ));
        }
        let total = 1 + len as usize;
        if self.raw.len() < total {
            return Ok(false);
        }
        let replaced = check(kind, &self.raw[5..total], &self.verdicts)?;
        let frame = self.raw.split_to(total);
        match replaced {
            None => self.ready.extend_from_slice(&frame),
            Some(body) => {
                self.ready.extend_from_slice(&[kind]);
                self.ready
                    .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                self.ready.extend_from_slice(&body);
            }
        }
        Ok(true)
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn printable(kind: u8) -> String {
    if kind.is_ascii_graphic() {
        format!("'{}'", kind as char)
    } else {
        format!("0x{kind:02x}")
    }
}

/// A cursor over a message body that refuses to read past it.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn cstring(&mut self, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("{what} is not terminated by NUL"))?;
        let s = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("the message ends inside {what}"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        self.take(4, what).map(be_i32)
    }

    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| format!("invalid {what}: {n}"))
    }

    fn end(&self, message: &str) -> Result<(), String> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "invalid {message} message: {} extra bytes",
                self.0.len()
            )),
        }
    }
}

/// A list of format codes, each 0 (text) or 1 (binary); returns how many there are.
fn format_codes(body: &mut Body, what: &str) -> Result<usize, String> {
    let n = body.count(what)?;
    for _ in 0..n {
        let code = body.i16(what)?;
        if code != 0 && code != 1 {
            return Err(format!("unsupported format code: {code}"));
        }
    }
    Ok(n)
}

/// Checks the structure of one message body of type `kind`: `Ok(Some(body))` when the message
/// must go on to pgwire with another body (see [`parse_failing_as_not_utf8`]).
fn check(kind: u8, body: &[u8], verdicts: &Verdicts) -> Result<Option<Vec<u8>>, String> {
    let mut b = Body(body);
    match kind {
        b'Q' => {
            let text = b.cstring("the query string")?;
            b.end("Query")?;
            push(&verdicts.queries, text);
        }
        b'P' => {
            let name = b.cstring("the statement name")?;
            let text = b.cstring("the query string")?;
            let rest = b.0;
            let n = b.count("parameter type count")?;
            b.take(4 * n, "the parameter types")?;
            b.end("Parse")?;
            if std::str::from_utf8(name).is_err() {
                push(&verdicts.parses, INVALID_TEXT);
                return Ok(Some(parse_failing_as_not_utf8(name, rest)));
            }
            push(&verdicts.parses, text);
        }
        b'B' => {
            b.cstring("the portal name")?;
            b.cstring("the statement name")?;
            let formats = format_codes(&mut b, "parameter format count")?;
            let n = b.count("parameter count")?;
            for _ in 0..n {
                let len = b.i32("a parameter length")?;
                if len >= 0 {
                    b.take(len as usize, "a parameter value")?;
                } else if len != -1 {
                    return Err(format!("invalid parameter length {len}"));
                }
            }
            // Parameter formats: none, one for all, or one per parameter.
            if formats > 1 && formats != n {
                return Err(format!(
                    "bind message has {formats} parameter formats but {n} parameters"
                ));
            }
            format_codes(&mut b, "result format count")?;
            b.end("Bind")?;
        }
        b'E' => {
            b.cstring("the portal name")?;
            b.i32("the row limit")?;
            b.end("Execute")?;
        }
        b'D' | b'C' => {
            let target = b.take(1, "the object type")?[0];
            if target != b'S' && target != b'P' {
                return Err(format!("invalid object type {}", printable(target)));
            }
            b.cstring("the name")?;
            b.end(if kind == b'D' { "Describe" } else { "Close" })?;
        }
        b'S' | b'H' | b'X' => b.end("Sync/Flush/Terminate")?,
        // Authentication responses, copy data and function calls: pgwire's own decoding.
        _ => {}
    }
    Ok(None)
}

/// A query text that is not UTF-8: one byte that never is.
const INVALID_TEXT: &[u8] = &[0xff];

/// The body of a `Parse` whose statement name is not UTF-8, as it goes on to pgwire: the name
/// made valid (each bad sequence replaced by U+FFFD, as pgwire would) and the query text
/// replaced by [`INVALID_TEXT`], whose verdict is "not UTF-8". So the handler fails the `Parse`
/// with 22021 and stores nothing, and the connection goes on, as in PostgreSQL, which refuses a
/// name in the wrong encoding as it refuses such a query. pgwire itself would take the name
/// with U+FFFD in it, so two names that differ only in their bad bytes would be one statement.
fn parse_failing_as_not_utf8(name: &[u8], parameter_types: &[u8]) -> Vec<u8> {
    let mut body = String::from_utf8_lossy(name).into_owned().into_bytes();
    body.push(0);
    body.extend_from_slice(INVALID_TEXT);
    body.push(0);
    body.extend_from_slice(parameter_types);
    body
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            if let Some(violation) = this.violation.take() {
                this.ended = true;
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, violation)));
            }
            match this.cut() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(violation) => {
                    this.violation = Some(violation);
                    continue;
                }
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.ended = true;
                continue;
            }
            this.raw.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: u8, body: &[u8]) -> Result<(), String> {
        check(kind, body, &Verdicts::default()).map(|_| ())
    }

    #[test]
    fn malformed_messages_are_protocol_violations() {
        assert!(verdict(b'Q', b"SELECT 1\0").is_ok());
        assert!(verdict(b'Q', b"SELECT 1").unwrap_err().contains("NUL"));
        assert!(verdict(b'Q', b"SELECT\0 1\0").is_err());
        // Bind: portal, statement, 1 format (7: unsupported), 0 parameters, 0 result formats.
        let bind = [&b"\0\0"[..], &[0, 1, 0, 7], &[0, 0], &[0, 0]].concat();
        assert!(verdict(b'B', &bind).unwrap_err().contains("format code"));
        // Two formats for one parameter.
        let bind = [
            &b"\0\0"[..],
            &[0, 2, 0, 0, 0, 0],
            &[0, 1, 0, 0, 0, 1, b'x'],
            &[0, 0],
        ]
        .concat();
        assert!(verdict(b'B', &bind).is_err());
        // A parameter count with no parameters after it.
        let bind = [&b"\0\0"[..], &[0, 0], &[0, 5]].concat();
        assert!(verdict(b'B', &bind).is_err());
        let bind = [
            &b"\0\0"[..],
            &[0, 1, 0, 0],
            &[0, 1, 0, 0, 0, 1, b'x'],
            &[0, 0],
        ]
        .concat();
        assert!(verdict(b'B', &bind).is_ok());
        assert!(verdict(b'E', b"\0").is_err());
        assert!(verdict(b'E', b"\0\0\0\0\0").is_ok());
    }

    #[test]
    fn invalid_utf8_is_a_verdict_not_a_violation() {
        let verdicts = Verdicts::default();
        check(b'Q', b"SELECT '\xff'\0", &verdicts).unwrap();
        check(b'Q', b"SELECT 1\0", &verdicts).unwrap();
        check(b'Q', "SELECT '\u{FFFD}'\0".as_bytes(), &verdicts).unwrap();
        assert!(verdicts.query_was_utf8("SELECT 1"));
        assert!(!verdicts.query_was_utf8("SELECT '\u{FFFD}'"));
        assert!(verdicts.query_was_utf8("SELECT '\u{FFFD}'"));
    }
}
