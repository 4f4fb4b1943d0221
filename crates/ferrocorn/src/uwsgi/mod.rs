//! The uwsgi protocol driver (`--protocol uwsgi`): a front end such as nginx's `uwsgi_pass`
//! sends each request as one packet of CGI variables followed by its body; the response goes
//! back as plain HTTP/1.x and the connection closes after it, as uWSGI does with nginx.
//!
//! The packet becomes the same [`RequestHead`](crate::http1::request::RequestHead) the HTTP/1.1
//! driver makes, and runs through the same exchange (`http::conn`): the app side, the body
//! streaming, the response writer, the access log and the metrics are all shared.

pub mod packet;
pub mod request;

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::addr::Peer;
use crate::exchange::Source;
use crate::http1::conn::Conn;
use crate::http1::error::RequestError;
use crate::http1::request::{Framing, Version};
use crate::http1::response::error_response;
use crate::reclaim::Phase;

/// A packet that cannot be served.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UwsgiError {
    #[error("unsupported uwsgi packet type (modifier1 {0}, modifier2 {1}): only WSGI requests (modifier1 0 or 30, modifier2 0) are spoken; is HTTP being sent to a uwsgi listener?")]
    Modifier(u8, u8),
    #[error("malformed uwsgi vars block: it ends inside {0}")]
    Truncated(&'static str),
    #[error("malformed uwsgi vars block: a variable with an empty name")]
    EmptyName,
    #[error("uwsgi packet without {0}")]
    Missing(&'static str),
    #[error("uwsgi packet with an invalid {0}")]
    Invalid(&'static str),
    /// Over one of the request limits that apply over HTTP too: answered with its status.
    #[error("{0}")]
    Limit(RequestError),
}

/// How long the connection waits, at most, for more from the front end after the response
/// (the rest of an unread body, or the end of the connection) before it closes.
const LINGER: Duration = Duration::from_secs(2);

/// Serves one connection: one packet, its body, one response.
pub(crate) async fn serve(conn: &mut Conn) {
    let allowed = match &conn.peer {
        Peer::Tcp(addr) => conn.ctx.config.uwsgi_allow.contains(addr.ip()),
        // Only processes the socket file's permissions let in can connect.
        Peer::Unix => true,
    };
    if !allowed {
        log::debug!(
            "{}: uwsgi packet from a peer not in --uwsgi-allow-from; closing",
            conn.peer_text()
        );
        return;
    }
    let Some(req) = read_request(conn).await else {
        return;
    };
    conn.registration.slot.busy();
    let source = Source::FrontEnd(Box::new((req.forwarded, req.extra)));
    // A front end sends the whole body before it reads the response (nginx buffers it
    // first): what the app left unread is read and dropped, all of it (the peer is trusted
    // and the length was declared and checked against --limit-request-body), or nginx gets
    // a broken pipe and answers 502 where uWSGI's users know it from.
    let body = match req.head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    if conn.exchange(req.head, source).await.is_ok() {
        linger(conn, body).await;
    }
}

/// Reads the packet within `--header-timeout` and builds its request; `None` when the
/// connection must close (after an error response, for a request over a limit).
async fn read_request(conn: &mut Conn) -> Option<request::UwsgiRequest> {
    let deadline = Instant::now() + conn.ctx.config.head_timeout;
    // Waiting for a packet, like an HTTP connection waiting for its head: at
    // --worker-connections with a client waiting, this connection may be closed for it.
    conn.registration
        .slot
        .set(Phase::Head, conn.ctx.reclaim.ms(deadline));
    loop {
        match packet::take_packet(&mut conn.buf) {
            Ok(Some(vars)) => match request::build(&vars, &conn.ctx.config.limits) {
                Ok(req) => return Some(req),
                Err(UwsgiError::Limit(e)) => {
                    log::debug!("{}: uwsgi request refused: {e}", conn.peer_text());
                    let resp = error_response(e.status(), &e.to_string(), Version::Http11);
                    let timeout = conn.ctx.config.write_timeout;
                    let _ = tokio::time::timeout(timeout, conn.io.write_all(&resp)).await;
                    linger(conn, 0).await;
                    return None;
                }
                Err(e) => {
                    log::debug!("{}: {e}; closing", conn.peer_text());
                    return None;
                }
            },
            Ok(None) => {}
            Err(e) => {
                log::debug!("{}: {e}; closing", conn.peer_text());
                return None;
            }
        }
        // Room for the whole packet once its size is known (at most 64 KiB).
        let want = packet::packet_len(&conn.buf)
            .ok()
            .flatten()
            .unwrap_or(packet::HEADER_LEN + 4096);
        conn.buf
            .reserve(want.saturating_sub(conn.buf.len()).max(512));
        match tokio::time::timeout_at(deadline, conn.io.read_buf(&mut conn.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) if conn.buf.is_empty() => return None,
            Ok(Ok(_)) => {
                log::debug!("{}: uwsgi packet cut short; closing", conn.peer_text());
                return None;
            }
            Ok(Err(_)) => return None,
            Err(_) => {
                log::debug!("{}: uwsgi packet timed out; closing", conn.peer_text());
                return None;
            }
        }
    }
}

/// Ends the connection the way a front end expects: our side first, then whatever it still
/// sends (a body of `body` bytes the app may not have read) is read and dropped until it
/// closes, bounded in bytes (the body and the drain allowance of 1 MiB more) and by a stall of
/// [`LINGER`]. Closing with unread bytes would reset the connection, and a reset can destroy
/// the response before the front end has read it.
async fn linger(conn: &mut Conn, body: u64) {
    let timeout = conn.ctx.config.write_timeout;
    if tokio::time::timeout(timeout, conn.io.shutdown())
        .await
        .is_err()
    {
        return;
    }
    let mut left = body.saturating_add(conn.ctx.config.max_drain);
    conn.buf.clear();
    while left > 0 {
        conn.buf.reserve(64 * 1024);
        let deadline = Instant::now() + LINGER;
        match tokio::time::timeout_at(deadline, conn.io.read_buf(&mut conn.buf)).await {
            Ok(Ok(n)) if n > 0 => {
                left = left.saturating_sub(n as u64);
                conn.buf.clear();
            }
            _ => return,
        }
    }
}
