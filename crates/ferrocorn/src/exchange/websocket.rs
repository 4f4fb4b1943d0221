//! A WebSocket the core speaks for an app side on an event loop (ASGI's websocket scope):
//! the handshake as the wire checked it (`Wire::websocket_handshake`: HTTP/1.1's upgrade,
//! HTTP/2's extended CONNECT; a malformed one answered here without the app), the exchange
//! handed to the app with an [`Offer`], then the app's answer: its `websocket.accept` (the
//! wire's acceptance, `Wire::open_websocket`: a `101` and the connection's byte stream, or a
//! `200` and the stream's DATA frames, then a [`Session`] over it) or a denial (an HTTP
//! response, written as an app's answer is). After the `101` both directions
//! run at once in [`relay`]:
//!
//! - **client to app**: the session's messages go to the [`Inbox`], and the client is read
//!   only while the inbox has room, so a flood waits in the client's TCP window;
//! - **app to client**: the app's `AppMsg::Ws` messages from the mailbox, each sent before the
//!   next is taken, so an app ahead of a slow client is held back by the mailbox's bound on
//!   bytes in flight (`Flow::Full`, as for an HTTP body); a send stalled past
//!   `--write-timeout` ends the connection;
//! - **the end**: the client's close (or its going away, or bad input closed by the session
//!   with its code) reaches the app as the inbox's last message; the app's close starts the
//!   close handshake, whose answer is awaited for [`CLOSE_GRACE`]; an app that returns
//!   without closing closes with 1000 (1011 when it raised: its side sends that close); a
//!   graceful stop closes with 1001 and tells the app so at once.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{count, Done, Record, Wire};
use crate::addr::Peer;
use crate::app::{BodyStream, Exchange, Request, ResponseSink, Rx};
use crate::connection::ctx::ConnCtx;
use crate::http1::request::{RequestHead, Text};
use crate::http1::response::{server_response, HeaderBlock};
use crate::messages::{AppMsg, WsOut};
use crate::proxy::Forwarded;
use crate::remote::RemoteApp;
use crate::stopping::Stopping;
use crate::websocket::deflate::Deflate;
use crate::websocket::handshake::{Handshake, HandshakeError};
use crate::websocket::{close, Received, Session};
use crate::ws_link::{Inbox, Offer};

/// How long the other side's close frame is awaited once one side has sent its own (the
/// app's close, a graceful stop) before the connection is just closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The connection went without a close frame (reported to the app, never sent).
const ABNORMAL: u16 = 1006;

fn gone() -> Received {
    Received::Closed {
        code: ABNORMAL,
        reason: String::new(),
    }
}

/// A handshake as the wire checked it, and what admission found out about the request.
type Checked = (
    Result<Handshake, HandshakeError>,
    Forwarded,
    Vec<(Text, Bytes)>,
);

/// Serves a request that asks for a WebSocket (`crate::tunnel::asks_for_websocket`) on a
/// wire with a byte stream, for a remote app. Returns as `exchange::run` does; the
/// connection never carries another request after it.
pub(super) async fn serve<W: Wire>(
    wire: &mut W,
    ctx: &Arc<ConnCtx>,
    remote: &RemoteApp,
    mut head: RequestHead,
    (checked, forwarded, extra): Checked,
    mut record: Option<&mut Record>,
) -> Result<bool, ()> {
    let mut hs = match checked {
        Ok(hs) => hs,
        Err(e) => {
            log::debug!("{}: refused WebSocket handshake: {e}", wire.peer());
            return refuse(wire, &e, record).await;
        }
    };
    // The app side holds the head until it has made the scope: in bytes of its own, so that
    // the connection's read buffer can go back to the thread's stack (`open_websocket`).
    head.detach();
    let (tx, mut rx, mailbox) = Rx::remote(remote);
    let inbox = Inbox::new(remote, mailbox.token());
    let exchange = Exchange {
        request: Request {
            websocket: Some(Offer {
                subprotocols: hs.subprotocols.clone(),
                inbox: Arc::clone(&inbox),
            }),
            ..super::request_on(wire, head, (forwarded, extra))
        },
        body: BodyStream::empty(),
        response: ResponseSink { tx, started: None },
    };
    tokio::select! {
        biased;
        queued = ctx.to_app_threads(exchange) => queued?,
        () = wire.abandoned() => return Err(()),
    }
    let served = ctx
        .served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if served == ctx.max_requests {
        ctx.retire.notify_one();
    }

    // The app's answer to `websocket.connect`.
    let (subprotocol, headers) = loop {
        let msg = tokio::select! {
            biased;
            msg = rx.recv() => msg,
            () = wire.abandoned() => {
                inbox.put(gone());
                return Err(());
            }
        };
        match msg {
            Some(AppMsg::Ws(WsOut::Accept {
                subprotocol,
                headers,
            })) => break (subprotocol, headers),
            // The denial (`websocket.http.response.*`, or the 403 of a close before the
            // accept, or the 500 of an app that failed): an HTTP response, and the end.
            Some(AppMsg::Head {
                head, body, last, ..
            }) => {
                if let Some(r) = record.as_deref_mut() {
                    r.response(head.status, &head.headers);
                }
                wire.close_after();
                let sent = wire.send_head(&head, body, last, false).await?;
                count(&mut record, sent);
                if last {
                    return Ok(false);
                }
            }
            Some(AppMsg::Data(data)) => {
                let sent = wire.send_data(&mut [data]).await?;
                count(&mut record, sent);
            }
            Some(AppMsg::End(_)) => {
                wire.finish().await?;
                return Ok(false);
            }
            // Checked on the app's side: nothing else comes before the accept.
            Some(AppMsg::Ws(_) | AppMsg::ReadBody(_) | AppMsg::Hints(_) | AppMsg::File { .. }) => {}
            Some(AppMsg::Abort) | None => {
                wire.abort();
                return Err(());
            }
        }
    };

    if let Err(e) = hs.subprotocol(subprotocol.as_deref()) {
        log::error!("{}: the app's websocket.accept: {e}", wire.peer());
        inbox.put(gone());
        return refuse(wire, &e, record).await;
    }
    let fields: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
    // permessage-deflate (`--ws-per-message-deflate`): the first offer the policy allows.
    let deflate = hs.negotiate(&ctx.config.websocket);
    let status = match wire
        .open_websocket(&hs, subprotocol.as_deref(), &fields)
        .await
    {
        Ok(status) => status,
        Err(()) => {
            log::debug!(
                "{}: the WebSocket's acceptance could not be sent",
                wire.peer()
            );
            inbox.put(gone());
            return Err(());
        }
    };
    let done = record.map(|r| {
        r.response(status, &HeaderBlock::default());
        Box::new(Done {
            record: r.hand_over(),
            ctx: Arc::clone(ctx),
        })
    });
    let opened = Opened {
        rx,
        inbox,
        ctx: Arc::clone(ctx),
        deflate,
        peer: wire.peer().clone(),
        done,
    };
    // HTTP/1.1: the session runs after this exchange, on the connection (`park_websocket`).
    let Some(opened) = wire.park_websocket(opened) else {
        return Ok(false);
    };
    match wire.websocket_io() {
        Some(io) => opened.run(io).await,
        None => opened.inbox.put(gone()),
    }
    wire.websocket_done().await;
    Ok(false)
}

/// An open WebSocket, its answer sent, with what its session needs: run by the exchange
/// that opened it or, on HTTP/1.1, by the connection once that exchange's future is gone
/// (`Wire::park_websocket`), which holds the exchange's access-log record until it ends.
pub(crate) struct Opened {
    rx: Rx,
    inbox: Arc<Inbox>,
    ctx: Arc<ConnCtx>,
    deflate: Option<Deflate>,
    peer: Peer,
    /// The exchange's record, logged and counted when the session is over (boxed: held for
    /// the whole session, and only where there is an access log or metrics).
    done: Option<Box<Done>>,
}

impl Opened {
    /// Runs the session over `io` (the wire's stream after the answer) until it closes.
    pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, io: S) {
        let ctx = &*self.ctx;
        self.rx.release_room();
        let mut session = Session::new(
            io,
            &ctx.config.websocket,
            ctx.config.metrics.clone(),
            self.deflate.take(),
        )
        .await;
        // Lent, not moved: a session moved into `relay`'s future would be held there twice
        // (the argument and the local it is moved into), for as long as the WebSocket is open.
        let relayed = relay(
            &mut session,
            &mut self.rx,
            &self.inbox,
            ctx,
            ctx.config.write_timeout,
        )
        .await;
        log::debug!(
            "{}: WebSocket closed ({}): {} bytes to the client",
            self.peer,
            relayed.ending,
            relayed.to_client
        );
        if let Some(done) = self.done.as_mut() {
            done.record.bytes += relayed.to_client;
        }
    }
}

/// The handshake refused (a malformed one, or the app's choice of a subprotocol the client
/// did not offer): `HandshakeError::status`, with the version this server speaks for a 426.
async fn refuse<W: Wire>(
    wire: &mut W,
    e: &HandshakeError,
    record: Option<&mut Record>,
) -> Result<bool, ()> {
    let status = e.status();
    let (mut head, body) = server_response(status, &e.to_string());
    if status == 426 {
        // A fixed, valid field: adding it cannot fail.
        let _ = head.add("Sec-WebSocket-Version", b"13");
    }
    super::answer(wire, head, body, record).await
}

/// How a relay ended.
struct Relayed {
    ending: &'static str,
    to_client: u64,
}

/// Runs both directions of an open WebSocket until it closes (see the module's
/// documentation).
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session<S>,
    rx: &mut Rx,
    inbox: &Inbox,
    ctx: &ConnCtx,
    write_timeout: Duration,
) -> Relayed {
    let mut to_client = 0u64;
    let wait = pin!(ctx.stopping.wait());
    let mut stop = StopWatch::new(&ctx.stopping, wait);
    let mut stopping = false;
    // Set once this side has sent its close frame: the client's answer is awaited until then.
    let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    // The app has been told the connection ended (the graceful stop tells it at once).
    let mut told = false;
    let ending = loop {
        // Read once a turn (a lock): whether the client may be read, or the inbox's room is
        // awaited.
        let room = inbox.has_room();
        tokio::select! {
            () = std::future::poll_fn(|cx| stop.poll(cx)), if !stopping => {
                stopping = true;
                if closing.is_none() {
                    let reason = "server shutting down";
                    let _ = tokio::time::timeout(
                        write_timeout.min(CLOSE_GRACE),
                        session.close(close::GOING_AWAY, reason),
                    )
                    .await;
                    closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                    inbox.put(Received::Closed {
                        code: close::GOING_AWAY,
                        reason: reason.into(),
                    });
                    told = true;
                }
            }
            msg = rx.recv(), if closing.is_none() => {
                let sent = match msg {
                    Some(AppMsg::Ws(WsOut::Text(text))) => {
                        let n = text.len() as u64;
                        sent(tokio::time::timeout(write_timeout, session.send_text(text)).await).map(|()| n)
                    }
                    Some(AppMsg::Ws(WsOut::Binary(data))) => {
                        let n = data.len() as u64;
                        sent(tokio::time::timeout(write_timeout, session.send_binary(data)).await).map(|()| n)
                    }
                    Some(AppMsg::Ws(WsOut::Close { code, reason })) => {
                        closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                        sent(tokio::time::timeout(write_timeout, session.close(code, &reason)).await).map(|()| 0)
                    }
                    // The app's call ended without closing (one that raised sent 1011 first).
                    None => {
                        closing = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                        sent(tokio::time::timeout(write_timeout, session.close(close::NORMAL, "")).await).map(|()| 0)
                    }
                    // Checked on the app's side: nothing else comes after the accept.
                    Some(_) => Ok(0),
                };
                match sent {
                    Ok(n) => to_client += n,
                    Err(why) => break why,
                }
            }
            received = session.recv(), if closing.is_some() || room => {
                match received {
                    Received::Closed { .. } => {
                        if !told {
                            inbox.put(received);
                            told = true;
                        }
                        break "closed";
                    }
                    // Once closing, what the client still sends is not delivered.
                    msg if closing.is_none() => inbox.put(msg),
                    _ => {}
                }
            }
            () = inbox.room(), if closing.is_none() && !room => {}
            () = async {
                match closing.as_mut() {
                    Some(t) => t.as_mut().await,
                    None => std::future::pending().await,
                }
            } => break "no close frame from the client in time",
        }
    };
    if !told {
        inbox.put(gone());
    }
    Relayed { ending, to_client }
}

/// The worker's stop as the relay looks at it on every turn (twice a message): the wait is
/// registered once, and while the task's waker is the one registered only the flag is read
/// (polling tokio's `Notified` again takes its `Notify`'s lock, shared by the worker's
/// connections, every time).
/// `wait` is `Stopping::wait`'s future, pinned where the relay runs (not boxed: an open
/// WebSocket holds no more than it did).
struct StopWatch<'a, F> {
    stopping: &'a Stopping,
    wait: Pin<&'a mut F>,
    registered: Option<Waker>,
}

impl<'a, F: Future<Output = ()>> StopWatch<'a, F> {
    fn new(stopping: &'a Stopping, wait: Pin<&'a mut F>) -> Self {
        Self {
            stopping,
            wait,
            registered: None,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopping.is_set() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = self.wait.as_mut().poll(cx);
        if polled.is_pending() {
            self.registered = Some(cx.waker().clone());
        }
        polled
    }
}

/// How a send to the client within `--write-timeout` ended (`tokio::time::timeout` over it);
/// `Err` says why the connection ends. Not an `async fn` taking the send: its future would
/// hold the send's twice (the argument and the timeout's), in the largest of the relay's
/// states, which sizes what every open WebSocket holds.
fn sent(
    outcome: Result<Result<(), crate::websocket::SendError>, tokio::time::error::Elapsed>,
) -> Result<(), &'static str> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(crate::websocket::SendError::BadCode(_))) => Ok(()),
        Ok(Err(_)) => Err("the client went away"),
        Err(_) => Err("a send stalled past --write-timeout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stop_watch_wakes_its_task_once_the_stop_begins() {
        let stopping = Arc::new(Stopping::default());
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn({
            let stopping = Arc::clone(&stopping);
            async move {
                let wait = pin!(stopping.wait());
                let mut watch = StopWatch::new(&stopping, wait);
                let mut polls = 0u32;
                let mut tell = Some(polled_tx);
                std::future::poll_fn(|cx| {
                    polls += 1;
                    let polled = watch.poll(cx);
                    // Polled twice before the stop: registered once, then the flag alone.
                    if polls == 2 {
                        if let Some(tx) = tell.take() {
                            let _ = tx.send(());
                        }
                    }
                    if polled.is_pending() && polls == 1 {
                        cx.waker().wake_by_ref();
                    }
                    polled
                })
                .await;
                polls
            }
        });
        polled_rx.await.expect("polled twice");
        assert!(!watcher.is_finished());
        stopping.begin();
        let polls = tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("woken by the stop")
            .expect("ran");
        assert_eq!(polls, 3);
    }
}
