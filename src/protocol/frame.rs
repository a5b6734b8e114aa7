//! Framing: length-delimited frames over TCP, each one serde-encoded (postcard) value.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes. Frames larger than
//! [`MAX_FRAME`] are refused, so a peer (or garbage on the port) cannot make a node allocate
//! without bound; a frame that does not decode is an error naming the peer, never a panic.

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::{Error, Result};

/// The largest frame accepted: 256 MiB.
pub const MAX_FRAME: usize = 256 << 20;

/// A TCP stream split into frames.
pub type FramedStream = Framed<TcpStream, LengthDelimitedCodec>;

/// Wraps a stream in the frame codec.
pub fn framed(stream: TcpStream) -> FramedStream {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    Framed::new(stream, codec)
}

/// Encodes one value as a frame body.
pub fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes> {
    postcard::to_stdvec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| Error::Internal(format!("cannot encode frame: {e}")))
}

/// Decodes one frame body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("malformed frame: {e}")))
}

/// Writes one value as a frame.
pub async fn write_frame<S, T>(sink: &mut S, value: &T) -> Result<()>
where
    S: futures::Sink<bytes::Bytes, Error = std::io::Error> + Unpin,
    T: Serialize,
{
    sink.send(encode(value)?)
        .await
        .map_err(|e| Error::Unreachable(format!("send failed: {e}")))
}

/// Reads one frame and decodes it; `None` at a clean end of stream.
pub async fn read_frame<S, T>(stream: &mut S) -> Result<Option<T>>
where
    S: futures::Stream<Item = std::io::Result<bytes::BytesMut>> + Unpin,
    T: DeserializeOwned,
{
    match stream.next().await {
        None => Ok(None),
        Some(Ok(bytes)) => decode(&bytes).map(Some),
        Some(Err(e)) => Err(Error::Unreachable(format!("connection error: {e}"))),
    }
}
