//! A connection taken over by the app, as Gunicorn's threaded worker lets a WSGI app take it
//! (`environ["gunicorn.socket"]`, what simple-websocket, flask-sock and python-engineio's
//! threading mode speak WebSocket over): the app is given one end of a socket pair, and this
//! module relays the bytes between the other end and the client's connection, TLS or not.
//!
//! - **When**: an HTTP/1.1 `GET` with `Upgrade: websocket` and `Connection: upgrade` and no
//!   body ([`asks_for_websocket`]), for an app that takes sockets ([`crate::app::App`]). The
//!   exchange makes the pair ([`pair`]) and runs the request on an app thread as any other.
//!   If the app answers through `start_response`, that answer goes out as usual and the pair
//!   is dropped. If it writes through the socket first (its own `101 Switching Protocols`),
//!   the connection is switched: [`relay`] runs until one side ends, and the connection
//!   closes after it, as Gunicorn closes it once the app returns.
//! - **Bounded both ways**: [`BUFFER`] bytes each way here, and socket buffers of
//!   [`SOCKET_BUFFER`] in the pair. A client that stops reading stops the relay's reads from
//!   the app, whose sends then block; a client that floods an app that does not read fills
//!   the pair and then the client's TCP window. A write to the client that makes no progress
//!   for `--write-timeout` ends the tunnel. No idle timeout: a quiet WebSocket is normal (the
//!   app's pings find dead peers).
//! - **Graceful stop**: the relay stops reading the client, lets the app finish the frame it
//!   is sending ([`frames::Outgoing`] follows frame boundaries), adds a close frame with 1001
//!   (going away), and closes; within [`STOP_GRACE`], else it just closes. The app sees the
//!   end of its socket and returns, which frees its thread.

pub(crate) mod frames;

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};

use crate::http1::request::{Framing, RequestHead, Version};
use crate::stopping::Stopping;
use frames::Outgoing;

/// The relay's buffer each way.
pub(crate) const BUFFER: usize = 16 * 1024;

/// The send buffer asked for on each end of the pair (the kernel doubles it): what may wait
/// between the app and the relay each way.
pub(crate) const SOCKET_BUFFER: usize = 64 * 1024;

/// How long the end of a tunnel waits for the other side: for the client's last bytes (its
/// close frame) after the server's, for the app after the client left.
const LINGER: Duration = Duration::from_secs(1);

/// How long a graceful stop waits for the app to finish the frame it is sending.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The close code a graceful stop sends (RFC 6455 §7.4.1: the server is going away).
pub(crate) const GOING_AWAY: u16 = 1001;

/// Whether `head` asks to switch to WebSocket (RFC 6455 §4.1): HTTP/1.1, `GET`, `websocket`
/// among the `Upgrade` tokens and `upgrade` among the `Connection` options, and no body.
/// The rest of the handshake (`Sec-WebSocket-Key`, the version) is the app's to check, as
/// under Gunicorn.
pub(crate) fn asks_for_websocket(head: &RequestHead) -> bool {
    if head.version != Version::Http11
        || &*head.method != "GET"
        || !matches!(head.framing, Framing::None | Framing::Length(0))
    {
        return false;
    }
    let has_token = |name: &str, token: &[u8]| {
        head.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    };
    has_token("upgrade", b"websocket") && has_token("connection", b"upgrade")
}

/// A connected socket pair: the relay's end, registered with the I/O thread, and the app's,
/// blocking (a Python `socket.socket` made from it blocks as the app expects).
pub(crate) fn pair() -> io::Result<(UnixStream, OwnedFd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    for end in [&ours, &theirs] {
        // A smaller buffer than the default (about 200 KiB) bounds what waits in the pair.
        let _ = socket2::SockRef::from(end).set_send_buffer_size(SOCKET_BUFFER);
    }
    ours.set_nonblocking(true)?;
    Ok((UnixStream::from_std(ours)?, OwnedFd::from(theirs)))
}

/// Resolves once the app has used its end: `Some` with the first bytes it sent (the
/// connection is to be switched), `None` when it closed its end unused. Never without a pair.
pub(crate) async fn app_spoke(ours: Option<&UnixStream>) -> Option<BytesMut> {
    let Some(ours) = ours else {
        return std::future::pending().await;
    };
    loop {
        if ours.readable().await.is_err() {
            return None;
        }
        let mut first = BytesMut::with_capacity(BUFFER);
        match ours.try_read_buf(&mut first) {
            Ok(0) => return None,
            Ok(_) => return Some(first),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

/// What the app has sent through its end already, without waiting. Read with the socket
/// itself rather than by the I/O driver's readiness, which may not have seen the bytes yet.
pub(crate) fn spoken(ours: &UnixStream) -> Option<BytesMut> {
    use std::io::Read;
    let mut first = BytesMut::zeroed(BUFFER);
    let sock = socket2::SockRef::from(ours);
    match (&*sock).read(&mut first) {
        Ok(n) if n > 0 => {
            first.truncate(n);
            Some(first)
        }
        _ => None,
    }
}

/// How a tunnel ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ending {
    /// The app closed its end (after its close handshake, usually).
    #[error("the app closed its socket")]
    AppClosed,
    /// The app's call returned: the connection ends with it, as under Gunicorn.
    #[error("the app's call returned")]
    AppDone,
    /// The client closed its side (and the app was given the end of its stream).
    #[error("the client closed the connection")]
    ClientClosed,
    /// The worker is stopping; `at_boundary` when a close frame can be added.
    #[error("the worker is stopping")]
    Stopped { at_boundary: bool },
    /// The client took nothing for `--write-timeout`.
    #[error("the client stopped reading (--write-timeout)")]
    WriteTimeout,
    /// Reading from or writing to the client failed.
    #[error("the connection failed: {0}")]
    ClientError(io::Error),
}

/// What a tunnel did.
#[derive(Debug)]
pub(crate) struct Relayed {
    pub to_client: u64,
    pub to_app: u64,
    pub ending: Ending,
}

/// One direction's bytes in flight.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source has ended.
    eof: bool,
    /// Written but not yet flushed (TLS keeps records back until flushed).
    unflushed: bool,
    moved: u64,
}

impl Pipe {
    fn new(first: &[u8]) -> Self {
        let mut buf = vec![0; BUFFER.max(first.len())].into_boxed_slice();
        buf[..first.len()].copy_from_slice(first);
        Self {
            buf,
            start: 0,
            end: first.len(),
            eof: false,
            unflushed: false,
            moved: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn room(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Reads at most `max` bytes from `src`; the bytes read are `buf[end - n..end]`.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let limit = self.room().min(max);
        let mut rb = ReadBuf::new(&mut self.buf[self.end..self.end + limit]);
        ready!(Pin::new(src).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Reads at most `max` bytes from `src` if they are there, without waiting (`Pending`
    /// when none are).
    fn fill_now(&mut self, src: &UnixStream, max: usize) -> Poll<io::Result<usize>> {
        use std::io::Read;
        let limit = self.room().min(max);
        let sock = socket2::SockRef::from(src);
        match (&*sock).read(&mut self.buf[self.end..self.end + limit]) {
            Ok(n) => {
                if n == 0 {
                    self.eof = true;
                }
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Writes what is buffered to `dst`, then flushes it.
    fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[self.start..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
            self.moved += n as u64;
            self.unflushed = true;
        }
        // All written: the whole buffer is room again.
        self.start = 0;
        self.end = 0;
        if self.unflushed {
            ready!(Pin::new(&mut *dst).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn settled(&self) -> bool {
        self.is_empty() && !self.unflushed
    }
}

/// The relay's state while both sides run.
struct Relay<'a, C, D> {
    client: &'a mut C,
    app: UnixStream,
    up: Pipe,
    down: Pipe,
    outgoing: Outgoing,
    app_done: Pin<&'a mut D>,
    done: bool,
    stop: crate::stopping::StandingWait,
    stopping: bool,
    app_write_shut: bool,
    /// The app's call returned with its end still open: what a thread of the app still
    /// writes there goes out until it closes the end, within `LINGER`.
    done_waiting: bool,
    /// Runs while bytes wait for the client; moved on at each write that makes progress.
    stall: Pin<Box<Sleep>>,
    write_timeout: Duration,
    /// After the client left or the stop began: how long the app gets.
    grace: Option<Pin<Box<Sleep>>>,
}

impl<C, D> Relay<'_, C, D>
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: Future<Output = ()>,
{
    fn start_grace(&mut self, after: Duration) {
        if self.grace.is_none() {
            self.grace = Some(Box::pin(tokio::time::sleep(after)));
        }
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        loop {
            let mut progress = false;
            // Client to app, unless stopping.
            if !self.stopping && !self.up.eof && self.up.room() > 0 {
                match self.up.poll_fill(cx, self.client, usize::MAX) {
                    Poll::Ready(Ok(0)) => {
                        progress = true;
                        self.start_grace(LINGER);
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Ending::ClientError(e)),
                    Poll::Pending => {}
                }
            }
            if !self.up.is_empty() {
                match self.up.poll_drain(cx, &mut self.app) {
                    Poll::Ready(Ok(())) => progress = true,
                    // The app closed its end: whatever it sent is still to go out.
                    Poll::Ready(Err(_)) => {
                        self.up.start = self.up.end;
                        self.up.eof = true;
                    }
                    Poll::Pending => {}
                }
            }
            if self.up.eof && self.up.is_empty() && !self.app_write_shut {
                // The app reads the end of its stream.
                self.app_write_shut = true;
                let _ = Pin::new(&mut self.app).poll_shutdown(cx);
            }
            // App to client; while stopping, only up to the end of the frame being sent.
            let limit = if self.stopping {
                self.outgoing.to_boundary().unwrap_or(0)
            } else {
                usize::MAX
            };
            let mut app_quiet = self.down.eof;
            if !self.down.eof && limit > 0 && self.down.room() > 0 {
                let was_empty = self.down.is_empty();
                let filled = if self.done && !self.done_waiting {
                    // Once the app's call is over, what it sent is all there: read it
                    // without waiting (a read by readiness could miss bytes whose event
                    // the I/O driver has not reported yet).
                    self.down.fill_now(&self.app, limit)
                } else {
                    self.down.poll_fill(cx, &mut self.app, limit)
                };
                match filled {
                    Poll::Ready(Ok(n)) => {
                        progress = true;
                        let end = self.down.end;
                        self.outgoing.feed(&self.down.buf[end - n..end]);
                        if was_empty && n > 0 {
                            self.stall
                                .as_mut()
                                .reset(Instant::now() + self.write_timeout);
                        }
                    }
                    Poll::Ready(Err(_)) => {
                        self.down.eof = true;
                        progress = true;
                    }
                    Poll::Pending => app_quiet = true,
                }
            }
            if !self.down.settled() {
                let before = self.down.moved;
                match self.down.poll_drain(cx, self.client) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Ending::ClientError(e)),
                    Poll::Pending => {}
                }
                if self.down.moved != before {
                    progress = true;
                    self.stall
                        .as_mut()
                        .reset(Instant::now() + self.write_timeout);
                }
            }
            if self.down.settled() {
                if self.down.eof {
                    return Poll::Ready(Ending::AppClosed);
                }
                if self.done && app_quiet && !self.done_waiting {
                    // simple-websocket's reader thread answers the client's close frame
                    // after it wakes the app, which then returns: wait for the app's end
                    // to close (or be quiet for LINGER) so that answer is not lost.
                    self.done_waiting = true;
                    self.start_grace(LINGER);
                    continue;
                }
                if self.stopping && limit == 0 {
                    return Poll::Ready(Ending::Stopped {
                        at_boundary: self.outgoing.at_boundary(),
                    });
                }
            }
            if progress {
                continue;
            }
            if !self.done && self.app_done.as_mut().poll(cx).is_ready() {
                self.done = true;
                continue;
            }
            if !self.stopping && self.stop.poll_stop(cx).is_ready() {
                self.stopping = true;
                self.start_grace(STOP_GRACE);
                continue;
            }
            if !self.down.settled() && self.stall.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ending::WriteTimeout);
            }
            if let Some(grace) = &mut self.grace {
                if grace.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(if self.stopping {
                        Ending::Stopped { at_boundary: false }
                    } else if self.done {
                        Ending::AppDone
                    } else {
                        Ending::ClientClosed
                    });
                }
            }
            return Poll::Pending;
        }
    }
}

/// Relays between `client` and the app's socket (`app`) until either ends, the app's call
/// ends (`app_done`), the worker stops, or the client stops reading for `write_timeout`.
/// `to_app` holds client bytes read past the request head; `from_app` what the app sent
/// first (its response head, usually).
pub(crate) async fn relay<C, D>(
    client: &mut C,
    to_app: &mut BytesMut,
    app: UnixStream,
    from_app: &[u8],
    app_done: D,
    stopping: &Stopping,
    write_timeout: Duration,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: Future<Output = ()>,
{
    let app_done = std::pin::pin!(app_done);
    let mut outgoing = Outgoing::default();
    outgoing.feed(from_app);
    let stop = stopping.standing_wait();
    let mut relay = Relay {
        client,
        app,
        up: Pipe::new(&to_app.split()),
        down: Pipe::new(from_app),
        outgoing,
        app_done,
        done: false,
        stop,
        stopping: stopping.is_set(),
        app_write_shut: false,
        stall: Box::pin(tokio::time::sleep(write_timeout)),
        write_timeout,
        grace: None,
        done_waiting: false,
    };
    if relay.stopping {
        relay.start_grace(STOP_GRACE);
    }
    let ending = std::future::poll_fn(|cx| relay.poll_run(cx)).await;
    let to_client = relay.down.moved;
    let to_app = relay.up.moved;
    let client = relay.client;
    // The app's end closes here: the app reads the end of its stream, its sends fail.
    drop(relay.app);
    match &ending {
        Ending::ClientError(_) | Ending::WriteTimeout => {}
        Ending::Stopped { at_boundary } => {
            if *at_boundary {
                let close = frames::close_frame(GOING_AWAY, "server shutting down");
                let sent = async {
                    client.write_all(&close).await?;
                    client.flush().await
                };
                let _ = tokio::time::timeout(write_timeout.min(LINGER), sent).await;
            }
            finish(client).await;
        }
        Ending::AppClosed | Ending::AppDone | Ending::ClientClosed => finish(client).await,
    }
    Relayed {
        to_client,
        to_app,
        ending,
    }
}

/// Closes the client's side (TLS's close_notify, then FIN), then reads and drops what the
/// client still sends (its close frame) for a moment: closing a socket with unread bytes
/// would reset the connection, and the client could lose the last frames sent to it.
async fn finish<C: AsyncRead + AsyncWrite + Unpin>(client: &mut C) {
    let _ = tokio::time::timeout(LINGER, client.shutdown()).await;
    let drain = async {
        let mut sink = [0u8; 1024];
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn head(method: &str, version: Version, fields: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test(method, "/ws", version, fields)
    }

    #[test]
    fn only_an_http11_get_with_both_tokens_asks_for_websocket() {
        let ok = [
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
        ];
        assert!(asks_for_websocket(&head("GET", Version::Http11, &ok)));
        assert!(asks_for_websocket(&head(
            "GET",
            Version::Http11,
            &[("upgrade", "WebSocket"), ("connection", "upgrade")]
        )));
        assert!(!asks_for_websocket(&head("POST", Version::Http11, &ok)));
        assert!(!asks_for_websocket(&head("GET", Version::Http10, &ok)));
        assert!(!asks_for_websocket(&head(
            "GET",
            Version::Http11,
            &[("Upgrade", "websocket")]
        )));
        assert!(!asks_for_websocket(&head(
            "GET",
            Version::Http11,
            &[("Upgrade", "h2c"), ("Connection", "Upgrade")]
        )));
        let mut with_body = head("GET", Version::Http11, &ok);
        with_body.framing = Framing::Length(3);
        assert!(!asks_for_websocket(&with_body));
    }

    /// A client socket pair, the relay between its server end and a fresh app pair, run on a
    /// task; returns the client's end, the app's end (blocking) and the relay's outcome.
    async fn start(
        stopping: std::sync::Arc<Stopping>,
        done: tokio::sync::oneshot::Receiver<()>,
    ) -> (
        UnixStream,
        std::os::unix::net::UnixStream,
        tokio::task::JoinHandle<Relayed>,
    ) {
        let (client, mut server) = UnixStream::pair().expect("pair");
        let (ours, theirs) = pair().expect("pair");
        let theirs = std::os::unix::net::UnixStream::from(theirs);
        let task = tokio::spawn(async move {
            let mut pending = BytesMut::from(&b"early"[..]);
            relay(
                &mut server,
                &mut pending,
                ours,
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                async {
                    let _ = done.await;
                },
                &stopping,
                Duration::from_millis(300),
            )
            .await
        });
        (client, theirs, task)
    }

    #[tokio::test]
    async fn bytes_go_both_ways_and_the_app_closing_ends_it() {
        let stopping = std::sync::Arc::new(Stopping::default());
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (mut client, mut app, task) = start(stopping, rx).await;
        let app_side = tokio::task::spawn_blocking(move || {
            let mut got = [0u8; 9];
            app.read_exact(&mut got).expect("read");
            assert_eq!(&got, b"earlyping");
            app.write_all(b"pong").expect("write");
            // Closing the app's end ends the tunnel.
        });
        let mut head = vec![0u8; 36];
        client.read_exact(&mut head).await.expect("head");
        client.write_all(b"ping").await.expect("write");
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).await.expect("pong");
        assert_eq!(&pong, b"pong");
        app_side.await.expect("app");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
        let relayed = task.await.expect("relay");
        assert!(matches!(relayed.ending, Ending::AppClosed), "{relayed:?}");
        assert_eq!((relayed.to_app, relayed.to_client), (9, 40));
    }

    #[tokio::test]
    async fn a_stop_waits_for_the_frame_then_sends_going_away() {
        let stopping = std::sync::Arc::new(Stopping::default());
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (mut client, mut app, task) = start(std::sync::Arc::clone(&stopping), rx).await;
        let mut head = vec![0u8; 36];
        client.read_exact(&mut head).await.expect("head");
        // Half a text frame of 4 bytes, then the stop, then the rest of it.
        app.write_all(&[0x81, 4, b'a', b'b']).expect("write");
        let mut half = [0u8; 4];
        client.read_exact(&mut half).await.expect("half");
        stopping.begin();
        app.write_all(b"cd").expect("write");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("to the end");
        assert_eq!(&rest[..2], b"cd");
        assert_eq!(
            &rest[2..],
            &frames::close_frame(GOING_AWAY, "server shutting down")[..]
        );
        let relayed = task.await.expect("relay");
        assert!(matches!(
            relayed.ending,
            Ending::Stopped { at_boundary: true }
        ));
        // The app's end was closed after the client's early bytes.
        let mut got = Vec::new();
        app.read_to_end(&mut got).expect("eof");
        assert_eq!(got, b"early");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_pauses_the_app_then_times_out() {
        let stopping = std::sync::Arc::new(Stopping::default());
        let (_tx, rx) = tokio::sync::oneshot::channel();
        let (client, mut app, task) = start(stopping, rx).await;
        // The app sends until its sends fail: they block once the buffers on the way are
        // full, and fail when the relay gives up on the client and closes the pair.
        let writer = tokio::task::spawn_blocking(move || {
            let chunk = vec![0u8; 64 * 1024];
            let mut written = 0usize;
            while let Ok(n) = app.write(&chunk) {
                written += n;
                assert!(
                    written < 64 * 1024 * 1024,
                    "the relay took in {written} bytes"
                );
            }
            written
        });
        let relayed = task.await.expect("relay");
        assert!(
            matches!(relayed.ending, Ending::WriteTimeout),
            "{relayed:?}"
        );
        let written = writer.await.expect("writer");
        // The client's socket buffer, the relay's and the pair's: well under a few MiB.
        assert!(written < 4 * 1024 * 1024, "{written} bytes taken in");
        drop(client);
    }

    #[tokio::test]
    async fn the_app_call_ending_ends_it_after_what_the_app_sent() {
        let stopping = std::sync::Arc::new(Stopping::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (mut client, mut app, task) = start(stopping, rx).await;
        app.write_all(b"bye").expect("write");
        let _ = tx.send(());
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.expect("to the end");
        assert!(all.ends_with(b"bye"));
        let relayed = task.await.expect("relay");
        assert!(matches!(relayed.ending, Ending::AppDone), "{relayed:?}");
    }
}
