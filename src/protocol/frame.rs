//! Framing: the bytes of the RPC port, cut into frames that carry serde-encoded (postcard)
//! messages, with bounds on what a peer can make a node hold.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: one flag byte and a piece of a
//! message. A message that fits travels in one frame (flag [`LAST`]); a larger one is cut into
//! pieces of at most the receiver's frame size, every piece but the last flagged [`MORE`], and
//! the reader joins them (DESIGN §10.3). So a message is never refused for its size alone: a
//! big transaction's row, a large result, a Raft snapshot all cross in as many frames as they
//! need. The writer of one connection writes one message's frames together, so pieces of two
//! messages never interleave.
//!
//! What a peer can make the reader hold is bounded by configuration ([`Limits`]), never by what
//! the peer announces:
//!
//! * a frame longer than `max_frame` is refused as soon as its length is read, before any of
//!   it is buffered (the connection is closed with an error);
//! * a message whose pieces add up to more than `max_message` is refused when the piece that
//!   crosses the bound arrives;
//! * the pieces of messages being joined are charged to one budget of the whole process,
//!   `max_joined` bytes ([`JoinBudget`]), so many connections cannot each hold `max_message`:
//!   a connection whose next piece does not fit waits for the budget, at most `frame_timeout`,
//!   and is then closed. A message that fits in one frame needs no budget, so the small
//!   requests of the cluster's own traffic never wait behind a big one;
//! * a frame (or a message of several) that is begun and not finished within `frame_timeout`
//!   ends the connection, so a peer that trickles bytes, or stops half-way, holds its buffer
//!   for a bounded time. An idle connection between messages is not timed out here: that is a
//!   long-lived peer connection at rest.
//!
//! Each side tells the other its `max_frame` in the handshake; until then both keep to
//! [`HANDSHAKE_FRAME`], which every handshake fits in. A frame that does not decode is an error
//! naming what was wrong, never a panic.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::error::{Error, Result};

/// The default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// The default largest message, joined from its frames: 256 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

/// The default budget of the whole process for messages being joined from frames: 512 MiB.
pub const DEFAULT_MAX_JOINED: usize = 512 << 20;

/// The default time a begun frame or message has to arrive in full.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The smallest `max_frame` a node accepts as a setting: every handshake must fit in one frame.
pub const MIN_MAX_FRAME: usize = 1024;

/// The largest frame before the handshake has told the other side's limit: 64 KiB. A peer that
/// has not said who it is cannot make a node buffer more than this.
pub const HANDSHAKE_FRAME: usize = 64 << 10;

/// The flag of the last (or only) frame of a message.
pub const LAST: u8 = 0;
/// The flag of a frame that more frames of the same message follow.
pub const MORE: u8 = 1;

/// What a reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame, flag byte included.
    pub max_frame: usize,
    /// The largest message, joined from its frames.
    pub max_message: usize,
    /// The most bytes of messages being joined that the whole process holds at once (the
    /// budget is made once per process, from the limits of the first reader; see
    /// [`JoinBudget`]).
    pub max_joined: usize,
    /// How long a begun frame or message may take to arrive in full.
    pub frame_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_message: DEFAULT_MAX_MESSAGE,
            max_joined: DEFAULT_MAX_JOINED,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
        }
    }
}

/// The limits of this process, set once by `ddb server` from its flags.
static PROCESS_LIMITS: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();

/// Sets the limits every connection of this process reads with: the server's listener and the
/// clients a node opens to its peers, so that one node keeps one bound whoever dialled. A
/// process is one node, and its flags are set once; a second call changes nothing.
pub fn configure(limits: Limits) {
    let _ = PROCESS_LIMITS.set(limits);
}

/// The limits set with [`configure`], or the defaults (the CLI).
pub fn process_limits() -> Limits {
    PROCESS_LIMITS.get().copied().unwrap_or_default()
}

/// The bytes of messages being joined from frames, over every connection of a process.
///
/// A permit is one byte. A reader takes permits for each piece it keeps, before it keeps it,
/// and gives them all back when the message is complete (or the reader is dropped). A single
/// piece is at most `max_frame` ≤ `max_message` ≤ `max_joined` bytes, so it always fits an
/// empty budget; two readers that each wait for the other's bytes are both closed when their
/// `frame_timeout` passes, which frees the budget.
#[derive(Clone, Debug)]
pub struct JoinBudget(Arc<Semaphore>);

impl JoinBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    /// The budget of this process, made from `max_joined` of the first call.
    pub fn process(max_joined: usize) -> Self {
        static BUDGET: std::sync::OnceLock<JoinBudget> = std::sync::OnceLock::new();
        BUDGET.get_or_init(|| JoinBudget::new(max_joined)).clone()
    }

    /// The bytes free now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Reads messages from frames.
pub struct FrameReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
    limits: Limits,
    /// The pieces of a message whose last frame has not come yet.
    partial: BytesMut,
    /// Where the bytes of `partial` are charged, and what they hold of it.
    budget: JoinBudget,
    charged: Option<OwnedSemaphorePermit>,
    /// Whether a frame or message was begun and unfinished at the last check of the timeout.
    stalled: bool,
}

/// Writes messages as frames no larger than the reader on the other side accepts.
pub struct FrameWriter<W> {
    inner: FramedWrite<W, LengthDelimitedCodec>,
    /// The other side's `max_frame` (flag byte included).
    peer_max_frame: usize,
}

/// Splits a connection into its reader, which keeps to `limits` (and to [`HANDSHAKE_FRAME`]
/// until [`FrameReader::handshake_done`]), and its writer, which keeps to [`HANDSHAKE_FRAME`]
/// until [`FrameWriter::set_peer_max_frame`].
pub fn split(
    stream: TcpStream,
    limits: Limits,
) -> (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>) {
    let (r, w) = stream.into_split();
    (FrameReader::new(r, limits), FrameWriter::new(w))
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Encodes one value as a message body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Internal(format!("cannot encode message: {e}")))
}

/// Decodes one message body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("malformed message: {e}")))
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that accepts only [`HANDSHAKE_FRAME`]-sized frames until the handshake is done,
    /// charging the messages it joins to the process's budget.
    pub fn new(reader: R, limits: Limits) -> Self {
        Self::with_budget(reader, limits, JoinBudget::process(limits.max_joined))
    }

    /// A reader as [`FrameReader::new`], charging the messages it joins to `budget`.
    pub fn with_budget(reader: R, limits: Limits, budget: JoinBudget) -> Self {
        Self {
            inner: FramedRead::new(reader, codec(limits.max_frame.min(HANDSHAKE_FRAME))),
            limits,
            partial: BytesMut::new(),
            budget,
            charged: None,
            stalled: false,
        }
    }

    /// Charges `bytes` more of a message being joined to the budget, waiting for it at most
    /// `frame_timeout`.
    async fn charge(&mut self, bytes: usize) -> Result<()> {
        let Ok(n) = u32::try_from(bytes) else {
            return Err(Error::InvalidInput(format!("a piece of {bytes} bytes")));
        };
        let wanted = self.budget.0.clone().acquire_many_owned(n);
        let permit = match tokio::time::timeout(self.limits.frame_timeout, wanted).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::Internal("the join budget was closed".into())),
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "the node's budget for messages being joined from frames ({} bytes) \
                     stayed full for {} ms",
                    self.limits.max_joined,
                    self.limits.frame_timeout.as_millis()
                )))
            }
        };
        match &mut self.charged {
            Some(held) => held.merge(permit),
            None => self.charged = Some(permit),
        }
        Ok(())
    }

    /// The handshake is done: frames up to the configured `max_frame` are accepted from now on.
    pub fn handshake_done(&mut self) {
        self.inner
            .decoder_mut()
            .set_max_frame_length(self.limits.max_frame);
    }

    /// The `max_frame` this reader accepts after the handshake, to tell the other side.
    pub fn max_frame(&self) -> usize {
        self.limits.max_frame
    }

    /// Whether part of a frame or of a message is held, waiting for the rest.
    fn begun(&self) -> bool {
        !self.inner.read_buffer().is_empty() || !self.partial.is_empty()
    }

    /// Reads the next message; `None` at a clean end of the stream (between messages).
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let period = self.limits.frame_timeout.max(Duration::from_millis(1));
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let frame = tokio::select! {
                frame = self.inner.next() => frame,
                _ = check.tick() => {
                    // Begun at the last check and still not finished at this one: between one
                    // and two periods since its first byte arrived.
                    let begun = self.begun();
                    if begun && self.stalled {
                        return Err(Error::Timeout(format!(
                            "a frame was begun and not finished within {} ms",
                            self.limits.frame_timeout.as_millis()
                        )));
                    }
                    self.stalled = begun;
                    continue;
                }
            };
            let mut frame = match frame {
                None if self.begun() => {
                    return Err(Error::Unreachable(
                        "the connection closed in the middle of a message".into(),
                    ))
                }
                None => return Ok(None),
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(Error::Unreachable(format!("connection error: {e}"))),
            };
            if frame.is_empty() {
                return Err(Error::Corrupt("an empty frame (no flag byte)".into()));
            }
            let flag = frame[0];
            let piece = frame.split_off(1);
            if self.partial.len() + piece.len() > self.limits.max_message {
                return Err(Error::InvalidInput(format!(
                    "a message of more than {} bytes (the largest this node accepts)",
                    self.limits.max_message
                )));
            }
            match flag {
                // A whole message: the clock of the next one starts with its first byte.
                LAST if self.partial.is_empty() => {
                    self.stalled = false;
                    return decode(&piece).map(Some);
                }
                LAST => {
                    self.stalled = false;
                    self.charge(piece.len()).await?;
                    self.partial.unsplit(piece);
                    let whole = std::mem::take(&mut self.partial);
                    let decoded = decode(&whole);
                    drop(whole);
                    self.charged = None;
                    return decoded.map(Some);
                }
                MORE => {
                    self.charge(piece.len()).await?;
                    self.partial.unsplit(piece);
                }
                other => {
                    return Err(Error::Corrupt(format!("unknown frame flag {other}")));
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer that keeps to [`HANDSHAKE_FRAME`] until told the other side's limit.
    pub fn new(writer: W) -> Self {
        Self {
            inner: FramedWrite::new(writer, codec(usize::MAX >> 1)),
            peer_max_frame: HANDSHAKE_FRAME,
        }
    }

    /// The other side accepts frames up to `max_frame` bytes (at least [`MIN_MAX_FRAME`] is
    /// assumed, so that a piece always carries data).
    pub fn set_peer_max_frame(&mut self, max_frame: usize) {
        // The length prefix is 4 bytes, whatever the other side says it could read.
        self.peer_max_frame = max_frame.clamp(MIN_MAX_FRAME, u32::MAX as usize);
    }

    /// Writes one message, in as many frames as the other side's limit needs.
    pub async fn write<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let body = encode(value)?;
        let piece = self.peer_max_frame - 1;
        let mut chunks = body.chunks(piece).peekable();
        let sent: std::io::Result<()> = async {
            if chunks.peek().is_none() {
                return self.inner.send(frame(LAST, &[])).await;
            }
            while let Some(chunk) = chunks.next() {
                let flag = if chunks.peek().is_some() { MORE } else { LAST };
                self.inner.feed(frame(flag, chunk)).await?;
            }
            SinkExt::<Bytes>::flush(&mut self.inner).await
        }
        .await;
        sent.map_err(|e| Error::Unreachable(format!("send failed: {e}")))
    }
}

fn frame(flag: u8, piece: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(piece.len() + 1);
    b.put_u8(flag);
    b.put_slice(piece);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_frame: usize, max_message: usize) -> Limits {
        Limits {
            max_frame,
            max_message,
            max_joined: DEFAULT_MAX_JOINED,
            frame_timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn messages_being_joined_share_one_budget_and_give_it_back() {
        let budget = JoinBudget::new(30_000);
        let (a1, b1) = tokio::io::duplex(1 << 20);
        let (a2, b2) = tokio::io::duplex(1 << 20);
        let mut r1 = FrameReader::with_budget(b1, limits(1024, 20_000), budget.clone());
        let mut r2 = FrameReader::with_budget(b2, limits(1024, 20_000), budget.clone());
        r1.handshake_done();
        r2.handshake_done();
        let message = vec![9u8; 19_000];
        let body = postcard::to_stdvec(&message).unwrap();
        let (mut w1, mut w2) = (
            FramedWrite::new(a1, codec(4096)),
            FramedWrite::new(a2, codec(4096)),
        );
        // The first connection sends all but the last piece of its message, and holds 19,000
        // bytes of the budget.
        for piece in body[..19_000].chunks(1000) {
            w1.send(frame(MORE, piece)).await.unwrap();
        }
        let first = tokio::spawn(async move { r1.read::<Vec<u8>>().await.map(|m| (m, r1)) });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while budget.available() != 11_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                budget.available()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The second begins one as large: it gets 11,000 bytes, waits for more past its frame
        // timeout, and is refused; dropping it gives its bytes back.
        for _ in 0..19 {
            w2.send(frame(MORE, &[1; 1000])).await.unwrap();
        }
        let e = r2.read::<Vec<u8>>().await.unwrap_err();
        assert!(
            matches!(e, Error::Timeout(_)) && e.to_string().contains("budget"),
            "{e}"
        );
        drop(r2);
        assert_eq!(budget.available(), 11_000);
        // The first completes its message and gives back all it held.
        w1.send(frame(LAST, &body[19_000..])).await.unwrap();
        let (got, mut r1) = first.await.unwrap().unwrap();
        assert_eq!(got, Some(message));
        assert_eq!(budget.available(), 30_000);
        drop(w1);
        assert!(r1.read::<String>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_message_larger_than_a_frame_crosses_in_pieces() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        w.set_peer_max_frame(1024);
        let mut r = FrameReader::new(b, limits(1024, 1 << 20));
        r.handshake_done();
        let big: Vec<u64> = (0..10_000).collect();
        w.write(&big).await.unwrap();
        w.write(&"small").await.unwrap();
        assert_eq!(r.read::<Vec<u64>>().await.unwrap(), Some(big));
        assert_eq!(r.read::<String>().await.unwrap().as_deref(), Some("small"));
        drop(w);
        assert_eq!(r.read::<String>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = FrameReader::new(b, limits(4096, 1 << 20));
        // Before the handshake the limit is the handshake's; 1 GiB is announced.
        a.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        let e = r.read::<String>().await.unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
    }

    #[tokio::test]
    async fn a_message_over_its_limit_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        w.set_peer_max_frame(1024);
        let mut r = FrameReader::new(b, limits(1024, 10_000));
        r.handshake_done();
        w.write(&vec![7u8; 20_000]).await.unwrap();
        let e = r.read::<Vec<u8>>().await.unwrap_err();
        assert!(e.to_string().contains("more than 10000 bytes"), "{e}");
    }

    #[tokio::test]
    async fn a_message_that_trickles_in_frame_by_frame_times_out() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::new(b, limits(4096, 1 << 20));
        let writer = tokio::spawn(async move {
            let mut w = FramedWrite::new(a, codec(4096));
            // A frame "more" every 100 ms, each well within the timeout, never the last one.
            for _ in 0..100 {
                if w.send(frame(MORE, &[1])).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let e = r.read::<Vec<u8>>().await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        writer.abort();
    }

    #[tokio::test]
    async fn a_frame_that_stops_half_way_times_out_and_an_idle_one_does_not() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = FrameReader::new(b, limits(4096, 1 << 20));
        // Idle for three periods, then a whole frame: no timeout.
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut w = FrameWriter::new(&mut a);
            w.write(&"late").await.unwrap();
            // Half a frame, then silence.
            a.write_all(&[0, 0, 0, 100, LAST, 1, 2]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(a);
        });
        assert_eq!(r.read::<String>().await.unwrap().as_deref(), Some("late"));
        let started = std::time::Instant::now();
        let e = r.read::<String>().await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(4));
        writer.abort();
    }
}
