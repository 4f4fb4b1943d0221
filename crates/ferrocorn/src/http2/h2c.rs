//! h2c on an HTTP/1.1 connection (`--http2-cleartext`): prior knowledge, found by the client
//! preface at the connection's start, and `Upgrade: h2c`, switched with a `101` after the
//! request; either way the socket, behind the bytes already read, goes to the HTTP/2 driver.

use bytes::BytesMut;
use tokio::time::Instant;

use super::upgrade::{client_start_len, SWITCHING};
use super::Rewind;
use crate::http1::conn::Conn;
use crate::reclaim::Phase;

/// Reads until the buffer holds HTTP/2's client preface (true) or something else (false),
/// within `--header-timeout`.
pub(crate) async fn sniff_preface(conn: &mut Conn) -> bool {
    let preface = super::PREFACE;
    let deadline = Instant::now() + conn.ctx.config.head_timeout;
    loop {
        let n = conn.buf.len().min(preface.len());
        if conn.buf[..n] != preface[..n] {
            return false;
        }
        if n == preface.len() {
            return true;
        }
        conn.registration
            .slot
            .set(Phase::Head, conn.ctx.reclaim.ms(deadline));
        match tokio::time::timeout_at(deadline, conn.io.read_ready(&mut conn.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed or too slow: the HTTP/1.1 path ends it the usual way.
            _ => return false,
        }
    }
}

/// Answers `101 Switching Protocols`, then reads the client's HTTP/2 preface and first
/// SETTINGS frame (within `--header-timeout`) and leaves in `buf` those, `stream_one`
/// after them, and whatever the client sent next, for the HTTP/2 driver to read first. False when the connection must close.
pub(crate) async fn switch(conn: &mut Conn, stream_one: BytesMut) -> bool {
    if conn.write(&[SWITCHING]).await.is_err() {
        return false;
    }
    let deadline = Instant::now() + conn.ctx.config.head_timeout;
    loop {
        match client_start_len(&conn.buf) {
            Ok(Some(n)) => {
                let rest = conn.buf.split_off(n);
                let mut replay =
                    BytesMut::with_capacity(conn.buf.len() + stream_one.len() + rest.len());
                replay.extend_from_slice(&conn.buf);
                replay.extend_from_slice(&stream_one);
                replay.extend_from_slice(&rest);
                conn.buf = replay;
                return true;
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("{}: h2c upgrade: {e}; closing", conn.peer_text());
                return false;
            }
        }
        conn.registration
            .slot
            .set(Phase::Head, conn.ctx.reclaim.ms(deadline));
        match tokio::time::timeout_at(deadline, conn.io.read_ready(&mut conn.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                log::debug!(
                    "{}: h2c upgrade: no HTTP/2 preface; closing",
                    conn.peer_text()
                );
                return false;
            }
        }
    }
}

/// Serves the rest of the connection as h2c, the bytes already read going first.
pub(crate) async fn serve_h2c(conn: Conn) {
    let fd = conn.io.raw_fd();
    let (io, read, peer, local, ctx) = conn.into_parts();
    super::serve(Rewind::new(read, io), fd, peer, local, ctx, None).await;
}
