//! The seam between the I/O core and the application side: a request goes in, response events
//! come out. Nothing here knows about Python; the WSGI glue implements [`App`].

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::addr::{Local, Peer};
use crate::clock::monotonic_ms;
use crate::http1::error::BodyError;
use crate::http1::request::{RequestHead, Text};
use crate::http1::response::{EarlyHints, ResponseHead, Trailers};
pub use crate::messages::WsOut;
use crate::messages::{AppMsg, BodyPiece, Ending};
use crate::proxy::Forwarded;
use crate::remote::{Flow, Mailbox, RemoteApp, RemoteRx, RemoteTx};

/// A request handed to an app thread.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub peer: Peer,
    pub local: Local,
    /// What a trusted proxy said about the original request (empty otherwise).
    pub forwarded: Forwarded,
    /// The connection's TLS facts (protocol, cipher, client certificate); None in cleartext.
    pub tls: Option<Arc<crate::transport::tls::TlsInfo>>,
    /// CGI variables for the environ as they are, besides those made from the head: what a
    /// uwsgi front end sends (`DOCUMENT_ROOT`, `REQUEST_SCHEME`, its own `uwsgi_param`s);
    /// always empty over HTTP.
    pub extra: Vec<(Text, Bytes)>,
    /// For a WebSocket upgrade request to an app that takes sockets: the app's end of a
    /// socket pair whose other end the core relays to the client (`crate::tunnel`).
    pub socket: Option<AppSocket>,
    /// For a WebSocket handshake to an app that speaks messages (an event loop's: ASGI's
    /// websocket scope): what the client offered and the queue of its messages; the core
    /// speaks the protocol (`crate::ws_link`).
    pub websocket: Option<crate::ws_link::Offer>,
}

/// The app's end of a connection it may take over (see `crate::tunnel`): a blocking socket
/// whose bytes the core relays to and from the client once the app writes to it. WSGI offers
/// it as Gunicorn's `environ["gunicorn.socket"]`.
#[derive(Debug)]
pub struct AppSocket {
    fd: OwnedFd,
    /// Set by the core when the app took the connection over: its call then lasts as long
    /// as the connection, and `--timeout` does not apply to it.
    held: Arc<AtomicBool>,
}

impl AppSocket {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            held: Arc::default(),
        }
    }

    /// The flag the core sets when the app takes the connection over.
    pub(crate) fn held(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.held)
    }

    /// The descriptor, for the app to own (and close).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// A unit of work for an app thread: the request, its body, and the way back to its connection.
pub struct Exchange {
    pub request: Request,
    pub body: BodyStream,
    pub response: ResponseSink,
}

/// The application: runs on each of the worker's app threads.
pub trait App: Send + Sync + 'static {
    /// Serves exchanges from `jobs` until it returns `None`, then returns.
    fn run_thread(&self, jobs: Jobs);

    /// Serves one exchange on the calling thread (the I/O thread), if the app can; gives it
    /// back otherwise (`Some`). Only exchanges whose body is complete and whose response
    /// channel never blocks are passed here.
    fn run_inline(&self, exchange: Exchange) -> Option<Exchange> {
        Some(exchange)
    }

    /// An app side on a thread of its own that must never block (an event loop): exchanges
    /// reach it through the same queue, but their channels are mailboxes (`crate::remote`),
    /// no app threads are started, and nothing runs inline. `None` for app threads.
    fn remote(&self) -> Option<crate::remote::RemoteApp> {
        None
    }

    /// With [`App::remote`]: the worker's queue of exchanges, handed over once before the
    /// worker accepts. The app takes exchanges from it itself, in batches.
    fn take_queue(&self, jobs: Jobs) {
        drop(jobs);
    }

    /// `run_inline` may leave the calling (I/O) thread holding the app's runtime lock (Python's
    /// GIL) for the next inline call; this lets it go. Called before the I/O thread waits for
    /// events, before a request is handed to the app threads, and when the worker stops.
    fn release_inline(&self) {}

    /// True when the app may take a connection over through a socket (WSGI, as under
    /// Gunicorn): WebSocket upgrade requests then carry [`Request::socket`].
    fn takes_sockets(&self) -> bool {
        false
    }
}

/// What one app thread is doing, for the worker's hung-request check.
#[derive(Debug, Default)]
pub(crate) struct ThreadSlot {
    /// Monotonic milliseconds when the current request started; 0 when idle.
    pub busy_since: AtomicU64,
    /// `METHOD target` of the current request, and whether it took its connection over.
    pub request: Mutex<Current>,
}

/// The request an app thread is serving, as the hung-request check sees it.
#[derive(Debug, Default)]
pub(crate) struct Current {
    /// `METHOD target`.
    pub text: String,
    /// Set once the request has taken its connection over (see [`AppSocket`]).
    pub held: Option<Arc<AtomicBool>>,
}

impl ThreadSlot {
    /// True when the current request has taken its connection over: a WebSocket lasts as
    /// long as its client wants, and is no hung request.
    pub(crate) fn holds_connection(&self) -> bool {
        self.request
            .lock()
            .is_ok_and(|c| c.held.as_ref().is_some_and(|h| h.load(Ordering::Relaxed)))
    }
}

/// The queue of exchanges an app thread takes work from.
pub struct Jobs {
    rx: crate::jobs::Receiver<Exchange>,
    slot: Arc<ThreadSlot>,
    /// The pool's count of threads not yet looking for work, left on the first look.
    starting: Arc<AtomicUsize>,
    arrived: AtomicBool,
    /// The consumer named itself (`alive`): requests taken do not rename its slot.
    named: AtomicBool,
}

impl Jobs {
    pub(crate) fn new(
        rx: crate::jobs::Receiver<Exchange>,
        slot: Arc<ThreadSlot>,
        starting: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            rx,
            slot,
            starting,
            arrived: AtomicBool::new(false),
            named: AtomicBool::new(false),
        }
    }

    /// The thread is looking for work: it no longer counts as starting (before it counts as
    /// waiting, so that for a moment it is neither, which may start one thread too many but
    /// never leaves a request without one).
    fn arrive(&self) {
        if !self.arrived.swap(true, Ordering::Relaxed) {
            self.starting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Blocks until the next exchange, or `None` when the worker is shutting down.
    pub fn next(&self) -> Option<Exchange> {
        self.arrive();
        self.slot.busy_since.store(0, Ordering::Relaxed);
        let ex = self.rx.recv_blocking()?;
        Some(self.started(ex))
    }

    /// The next exchange if one is waiting, without blocking. An app thread that has just
    /// finished a request takes the next one this way while it still holds the GIL, which
    /// saves a GIL hand-off and a thread wake-up per request under load.
    pub fn try_next(&self) -> Option<Exchange> {
        self.arrive();
        let ex = self.rx.try_recv()?;
        Some(self.started(ex))
    }

    /// Items queued right now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// For a consumer that is never idle (an event loop, which calls this from a timer): it
    /// is alive now. The worker's hung-request check counts from the last call, so a loop
    /// blocked past `--timeout` is treated as a hung app thread, named `what`.
    pub fn alive(&self, what: &str) {
        self.arrive();
        self.named.store(true, Ordering::Relaxed);
        if let Ok(mut r) = self.slot.request.lock() {
            if r.text.as_str() != what {
                r.text.clear();
                r.text.push_str(what);
                r.held = None;
            }
        }
        self.slot
            .busy_since
            .store(monotonic_ms().max(1), Ordering::Relaxed);
    }

    fn started(&self, ex: Exchange) -> Exchange {
        if self.named.load(Ordering::Relaxed) {
            return ex;
        }
        if let Ok(mut r) = self.slot.request.lock() {
            r.text.clear();
            r.text.push_str(&ex.request.head.method);
            r.text.push(' ');
            r.text.push_str(&ex.request.head.target);
            r.held = ex.request.socket.as_ref().map(AppSocket::held);
        }
        self.slot
            .busy_since
            .store(monotonic_ms().max(1), Ordering::Relaxed);
        ex
    }
}

/// The app side's end of an exchange's channel: bounded for app threads (a slow client holds
/// the app back), unbounded for an inline call (the I/O thread must never block on itself).
#[derive(Clone)]
pub(crate) enum Tx {
    Bounded(mpsc::Sender<AppMsg>),
    Unbounded(crate::local::Sender<AppMsg>),
    /// An app side on a thread of its own that must never block (see `crate::remote`).
    Remote(Arc<RemoteTx>),
}

impl Tx {
    /// Sends without blocking where the channel allows it (a remote app side), saying whether
    /// the app may go on; blocks like [`Tx::send`] otherwise.
    fn post(&self, msg: AppMsg) -> Result<Flow, Disconnected> {
        match self {
            Self::Remote(tx) => tx.0.send(msg).map_err(|_| Disconnected),
            _ => self.send(msg).map(|()| Flow::Ready),
        }
    }

    fn send(&self, msg: AppMsg) -> Result<(), Disconnected> {
        match self {
            Self::Remote(tx) => tx.0.send(msg).map(drop).map_err(|_| Disconnected),
            Self::Bounded(tx) => match tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    tx.blocking_send(msg).map_err(|_| Disconnected)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Disconnected),
            },
            Self::Unbounded(tx) => tx.send(msg).map_err(|_| Disconnected),
        }
    }

    fn has_room(&self) -> bool {
        match self {
            Self::Bounded(tx) => tx.capacity() > 0,
            Self::Unbounded(_) => true,
            Self::Remote(tx) => tx.0.has_room(),
        }
    }
}

/// The connection task's end of an exchange's channel.
pub(crate) enum Rx {
    Bounded(mpsc::Receiver<AppMsg>),
    Unbounded(crate::local::Receiver<AppMsg>),
    Remote(RemoteRx),
}

impl Rx {
    /// A channel for an exchange run by app threads (`inline` false) or on the I/O thread.
    pub(crate) fn channel(inline: bool) -> (Tx, Rx) {
        if inline {
            let (tx, rx) = crate::local::channel();
            (Tx::Unbounded(tx), Rx::Unbounded(rx))
        } else {
            let (tx, rx) = mpsc::channel(8);
            (Tx::Bounded(tx), Rx::Bounded(rx))
        }
    }

    /// A channel for an exchange served by a remote app side (an event loop).
    pub(crate) fn remote(app: &RemoteApp) -> (Tx, Rx, Arc<Mailbox>) {
        let mailbox = app.mailbox();
        (
            Tx::Remote(Arc::new(RemoteTx(Arc::clone(&mailbox)))),
            Rx::Remote(RemoteRx(Arc::clone(&mailbox))),
            mailbox,
        )
    }

    /// True when a whole response of at most `max` body bytes waits in the channel (what an
    /// inline call of a small response leaves there).
    pub(crate) fn holds_small_response(&self, max: usize) -> bool {
        let Self::Unbounded(rx) = self else {
            return false;
        };
        rx.peek(|msgs| {
            let mut size = 0;
            for msg in msgs {
                match msg {
                    AppMsg::Head { body, last, .. } => {
                        size += body.len();
                        if *last {
                            return size <= max;
                        }
                    }
                    AppMsg::Data(data) => size += data.len(),
                    AppMsg::Hints(hints) => size += hints.headers.as_bytes().len(),
                    AppMsg::End(_) => return size <= max,
                    AppMsg::ReadBody(_) | AppMsg::File { .. } | AppMsg::Abort | AppMsg::Ws(_) => {
                        return false
                    }
                }
                if size > max {
                    return false;
                }
            }
            false
        })
    }

    /// Gives back the room of an app side's queue that holds nothing (see
    /// `Mailbox::release_room`); the other kinds hold none of their own.
    pub(crate) fn release_room(&self) {
        if let Self::Remote(rx) = self {
            rx.0.release_room();
        }
    }

    /// The next message if the app has sent one already, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<AppMsg> {
        match self {
            Self::Bounded(rx) => rx.try_recv().ok(),
            Self::Unbounded(rx) => rx.try_recv(),
            Self::Remote(rx) => rx.0.try_recv(),
        }
    }

    pub(crate) async fn recv(&mut self) -> Option<AppMsg> {
        match self {
            Self::Bounded(rx) => rx.recv().await,
            Self::Unbounded(rx) => rx.recv().await,
            Self::Remote(rx) => rx.0.recv().await,
        }
    }
}

/// The client went away (or the connection was closed): stop producing the response.
#[derive(Debug, thiserror::Error)]
#[error("client disconnected")]
pub struct Disconnected;

/// How a body's pieces are asked of the connection and come back.
pub(crate) enum BodyLink {
    /// App threads: a piece is awaited on this channel (blocking).
    Local(Tx, mpsc::Receiver<BodyPiece>),
    /// A remote app side: pieces arrive in the mailbox, announced by its token.
    Remote(Tx, Arc<Mailbox>),
}

/// The request body as the app reads it. [`BodyStream::read`] blocks: call it with the GIL
/// released; an event loop uses [`BodyStream::poll_read`].
pub struct BodyStream {
    /// Asks the connection for body pieces and receives them, each with whether the body is
    /// now complete; none when the whole body came with the head.
    pub(crate) link: Option<BodyLink>,
    /// A piece was asked for by `poll_read` and has not arrived yet.
    pub(crate) asked: bool,
    pub(crate) done: bool,
    pub(crate) error: Option<BodyError>,
    /// Body bytes that arrived with the request head, served before asking the connection.
    pub(crate) pending: Bytes,
}

impl BodyStream {
    /// A body that is empty and complete.
    pub fn empty() -> Self {
        Self {
            link: None,
            asked: false,
            done: true,
            error: None,
            pending: Bytes::new(),
        }
    }

    /// Reads the next piece of the request body (at most `max` bytes); empty at its end.
    pub fn read(&mut self, max: usize) -> Result<Bytes, BodyError> {
        if !self.pending.is_empty() {
            let n = max.max(1).min(self.pending.len());
            return Ok(self.pending.split_to(n));
        }
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.done {
            return Ok(Bytes::new());
        }
        let piece = match self.link.as_mut() {
            None => return Ok(Bytes::new()),
            Some(BodyLink::Local(tx, rx)) => {
                if tx.send(AppMsg::ReadBody(max.max(1))).is_err() {
                    return Err(self.fail(BodyError::Io("connection closed".into())));
                }
                rx.blocking_recv()
            }
            Some(BodyLink::Remote(..)) => match self.poll_read(max)? {
                Some(b) => return Ok(b),
                None => {
                    return Err(self.fail(BodyError::Io(
                        "a remote body cannot be read blocking".into(),
                    )))
                }
            },
        };
        self.arrived(piece)
    }

    /// A piece from the connection (`None`: it went away).
    fn arrived(&mut self, piece: Option<BodyPiece>) -> Result<Bytes, BodyError> {
        match piece {
            Some(Ok((b, done))) => {
                // The connection says when the body is complete, so the app's next read (or
                // its read to the end) needs no further round trip.
                self.done = done || b.is_empty();
                Ok(b)
            }
            Some(Err(e)) => Err(self.fail(e)),
            None => Err(self.fail(BodyError::Io("connection closed".into()))),
        }
    }

    /// The next piece (at most `max` bytes) without blocking, for a remote app side:
    /// `Some` when one is at hand (empty at the body's end); `None` when it has been asked of
    /// the connection, whose answer is announced with the exchange's token (call again then).
    pub fn poll_read(&mut self, max: usize) -> Result<Option<Bytes>, BodyError> {
        if !self.pending.is_empty() || self.error.is_some() || self.done {
            return self.read(max).map(Some);
        }
        let mailbox = match self.link.as_ref() {
            Some(BodyLink::Remote(_, mailbox)) => Arc::clone(mailbox),
            Some(BodyLink::Local(..)) => return self.read(max).map(Some),
            None => return Ok(Some(Bytes::new())),
        };
        if let Some(piece) = mailbox.take_body() {
            self.asked = false;
            return self.arrived(Some(piece)).map(Some);
        }
        if mailbox.is_closed() {
            return self.arrived(None).map(Some);
        }
        if !self.asked {
            if let Some(BodyLink::Remote(tx, _)) = self.link.as_ref() {
                if tx.send(AppMsg::ReadBody(max.max(1))).is_err() {
                    return Err(self.fail(BodyError::Io("connection closed".into())));
                }
            }
            self.asked = true;
        }
        Ok(None)
    }

    /// True when the whole body has been read (or there was none).
    pub fn is_done(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    /// Body bytes that came with the head are at hand: the next [`BodyStream::read`] does not
    /// wait for the connection.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn fail(&mut self, e: BodyError) -> BodyError {
        self.error = Some(e.clone());
        e
    }

    /// The error the body ended with, if reading it failed.
    pub fn error(&self) -> Option<&BodyError> {
        self.error.as_ref()
    }
}

/// Where the app's response goes. Sends block only when the connection is behind, so callers
/// check [`ResponseSink::has_room`] to decide whether to release the GIL first.
#[derive(Clone)]
pub struct ResponseSink {
    pub(crate) tx: Tx,
    /// When the app started on the response (set by `start_clock`, just before the call).
    pub(crate) started: Option<Instant>,
}

impl ResponseSink {
    fn took(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Starts the clock on the app's work: call once the app is about to be called (with the
    /// GIL held, so waiting for it does not count as the app's time).
    pub fn start_clock(&mut self) {
        self.started = Some(Instant::now());
    }

    /// The head, with the first body bytes; `last` when the response is complete with them.
    pub fn send_head(
        &self,
        head: ResponseHead,
        body: Bytes,
        last: bool,
    ) -> Result<(), Disconnected> {
        self.send(AppMsg::Head {
            head: Box::new(head),
            body,
            last,
            took: self.took(),
        })
    }

    /// A `103 Early Hints` response to send before the final one (where the connection can).
    pub fn send_early_hints(&self, hints: EarlyHints) -> Result<(), Disconnected> {
        self.send(AppMsg::Hints(Box::new(hints)))
    }

    pub fn send_data(&self, data: Bytes) -> Result<(), Disconnected> {
        self.send(AppMsg::Data(data))
    }

    pub fn send_file(&self, file: File, offset: u64, len: u64) -> Result<(), Disconnected> {
        self.send(AppMsg::File { file, offset, len })
    }

    /// The response is complete.
    pub fn finish(&self) -> Result<(), Disconnected> {
        self.send(self.end(None))
    }

    fn end(&self, trailers: Option<Box<Trailers>>) -> AppMsg {
        AppMsg::End(Ending {
            took: self.took(),
            trailers,
        })
    }

    /// The response cannot be completed: the connection is closed.
    pub fn abort(&self) {
        let _ = self.send(AppMsg::Abort);
    }

    fn send(&self, msg: AppMsg) -> Result<(), Disconnected> {
        self.tx.send(msg)
    }

    /// True when a send will not block.
    pub fn has_room(&self) -> bool {
        self.tx.has_room()
    }

    /// The token a remote app side is notified with for this exchange (see `crate::remote`);
    /// None for app threads.
    pub fn token(&self) -> Option<u64> {
        match &self.tx {
            Tx::Remote(tx) => Some(tx.0.token()),
            _ => None,
        }
    }

    /// True once the connection has ended the exchange (the client went away, or the
    /// response is complete); only a remote app side can tell.
    pub fn is_closed(&self) -> bool {
        match &self.tx {
            Tx::Remote(tx) => tx.0.is_closed(),
            _ => false,
        }
    }

    /// [`ResponseSink::send_head`] without blocking where the channel allows (a remote app
    /// side): [`Flow::Full`] asks the app to wait for its token before sending more. A head
    /// the caller holds boxed already is sent in its box.
    pub fn post_head(
        &self,
        head: impl Into<Box<ResponseHead>>,
        body: Bytes,
        last: bool,
    ) -> Result<Flow, Disconnected> {
        self.tx.post(AppMsg::Head {
            head: head.into(),
            body,
            last,
            took: self.took(),
        })
    }

    /// [`ResponseSink::send_data`], likewise.
    pub fn post_data(&self, data: Bytes) -> Result<Flow, Disconnected> {
        self.tx.post(AppMsg::Data(data))
    }

    /// A WebSocket event (see [`WsOut`]), without blocking: [`Flow::Full`] asks the app to
    /// wait for its token, as for a response's body.
    pub fn post_ws(&self, msg: WsOut) -> Result<Flow, Disconnected> {
        self.tx.post(AppMsg::Ws(msg))
    }

    /// [`ResponseSink::send_early_hints`], likewise (ASGI's `http.response.early_hint`).
    pub fn post_early_hints(&self, hints: EarlyHints) -> Result<Flow, Disconnected> {
        self.tx.post(AppMsg::Hints(Box::new(hints)))
    }

    /// The response is complete, with its trailer fields (sent where the framing carries
    /// them: HTTP/1.1 chunked, HTTP/2), without blocking.
    pub fn post_trailers(&self, trailers: Trailers) -> Result<Flow, Disconnected> {
        self.tx.post(self.end(Some(Box::new(trailers))))
    }

    /// [`ResponseSink::send_file`], likewise.
    pub fn post_file(&self, file: File, offset: u64, len: u64) -> Result<Flow, Disconnected> {
        self.tx.post(AppMsg::File { file, offset, len })
    }
}
