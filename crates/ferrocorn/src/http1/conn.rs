//! An HTTP/1.x connection: request heads read in a keep-alive loop (with their timeouts, the
//! PROXY preamble, and the stop), each run through `crate::exchange` with this module's
//! [`Wire`](crate::exchange::Wire) (`super::wire`). The uwsgi driver reads its packets off the
//! same connection.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::body::BodyReader;
use super::error::{BodyError, RequestError};
use super::proxy_protocol;
use super::request::{take_head, RequestHead};
use super::response::request_error_response;
use crate::addr::{Local, Peer};
use crate::connection::ctx::ConnCtx;
use crate::exchange::{self, Opened, Source};
use crate::http2::Rewind;
use crate::net::Stream;
use crate::reclaim::{Phase, Registration};
use crate::stopping::StandingWait;

/// What is left to run of a connection whose exchange opened a WebSocket (see
/// [`Conn::into_websocket`]).
pub(crate) type Parked = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Request bodies up to this size are taken with the head when they are already on the socket.
const PRELOAD_MAX: u64 = 64 * 1024;

/// How long a connection accepted just before a graceful stop may take to send its request.
const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// One client connection; the protocol drivers (HTTP/1.x here, `crate::uwsgi`) read requests
/// off it and run each through [`Conn::exchange`].
pub(crate) struct Conn {
    /// Where the connection tells the worker what it is doing (see [`crate::reclaim`]).
    pub(crate) registration: Registration,
    pub(crate) io: Stream,
    /// What the TLS handshake said (None on cleartext connections).
    pub(crate) tls: Option<Arc<crate::transport::tls::TlsInfo>>,
    pub(crate) buf: BytesMut,
    pub(super) out: BytesMut,
    pub(crate) peer: Peer,
    pub(super) local: Local,
    pub(crate) ctx: Arc<ConnCtx>,
    /// The timer of the waits for a request head; see [`Conn::wait_readable`].
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// The wake-up for the worker's stop while waiting idle, made at the first such wait.
    stop_wait: Option<StandingWait>,
    /// A WebSocket opened by the last exchange, for [`Conn::into_websocket`] to run.
    pub(super) parked: Option<Box<Opened>>,
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
    /// A connection accepted (and past its TLS handshake), registered for reclaiming.
    pub(crate) fn new(
        io: Stream,
        tls: Option<Arc<crate::transport::tls::TlsInfo>>,
        peer: Peer,
        local: Local,
        ctx: Arc<ConnCtx>,
    ) -> Self {
        Self {
            registration: ctx.reclaim.register(io.raw_fd()),
            io,
            tls,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            peer,
            local,
            ctx,
            idle_timer: None,
            stop_wait: None,
            parked: None,
        }
    }

    /// Serves HTTP/1.x requests until the connection ends: `None`; or until a request asks
    /// to switch protocols and `upgrade` (`crate::http2::upgrade`, where h2c by `Upgrade` is
    /// allowed) accepts it: `Some` with what it made of the request.
    pub(crate) async fn run(
        &mut self,
        upgrade: Option<fn(&RequestHead) -> Option<BytesMut>>,
    ) -> Option<BytesMut> {
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
            if let Some(switch) = upgrade.and_then(|check| check(&head)) {
                return Some(switch);
            }
            match self.exchange(head, Source::Headers).await {
                Ok(true) => {}
                Ok(false) | Err(()) => break,
            }
        }
        if self.parked.is_some() {
            return None; // the WebSocket goes on: `into_websocket`
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
        None
    }

    /// The WebSocket the last exchange opened and parked here (`Wire::park_websocket`), as
    /// what is left of the connection to run: the connection's task drops the future it
    /// served HTTP in (the exchange's states make most of it) and runs this one instead, for
    /// as long as the WebSocket is open. None when there is none.
    pub(crate) fn into_websocket(mut self) -> Option<Parked> {
        let ws = self.parked.take()?;
        // The waits for a next request head are over: their timer and the stop's wake-up
        // would otherwise stay allocated (and registered) for the whole session.
        self.idle_timer = None;
        self.stop_wait = None;
        Some(Box::pin(self.serve_websocket(ws)))
    }

    /// Runs a parked WebSocket's session to its end, then closes the connection as
    /// [`Conn::run`] does.
    pub(crate) async fn serve_websocket(mut self, ws: Box<Opened>) {
        ws.run(self.websocket_stream()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    /// The stream an open WebSocket runs over: the connection's, with the bytes read past
    /// the handshake (`H1Wire::open_websocket` left them alone in `buf`) in front.
    pub(super) fn websocket_stream(&mut self) -> Rewind<&mut Stream> {
        Rewind::new(std::mem::take(&mut self.buf).freeze(), &mut self.io)
    }

    /// Gives the read and write buffers back to the thread's stack for other connections.
    fn release_buffers(&mut self) {
        crate::http1::buffers::give(std::mem::take(&mut self.buf));
        crate::http1::buffers::give(std::mem::take(&mut self.out));
    }

    pub(crate) fn peer_text(&self) -> String {
        self.peer.to_string()
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.ctx.stopping.is_set()
    }

    /// Gives the socket and the bytes already read to another protocol driver; the
    /// connection leaves the reclaim registry first.
    pub(crate) fn into_parts(mut self) -> (Stream, Bytes, Peer, Local, Arc<ConnCtx>) {
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
            (io, read, peer, local, ctx)
        }
    }

    /// `--proxy-protocol`: takes the client address from the preamble. False when the
    /// connection must be closed (untrusted peer, bad or missing preamble).
    pub(crate) async fn read_preamble(&mut self) -> bool {
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

    /// After a complete response: reads and drops what is left of the request body (up to
    /// `max_drain`) so the connection can serve the next request. False when it
    /// must close instead: more than that is left, the body fails or stalls, or the client
    /// asked `Expect: 100-continue` and never got the 100 (it may never send the body).
    pub(super) async fn drain_rest(
        &mut self,
        body: &mut BodyReader,
        unanswered_continue: bool,
    ) -> bool {
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

    /// A small body that the client sent along with its head (the usual form post or JSON
    /// call), taken whole if it is already here or on the socket: the app then reads it
    /// without a round trip to this thread, and the request may run inline.
    pub(super) fn preload_body(&mut self, body: &mut BodyReader) -> Bytes {
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
    pub(super) async fn await_small_body(
        &mut self,
        body: &mut BodyReader,
    ) -> Result<Bytes, BodyError> {
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
    pub(super) async fn read_body(
        &mut self,
        body: &mut BodyReader,
        max: usize,
        stall: Duration,
    ) -> Result<Bytes, BodyError> {
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
                !now.map_err(|e| BodyError::Io(e.to_string()))?
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

    pub(crate) async fn write(&mut self, parts: &[&[u8]]) -> Result<(), ()> {
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

async fn write_all_vectored(io: &mut Stream, parts: &[&[u8]]) -> std::io::Result<()> {
    const MAX: usize = exchange::MAX_PIECES + 2; // the most any caller sends at once
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
