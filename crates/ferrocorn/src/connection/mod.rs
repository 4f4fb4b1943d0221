//! A client connection from accept to close: the TLS handshake, then the choice of protocol
//! driver (HTTP/2 by ALPN or h2c, uwsgi by `--protocol`, HTTP/1.1 otherwise). What every
//! connection of a worker shares is in [`ctx`]; the drivers run each request through
//! `crate::exchange`.

pub mod ctx;

use std::sync::Arc;

use crate::addr::{Local, Peer};
use crate::config::Protocol;
use crate::http1::conn::{Conn, Parked};
use crate::net::Stream;
use crate::transport::tls;
use ctx::{ConnConfig, ConnCtx};

/// Serves one connection to its end; or until an exchange opened a WebSocket the connection
/// runs from then on: `Some` with what is left to run (see `Conn::into_websocket`), which
/// the caller runs once this future is dropped.
pub(crate) async fn serve(
    io: Stream,
    mut peer: Peer,
    local: Local,
    ctx: Arc<ConnCtx>,
) -> Option<Parked> {
    // TLS: the handshake (after a PROXY preamble), then the protocol driver below.
    let (io, tls) = secure(io, &mut peer, &ctx.config).await?;
    if let Some(info) = tls.as_ref().filter(|t| t.is_h2()) {
        // ALPN chose HTTP/2 (RFC 9113 §3.2).
        let info = Some(Arc::clone(info));
        let fd = io.raw_fd();
        crate::http2::serve(io, fd, peer, local, ctx, info).await;
        return None;
    }
    let mut conn = Conn::new(io, tls, peer, local, ctx);
    if conn.ctx.config.proxy_protocol && conn.tls.is_none() && !conn.read_preamble().await {
        return None;
    }
    if conn.ctx.config.protocol == Protocol::Uwsgi {
        crate::uwsgi::serve(&mut conn).await;
        return None;
    }
    // THE h2c HAND-OFF POINTS: with `--http2-cleartext prior-knowledge`, a trusted peer whose
    // first bytes are HTTP/2's client preface (RFC 9113 §3.3) is served by the HTTP/2 driver,
    // the bytes already read going first. Anyone else stays with HTTP/1.1, whose parser
    // answers a preface with 505. With `upgrade`, a trusted peer's `Upgrade: h2c` request
    // switches the connection after it (`crate::http2::upgrade`).
    let h2c_allowed = conn.tls.is_none() // over TLS, HTTP/2 is chosen by ALPN (RFC 9113 §3.3)
        && conn.ctx.config.proxy.trusts(&conn.peer);
    if h2c_allowed
        && conn.ctx.config.http2.prior_knowledge
        && crate::http2::sniff_preface(&mut conn).await
    {
        crate::http2::serve_h2c(conn).await;
        return None;
    }
    let upgrade = (h2c_allowed && conn.ctx.config.http2.upgrade)
        .then_some(crate::http2::upgrade::requested as fn(&_) -> _);
    if let Some(stream_one) = conn.run(upgrade).await {
        // `Upgrade: h2c`: answered with 101, then served as HTTP/2 from stream 1 on.
        if crate::http2::switch_h2c(&mut conn, stream_one).await {
            crate::http2::serve_h2c(conn).await;
        }
        return None;
    }
    conn.into_websocket()
}

/// The step between accept and the HTTP driver: a TCP connection on a TLS server is
/// handshaken (after its PROXY preamble with `--proxy-protocol`, all within
/// `config.head_timeout`); other connections pass through as they are. `None` when the
/// connection is to be closed.
async fn secure(
    io: Stream,
    peer: &mut Peer,
    config: &ConnConfig,
) -> Option<(Stream, Option<Arc<tls::TlsInfo>>)> {
    let (mut tcp, server) = match (io, &config.tls) {
        (Stream::Tcp(tcp), Some(server)) => (tcp, server),
        (io, _) => return Some((io, None)),
    };
    let deadline = tokio::time::Instant::now() + config.head_timeout;
    if config.proxy_protocol {
        if !config.proxy.trusts(peer) {
            log::debug!("{}: PROXY protocol from an untrusted peer; closing", peer);
            return None;
        }
        match tls::take_preamble(&mut tcp, deadline).await {
            Ok(Some(addr)) => *peer = Peer::Tcp(addr),
            Ok(None) => {}
            Err(e) => {
                log::debug!("{}: {e}; closing", peer);
                return None;
            }
        }
    }
    let done = tls::accept(server, tcp, &peer.to_string(), &config.metrics, deadline).await?;
    Some((done.stream, Some(done.info)))
}
