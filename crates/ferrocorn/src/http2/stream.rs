//! One HTTP/2 stream: its head becomes a `RequestHead` and it runs through the same exchange
//! as an HTTP/1.1 request (`crate::exchange`); this module is its [`Wire`]: the response as
//! HEADERS and DATA frames under the peer's flow-control window, the body from its DATA.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};

use super::body::H2Body;
use super::connect::ConnectIo;
use super::head::request_head;
use crate::addr::{Local, Peer};
use crate::connection::ctx::ConnCtx;
use crate::exchange::{self, Source, Wire};
use crate::http1::error::BodyError;
use crate::http1::request::RequestHead;
use crate::http1::response::{
    server_response, with_date, EarlyHints, HeaderBlock, ResponseHead, Trailers, SERVER,
};
use crate::observe::metrics::H2Event;
use crate::transport::tls::TlsInfo;
use crate::websocket::handshake::{Handshake, HandshakeError};

/// How long the rest of a refused request's body is read and dropped, at most.
const REFUSED_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A file from `wsgi.file_wrapper` is read and sent in pieces of at most this size.
const FILE_CHUNK: usize = 64 * 1024;

/// What a response or hint must not carry over HTTP/2: the connection-specific fields, and
/// `TE` (a request field). `ResponseHead` already refuses them from an app; this keeps them
/// out whatever made the head.
fn connection_specific(name: &str) -> bool {
    name.eq_ignore_ascii_case("te")
        || super::CONNECTION_SPECIFIC
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
}

/// What every stream of one connection shares.
pub(crate) struct StreamShared {
    pub(crate) ctx: Arc<ConnCtx>,
    pub(crate) peer: Peer,
    pub(crate) local: Local,
    /// The connection's TLS facts (ALPN `h2`); None for h2c.
    pub(crate) tls: Option<Arc<crate::transport::tls::TlsInfo>>,
    /// Streams the client reset after the server took them on and before their response
    /// ended (see the driver's rapid-reset bound).
    pub(crate) resets: AtomicU32,
}

/// How the response side of a stream stands.
enum Out {
    /// Nothing sent yet.
    Waiting(SendResponse<Bytes>),
    /// HEADERS sent; DATA may follow (`None` when the response ended with them).
    Body(Option<SendStream<Bytes>>),
}

/// Serves one stream to its end.
pub(crate) async fn serve(
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    shared: Arc<StreamShared>,
) {
    let ctx = &shared.ctx;
    ctx.config.metrics.h2(H2Event::Stream);
    let (parts, recv) = req.into_parts();
    let head = match request_head(&parts, recv.is_end_stream(), &ctx.config.limits) {
        Ok(h) => h,
        Err(e) => {
            log::debug!("{}: HTTP/2 request refused: {e}", shared.peer);
            let mut out = Out::Waiting(respond);
            let (head, body) = server_response(e.status(), &e.to_string());
            let _ = start(&mut out, &head, None, body, true, ctx).await;
            return;
        }
    };
    let mut wire = H2Wire {
        shared: &shared,
        out: Out::Waiting(respond),
        body: H2Body::new(recv, ctx.config.max_body),
        head_request: head.method.eq_ignore_ascii_case("HEAD"),
        no_body: false,
        refused: false,
    };
    let _ = exchange::run(&mut wire, head, Source::Headers).await;
}

/// One stream's exchange: the app's response as HEADERS and DATA frames under the peer's
/// flow-control window, the body from the stream's DATA.
struct H2Wire<'s> {
    shared: &'s Arc<StreamShared>,
    out: Out,
    body: H2Body,
    head_request: bool,
    /// The response ended with its head (HEAD, a bodiless status): what the app still sends
    /// is not sent.
    no_body: bool,
    /// The server refused the request (413, 503, a bad forwarded header).
    refused: bool,
}

impl Wire for H2Wire<'_> {
    fn ctx(&self) -> &Arc<ConnCtx> {
        &self.shared.ctx
    }

    fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    fn local(&self) -> &Local {
        &self.shared.local
    }

    fn tls(&self) -> Option<&Arc<TlsInfo>> {
        self.shared.tls.as_ref()
    }

    fn body_done(&self) -> bool {
        self.body.is_done()
    }

    async fn read_body(&mut self, max: usize) -> Result<Bytes, BodyError> {
        let stall = self.shared.ctx.config.body_timeout;
        self.body.read(max, stall).await
    }

    async fn send_continue(&mut self) -> Result<(), ()> {
        send_interim(&mut self.out, 100, &HeaderBlock::default());
        Ok(())
    }

    async fn send_hints(&mut self, hints: &EarlyHints) -> Result<(), ()> {
        send_interim(&mut self.out, 103, &hints.headers);
        Ok(())
    }

    async fn send_head(
        &mut self,
        head: &ResponseHead,
        first: Bytes,
        last: bool,
        _file_follows: bool,
    ) -> Result<u64, ()> {
        self.no_body = self.head_request || head.bodiless();
        // The length when the whole body is known now, as HTTP/1.1 declares it.
        let length = (last && head.content_length.is_none() && !head.bodiless())
            .then_some(first.len() as u64);
        let first = if self.no_body { Bytes::new() } else { first };
        let sent = first.len() as u64;
        let end = last || self.no_body;
        start(&mut self.out, head, length, first, end, &self.shared.ctx).await?;
        Ok(sent)
    }

    async fn send_data(&mut self, pieces: &mut [Bytes]) -> Result<u64, ()> {
        if self.no_body {
            return Ok(0);
        }
        let mut sent = 0;
        for piece in pieces.iter_mut() {
            let piece = std::mem::take(piece);
            sent += piece.len() as u64;
            send_body(&mut self.out, piece, false, &self.shared.ctx).await?;
        }
        Ok(sent)
    }

    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, ()> {
        if self.no_body {
            return Ok(0);
        }
        send_file(&mut self.out, file, offset, len, &self.shared.ctx).await?;
        Ok(len)
    }

    async fn finish(&mut self) -> Result<(), ()> {
        if !matches!(self.out, Out::Body(Some(_))) {
            return Ok(());
        }
        send_body(&mut self.out, Bytes::new(), true, &self.shared.ctx).await
    }

    async fn finish_with(&mut self, trailers: &Trailers) -> Result<(), ()> {
        let Out::Body(Some(send)) = &mut self.out else {
            return Ok(());
        };
        let mut fields = http::HeaderMap::new();
        for (name, value) in trailers.fields.iter() {
            if connection_specific(name) {
                continue;
            }
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value),
            ) {
                (Ok(name), Ok(value)) => {
                    fields.append(name, value);
                }
                _ => log::debug!("HTTP/2: trailer field {name:?} dropped"),
            }
        }
        if fields.is_empty() {
            return self.finish().await;
        }
        // A HEADERS frame that ends the stream (RFC 9113 §8.1).
        let sent = send.send_trailers(fields).map_err(|_| ());
        self.out = Out::Body(None);
        sent
    }

    fn abort(&mut self) {
        reset(&mut self.out, Reason::INTERNAL_ERROR, &self.shared.ctx);
    }

    fn close_after(&mut self) {
        // Only the stream ends; the connection's other streams go on.
        self.refused = true;
    }

    async fn abandoned(&mut self) {
        let reason = reset_by_peer(&mut self.out).await;
        client_reset(self.shared, reason);
    }

    fn websocket_handshake(&self, head: &RequestHead) -> Option<Result<Handshake, HandshakeError>> {
        // `request_head` let a CONNECT through only with `:protocol websocket`.
        (&*head.method == "CONNECT").then(|| Handshake::check_extended_connect(head))
    }

    async fn open_websocket(
        &mut self,
        hs: &Handshake,
        subprotocol: Option<&str>,
        fields: &[(&str, &[u8])],
    ) -> Result<u16, ()> {
        // RFC 8441 §5: a 2xx opens it; the stream stays open both ways.
        let mut head = ResponseHead::start("200 OK").map_err(drop)?;
        if let Some(p) = hs.subprotocol(subprotocol).map_err(drop)? {
            head.add("Sec-WebSocket-Protocol", p.as_bytes())
                .map_err(drop)?;
        }
        if let Some(d) = hs.deflate() {
            head.add("Sec-WebSocket-Extensions", d.response().as_bytes())
                .map_err(drop)?;
        }
        for (name, value) in fields {
            head.add(name, value).map_err(drop)?;
        }
        let Out::Waiting(mut respond) = std::mem::replace(&mut self.out, Out::Body(None)) else {
            return Err(());
        };
        let parts = response_parts(&head, None).map_err(drop)?;
        let send = respond.send_response(parts, false).map_err(drop)?;
        self.out = Out::Body(Some(send));
        Ok(200)
    }

    fn websocket_io(&mut self) -> Option<exchange::WsIo<'_>> {
        let Out::Body(Some(send)) = std::mem::replace(&mut self.out, Out::Body(None)) else {
            return None;
        };
        Some(Box::new(ConnectIo::new(send, self.body.stream())))
    }

    async fn websocket_done(&mut self) {
        // Its END_STREAM went out as the stream's handle was dropped. The client may still be
        // sending (a message the server refused, its close reply): taken and dropped for a
        // moment, as after a refusal, so it sees the end rather than a window that never opens.
        let linger = self
            .body
            .drain(u64::MAX, self.shared.ctx.config.body_timeout);
        let _ = tokio::time::timeout(REFUSED_LINGER, linger).await;
    }

    async fn wrap_up(&mut self, unanswered_continue: bool) -> bool {
        // What is left of the body is read and dropped, so the client's request ends cleanly:
        // up to the bound HTTP/1.1 drains after an answer; after a refusal (a 413 while the
        // upload goes on) for as long as it keeps coming, within `REFUSED_LINGER`, as nginx
        // lingers, since a client still sending when the stream is reset may never show its
        // user the response (curl: exit 92). Past that, or when the client waits for a 100 it
        // never got, the stream is reset as the exchange ends (RST_STREAM NO_ERROR, which RFC
        // 9113 §8.1 allows once the response is complete).
        if !unanswered_continue {
            let config = &self.shared.ctx.config;
            if self.refused {
                let linger = self.body.drain(u64::MAX, config.body_timeout);
                let _ = tokio::time::timeout(REFUSED_LINGER, linger).await;
            } else {
                self.body.drain(config.max_drain, config.body_timeout).await;
            }
        }
        // The stream is over; the connection is the driver's.
        false
    }
}

/// Waits until the client resets the stream (RST_STREAM), returning its reason.
async fn reset_by_peer(out: &mut Out) -> Reason {
    std::future::poll_fn(|cx| {
        let r = match out {
            Out::Waiting(respond) => respond.poll_reset(cx),
            Out::Body(Some(send)) => send.poll_reset(cx),
            Out::Body(None) => return Poll::Pending,
        };
        match r {
            Poll::Ready(Ok(reason)) => Poll::Ready(reason),
            // The connection failed: the stream is gone as well.
            Poll::Ready(Err(_)) => Poll::Ready(Reason::CANCEL),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn client_reset(shared: &StreamShared, reason: Reason) {
    shared.resets.fetch_add(1, Ordering::Relaxed);
    log::debug!(
        "{}: HTTP/2 stream reset by the client: {reason:?}",
        shared.peer
    );
    shared.ctx.config.metrics.h2(H2Event::ResetReceived);
}

/// Resets the stream (RST_STREAM with `reason`), if it is still open.
fn reset(out: &mut Out, reason: Reason, ctx: &ConnCtx) {
    match out {
        Out::Waiting(respond) => respond.send_reset(reason),
        Out::Body(Some(send)) => send.send_reset(reason),
        Out::Body(None) => return,
    }
    ctx.config.metrics.h2(H2Event::ResetSent);
    *out = Out::Body(None);
}

/// The response's HEADERS frame for `head`.
fn response_parts(
    head: &ResponseHead,
    length: Option<u64>,
) -> Result<http::Response<()>, http::Error> {
    let mut b = http::Response::builder().status(head.status);
    if let Some(n) = length {
        b = b.header(http::header::CONTENT_LENGTH, n);
    }
    let (mut has_date, mut has_server) = (false, false);
    for (name, value) in head.headers.iter() {
        if connection_specific(name) {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        has_server |= name.eq_ignore_ascii_case("server");
        b = b.header(name, value);
    }
    if !has_server {
        b = b.header(http::header::SERVER, SERVER);
    }
    if !has_date {
        b = with_date(|d| b.header(http::header::DATE, d));
    }
    b.body(())
}

/// An interim response (`100 Continue`, `103 Early Hints` with the app's fields, already
/// checked as response fields), if the final one has not started; one that cannot be sent
/// is only logged.
fn send_interim(out: &mut Out, status: u16, fields: &HeaderBlock) {
    let Out::Waiting(respond) = out else { return };
    let mut b = http::Response::builder().status(status);
    for (name, value) in fields.iter() {
        if !connection_specific(name) {
            b = b.header(name, value);
        }
    }
    match b.body(()) {
        Ok(resp) => {
            if let Err(e) = respond.send_informational(resp) {
                log::debug!("HTTP/2: an interim {status} could not be sent: {e}");
            }
        }
        Err(e) => log::debug!("HTTP/2: an interim {status} could not be built: {e}"),
    }
}

/// Sends the head (with `content-length: length` when given) and the first body bytes;
/// `last` ends the stream with them.
async fn start(
    out: &mut Out,
    head: &ResponseHead,
    length: Option<u64>,
    first: Bytes,
    last: bool,
    ctx: &ConnCtx,
) -> Result<(), ()> {
    let Out::Waiting(respond) = out else {
        return Err(());
    };
    let resp = match response_parts(head, length) {
        Ok(r) if head.status >= 200 => r,
        _ => {
            log::error!(
                "HTTP/2: the app's response head cannot be sent (status {})",
                head.status
            );
            reset(out, Reason::INTERNAL_ERROR, ctx);
            return Err(());
        }
    };
    let end_now = last && first.is_empty();
    match respond.send_response(resp, end_now) {
        Ok(send) => *out = Out::Body((!end_now).then_some(send)),
        Err(e) => {
            log::debug!("HTTP/2: sending a response head failed: {e}");
            *out = Out::Body(None);
            return Err(());
        }
    }
    if end_now {
        return Ok(());
    }
    send_body(out, first, last, ctx).await
}

/// Sends `data` as DATA frames as the peer's window allows, never buffering more than
/// `h2`'s send buffer; `end` ends the stream after it. A window held shut for longer than
/// `--write-timeout` resets the stream.
async fn send_body(out: &mut Out, mut data: Bytes, end: bool, ctx: &ConnCtx) -> Result<(), ()> {
    let Out::Body(Some(send)) = out else {
        return Err(());
    };
    if data.is_empty() {
        if end {
            let r = send.send_data(Bytes::new(), true).map_err(|_| ());
            *out = Out::Body(None);
            return r;
        }
        return Ok(());
    }
    let timeout = ctx.config.write_timeout;
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let room = tokio::time::timeout(timeout, capacity(send)).await;
        let n = match room {
            Ok(Some(n)) => n,
            Ok(None) => {
                *out = Out::Body(None);
                return Err(());
            }
            Err(_) => {
                log::debug!("HTTP/2: the client's window stayed shut past --write-timeout");
                reset(out, Reason::CANCEL, ctx);
                return Err(());
            }
        };
        let piece = data.split_to(n.min(data.len()));
        let last = end && data.is_empty();
        if send.send_data(piece, last).is_err() {
            *out = Out::Body(None);
            return Err(());
        }
    }
    if end {
        *out = Out::Body(None);
    }
    Ok(())
}

/// Waits for send capacity on the stream: the bytes that may be sent now (never zero), or
/// `None` when the stream is gone.
async fn capacity(send: &mut SendStream<Bytes>) -> Option<usize> {
    std::future::poll_fn(|cx| loop {
        let now = send.capacity();
        if now > 0 {
            return Poll::Ready(Some(now));
        }
        match send.poll_capacity(cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// `wsgi.file_wrapper`: the file in pieces of at most [`FILE_CHUNK`], each read as the
/// window lets the previous one out, so a large file never sits in memory whole.
async fn send_file(
    out: &mut Out,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    ctx: &ConnCtx,
) -> Result<(), ()> {
    let mut at = offset;
    let end = offset.saturating_add(len);
    let mut buf = vec![0u8; FILE_CHUNK];
    while at < end {
        let want = usize::try_from(end - at).map_or(FILE_CHUNK, |n| n.min(FILE_CHUNK));
        // A regular file read: the page cache usually has it, as for sendfile(2).
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) | Err(_) => {
                // The file shrank (or failed) under us: the response cannot be completed.
                reset(out, Reason::INTERNAL_ERROR, ctx);
                return Err(());
            }
            Ok(n) => n,
        };
        at += n as u64;
        send_body(out, Bytes::copy_from_slice(&buf[..n]), false, ctx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_stay_out() {
        let mut head = ResponseHead::start("200 OK").expect("valid");
        head.headers.push("Connection", b"close");
        head.headers.push("X-Ok", b"1");
        let resp = response_parts(&head, Some(5)).expect("valid");
        assert_eq!(resp.headers()["content-length"], "5");
        assert!(resp.headers().get("connection").is_none());
        assert_eq!(resp.headers()["x-ok"], "1");
        assert!(resp.headers().contains_key("date"));
        assert!(resp.headers().contains_key("server"));
    }
}
