//! The SQL port's limits on connections: how many, and how long one may take to start.
//!
//! * **Too many connections.** Past `--max-connections` a client is told so the way PostgreSQL
//!   tells it: once its startup message has arrived (after a plain `N` to an SSL or GSSAPI
//!   encryption request), a FATAL ErrorResponse with SQLSTATE 53300 `too_many_connections`,
//!   then the connection is closed. Before this a client past the limit waited in the kernel's
//!   backlog with no answer at all. The answer is written by [`reject_too_many`], itself
//!   bounded by the startup timeout and by the listener's [`super::listener::MAX_REJECTING`].
//! * **Startup timeout.** A connection that has not finished its startup (startup message and
//!   authentication, up to ReadyForQuery) within `--startup-timeout-ms` is closed: a client
//!   that trickles bytes cannot hold a connection slot. [`super::pg::serve`] applies it to the
//!   connections it serves, and [`reject_too_many`] to the ones it refuses.

use std::time::Duration;

use bytes::BytesMut;

use pgwire::error::ErrorInfo;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest startup packet read from a client that is being refused (PostgreSQL's limit).
const MAX_STARTUP_PACKET: usize = 10_000;

/// Request codes that come before the startup message and are answered with one byte.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// Tells a client past the connection limit so, with SQLSTATE 53300, once it has sent its
/// startup message; gives up silently if that takes longer than `timeout`.
pub async fn reject_too_many(mut socket: TcpStream, timeout: Duration, max_connections: usize) {
    let answer = async {
        loop {
            let mut len = [0u8; 4];
            socket.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            let Some(body) = usize::try_from(len)
                .ok()
                .and_then(|l| l.checked_sub(4))
                .filter(|&l| (4..=MAX_STARTUP_PACKET).contains(&l))
            else {
                return Ok(());
            };
            let mut packet = vec![0u8; body];
            socket.read_exact(&mut packet).await?;
            let code = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
            if code == SSL_REQUEST || code == GSSENC_REQUEST {
                socket.write_all(b"N").await?;
                continue;
            }
            break;
        }
        let info = ErrorInfo::new(
            "FATAL".into(),
            "53300".into(),
            format!(
                "sorry, too many clients already (this node serves at most {max_connections} SQL connections; see ddb server --max-connections)"
            ),
        );
        let mut buf = BytesMut::new();
        ErrorResponse::from(info)
            .encode(&mut buf)
            .map_err(std::io::Error::other)?;
        socket.write_all(&buf).await?;
        socket.shutdown().await
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Err(e)) => tracing::debug!("refusing a connection: {e}"),
        Err(_) => tracing::debug!("refusing a connection: no startup message in time"),
        Ok(Ok(())) => {}
    }
}
