//! One HTTP/2 stream as a WSGI exchange: its head becomes a [`RequestHead`], it goes to the app
//! threads through the same seam as an HTTP/1.1 request, and the app's [`AppMsg`]s are carried
//! out as HEADERS and DATA frames under the peer's flow-control window.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use tokio::sync::mpsc;

use super::body::H2Body;
use super::head::request_head;
use crate::addr::{Local, Peer};
use crate::app::{AppMsg, BodyStream, Exchange, Request, ResponseSink, Rx};
use crate::http1::conn::{ConnCtx, Record};
use crate::http1::request::{Framing, RequestHead};
use crate::http1::response::{reason, with_date, EarlyHints, ResponseHead, SERVER};
use crate::observe::metrics::H2Event;

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

impl StreamShared {
    fn peer_text(&self) -> String {
        match &self.peer {
            Peer::Tcp(a) => a.to_string(),
            Peer::Unix => "unix socket".into(),
        }
    }
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
    let metrics = ctx.config.metrics.clone();
    metrics.h2(H2Event::Stream);
    let (parts, recv) = req.into_parts();
    let head = match request_head(&parts, recv.is_end_stream(), &ctx.config.limits) {
        Ok(h) => h,
        Err(e) => {
            log::debug!("{}: HTTP/2 request refused: {e}", shared.peer_text());
            let mut out = Out::Waiting(respond);
            let _ = send_error(&mut out, e.status(), &e.to_string(), ctx).await;
            return;
        }
    };
    let log = ctx.config.access_log.clone();
    let mut record =
        (log.is_some() || metrics.is_on()).then(|| Record::new(&head, &shared.peer, log.is_some()));
    metrics.begin();
    let started = std::time::Instant::now();
    exchange(head, recv, respond, &shared, record.as_mut()).await;
    match &mut record {
        Some(r) => {
            if let Some(log) = &log {
                r.finish(log);
            }
            metrics.end(r.status, r.started.elapsed(), r.bytes);
        }
        None => metrics.end(None, started.elapsed(), 0),
    }
}

async fn exchange(
    head: RequestHead,
    recv: RecvStream,
    respond: SendResponse<Bytes>,
    shared: &Arc<StreamShared>,
    mut record: Option<&mut Record>,
) {
    let ctx = &shared.ctx;
    let mut out = Out::Waiting(respond);
    let forwarded = match ctx.config.proxy.resolve(&shared.peer, &head.headers) {
        Ok(f) => f,
        Err(e) => {
            log::warn!(
                "{}: refused request {} {}: {e}",
                shared.peer_text(),
                head.method,
                head.target
            );
            let _ = send_error(&mut out, 400, &e.to_string(), ctx).await;
            note(record, 400);
            return;
        }
    };
    if let (Some(r), Some(client)) = (record.as_deref_mut(), forwarded.client) {
        r.remote = client.to_string();
    }
    let max_body = ctx.config.max_body;
    if let Framing::Length(n) = head.framing {
        if max_body > 0 && n > max_body {
            let e = crate::http1::error::RequestError::BodyTooLarge(max_body);
            // A response, then the stream's end: the connection's other streams go on.
            let _ = send_error(&mut out, e.status(), &e.to_string(), ctx).await;
            note(record, e.status());
            return;
        }
    }
    if ctx.max_pending > 0 && ctx.jobs.len() >= ctx.max_pending {
        let _ = send_error(&mut out, 503, "the server is busy; retry shortly", ctx).await;
        note(record, 503);
        return;
    }
    let mut body = H2Body::new(recv, max_body);
    // A bodyless request of a route proven fast runs on the I/O thread, as on HTTP/1.1
    // (`crate::inline`): its response is whole in the channel when the call returns.
    let route = ctx.inline.route(&head.method, &head.target);
    let inline = body.is_done() && ctx.inline.inline(route);
    let (tx, mut rx) = Rx::channel(inline);
    let (body_tx, body_rx) = (!body.is_done()).then(|| mpsc::channel(1)).unzip();
    let head_request = head.method.eq_ignore_ascii_case("HEAD");
    let mut expect_continue = head.expect_continue;
    let exchange = Exchange {
        request: Request {
            head,
            peer: shared.peer.clone(),
            local: shared.local.clone(),
            forwarded,
            extra: Vec::new(),
            tls: shared.tls.clone(),
        },
        body: BodyStream {
            link: body_rx.map(|rx| (tx.clone(), rx)),
            done: body.is_done(),
            error: None,
            pending: Bytes::new(),
        },
        response: ResponseSink { tx, started: None },
    };
    let alone = inline && ctx.inline.app_threads_idle();
    let exchange = if inline {
        let back = ctx.app.run_inline(exchange);
        if back.is_none() && !ctx.inline.app_threads_idle() {
            // App threads have requests: they must not wait for the GIL on this thread.
            ctx.app.release_inline();
        }
        back
    } else {
        Some(exchange)
    };
    let mut _in_app = None;
    if let Some(exchange) = exchange {
        _in_app = Some(ctx.inline.dispatched(route));
        // Waits for a free place in the app threads' queue (the rest of the streams queue
        // here), unless the client gives up on the stream first.
        let queued = tokio::select! {
            r = ctx.to_app_threads(exchange) => r.is_ok(),
            reason = reset_by_peer(&mut out) => {
                client_reset(shared, reason);
                return;
            }
        };
        if !queued {
            return;
        }
    }
    let served = ctx.served.fetch_add(1, Ordering::Relaxed) + 1;
    if served == ctx.max_requests {
        ctx.retire.notify_one();
    }
    let body_timeout = ctx.config.body_timeout;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            reason = reset_by_peer(&mut out) => {
                // Dropping `rx` tells the app the client went away.
                client_reset(shared, reason);
                return;
            }
        };
        let Some(msg) = msg else {
            // The app side went away without finishing the response.
            reset(&mut out, Reason::INTERNAL_ERROR, ctx);
            return;
        };
        let r = match msg {
            AppMsg::ReadBody(max) => {
                if std::mem::take(&mut expect_continue) {
                    // The app reads the body: the client may send it (RFC 9110 §10.1.1), as
                    // HTTP/1.1 does. An app that answers without reading never asks for it.
                    send_continue(&mut out);
                }
                let r = body.read(max, body_timeout).await;
                if let Err(e) = &r {
                    log::debug!("{}: HTTP/2 request body: {e}", shared.peer_text());
                }
                if let Some(body_tx) = &body_tx {
                    let _ = body_tx.send(r.map(|b| (b, body.is_done()))).await;
                }
                Ok(())
            }
            AppMsg::Head {
                head,
                body: first,
                last,
                took,
            } => {
                if last {
                    ctx.inline.record(route, took, alone);
                }
                if let Some(r) = record.as_deref_mut() {
                    r.status = Some(head.status);
                    r.response_headers.clone_from(&head.headers);
                }
                let no_body = head_request || head.bodiless();
                let first = if no_body { Bytes::new() } else { first };
                let sent = first.len() as u64;
                let r = start(&mut out, &head, first, last || no_body, ctx).await;
                if no_body {
                    // The app's body (if any) is not sent: stop listening for it.
                    if r.is_ok() && !last {
                        drain_app(&mut rx).await;
                    }
                    return;
                }
                if let Some(rec) = record.as_deref_mut() {
                    rec.bytes += sent;
                }
                if last {
                    return;
                }
                r
            }
            AppMsg::Data(data) => {
                if let Some(r) = record.as_deref_mut() {
                    r.bytes += data.len() as u64;
                }
                send_body(&mut out, data, false, ctx).await
            }
            AppMsg::File { file, offset, len } => {
                send_file(&mut out, &file, offset, len, ctx, record.as_deref_mut()).await
            }
            AppMsg::End(took) => {
                ctx.inline.record(route, took, alone);
                let _ = send_body(&mut out, Bytes::new(), true, ctx).await;
                return;
            }
            AppMsg::Abort => {
                reset(&mut out, Reason::INTERNAL_ERROR, ctx);
                return;
            }
            AppMsg::Hints(hints) => {
                send_hints(&mut out, &hints);
                Ok(())
            }
        };
        if r.is_err() {
            // Sending failed (the peer reset the stream, or held its window shut past
            // --write-timeout): the app sees the stream gone at its next send.
            return;
        }
    }
}

/// Records the status of a response the server made itself.
fn note(record: Option<&mut Record>, status: u16) {
    if let Some(r) = record {
        r.status = Some(status);
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
        shared.peer_text()
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

/// Takes (and ignores) what the app still sends for a response whose body is not wanted.
async fn drain_app(rx: &mut Rx) {
    while let Some(msg) = rx.recv().await {
        if matches!(msg, AppMsg::End(_) | AppMsg::Abort) {
            return;
        }
    }
}

/// The response's HEADERS frame for `head`.
fn response_parts(head: &ResponseHead) -> Result<http::Response<()>, http::Error> {
    let mut b = http::Response::builder().status(head.status);
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

/// `wsgi.early_hints`: a `103` HEADERS frame before the final response (RFC 8297), with the
/// fields the app gave (already checked as response fields). Ignored once the response has
/// started, as over HTTP/1.1; a hint that cannot be sent is only logged.
fn send_hints(out: &mut Out, hints: &EarlyHints) {
    let Out::Waiting(respond) = out else { return };
    let mut b = http::Response::builder().status(103);
    for (name, value) in hints.headers.iter() {
        if !connection_specific(name) {
            b = b.header(name, value);
        }
    }
    match b.body(()) {
        Ok(resp) => {
            if let Err(e) = respond.send_informational(resp) {
                log::debug!("HTTP/2: an early hint could not be sent: {e}");
            }
        }
        Err(e) => log::debug!("HTTP/2: an early hint could not be built: {e}"),
    }
}

/// A `100 Continue` HEADERS frame, if the response has not started.
fn send_continue(out: &mut Out) {
    let Out::Waiting(respond) = out else { return };
    match http::Response::builder().status(100).body(()) {
        Ok(resp) => {
            if let Err(e) = respond.send_informational(resp) {
                log::debug!("HTTP/2: a 100 Continue could not be sent: {e}");
            }
        }
        Err(e) => log::debug!("HTTP/2: a 100 Continue could not be built: {e}"),
    }
}

/// Sends the head and the first body bytes; `last` ends the stream with them.
async fn start(
    out: &mut Out,
    head: &ResponseHead,
    first: Bytes,
    last: bool,
    ctx: &ConnCtx,
) -> Result<(), ()> {
    let Out::Waiting(respond) = out else {
        return Err(());
    };
    let resp = match response_parts(head) {
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
    mut record: Option<&mut Record>,
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
        if let Some(r) = record.as_deref_mut() {
            r.bytes += n as u64;
        }
        send_body(out, Bytes::copy_from_slice(&buf[..n]), false, ctx).await?;
    }
    Ok(())
}

/// A response the server makes itself: status, a short plain-text body naming the problem,
/// and the stream's end.
async fn send_error(out: &mut Out, status: u16, message: &str, ctx: &ConnCtx) -> Result<(), ()> {
    let mut head = ResponseHead::plain(status, reason(status));
    let body = format!("{status} {}: {message}\n", reason(status));
    head.headers
        .push("Content-Length", body.len().to_string().as_bytes());
    if status == 503 {
        head.headers.push("Retry-After", b"1");
    }
    start(out, &head, Bytes::from(body), true, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_stay_out() {
        let mut head = ResponseHead::start("200 OK").expect("valid");
        head.headers.push("Connection", b"close");
        head.headers.push("X-Ok", b"1");
        let resp = response_parts(&head).expect("valid");
        assert!(resp.headers().get("connection").is_none());
        assert_eq!(resp.headers()["x-ok"], "1");
        assert!(resp.headers().contains_key("date"));
        assert!(resp.headers().contains_key("server"));
    }
}
