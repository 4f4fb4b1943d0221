//! The server side of a TLS handshake on a freshly accepted TCP connection, on the worker's
//! I/O thread, bounded by --header-timeout. Nothing here touches the app.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{TlsInfo, TlsServer};
use crate::net::Stream;
use crate::observe::metrics::RequestMetrics;

/// TLS's record type for handshake messages (RFC 8446 §5.1): the first byte of every
/// ClientHello.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that sent plain HTTP to the TLS port gets, in cleartext (as nginx does).
const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 52\r\n\
Connection: close\r\n\
\r\n\
This port speaks HTTPS: plain HTTP was sent to it.\r\n";

/// A finished handshake: the stream to speak HTTP over, and what the app may learn of it.
pub(crate) struct Handshake {
    pub stream: Stream,
    pub info: Arc<TlsInfo>,
}

/// Runs the handshake on `tcp`, to be done by `deadline`. `None` when the connection is to be closed:
/// a failure is a debug line naming `peer` and the reason, and is counted.
pub(crate) async fn accept(
    server: &TlsServer,
    tcp: TcpStream,
    peer: &str,
    metrics: &RequestMetrics,
    deadline: Instant,
) -> Option<Handshake> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_) | Err(_)) => return None, // closed before saying anything: not a handshake
        Err(_) => {
            log::debug!("{peer}: TLS handshake timed out (nothing sent)");
            metrics.handshake(false);
            return None;
        }
    }
    if first[0] != HANDSHAKE_RECORD {
        metrics.handshake(false);
        if first[0].is_ascii_uppercase() {
            log::debug!("{peer}: TLS handshake failed: plain HTTP sent to the TLS port");
            refuse_plain_http(tcp, deadline).await;
        } else {
            log::debug!(
                "{peer}: TLS handshake failed: not a TLS record (first byte {:#04x})",
                first[0]
            );
        }
        return None;
    }
    // Before the handshake, so its own flights are paced the same way.
    crate::net::limit_unsent(&tcp);
    match tokio::time::timeout_at(deadline, server.acceptor.accept(tcp)).await {
        Ok(Ok(mut tls)) => {
            metrics.handshake(true);
            // rustls's default today, set here because the write path is measured with it.
            tls.get_mut()
                .1
                .set_buffer_limit(Some(crate::net::TLS_WRITE_CHUNK));
            let info = Arc::new(TlsInfo::new(
                tls.get_ref().1,
                Some(Arc::clone(&server.server_cert)),
            ));
            Some(Handshake {
                stream: Stream::Tls(Box::new(tls)),
                info,
            })
        }
        Ok(Err(e)) => {
            log::debug!("{peer}: TLS handshake failed: {e}");
            metrics.handshake(false);
            None
        }
        Err(_) => {
            log::debug!("{peer}: TLS handshake timed out");
            metrics.handshake(false);
            None
        }
    }
}

/// `--proxy-protocol` in front of TLS: the PROXY preamble (HAProxy, AWS NLB) comes in
/// cleartext before the ClientHello. It is taken off the socket without a byte more, so the
/// handshake starts at its first byte: bytes are peeked, and only those the preamble parser
/// has used (or all of them while it wants more, which makes the next peek wait) are read.
/// Returns the client address it carried (`None` for `LOCAL`/`UNKNOWN`: keep the peer), or the
/// reason the connection is to be closed.
pub(crate) async fn take_preamble(
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<Option<std::net::SocketAddr>, String> {
    use crate::http1::proxy_protocol;
    // A v2 preamble with TLVs can be long; anything larger than this is refused.
    const MAX: usize = 4096;
    let mut taken: Vec<u8> = Vec::with_capacity(128);
    let mut peeked = [0u8; MAX];
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut peeked)).await {
            Ok(Ok(0)) => return Err("closed before the PROXY preamble".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("PROXY preamble timed out".into()),
        };
        let mut seen = taken.clone();
        seen.extend_from_slice(&peeked[..n]);
        let (addr, used) = match proxy_protocol::parse(&seen) {
            Ok(Some((addr, used))) => (Some(addr), used - taken.len()),
            Ok(None) if seen.len() < MAX => (None, n),
            Ok(None) => return Err("PROXY preamble too long".into()),
            Err(e) => return Err(e.to_string()),
        };
        let mut consumed = vec![0u8; used];
        // Those bytes were peeked, so they are there: read_exact does not wait.
        tcp.read_exact(&mut consumed)
            .await
            .map_err(|e| e.to_string())?;
        match addr {
            Some(addr) => return Ok(addr),
            None => taken.extend_from_slice(&consumed),
        }
    }
}

/// Answers a cleartext request with a cleartext 400, then closes gently: the client's
/// unread request is drained for a moment so the close does not turn into a reset that could
/// destroy the answer before the client reads it.
async fn refuse_plain_http(mut tcp: TcpStream, deadline: Instant) {
    let linger = deadline.min(Instant::now() + Duration::from_secs(1));
    let answered = tokio::time::timeout_at(linger, async {
        tcp.write_all(PLAIN_HTTP_RESPONSE).await?;
        tcp.shutdown().await
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        return;
    }
    // What the client sent is usually all here already; a short pause per read stops the
    // drain as soon as it stops arriving.
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024usize;
    while left > 0 && Instant::now() < linger {
        match tokio::time::timeout(DRAIN_PAUSE, tcp.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

/// How long the drain after a cleartext 400 waits for more of the client's bytes.
const DRAIN_PAUSE: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_answer_has_the_right_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
