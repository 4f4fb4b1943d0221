//! One request/response exchange, whatever protocol carried it. Every behaviour between a
//! parsed request head and the end of its response lives here once: admission (trusted-proxy
//! headers, static files, `--limit-request-body`'s 413, `--max-pending`'s 503), dispatch
//! (inline on the I/O thread or to the app threads), the relay of the app's messages (`100
//! Continue` at the first body read, early hints, head, data, files, the end), the switch to
//! a tunnel when the app takes the connection over (`crate::tunnel`), and the access log and
//! metrics record.
//!
//! A protocol driver (HTTP/1.1 and uwsgi in `crate::http1`, HTTP/2 in `crate::http2`) keeps
//! only its wire format: it implements [`Wire`] (how a body is read, how a head, data or a
//! file is written, how the response ends and whether the connection goes on) and calls
//! [`run`] for each request head it reads.

mod record;
mod websocket;

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::addr::{Local, Peer};
use crate::app::{AppSocket, BodyLink, BodyStream, Exchange, Request, ResponseSink, Rx};
use crate::batch;
use crate::connection::ctx::ConnCtx;
use crate::http1::error::{BodyError, RequestError};
use crate::http1::request::{Framing, RequestHead, Text};
use crate::http1::response::{server_response, EarlyHints, HeaderBlock, ResponseHead, Trailers};
use crate::messages::{AppMsg, BodyPiece};
use crate::net::Stream;
use crate::proxy::Forwarded;
use crate::static_files::{Answer as StaticAnswer, Body as StaticBody};
use crate::transport::tls::TlsInfo;
use crate::websocket::handshake::{Handshake, HandshakeError};

pub(crate) use record::Record;
pub(crate) use websocket::Opened;

/// A file's bytes (static files, `wsgi.file_wrapper`) go to the driver in pieces of at most
/// this size, each of which must leave within `--write-timeout`: a client must take this much
/// per timeout (17 KB/s at the default 30 s), so a slow download is not cut while a stalled
/// one is.
const FILE_PIECE: u64 = 512 << 10;

/// The most body pieces gathered into one write, and the most bytes.
const GATHER_PIECES: usize = 32;
const GATHER_BYTES: usize = 1024 * 1024;

/// How a protocol driver carries one exchange. Methods that send return `Err(())` when the
/// exchange cannot go on (the client went away, a write failed or timed out); the driver has
/// logged why.
#[allow(async_fn_in_trait)] // crate-private, and only used with concrete drivers
pub(crate) trait Wire {
    /// What the connection shares with its worker.
    fn ctx(&self) -> &Arc<ConnCtx>;
    fn peer(&self) -> &Peer;
    fn local(&self) -> &Local;
    /// The connection's TLS facts; None in cleartext.
    fn tls(&self) -> Option<&Arc<TlsInfo>>;

    /// Body bytes already at hand with the head, taken without waiting (empty if none, or if
    /// only part of the body is here).
    fn preload_body(&mut self) -> Bytes {
        Bytes::new()
    }
    /// The whole of a small body that is still arriving, waited for (empty where the driver
    /// does not wait for bodies ahead of the app).
    async fn await_small_body(&mut self) -> Result<Bytes, BodyError> {
        Ok(Bytes::new())
    }
    /// True when nothing of the request body is left to read.
    fn body_done(&self) -> bool;
    /// Up to `max` body bytes for the app (empty at the body's end).
    async fn read_body(&mut self, max: usize) -> Result<Bytes, BodyError>;

    /// `100 Continue`, where the protocol and the client allow interim responses.
    async fn send_continue(&mut self) -> Result<(), ()>;
    /// `103 Early Hints`, likewise.
    async fn send_hints(&mut self, hints: &EarlyHints) -> Result<(), ()>;
    /// The response head with its first body bytes; `last` when nothing follows;
    /// `file_follows` when the next thing sent is a file's bytes. Returns the body bytes sent
    /// (none for a HEAD request or a bodiless status).
    async fn send_head(
        &mut self,
        head: &ResponseHead,
        first: Bytes,
        last: bool,
        file_follows: bool,
    ) -> Result<u64, ()>;
    /// Body pieces the app has queued, sent together where the protocol can; returns the
    /// bytes sent.
    async fn send_data(&mut self, pieces: &mut [Bytes]) -> Result<u64, ()>;
    /// `len` bytes of `file` from `offset` (at most [`FILE_PIECE`]); returns the bytes sent,
    /// fewer only where the response's framing allows no more.
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, ()>;
    /// The response is complete.
    async fn finish(&mut self) -> Result<(), ()>;
    /// The response is complete, with trailer fields after the body where its framing
    /// carries them (else as [`Wire::finish`]).
    async fn finish_with(&mut self, trailers: &Trailers) -> Result<(), ()>;
    /// True where small responses made in one run of ready work go out best together at its
    /// end (`crate::batch`): a connection that writes its own responses (HTTP/1.1). An HTTP/2
    /// stream's frames are written by its connection's task, which batches them already.
    fn batches(&self) -> bool {
        false
    }
    /// The response cannot be completed: cut it off so the client sees it is incomplete.
    fn abort(&mut self);
    /// The connection must end after this exchange (a refusal the server made).
    fn close_after(&mut self);
    /// Resolves when the client has given up on the exchange, where the protocol says so
    /// (an HTTP/2 RST_STREAM); never, where it does not.
    async fn abandoned(&mut self);
    /// After the response: true when the connection may carry another exchange.
    /// `unanswered_continue`: the client asked for `100 Continue` and never got it.
    async fn wrap_up(&mut self, unanswered_continue: bool) -> bool;
    /// The connection's byte stream and the bytes read past the request head, for an app
    /// that takes the connection over (`crate::tunnel`); None where the protocol has no
    /// connection of its own to give (an HTTP/2 stream, a uwsgi packet).
    fn byte_stream(&mut self) -> Option<(&mut Stream, &mut BytesMut)> {
        None
    }

    /// The WebSocket handshake `head` asks for, checked, where this wire can carry one
    /// (HTTP/1.1's upgrade, HTTP/2's extended CONNECT); None for any other request.
    fn websocket_handshake(&self, head: &RequestHead) -> Option<Result<Handshake, HandshakeError>>;
    /// Accepts the handshake with the app's `subprotocol` (checked already) and `fields`;
    /// returns the status the access log records. The session then runs over
    /// [`Wire::websocket_io`], here or, where the wire parks it, after the exchange.
    async fn open_websocket(
        &mut self,
        hs: &Handshake,
        subprotocol: Option<&str>,
        fields: &[(&str, &[u8])],
    ) -> Result<u16, ()>;
    /// The byte stream of the WebSocket [`Wire::open_websocket`] opened (None when it was
    /// not opened, or was taken already).
    fn websocket_io(&mut self) -> Option<WsIo<'_>>;
    /// Keeps the open WebSocket for the connection to run once the exchange is over, where
    /// the connection has nothing else to do (HTTP/1.1: its task lets go of the exchange's
    /// future, the largest part of what it holds, for the whole session; see
    /// `crate::http1::conn`). `Some` gives it back: it runs within the exchange (an HTTP/2
    /// stream, whose connection goes on).
    fn park_websocket(&mut self, ws: Opened) -> Option<Opened> {
        Some(ws)
    }
    /// The WebSocket opened by [`Wire::open_websocket`] is over (its stream dropped): what
    /// the client still sends on its way out is taken where the connection goes on (an HTTP/2
    /// stream: the rest of a frame, its close reply); HTTP/1.1 just closes.
    async fn websocket_done(&mut self) {}
}

/// The byte stream a WebSocket the core speaks runs over (`websocket`): boxed, since a
/// driver's own type (with the connection's lifetime) in the exchange's future trips rustc's
/// `Send` check of the connection task.
pub(crate) type WsIo<'a> = Box<dyn WsStream + 'a>;

/// What [`WsIo`] can be.
pub(crate) trait WsStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> WsStream for T {}

/// Who says where the request came from.
pub(crate) enum Source {
    /// The forwarded headers of the request, counted only from a trusted peer.
    Headers,
    /// A uwsgi front end's packet: the client and scheme it stated, and the variables it
    /// passes through to the environ as they are. Boxed: the usual case moves a word.
    FrontEnd(Box<(Forwarded, Vec<(Text, Bytes)>)>),
}

/// Runs one exchange on `wire`, with its access-log line and metrics. `Ok(true)` when the
/// connection may carry another; `Err(())` when it broke off.
pub(crate) async fn run<W: Wire>(
    wire: &mut W,
    head: RequestHead,
    source: Source,
) -> Result<bool, ()> {
    let ctx = Arc::clone(wire.ctx());
    let for_log = ctx.config.access_log.is_some();
    if !for_log && !ctx.config.metrics.is_on() {
        return serve(wire, &ctx, head, source, None).await;
    }
    let record = Record::new(&head, wire.peer(), wire.tls().is_some(), for_log);
    ctx.config.metrics.begin();
    // Logged and counted when dropped: also when the exchange is cancelled (an HTTP/2
    // connection that ended under its streams), so no request stays in flight for ever.
    let mut done = Done { record, ctx };
    serve(wire, &done.ctx, head, source, Some(&mut done.record)).await
}

/// An exchange's record, logged and counted once the exchange is over or dropped (unless
/// an open WebSocket took it over: `Record::hand_over`).
struct Done {
    record: Record,
    ctx: Arc<ConnCtx>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let r = &self.record;
        if r.handed_over {
            return;
        }
        if let Some(log) = self.ctx.config.access_log.as_ref() {
            r.finish(log);
        }
        self.ctx
            .config
            .metrics
            .end(r.status, r.started.elapsed(), r.bytes);
    }
}

/// Admission, then dispatch and relay.
async fn serve<W: Wire>(
    wire: &mut W,
    ctx: &Arc<ConnCtx>,
    head: RequestHead,
    source: Source,
    mut record: Option<&mut Record>,
) -> Result<bool, ()> {
    let (forwarded, extra) = match source {
        Source::Headers => match ctx.config.proxy.resolve(wire.peer(), &head.headers) {
            Ok(f) => (f, Vec::new()),
            Err(e) => {
                log::warn!(
                    "{}: refused request {} {}: {e}",
                    wire.peer(),
                    head.method,
                    head.target
                );
                return refuse(wire, &head, 400, &e.to_string(), record).await;
            }
        },
        Source::FrontEnd(given) => *given,
    };
    if let Some(r) = record.as_deref_mut() {
        r.forwarded(&forwarded);
    }
    // Static files: answered here, on the I/O thread, before the app's route.
    if let Some(answer) = ctx.config.statics.as_ref().and_then(|s| s.answer(&head)) {
        return send_static(wire, &head, answer, record).await;
    }
    let max_body = ctx.config.max_body;
    if let Framing::Length(n) = head.framing {
        if max_body > 0 && n > max_body {
            let e = RequestError::BodyTooLarge(max_body);
            log::debug!("{}: {e}", wire.peer());
            return refuse(wire, &head, e.status(), &e.to_string(), record).await;
        }
    }
    if ctx.max_pending > 0 && ctx.jobs.len() >= ctx.max_pending {
        // Every app thread is busy and the queue is full: say so rather than wait.
        log::debug!("{}: queue full, 503", wire.peer());
        return refuse(
            wire,
            &head,
            503,
            "the server is busy; retry shortly",
            record,
        )
        .await;
    }
    // A WebSocket for an app that speaks messages: the core speaks the protocol.
    if let Some(remote) = &ctx.remote {
        if let Some(checked) = wire.websocket_handshake(&head) {
            let offer = (checked, forwarded, extra);
            return websocket::serve(wire, ctx, remote, head, offer, record).await;
        }
    }
    dispatch(wire, ctx, head, forwarded, extra, record).await
}

/// A response the server makes itself instead of the app's; the connection ends after it
/// (an HTTP/2 stream ends; the connection's other streams go on).
async fn refuse<W: Wire>(
    wire: &mut W,
    request: &RequestHead,
    status: u16,
    message: &str,
    record: Option<&mut Record>,
) -> Result<bool, ()> {
    let (head, body) = server_response(status, message);
    answer(wire, head, body, record).await?;
    // Where the connection goes on (HTTP/2's other streams), a small body still coming is
    // taken and dropped, so the client sees its request end cleanly.
    wire.wrap_up(request.expect_continue).await;
    Ok(false)
}

/// A whole response the server makes (`head` and `body`) to a request without a body, after
/// which the connection ends.
async fn answer<W: Wire>(
    wire: &mut W,
    head: ResponseHead,
    body: Bytes,
    record: Option<&mut Record>,
) -> Result<bool, ()> {
    if let Some(r) = record {
        r.response(head.status, &head.headers);
        r.bytes += body.len() as u64;
    }
    wire.close_after();
    wire.send_head(&head, body, true, false).await?;
    Ok(false)
}

/// A static file's answer (see `crate::static_files`), written as an app's would be.
async fn send_static<W: Wire>(
    wire: &mut W,
    head: &RequestHead,
    answer: StaticAnswer,
    mut record: Option<&mut Record>,
) -> Result<bool, ()> {
    let StaticAnswer { head: resp, body } = answer;
    if let Some(r) = record.as_deref_mut() {
        r.response(resp.status, &resp.headers);
    }
    let (first, file) = match body {
        StaticBody::Empty => (Bytes::new(), None),
        StaticBody::Bytes(b) => (b, None),
        StaticBody::File { file, offset, len } => (Bytes::new(), Some((file, offset, len))),
    };
    let file_follows = file.as_ref().is_some_and(|f| f.2 > 0);
    let sent = wire
        .send_head(&resp, first, file.is_none(), file_follows)
        .await?;
    count(&mut record, sent);
    if let Some((file, offset, len)) = file {
        send_file_pieces(wire, &file, offset, len, &mut record).await?;
        wire.finish().await?;
    }
    // A body sent with a static request is read and dropped, as after an app's answer.
    Ok(wire.wrap_up(head.expect_continue).await)
}

/// Sends `len` bytes of `file` from `offset` in [`FILE_PIECE`]s, or as many as the
/// response's framing still takes.
async fn send_file_pieces<W: Wire>(
    wire: &mut W,
    file: &File,
    offset: u64,
    len: u64,
    record: &mut Option<&mut Record>,
) -> Result<(), ()> {
    let mut done = 0;
    while done < len {
        let piece = (len - done).min(FILE_PIECE);
        let sent = wire.send_file(file, offset + done, piece).await?;
        count(record, sent);
        if sent < piece {
            return Ok(());
        }
        done += piece;
    }
    Ok(())
}

/// The request `head` makes on `wire`, with what the forwarded headers or the front end said
/// of it; no socket offered and no WebSocket (the callers that offer one say so).
fn request_on<W: Wire>(
    wire: &W,
    head: RequestHead,
    (forwarded, extra): (Forwarded, Vec<(Text, Bytes)>),
) -> Request {
    Request {
        head,
        peer: wire.peer().clone(),
        local: wire.local().clone(),
        forwarded,
        extra,
        tls: wire.tls().cloned(),
        socket: None,
        websocket: None,
    }
}

fn count(record: &mut Option<&mut Record>, bytes: u64) {
    if let Some(r) = record.as_deref_mut() {
        r.bytes += bytes;
    }
}

/// Hands the exchange to the app (inline on this thread, or to the app threads) and relays
/// its response.
async fn dispatch<W: Wire>(
    wire: &mut W,
    ctx: &Arc<ConnCtx>,
    head: RequestHead,
    forwarded: Forwarded,
    extra: Vec<(Text, Bytes)>,
    mut record: Option<&mut Record>,
) -> Result<bool, ()> {
    let route = ctx.inline.route(&head.method, &head.target);
    let mut body_error = None;
    let preloaded = if head.expect_continue {
        Bytes::new()
    } else {
        let here = wire.preload_body();
        if wire.body_done() || !ctx.inline.inline(route) {
            here
        } else {
            // A route that runs inline, whose small body is still arriving: this task waits
            // for the rest (the I/O thread serves the other connections meanwhile), then the
            // app runs inline with it whole. Handed to an app thread instead, the request
            // would ask this thread for each piece while the route's other requests run
            // inline here, and the two threads would take turns with the GIL.
            wire.await_small_body().await.unwrap_or_else(|e| {
                log::debug!("{}: request body: {e}", wire.peer());
                body_error = Some(e);
                Bytes::new()
            })
        }
    };
    // A WebSocket upgrade for an app that takes sockets: the app gets one end of a pair,
    // and the connection switches to a tunnel if it writes to it (see `crate::tunnel`).
    let mut tunnel = None;
    if ctx.app.takes_sockets()
        && crate::tunnel::asks_for_websocket(&head)
        && wire.byte_stream().is_some()
    {
        match crate::tunnel::pair() {
            Ok((ours, theirs)) => tunnel = Some((ours, AppSocket::new(theirs))),
            Err(e) => log::warn!("{}: no socket pair for the upgrade: {e}", wire.peer()),
        }
    }
    let held_open = tunnel.as_ref().map(|(_, app)| app.held());
    let (mut ours, socket) = tunnel.unzip();
    let inline = wire.body_done() && ctx.inline.inline(route) && ours.is_none();
    // A channel for body pieces only when some are still to come.
    let more_body = !wire.body_done();
    let (tx, mut rx, body_tx, link) = match &ctx.remote {
        Some(remote) => {
            let (tx, rx, mailbox) = Rx::remote(remote);
            let link = more_body.then(|| BodyLink::Remote(tx.clone(), Arc::clone(&mailbox)));
            (
                tx,
                rx,
                more_body.then_some(BodyReply::Remote(mailbox)),
                link,
            )
        }
        None => {
            let (tx, rx) = Rx::channel(inline);
            let (body_tx, body_rx) = more_body.then(|| mpsc::channel(1)).unzip();
            let link = body_rx.map(|rx| BodyLink::Local(tx.clone(), rx));
            (tx, rx, body_tx.map(BodyReply::Local), link)
        }
    };
    let expect_continue = head.expect_continue && !wire.body_done();
    let exchange = Exchange {
        request: Request {
            socket,
            ..request_on(wire, head, (forwarded, extra))
        },
        body: BodyStream {
            link,
            asked: false,
            done: wire.body_done(),
            error: body_error,
            pending: preloaded,
        },
        response: ResponseSink { tx, started: None },
    };
    let mut _in_app = None;
    // Timed alone: the app held the GIL without app threads contending for it.
    let alone = inline && ctx.inline.app_threads_idle();
    let to_threads = if inline {
        // The app has been fast on this route: call it here, without two thread hand-offs.
        // Its response is in the channel when it returns.
        let back = ctx.app.run_inline(exchange);
        if back.is_none() {
            if !ctx.inline.app_threads_idle() {
                // App threads have requests: they must not wait for the GIL on this thread.
                ctx.app.release_inline();
            }
            if wire.batches() && ctx.batch.hold() && rx.holds_small_response(batch::SMALL_RESPONSE)
            {
                // Others were answered before this one in this run: go out with them at its
                // end (see `batch`).
                tokio::task::yield_now().await;
            }
        }
        back
    } else {
        Some(exchange)
    };
    if let Some(exchange) = to_threads {
        _in_app = Some(ctx.inline.dispatched(route));
        // Waits for a place in the app threads' queue, unless the client gives up first.
        tokio::select! {
            biased;
            queued = ctx.to_app_threads(exchange) => queued?,
            () = wire.abandoned() => return Err(()),
        }
    }
    let served = ctx.served.fetch_add(1, Ordering::Relaxed) + 1;
    if served == ctx.max_requests {
        ctx.retire.notify_one();
    }
    let mut continue_sent = false;
    let mut head_sent = false;
    // A message taken while looking ahead that is not handled yet: the next one.
    let mut held: Option<AppMsg> = None;
    let mut pieces: Vec<Bytes> = Vec::new();
    loop {
        let msg = match held.take().or_else(|| rx.try_recv()) {
            Some(msg) => msg,
            None => tokio::select! {
                biased;
                spoke = crate::tunnel::app_spoke(ours.as_ref()), if ours.is_some() && !head_sent => {
                    match (spoke, ours.take(), &held_open) {
                        (Some(first), Some(ours), Some(held_open)) => {
                            // The app answered through its socket: the connection is its.
                            drop(_in_app);
                            return switch(wire, ctx, (ours, first), Some(rx), held_open, record).await;
                        }
                        // Closed unused: the app answers as usual.
                        _ => continue,
                    }
                }
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => {
                        // The app side went away without finishing the response.
                        wire.abort();
                        return Err(());
                    }
                },
                // Dropping `rx` tells the app the client went away.
                () = wire.abandoned() => return Err(()),
            },
        };
        match msg {
            AppMsg::ReadBody(max) => {
                if expect_continue && !continue_sent && !head_sent {
                    // RFC 9110 §10.1.1: the client waits for this before sending the body;
                    // an app that answers without reading never asks for it.
                    continue_sent = true;
                    wire.send_continue().await?;
                }
                let r = wire.read_body(max).await;
                if let Err(e) = &r {
                    log::debug!("{}: request body: {e}", wire.peer());
                }
                let done = wire.body_done();
                match &body_tx {
                    Some(BodyReply::Local(body_tx)) => {
                        let _ = body_tx.send(r.map(|b| (b, done))).await;
                    }
                    Some(BodyReply::Remote(mailbox)) => mailbox.put_body(r.map(|b| (b, done))),
                    None => {}
                }
            }
            AppMsg::Hints(hints) => {
                // RFC 8297: before the final response, as many as the app sends.
                if !head_sent {
                    wire.send_hints(&hints).await?;
                }
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
                    r.response(head.status, &head.headers);
                }
                head_sent = true;
                let mut file_follows = false;
                if !last && first.is_empty() {
                    // A `wsgi.file_wrapper` response: the driver may hold the head back for
                    // the file's first bytes.
                    held = rx.try_recv();
                    file_follows = matches!(held, Some(AppMsg::File { len, .. }) if len > 0);
                }
                let sent = wire.send_head(&head, first, last, file_follows).await?;
                count(&mut record, sent);
                if last {
                    break;
                }
            }
            AppMsg::Data(data) => {
                // The app (a list or generator of many pieces) may be ahead of the client:
                // what it has queued goes out together.
                pieces.clear();
                pieces.push(data);
                held = gather(&mut rx, &mut pieces);
                let sent = wire.send_data(&mut pieces).await?;
                count(&mut record, sent);
            }
            AppMsg::File { file, offset, len } => {
                send_file_pieces(wire, &file, offset, len, &mut record).await?;
            }
            AppMsg::End(ending) => {
                ctx.inline.record(route, ending.took, alone);
                match ending.trailers {
                    Some(trailers) => wire.finish_with(&trailers).await?,
                    None => wire.finish().await?,
                }
                break;
            }
            // The WebSocket family belongs to `websocket::serve`; an HTTP exchange has none.
            AppMsg::Ws(_) => {}
            AppMsg::Abort => {
                // An app that wrote to its socket and returned at once: what it wrote goes
                // out before the connection closes.
                let spoke = ours
                    .as_ref()
                    .filter(|_| !head_sent)
                    .and_then(crate::tunnel::spoken);
                if let (Some(first), Some(ours), Some(held_open)) = (spoke, ours.take(), &held_open)
                {
                    drop(_in_app);
                    return switch(wire, ctx, (ours, first), None, held_open, record).await;
                }
                wire.abort();
                return Err(());
            }
        }
    }
    Ok(wire.wrap_up(expect_continue && !continue_sent).await)
}

/// Where the connection answers the app's body reads.
enum BodyReply {
    /// App threads: a channel the reading thread blocks on.
    Local(mpsc::Sender<BodyPiece>),
    /// A remote app side: its mailbox, which announces the piece.
    Remote(Arc<crate::remote::Mailbox>),
}

/// The app took the connection over (it wrote `first` to its end of the pair, `ours` being
/// the other): relays between it and the client until either ends, the app's call returns
/// (`rx` ends; `None`: it has returned already), or the worker stops; then the connection
/// closes. Logged as a `101` with the bytes sent to the client.
async fn switch<W: Wire>(
    wire: &mut W,
    ctx: &Arc<ConnCtx>,
    (ours, first): (UnixStream, BytesMut),
    rx: Option<Rx>,
    held: &AtomicBool,
    record: Option<&mut Record>,
) -> Result<bool, ()> {
    // The app's call now lasts as long as the connection: no hung request for `--timeout`.
    held.store(true, Ordering::Relaxed);
    ctx.config
        .metrics
        .ws(crate::observe::metrics::WsEvent::Tunnel);
    let peer = wire.peer().clone();
    let Some((stream, read_ahead)) = wire.byte_stream() else {
        return Err(());
    };
    let app_done = async move {
        let Some(mut rx) = rx else { return };
        // Whatever the app sends after taking the connection over (Gunicorn's apps raise
        // StopIteration; others return an empty response) only says that its call ended.
        while let Some(msg) = rx.recv().await {
            if matches!(
                msg,
                AppMsg::End(_) | AppMsg::Abort | AppMsg::Head { last: true, .. }
            ) {
                return;
            }
        }
    };
    let relayed = crate::tunnel::relay(
        stream,
        read_ahead,
        ours,
        &first,
        app_done,
        &ctx.stopping,
        ctx.config.write_timeout,
    )
    .await;
    log::debug!(
        "{peer}: tunnel closed ({}): {} bytes to the client, {} to the app",
        relayed.ending,
        relayed.to_client,
        relayed.to_app
    );
    if let Some(r) = record {
        r.response(101, &HeaderBlock::default());
        r.bytes += relayed.to_client;
    }
    Ok(false)
}

/// Adds to `pieces` the body pieces the app has queued already, up to [`GATHER_PIECES`] and
/// [`GATHER_BYTES`]; returns a message taken that is not one (the next to handle).
fn gather(rx: &mut Rx, pieces: &mut Vec<Bytes>) -> Option<AppMsg> {
    let mut size: usize = pieces.iter().map(Bytes::len).sum();
    while pieces.len() < GATHER_PIECES && size < GATHER_BYTES {
        match rx.try_recv()? {
            AppMsg::Data(more) => {
                size += more.len();
                pieces.push(more);
            }
            other => return Some(other),
        }
    }
    None
}

/// The most pieces a driver is handed at once (for drivers that size a vectored write).
pub(crate) const MAX_PIECES: usize = GATHER_PIECES;
