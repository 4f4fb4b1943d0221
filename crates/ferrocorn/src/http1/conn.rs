//! One client connection: read a request head, hand the exchange to an app thread, carry out
//! the app's response events in order, then keep the connection alive or close it.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Sleep};

use super::body::BodyReader;
use super::error::RequestError;
use super::proxy_protocol;
use super::request::{take_head, Framing, Limits, RequestHead, Text, Version};
use super::response::{encode_early_hints, error_response, request_error_response, HeaderBlock};
use super::writer::Writer;
use crate::addr::{Local, Peer};
use crate::app::{App, AppMsg, BodyStream, Exchange, Request, ResponseSink, Rx};
use crate::app_threads::AppThreads;
use crate::batch::{self, Batch};
use crate::config::Protocol;
use crate::http2::Rewind;
use crate::inline::InlinePolicy;
use crate::net::Stream;
use crate::observe::accesslog::{AccessLog, Entry};
use crate::observe::metrics::RequestMetrics;
use crate::proxy::{Forwarded, ProxyConfig, Trusted};
use crate::reclaim::{Phase, Reclaimer, Registration};
use crate::static_files::{Answer as StaticAnswer, Body as StaticBody};
use crate::stopping::{StandingWait, Stopping};

/// Request bodies up to this size are taken with the head when they are already on the socket.
const PRELOAD_MAX: u64 = 64 * 1024;

/// A response body up to this size is copied after the head and sent with it in one write.
const SMALL_BODY: usize = 2048;

/// How long a connection accepted just before a graceful stop may take to send its request.
const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// Settings every connection of a worker shares.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub limits: Limits,
    /// Idle time allowed between requests on a kept-alive connection (`--keep-alive`).
    pub keep_alive: Duration,
    /// Time allowed to receive a whole request head once it has started (and the first one
    /// after connecting).
    pub head_timeout: Duration,
    /// Time a request body may stall before the app's read fails.
    pub body_timeout: Duration,
    /// Time a response write may block (a client that stopped reading) before the connection
    /// is dropped.
    pub write_timeout: Duration,
    /// Largest request body accepted (`--limit-request-body`; zero: no limit).
    pub max_body: u64,
    /// Unread request body the server will discard to keep a connection alive; past it the
    /// connection is closed instead (Gunicorn's bound), so an ignored 10 GB upload does not
    /// tie the connection up.
    pub max_drain: u64,
    /// Which peers' forwarded headers count, and under which names.
    pub proxy: Arc<ProxyConfig>,
    /// Read a PROXY protocol preamble first on every connection.
    pub proxy_protocol: bool,
    /// Where finished requests are logged (`--access-logfile`), opened in the worker.
    pub access_log: Option<AccessLog>,
    /// Where finished requests are counted (`--metrics-bind`, `--statsd-host`).
    pub metrics: RequestMetrics,
    /// What the listeners speak (`--protocol`): HTTP/1.x, or uwsgi packets from a front end.
    pub protocol: Protocol,
    /// Peers allowed to send uwsgi packets (`--uwsgi-allow-from`); unix-socket peers always are.
    pub uwsgi_allow: Trusted,
    /// Static files answered before the app's route (`--static-map`).
    pub statics: Option<Arc<crate::static_files::Statics>>,
    /// HTTP/2 limits, and whether trusted peers may start it in cleartext.
    pub http2: crate::http2::Http2Config,
    /// TLS on TCP connections (`--certfile`); unix-socket connections stay cleartext.
    pub tls: Option<crate::transport::tls::TlsServer>,
}

/// An access log line in the making: what the request said, then what the response did.
/// HTTP/2 streams keep one too (`crate::http2`).
pub(crate) struct Record {
    pub(crate) started: Instant,
    started_unix: i64,
    pub(crate) remote: String,
    method: Text,
    target: Text,
    protocol: &'static str,
    scheme: &'static str,
    request_headers: Vec<crate::http1::request::Header>,
    pub(crate) status: Option<u16>,
    pub(crate) response_headers: HeaderBlock,
    pub(crate) bytes: u64,
}

impl Record {
    /// `for_log`: keep what an access log line shows (metrics need only status, time, size).
    pub(crate) fn new(head: &RequestHead, peer: &Peer, for_log: bool) -> Self {
        let mut record = Self {
            started: Instant::now(),
            started_unix: 0,
            remote: String::new(),
            method: Text::default(),
            target: Text::default(),
            protocol: "",
            scheme: "http",
            request_headers: Vec::new(),
            status: None,
            response_headers: HeaderBlock::default(),
            bytes: 0,
        };
        if for_log {
            record.started_unix = crate::clock::unix_now();
            if let Peer::Tcp(a) = peer {
                record.remote = a.ip().to_string();
            }
            record.method = head.method.clone();
            record.target = head.target.clone();
            record.protocol = match head.version {
                Version::Http10 => "HTTP/1.0",
                Version::Http11 => "HTTP/1.1",
                Version::Http2 => "HTTP/2.0",
            };
            record.request_headers = head.headers.clone();
        }
        record
    }

    /// Logs the exchange, if a response was started.
    pub(crate) fn finish(&self, log: &AccessLog) {
        let Some(status) = self.status else { return };
        let path = self.target.split('?').next().unwrap_or_default();
        let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        log.record(&Entry {
            remote_addr: &self.remote,
            method: &self.method,
            target: &self.target,
            path: &path,
            protocol: self.protocol,
            scheme: self.scheme,
            request_headers: &self.request_headers,
            status,
            response_headers: &self.response_headers,
            bytes: self.bytes,
            duration: self.started.elapsed(),
            started_unix: self.started_unix,
        });
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            keep_alive: Duration::from_secs(2),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_body: 0,
            max_drain: 64 * 1024,
            proxy: Arc::default(),
            proxy_protocol: false,
            access_log: None,
            metrics: RequestMetrics::default(),
            protocol: Protocol::Http,
            uwsgi_allow: Trusted::loopback(),
            statics: None,
            http2: crate::http2::Http2Config::default(),
            tls: None,
        }
    }
}

/// What a connection needs from its worker.
pub(crate) struct ConnCtx {
    pub config: ConnConfig,
    /// The app, for requests run on the I/O thread.
    pub app: Arc<dyn App>,
    /// Which requests run on the I/O thread.
    pub inline: InlinePolicy,
    pub jobs: crate::jobs::Sender<Exchange>,
    /// Started as queued requests need them.
    pub threads: Arc<AppThreads>,
    /// Set when the worker starts to stop.
    pub stopping: Stopping,
    /// Requests handed to the app so far.
    pub served: AtomicU64,
    /// Retire the worker after this many requests (zero: never).
    pub max_requests: u64,
    /// Notified once `max_requests` is reached.
    pub retire: Arc<Notify>,
    /// Requests allowed to wait for an app thread before the server answers 503 (zero: wait).
    pub max_pending: usize,
    /// Inline responses made in the I/O thread's current run of ready work.
    pub batch: Arc<Batch>,
    /// Every connection of the worker, for closing idle ones at the connection cap.
    pub reclaim: Reclaimer,
}

impl ConnCtx {
    /// Queues `exchange` for the app threads, starting one if none is free to take it.
    pub(crate) async fn to_app_threads(&self, exchange: Exchange) -> Result<(), ()> {
        self.app.release_inline();
        self.jobs.send(exchange).await.map_err(|_| ())?;
        self.threads.grow();
        Ok(())
    }
}

/// Adds `Retry-After: 1` to an encoded error response, before its blank line.
fn insert_retry_after(resp: &mut BytesMut) {
    if let Some(pos) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
        let tail = resp.split_off(pos + 2);
        resp.extend_from_slice(b"Retry-After: 1\r\n");
        resp.unsplit(tail);
    }
}

/// Serves one connection to its end.
pub(crate) async fn serve(io: Stream, mut peer: Peer, local: Local, ctx: Arc<ConnCtx>) {
    // TLS (issue 16): the handshake (after a PROXY preamble), then the protocol driver below.
    let Some((io, tls)) = crate::transport::tls::secure(io, &mut peer, &ctx.config).await else {
        return;
    };
    if let Some(info) = tls.as_ref().filter(|t| t.is_h2()) {
        // ALPN chose HTTP/2 (RFC 9113 §3.2).
        let info = Some(Arc::clone(info));
        let fd = io.raw_fd();
        crate::http2::serve(io, fd, peer, local, ctx, info).await;
        return;
    }
    let registration = ctx.reclaim.register(io.raw_fd());
    let mut conn = Conn {
        registration,
        io,
        tls,
        buf: BytesMut::new(),
        out: BytesMut::new(),
        peer,
        local,
        ctx,
        idle_timer: None,
        stop_wait: None,
    };
    if conn.ctx.config.proxy_protocol && conn.tls.is_none() && !conn.read_preamble().await {
        return;
    }
    if conn.ctx.config.protocol == Protocol::Uwsgi {
        crate::uwsgi::serve(&mut conn).await;
        return;
    }
    // THE h2c HAND-OFF POINTS: with `--http2-cleartext prior-knowledge`, a trusted peer whose
    // first bytes are HTTP/2's client preface (RFC 9113 §3.3) is served by the HTTP/2 driver,
    // the bytes already read going first. Anyone else stays here, where the HTTP/1.1 parser
    // answers a preface with 505. With `upgrade`, a trusted peer's `Upgrade: h2c` request
    // switches the connection after it (`Conn::run`, `crate::http2::upgrade`).
    if conn.ctx.config.http2.prior_knowledge
        && conn.tls.is_none() // over TLS, HTTP/2 is chosen by ALPN (RFC 9113 §3.3)
        && conn.ctx.config.proxy.trusts(&conn.peer)
        && conn.sniff_preface().await
    {
        conn.serve_h2c().await;
        return;
    }
    if conn.run().await {
        // Switched by `Upgrade: h2c`: the buffer holds what the HTTP/2 driver reads first.
        conn.serve_h2c().await;
    }
}

/// Where a request came from, which decides how its exchange is carried out.
pub(crate) enum Source {
    /// An HTTP/1.x request head read by this module.
    Http1,
    /// A uwsgi packet (`crate::uwsgi`): the front end said who the client is and how it
    /// connected, so no forwarded headers are read; the response is never chunked and ends
    /// the connection; no interim responses (the front end does not relay them). Boxed: an
    /// HTTP request moves only a word.
    Uwsgi(Box<(Forwarded, Vec<(Text, Bytes)>)>),
}

/// One client connection; the protocol drivers (HTTP/1.x here, `crate::uwsgi`) read requests
/// off it and run each through [`Conn::exchange`].
pub(crate) struct Conn {
    /// Where the connection tells the worker what it is doing (see [`crate::reclaim`]).
    pub(crate) registration: Registration,
    pub(crate) io: Stream,
    /// What the TLS handshake said (None on cleartext connections).
    pub(crate) tls: Option<Arc<crate::transport::tls::TlsInfo>>,
    pub(crate) buf: BytesMut,
    out: BytesMut,
    pub(crate) peer: Peer,
    local: Local,
    pub(crate) ctx: Arc<ConnCtx>,
    /// The timer of the waits for a request head; see [`Conn::wait_readable`].
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// The wake-up for the worker's stop while waiting idle, made at the first such wait.
    stop_wait: Option<StandingWait>,
}

/// How a wait for the next bytes of a request head ended.
enum Wait {
    Read(std::io::Result<usize>),
    TimedOut,
    Stopping,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Before the socket closes: the registry must never shut down a reused descriptor.
        self.ctx.reclaim.unregister(&self.registration);
        self.release_buffers();
    }
}

enum HeadRead {
    Head(RequestHead),
    Closed,
}

impl Conn {
    /// Serves HTTP/1.x requests until the connection ends: false; or until one switched it to
    /// h2c (`Upgrade: h2c`): true, with what the HTTP/2 driver must read first in `buf`.
    async fn run(&mut self) -> bool {
        let mut first = true;
        loop {
            let head = match self.read_head(first).await {
                Ok(HeadRead::Head(h)) => h,
                Ok(HeadRead::Closed) => break,
                Err(e) => {
                    log::debug!("{}: bad request: {e}", self.peer_text());
                    let resp = request_error_response(&e);
                    let _ = tokio::time::timeout(
                        self.ctx.config.write_timeout,
                        self.io.write_all(&resp),
                    )
                    .await;
                    break;
                }
            };
            first = false;
            self.registration.slot.busy();
            if let Some(stream_one) = self.h2c_upgrade(&head) {
                if self.switch_to_h2c(stream_one).await {
                    return true;
                }
                break;
            }
            match self.exchange(head, Source::Http1).await {
                Ok(true) => {}
                Ok(false) | Err(()) => break,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
        false
    }

    /// Stream 1's frames when `head` asks for h2c (RFC 7540 §3.2) and may have it: with
    /// `--http2-cleartext upgrade`, in cleartext, from a trusted peer, as prior knowledge is.
    /// Anyone else's `Upgrade: h2c` is ignored and the request served as HTTP/1.1.
    fn h2c_upgrade(&self, head: &RequestHead) -> Option<BytesMut> {
        let allowed = self.ctx.config.http2.upgrade
            && self.tls.is_none()
            && crate::http2::upgrade::asks_for_h2c(head)
            && self.ctx.config.proxy.trusts(&self.peer);
        if !allowed {
            return None;
        }
        crate::http2::upgrade::stream_one(head)
    }

    /// Answers `101 Switching Protocols`, then reads the client's HTTP/2 preface and first
    /// SETTINGS frame (within `--header-timeout`) and leaves in `buf` those, `stream_one`
    /// after them, and whatever the client sent next. False when the connection must close.
    async fn switch_to_h2c(&mut self, stream_one: BytesMut) -> bool {
        use crate::http2::upgrade::{client_start_len, SWITCHING};
        if self.write(&[SWITCHING]).await.is_err() {
            return false;
        }
        let deadline = Instant::now() + self.ctx.config.head_timeout;
        loop {
            match client_start_len(&self.buf) {
                Ok(Some(n)) => {
                    let rest = self.buf.split_off(n);
                    let mut replay =
                        BytesMut::with_capacity(self.buf.len() + stream_one.len() + rest.len());
                    replay.extend_from_slice(&self.buf);
                    replay.extend_from_slice(&stream_one);
                    replay.extend_from_slice(&rest);
                    self.buf = replay;
                    return true;
                }
                Ok(None) => {}
                Err(e) => {
                    log::debug!("{}: h2c upgrade: {e}; closing", self.peer_text());
                    return false;
                }
            }
            self.registration
                .slot
                .set(Phase::Head, self.ctx.reclaim.ms(deadline));
            match tokio::time::timeout_at(deadline, self.io.read_ready(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    log::debug!(
                        "{}: h2c upgrade: no HTTP/2 preface; closing",
                        self.peer_text()
                    );
                    return false;
                }
            }
        }
    }

    /// Gives the read and write buffers back to the thread's stack for other connections.
    fn release_buffers(&mut self) {
        crate::http1::buffers::give(std::mem::take(&mut self.buf));
        crate::http1::buffers::give(std::mem::take(&mut self.out));
    }

    pub(crate) fn peer_text(&self) -> String {
        match &self.peer {
            Peer::Tcp(a) => a.to_string(),
            Peer::Unix => "unix socket".into(),
        }
    }

    fn shutting_down(&self) -> bool {
        self.ctx.stopping.is_set()
    }

    /// Reads until the buffer holds HTTP/2's client preface (true) or something else (false),
    /// within `--header-timeout`.
    async fn sniff_preface(&mut self) -> bool {
        let preface = crate::http2::PREFACE;
        let deadline = Instant::now() + self.ctx.config.head_timeout;
        loop {
            let n = self.buf.len().min(preface.len());
            if self.buf[..n] != preface[..n] {
                return false;
            }
            if n == preface.len() {
                return true;
            }
            self.registration
                .slot
                .set(Phase::Head, self.ctx.reclaim.ms(deadline));
            match tokio::time::timeout_at(deadline, self.io.read_ready(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed or too slow: the HTTP/1.1 path ends it the usual way.
                _ => return false,
            }
        }
    }

    /// Serves the rest of the connection as h2c, the bytes already read going first.
    async fn serve_h2c(self) {
        let fd = self.io.raw_fd();
        let (io, peer, local, ctx) = self.into_http2();
        crate::http2::serve(io, fd, peer, local, ctx, None).await;
    }

    /// Gives the socket (behind the bytes already read) to another protocol driver; the
    /// connection leaves the reclaim registry first.
    fn into_http2(mut self) -> (Rewind<Stream>, Peer, Local, Arc<ConnCtx>) {
        self.ctx.reclaim.unregister(&self.registration);
        let read = Bytes::copy_from_slice(&self.buf);
        crate::http1::buffers::give(std::mem::take(&mut self.out));
        // `Conn` has a `Drop`, so its fields cannot be moved out: they are read out instead.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, and each of its fields is read out
        // exactly once: the ones handed on are returned, the others dropped here (what
        // `Drop for Conn` would do besides, unregistering and returning buffers, is done).
        unsafe {
            let io = std::ptr::read(&this.io);
            crate::http1::buffers::give(std::ptr::read(&this.buf));
            drop(std::ptr::read(&this.out));
            let peer = std::ptr::read(&this.peer);
            let local = std::ptr::read(&this.local);
            let ctx = std::ptr::read(&this.ctx);
            drop(std::ptr::read(&this.registration));
            drop(std::ptr::read(&this.idle_timer));
            drop(std::ptr::read(&this.tls));
            drop(std::ptr::read(&this.stop_wait));
            (Rewind::new(read, io), peer, local, ctx)
        }
    }

    /// `--proxy-protocol`: takes the client address from the preamble. False when the
    /// connection must be closed (untrusted peer, bad or missing preamble).
    async fn read_preamble(&mut self) -> bool {
        if !self.ctx.config.proxy.trusts(&self.peer) {
            log::debug!(
                "{}: PROXY protocol from an untrusted peer; closing",
                self.peer_text()
            );
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.ctx.config.head_timeout;
        loop {
            match proxy_protocol::parse(&self.buf) {
                Ok(Some((addr, used))) => {
                    self.buf.advance(used);
                    if let Some(addr) = addr {
                        self.peer = Peer::Tcp(addr);
                    }
                    return true;
                }
                Ok(None) => {}
                Err(e) => {
                    log::debug!("{}: {e}; closing", self.peer_text());
                    return false;
                }
            }
            self.buf.reserve(512);
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return false,
            }
        }
    }

    async fn read_head(&mut self, first: bool) -> Result<HeadRead, RequestError> {
        let limits = self.ctx.config.limits;
        // The whole head must arrive within `head_timeout` of its first byte (slowloris).
        let mut deadline: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                if let Some((head, _)) = take_head(&mut self.buf, &limits)? {
                    return Ok(HeadRead::Head(head));
                }
            }
            let idle = self.buf.is_empty();
            let stopping = self.shutting_down();
            if idle && stopping && !first {
                return Ok(HeadRead::Closed);
            }
            if idle {
                // Hold no buffer while waiting for the next request: 10,000 idle connections
                // would pin 8 KiB or more each.
                self.release_buffers();
            } else if deadline.is_none() {
                deadline = Some(Instant::now() + self.ctx.config.head_timeout);
            }
            let mut until = deadline.unwrap_or_else(|| {
                Instant::now()
                    + if first {
                        self.ctx.config.head_timeout
                    } else {
                        self.ctx.config.keep_alive
                    }
            });
            if idle && stopping {
                // A connection accepted just before the stop usually has its request on the
                // way: it gets a moment to arrive (and is answered with Connection: close).
                until = until.min(Instant::now() + FRESH_CONNECTION_GRACE);
            }
            // Idle between requests, or waiting for a head: either may be reclaimed.
            let phase = if idle && !first {
                Phase::Idle
            } else {
                Phase::Head
            };
            let slot = &self.registration.slot;
            slot.set(phase, self.ctx.reclaim.ms(until));
            match self.wait_readable(until, idle && !stopping).await {
                Wait::Stopping if first => continue,
                Wait::Stopping => return Ok(HeadRead::Closed),
                Wait::TimedOut => {
                    log::debug!(
                        "{}: {} timed out",
                        self.peer_text(),
                        if idle && !first {
                            "keep-alive"
                        } else {
                            "request head"
                        }
                    );
                    return Ok(HeadRead::Closed);
                }
                Wait::Read(Ok(0) | Err(_)) => return Ok(HeadRead::Closed),
                Wait::Read(Ok(_)) => {}
            }
        }
    }

    /// Waits until the socket has bytes to read (and reads them), `until` passes, or (with
    /// `watch_stop`) the worker starts to stop.
    ///
    /// The timer and the stop's wake-up stay registered from one wait to the next: a busy
    /// keep-alive connection only moves a deadline forward per request, where a new timer and
    /// a new stop waiter registered and removed each time were 3% of a hello request's
    /// instructions. A timer left running early fires once, is found early, and is set again.
    async fn wait_readable(&mut self, until: Instant, watch_stop: bool) -> Wait {
        let timer = match &mut self.idle_timer {
            Some(t) => {
                if t.deadline() > until {
                    t.as_mut().reset(until);
                }
                t
            }
            None => self
                .idle_timer
                .insert(Box::pin(tokio::time::sleep_until(until))),
        };
        let mut stop = if watch_stop {
            let stopping = &self.ctx.stopping;
            Some(
                self.stop_wait
                    .get_or_insert_with(|| stopping.standing_wait()),
            )
        } else {
            None
        };
        // The caller read the flag before the waiter existed: a stop that began in between
        // woke nobody, so look again now that the waiter is there.
        if stop.is_some() && self.ctx.stopping.is_set() {
            return Wait::Stopping;
        }
        let read = self.io.read_ready(&mut self.buf);
        tokio::pin!(read);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(Wait::Read(r));
            }
            if let Some(stop) = &mut stop {
                if stop.poll_stop(cx).is_ready() {
                    return Poll::Ready(Wait::Stopping);
                }
            }
            if timer.as_mut().poll(cx).is_ready() {
                if Instant::now() >= until {
                    return Poll::Ready(Wait::TimedOut);
                }
                timer.as_mut().reset(until);
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wait::TimedOut);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Runs one request/response exchange. `Ok(true)` when the connection may serve another.
    pub(crate) async fn exchange(&mut self, head: RequestHead, source: Source) -> Result<bool, ()> {
        let log = self.ctx.config.access_log.clone();
        let metrics = self.ctx.config.metrics.clone();
        if log.is_none() && !metrics.is_on() {
            return self.exchange_inner(head, source, None).await;
        }
        let mut record = Record::new(&head, &self.peer, log.is_some());
        if self.tls.is_some() {
            record.scheme = "https";
        }
        metrics.begin();
        let result = self.exchange_inner(head, source, Some(&mut record)).await;
        if let Some(log) = &log {
            record.finish(log);
        }
        metrics.end(record.status, record.started.elapsed(), record.bytes);
        result
    }

    async fn exchange_inner(
        &mut self,
        head: RequestHead,
        source: Source,
        mut record: Option<&mut Record>,
    ) -> Result<bool, ()> {
        let (resolved, extra, uwsgi) = match source {
            Source::Http1 => (
                self.ctx.config.proxy.resolve(&self.peer, &head.headers),
                Vec::new(),
                false,
            ),
            Source::Uwsgi(given) => {
                let (forwarded, extra) = *given;
                (Ok(forwarded), extra, true)
            }
        };
        let forwarded = match resolved {
            Ok(f) => f,
            Err(e) => {
                log::warn!(
                    "{}: refused request {} {}: {e}",
                    self.peer_text(),
                    head.method,
                    head.target
                );
                let resp = error_response(400, &e.to_string(), head.version);
                let _ = self.write(&[&resp]).await;
                return Ok(false);
            }
        };
        if let (Some(r), Some(client)) = (record.as_deref_mut(), forwarded.client) {
            r.remote = client.to_string();
        }
        if let (Some(r), Some(scheme)) = (record.as_deref_mut(), forwarded.scheme) {
            r.scheme = scheme;
        }
        // Static files (issue 18): answered here, on the I/O thread, before the app's route.
        if let Some(answer) = self
            .ctx
            .config
            .statics
            .as_ref()
            .and_then(|s| s.answer(&head))
        {
            return self.send_static(&head, answer, record).await;
        }
        let max_body = self.ctx.config.max_body;
        if let Framing::Length(n) = head.framing {
            if max_body > 0 && n > max_body {
                let e = RequestError::BodyTooLarge(max_body);
                log::debug!("{}: {e}", self.peer_text());
                let resp = error_response(e.status(), &e.to_string(), head.version);
                let _ = self.write(&[&resp]).await;
                return Ok(false);
            }
        }
        if self.ctx.max_pending > 0 && self.ctx.jobs.len() >= self.ctx.max_pending {
            // Every app thread is busy and the queue is full: say so rather than wait.
            log::debug!("{}: queue full, 503", self.peer_text());
            let mut resp = error_response(503, "the server is busy; retry shortly", head.version);
            insert_retry_after(&mut resp);
            let _ = self.write(&[&resp]).await;
            return Ok(false);
        }
        let mut body = BodyReader::new(head.framing, max_body);
        let route = self.ctx.inline.route(&head.method, &head.target);
        let mut body_error = None;
        let preloaded = if head.expect_continue {
            Bytes::new()
        } else {
            let here = self.preload_body(&mut body);
            if body.is_done() || !self.ctx.inline.inline(route) {
                here
            } else {
                // A route that runs inline, whose small body is still arriving: this task
                // waits for the rest (the I/O thread serves the other connections meanwhile),
                // then the app runs inline with it whole. Handed to an app thread instead,
                // the request would ask this thread for each piece while the route's other
                // requests run inline here, and the two threads would take turns with the GIL.
                self.await_small_body(&mut body).await.unwrap_or_else(|e| {
                    log::debug!("{}: request body: {e}", self.peer_text());
                    body_error = Some(e);
                    Bytes::new()
                })
            }
        };
        let inline = body.is_done() && self.ctx.inline.inline(route);
        let (tx, mut rx) = Rx::channel(inline);
        // A channel for body pieces only when some are still to come.
        let (body_tx, body_rx) = (!body.is_done()).then(|| mpsc::channel(1)).unzip();
        let mut writer = if uwsgi {
            Writer::for_uwsgi(&head)
        } else {
            Writer::new(&head)
        };
        let expect_continue = head.expect_continue && !body.is_done();
        let exchange = Exchange {
            request: Request {
                head,
                peer: self.peer.clone(),
                local: self.local.clone(),
                forwarded,
                extra,
                tls: self.tls.clone(),
            },
            body: BodyStream {
                link: body_rx.map(|rx| (tx.clone(), rx)),
                done: body.is_done(),
                error: body_error,
                pending: preloaded,
            },
            response: ResponseSink { tx, started: None },
        };
        let ctx = Arc::clone(&self.ctx);
        let mut _in_app = None;
        // Timed alone: the app held the GIL without app threads contending for it.
        let alone = inline && ctx.inline.app_threads_idle();
        if inline {
            // The app has been fast on this route: call it here, without two thread hand-offs.
            // Its response is in the channel when it returns.
            if let Some(exchange) = self.ctx.app.run_inline(exchange) {
                _in_app = Some(ctx.inline.dispatched(route));
                ctx.to_app_threads(exchange).await?;
            } else {
                if !ctx.inline.app_threads_idle() {
                    // App threads have requests: they must not wait for the GIL on this thread.
                    ctx.app.release_inline();
                }
                if ctx.batch.hold() && rx.holds_small_response(batch::SMALL_RESPONSE) {
                    // Others were answered before this one in this run: go out with them at
                    // its end (see `batch`).
                    tokio::task::yield_now().await;
                }
            }
        } else {
            _in_app = Some(ctx.inline.dispatched(route));
            ctx.to_app_threads(exchange).await?;
        }
        let served = self.ctx.served.fetch_add(1, Ordering::Relaxed) + 1;
        if served == self.ctx.max_requests {
            self.ctx.retire.notify_one();
        }
        let body_timeout = self.ctx.config.body_timeout;
        let mut continue_sent = false;
        // A message taken while gathering body pieces that is not one itself: the next one.
        let mut held: Option<AppMsg> = None;
        loop {
            let msg = match held.take() {
                Some(msg) => msg,
                None => match rx.recv().await {
                    Some(msg) => msg,
                    // The app side went away without finishing the response.
                    None => return Err(()),
                },
            };
            match msg {
                AppMsg::ReadBody(max) => {
                    if expect_continue && !continue_sent && !writer.started {
                        // RFC 9110 §10.1.1: the client waits for this before sending the body.
                        continue_sent = true;
                        self.write(&[b"HTTP/1.1 100 Continue\r\n\r\n"]).await?;
                    }
                    let r = self.read_body(&mut body, max, body_timeout).await;
                    if let Err(e) = &r {
                        log::debug!("{}: request body: {e}", self.peer_text());
                    }
                    let failed = r.is_err();
                    if let Some(body_tx) = &body_tx {
                        let _ = body_tx.send(r.map(|b| (b, body.is_done()))).await;
                    }
                    if failed {
                        writer.keep_alive = false;
                    }
                }
                AppMsg::Hints(hints) => {
                    if writer.interim_allowed() {
                        // RFC 8297: before the final response, as many as the app sends.
                        let mut out = BytesMut::new();
                        encode_early_hints(&hints, &mut out);
                        self.write(&[&out]).await?;
                    }
                }
                AppMsg::Head {
                    head,
                    body: first,
                    last,
                    took,
                } => {
                    if last {
                        self.ctx.inline.record(route, took, alone);
                    }
                    if let Some(r) = record.as_deref_mut() {
                        r.status = Some(head.status);
                        r.response_headers.clone_from(&head.headers);
                        r.bytes += first.len() as u64;
                    }
                    if self.out.capacity() == 0 {
                        self.out = crate::http1::buffers::take();
                    }
                    writer.start(
                        &head,
                        first.len(),
                        last,
                        self.shutting_down(),
                        &mut self.out,
                    );
                    let data = writer.frame(first, &mut self.out);
                    let suffix = writer.chunk_suffix(&data);
                    let tail = if last { writer.finish() } else { &b""[..] };
                    let mut out = std::mem::take(&mut self.out);
                    if !last && data.is_empty() {
                        held = rx.try_recv();
                    }
                    let file_follows = matches!(held, Some(AppMsg::File { len, .. }) if len > 0)
                        && !writer.chunked();
                    let r = if file_follows {
                        // A wsgi.file_wrapper response: the head waits in the kernel for the
                        // file's first bytes (MSG_MORE) instead of leaving in a segment of its
                        // own, as for static files.
                        let timeout = self.ctx.config.write_timeout;
                        match tokio::time::timeout(timeout, self.io.write_all_more(&out)).await {
                            Ok(Ok(())) => Ok(()),
                            _ => Err(()),
                        }
                    } else if data.len() <= SMALL_BODY {
                        // Head and a small body in one buffer: one plain write.
                        out.extend_from_slice(&data);
                        out.extend_from_slice(suffix);
                        out.extend_from_slice(tail);
                        self.write(&[&out]).await
                    } else {
                        self.write(&[&out, &data, suffix, tail]).await
                    };
                    self.out = out;
                    r?;
                    if last {
                        break;
                    }
                }
                AppMsg::Data(data) => {
                    self.out.clear();
                    let sent = match rx.try_recv() {
                        // The app (a list or generator of many pieces) is ahead of the
                        // socket: what it has queued goes out in one write.
                        Some(AppMsg::Data(next)) => {
                            let mut pieces = vec![data, next];
                            held = gather(&mut rx, &mut pieces);
                            let sent = writer.frame_all(&mut pieces, &mut self.out);
                            let suffix = writer.chunk_suffix(&pieces[0]);
                            let out = std::mem::take(&mut self.out);
                            let mut parts: Vec<&[u8]> = Vec::with_capacity(pieces.len() + 2);
                            parts.push(&out);
                            parts.extend(pieces.iter().map(|p| &p[..]));
                            parts.push(suffix);
                            let r = self.write(&parts).await;
                            self.out = out;
                            r?;
                            sent
                        }
                        other => {
                            held = other;
                            let data = writer.frame(data, &mut self.out);
                            let suffix = writer.chunk_suffix(&data);
                            let out = std::mem::take(&mut self.out);
                            let r = self.write(&[&out, &data, suffix]).await;
                            self.out = out;
                            r?;
                            data.len() as u64
                        }
                    };
                    if let Some(r) = record.as_deref_mut() {
                        r.bytes += sent;
                    }
                }
                AppMsg::File { file, offset, len } => {
                    let len = writer.limit(len);
                    if len > 0 {
                        if writer.chunked() {
                            self.write(&[format!("{len:x}\r\n").as_bytes()]).await?;
                        }
                        let timeout = self.ctx.config.write_timeout * 4;
                        self.send_file_bytes(
                            &file,
                            (offset, len),
                            timeout,
                            &mut writer,
                            record.as_deref_mut(),
                        )
                        .await?;
                        if writer.chunked() {
                            self.write(&[b"\r\n"]).await?;
                        }
                    }
                }
                AppMsg::End(took) => {
                    self.ctx.inline.record(route, took, alone);
                    let tail = writer.finish();
                    if !tail.is_empty() {
                        self.write(&[tail]).await?;
                    }
                    break;
                }
                AppMsg::Abort => return Err(()),
            }
        }
        if !writer.complete() {
            return Ok(false);
        }
        let unanswered_continue = expect_continue && !continue_sent;
        Ok(writer.keep_alive && self.drain_rest(&mut body, unanswered_continue).await)
    }

    /// After a complete response: reads and drops what is left of the request body (up to
    /// `max_drain`) so the connection can serve the next request. False when it
    /// must close instead: more than that is left, the body fails or stalls, or the client
    /// asked `Expect: 100-continue` and never got the 100 (it may never send the body).
    async fn drain_rest(&mut self, body: &mut BodyReader, unanswered_continue: bool) -> bool {
        if body.is_done() {
            return true;
        }
        if unanswered_continue {
            return false;
        }
        body.drain(
            &mut self.io,
            &mut self.buf,
            self.ctx.config.max_drain,
            self.ctx.config.body_timeout,
        )
        .await
    }

    /// Sends `span` (offset, length) of `file` with `sendfile(2)` within `timeout`, counted in
    /// `writer` and the access log's `record`. A short send (the file shrank under us) breaks
    /// the framing promise: the connection must close.
    async fn send_file_bytes(
        &mut self,
        file: &std::fs::File,
        (offset, len): (u64, u64),
        timeout: Duration,
        writer: &mut Writer,
        record: Option<&mut Record>,
    ) -> Result<(), ()> {
        let sent = tokio::time::timeout(timeout, self.io.sendfile(file, offset, len))
            .await
            .map_err(|_| ())?
            .map_err(|_| ())?;
        writer.written += sent;
        if let Some(r) = record {
            r.bytes += sent;
        }
        if sent < len {
            return Err(());
        }
        Ok(())
    }

    /// Writes a static file's answer (see `crate::static_files`) with the connection's writer:
    /// the head with a small body in one write, a file's bytes with `sendfile(2)` in pieces,
    /// each of which must go out within `--write-timeout`.
    async fn send_static(
        &mut self,
        head: &RequestHead,
        answer: StaticAnswer,
        mut record: Option<&mut Record>,
    ) -> Result<bool, ()> {
        /// Bytes sent per `sendfile` wait: a client must take this much per `--write-timeout`
        /// (17 KB/s at the default 30 s), so a slow download is not cut while a stalled one is.
        const PIECE: u64 = 512 << 10;
        let StaticAnswer { head: resp, body } = answer;
        let mut writer = Writer::new(head);
        if let Some(r) = record.as_deref_mut() {
            r.status = Some(resp.status);
            r.response_headers.clone_from(&resp.headers);
        }
        let (first, file) = match body {
            StaticBody::Empty => (Bytes::new(), None),
            StaticBody::Bytes(b) => (b, None),
            StaticBody::File { file, offset, len } => (Bytes::new(), Some((file, offset, len))),
        };
        if self.out.capacity() == 0 {
            self.out = crate::http1::buffers::take();
        }
        writer.start(
            &resp,
            first.len(),
            file.is_none(),
            self.shutting_down(),
            &mut self.out,
        );
        let data = writer.frame(first, &mut self.out);
        let mut out = std::mem::take(&mut self.out);
        let file_follows = file.as_ref().is_some_and(|f| f.2 > 0) && !writer.is_head;
        let r = if file_follows {
            // The head waits in the kernel for the file's first bytes (MSG_MORE).
            let timeout = self.ctx.config.write_timeout;
            match tokio::time::timeout(timeout, self.io.write_all_more(&out)).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(()),
            }
        } else if data.len() <= SMALL_BODY * 8 {
            out.extend_from_slice(&data);
            self.write(&[&out]).await
        } else {
            self.write(&[&out, &data]).await
        };
        self.out = out;
        r?;
        if let Some(r) = record.as_deref_mut() {
            r.bytes += data.len() as u64;
        }
        if let Some((file, offset, len)) = file {
            let len = writer.limit(len);
            let mut done = 0;
            while done < len {
                let piece = (len - done).min(PIECE);
                let timeout = self.ctx.config.write_timeout;
                self.send_file_bytes(
                    &file,
                    (offset + done, piece),
                    timeout,
                    &mut writer,
                    record.as_deref_mut(),
                )
                .await?;
                done += piece;
            }
        }
        writer.finish();
        if !writer.complete() {
            return Ok(false);
        }
        // A body sent with a static request is read and dropped, as after an app's answer.
        let mut body = BodyReader::new(head.framing, self.ctx.config.max_body);
        Ok(writer.keep_alive && self.drain_rest(&mut body, head.expect_continue).await)
    }

    /// A small body that the client sent along with its head (the usual form post or JSON
    /// call), taken whole if it is already here or on the socket: the app then reads it
    /// without a round trip to this thread, and the request may run inline.
    fn preload_body(&mut self, body: &mut BodyReader) -> Bytes {
        let BodyReader::Length(n) = *body else {
            return Bytes::new();
        };
        if n > PRELOAD_MAX {
            return Bytes::new();
        }
        while (self.buf.len() as u64) < n {
            let before = self.buf.len();
            match self.io.read_ready_now(&mut self.buf) {
                Ok(true) if self.buf.len() > before => {}
                _ => break,
            }
        }
        body.take_buffered(&mut self.buf).unwrap_or_default()
    }

    /// The rest of a body no larger than [`PRELOAD_MAX`] whose start [`Conn::preload_body`]
    /// found buffered, waited for; empty for longer or chunked bodies.
    async fn await_small_body(
        &mut self,
        body: &mut BodyReader,
    ) -> Result<Bytes, crate::http1::error::BodyError> {
        match *body {
            BodyReader::Length(n) if n <= PRELOAD_MAX => {
                let stall = self.ctx.config.body_timeout;
                body.read_whole(&mut self.io, &mut self.buf, stall).await
            }
            _ => Ok(Bytes::new()),
        }
    }

    /// Up to `max` bytes of the body for the app: as much as the client sends without
    /// stalling, so that one request from the app thread (one round trip between threads)
    /// brings a whole `read(n)` where possible.
    async fn read_body(
        &mut self,
        body: &mut BodyReader,
        max: usize,
        stall: Duration,
    ) -> Result<Bytes, crate::http1::error::BodyError> {
        let first = body.read(&mut self.io, &mut self.buf, max, stall).await?;
        if first.len() >= max || first.is_empty() || body.is_done() {
            return Ok(first);
        }
        let mut acc = BytesMut::with_capacity(max);
        acc.extend_from_slice(&first);
        while acc.len() < max && !body.is_done() {
            // More only if it is already here or arrives promptly; never wait on a slow
            // client for what the app may not need yet.
            let nothing_waiting = self.buf.is_empty() && {
                let now = self.io.read_ready_now(&mut self.buf);
                !now.map_err(|e| crate::http1::error::BodyError::Io(e.to_string()))?
            };
            if nothing_waiting {
                break;
            }
            let more = body
                .read(&mut self.io, &mut self.buf, max - acc.len(), stall)
                .await?;
            if more.is_empty() {
                break;
            }
            acc.extend_from_slice(&more);
        }
        Ok(acc.freeze())
    }

    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), ()> {
        let timeout = self.ctx.config.write_timeout;
        let result = {
            let mut write = std::pin::pin!(write_all_vectored(&mut self.io, parts));
            // Usually the socket takes it all at once: no timer (nor clock read) for that.
            let first = std::future::poll_fn(|cx| {
                Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
            })
            .await;
            match first {
                Poll::Ready(r) => Ok(r),
                Poll::Pending => tokio::time::timeout(timeout, write).await,
            }
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                log::debug!("{}: write failed: {e}", self.peer_text());
                Err(())
            }
            Err(_) => {
                log::debug!("{}: write timed out", self.peer_text());
                Err(())
            }
        }
    }
}

/// The most body pieces gathered into one write, and the most bytes.
const GATHER_PIECES: usize = 32;
const GATHER_BYTES: usize = 1024 * 1024;

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

async fn write_all_vectored(io: &mut Stream, parts: &[&[u8]]) -> std::io::Result<()> {
    const MAX: usize = GATHER_PIECES + 2; // the most any caller sends at once
    for group in parts.chunks(MAX) {
        let mut slices = [IoSlice::new(&[]); MAX];
        let mut len = 0;
        for part in group.iter().filter(|p| !p.is_empty()) {
            slices[len] = IoSlice::new(part);
            len += 1;
        }
        let mut bufs = &mut slices[..len];
        while !bufs.is_empty() {
            // One piece goes out with send(2), which skips writev's trip through the VFS.
            let n = match bufs {
                [one] => io.write(one).await?,
                _ => io.write_vectored(bufs).await?,
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
    }
    // TLS may keep encrypted bytes back until flushed; for a socket this returns at once.
    io.flush().await
}
