//! WebSocket (RFC 6455) spoken by the core, for apps that exchange messages rather than take
//! the socket over (ASGI's websocket scope; WSGI apps take `gunicorn.socket` instead, see
//! `crate::tunnel`).
//!
//! - [`handshake`]: the opening handshake checked as §4.2.1 asks (method, `Upgrade`,
//!   `Connection`, a 16-byte `Sec-WebSocket-Key`, version 13, else 426), the subprotocols and
//!   extensions offered, and the `101` with the app's choice of subprotocol.
//! - [`Session`]: the connection after the `101`, on `tokio-tungstenite` (framing, masking,
//!   fragmentation with control frames between fragments, UTF-8 checked as text arrives, ping
//!   replies, the close handshake): messages up to `--ws-max-size`, a ping every
//!   `--ws-ping-interval` that must be answered within `--ws-ping-timeout`, and bad input
//!   closed with the code RFC 6455 names ([`close::for_error`]: 1002, 1007, 1009), each
//!   counted in the metrics.
//! - [`deflate`]: permessage-deflate (RFC 7692), which `tungstenite` 0.30 lacks, around it:
//!   [`Handshake::negotiate`] takes up the client's first acceptable offer (unless
//!   `--ws-per-message-deflate false`), [`Handshake::accept`] answers it in the `101`, and
//!   [`Handshake::deflate`] is what [`Session::new`] is given to inflate and deflate with.
//!   Its read side ([`deflate::inflate::Inflating`]) is under every session, with the extension
//!   or without: it reads the socket through one of the worker thread's reusable buffers, held
//!   only while bytes wait in it (so that `tungstenite`'s own read buffer, resident on every
//!   connection, can stay small), and cuts frames larger than 64 KiB into fragments (so that
//!   `tungstenite`, which keeps its buffers at the largest frame, never holds more).
//!
//! [`Handshake::negotiate`]: handshake::Handshake::negotiate
//! [`Handshake::accept`]: handshake::Handshake::accept
//! [`Handshake::deflate`]: handshake::Handshake::deflate

/// `AsyncWrite` for a filter on the read side, `$filter<S>`: writes go to its field `$inner`
/// as they are.
macro_rules! writes_through {
    ($filter:ident, $inner:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $filter<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().$inner).poll_shutdown(cx)
            }
        }
    };
}

pub mod close;
pub mod deflate;
pub mod handshake;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use self::deflate::compress::Deflater;
use self::deflate::inflate::Inflating;
use self::deflate::{Deflate, DeflateConfig};
use crate::observe::metrics::{RequestMetrics, WsEvent};

/// What every WebSocket connection of a worker shares (`--ws-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest message (and frame) a client may send.
    pub max_size: usize,
    /// How often the server pings; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered.
    pub ping_timeout: Duration,
    /// permessage-deflate, if offers of it are taken up (`--ws-per-message-deflate`).
    pub deflate: Option<DeflateConfig>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_size: 16 * 1024 * 1024,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
            deflate: Some(DeflateConfig {
                context_takeover: false,
            }),
        }
    }
}

/// A message from the client, or the end of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Binary(Bytes),
    /// The connection is over: the client's close code and reason (1005 when its close frame
    /// had none, 1006 when it went without one), or the code the server closed with.
    Closed {
        code: u16,
        reason: String,
    },
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the connection is closed")]
    Closed,
    #[error("close code {0} may not be sent (RFC 6455 §7.4)")]
    BadCode(u16),
    #[error(transparent)]
    Protocol(#[from] tokio_tungstenite::tungstenite::Error),
}

/// No close status in the client's close frame (§7.4.1; reported, never sent).
const NO_STATUS: u16 = 1005;
/// The connection ended without a close frame (reported, never sent).
const ABNORMAL: u16 = 1006;

/// `tungstenite`'s read buffer per connection, allocated with the session and zero-filled
/// before each read, so held whole by every connection, idle or not. Each read is a copy
/// out of the filter's pooled buffer (`deflate::inflate`): a 1 KiB message and its frame head
/// take three (2 KiB: one, for 1.5 KiB more per connection; `bench/instructions.py --ws`
/// counted no difference beyond its noise). A larger frame grows it to that frame's size
/// (`tungstenite` reserves the whole payload): frames reach it cut to 64 KiB at most.
const READ_BUFFER: usize = 512;

/// The largest frame sent: a longer message goes out in fragments of this size.
/// `tungstenite` formats each frame into its write buffer, which keeps the size of the largest
/// frame for as long as the connection is open (0.30); sent whole, one large message left the
/// connection holding that much. The same size as the read side's cut (`deflate::inflate::CUT`).
const SEND_PIECE: usize = 64 * 1024;

/// An open WebSocket connection over `S` (after the `101`).
pub struct Session<S> {
    ws: WebSocketStream<Inflating<S>>,
    /// Compresses what is sent, when permessage-deflate was agreed on.
    deflater: Option<Box<Deflater>>,
    config: WsConfig,
    metrics: RequestMetrics,
    /// When the next ping goes out.
    ping: Option<Pin<Box<Sleep>>>,
    /// When the ping sent last must have been answered by.
    pong_due: Option<Instant>,
    closed: bool,
    /// How the connection ended, kept until a `recv` returns it: a `recv` dropped while it
    /// wrote the closing frames (its caller `select!`ed it against something else) still
    /// reports the right code on the next call.
    ending: Option<Received>,
}

/// What woke a [`Session::recv`].
enum Wake {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Ping,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Takes over `stream`, whose `101` has been written, with the permessage-deflate that
    /// `101` agreed on (`Handshake::deflate`), if any.
    pub async fn new(
        stream: S,
        config: &WsConfig,
        metrics: RequestMetrics,
        deflate: Option<Deflate>,
    ) -> Self {
        let limits = WebSocketConfig::default()
            .max_message_size(Some(config.max_size))
            .max_frame_size(Some(config.max_size))
            // Resident on every connection, idle or not (zero-filled before each read): small,
            // with the socket read through a pooled buffer (`deflate::inflate`).
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0);
        let stream = Inflating::new(stream, deflate.as_ref(), config.max_size);
        let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(limits)).await;
        metrics.ws(WsEvent::Opened);
        Self {
            ws,
            deflater: deflate.as_ref().map(|d| Box::new(Deflater::new(d))),
            ping: config
                .ping_interval
                .map(|every| Box::pin(tokio::time::sleep(every))),
            config: config.clone(),
            metrics,
            pong_due: None,
            closed: false,
            ending: None,
        }
    }

    /// The next message, or the end of the connection: pings are answered and sent on the way,
    /// and bad input closes the connection with its code (see [`close::for_error`]).
    pub async fn recv(&mut self) -> Received {
        loop {
            if self.closed {
                return self.ending.take().unwrap_or(Received::Closed {
                    code: ABNORMAL,
                    reason: String::new(),
                });
            }
            let wake = {
                let ws = &mut self.ws;
                let ping = &mut self.ping;
                // In this order, without drawing a random one each time: the timer is ready
                // only once it is due, and then it goes first.
                tokio::select! {
                    biased;
                    () = async {
                        match ping {
                            Some(t) => t.as_mut().await,
                            None => std::future::pending().await,
                        }
                    } => Wake::Ping,
                    frame = ws.next() => Wake::Frame(frame),
                }
            };
            match wake {
                // Boxed, as `fail` below: what they await (a close within a timeout) would
                // otherwise make this future, held by every idle connection, larger than the
                // wait itself; a ping is due every `ping_interval` at most.
                Wake::Ping => {
                    if let Some(end) = Box::pin(self.ping_due()).await {
                        return end;
                    }
                }
                Wake::Frame(Some(Ok(Message::Text(t)))) => {
                    return Received::Text(t.as_str().to_owned())
                }
                Wake::Frame(Some(Ok(Message::Binary(b)))) => return Received::Binary(b),
                // tungstenite queues the pong; the next read sends it.
                Wake::Frame(Some(Ok(Message::Ping(_) | Message::Frame(_)))) => {}
                Wake::Frame(Some(Ok(Message::Pong(_)))) => self.pong_due = None,
                Wake::Frame(Some(Ok(Message::Close(frame)))) => {
                    self.closed = true;
                    self.ending = Some(match frame {
                        Some(f) => Received::Closed {
                            code: f.code.into(),
                            reason: f.reason.as_str().to_owned(),
                        },
                        None => Received::Closed {
                            code: NO_STATUS,
                            reason: String::new(),
                        },
                    });
                    // tungstenite queued the reply (with 1002 for a code not allowed).
                    let _ = self.ws.flush().await;
                    continue;
                }
                Wake::Frame(Some(Err(e))) => return Box::pin(self.fail(&e)).await,
                Wake::Frame(None) => {
                    self.closed = true;
                    return Received::Closed {
                        code: ABNORMAL,
                        reason: String::new(),
                    };
                }
            }
        }
    }

    /// The ping timer fired: sends a ping, or closes with 1011 if the last one is unanswered.
    async fn ping_due(&mut self) -> Option<Received> {
        let now = Instant::now();
        if self.pong_due.is_some_and(|due| now >= due) {
            self.metrics.ws(WsEvent::PingTimeout);
            self.closed = true;
            let reason = "keepalive ping timeout";
            self.ending = Some(Received::Closed {
                code: close::INTERNAL_ERROR,
                reason: reason.into(),
            });
            let frame = CloseFrame {
                code: CloseCode::from(close::INTERNAL_ERROR),
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(Some(frame))).await;
            return self.ending.take();
        }
        let every = self.config.ping_interval?;
        if self.pong_due.is_none() {
            self.pong_due = Some(now + self.config.ping_timeout);
            let sent = self.ws.send(Message::Ping(Bytes::new()));
            if tokio::time::timeout(self.config.ping_timeout, sent)
                .await
                .map_or(true, |r| r.is_err())
            {
                self.closed = true;
                return Some(Received::Closed {
                    code: ABNORMAL,
                    reason: String::new(),
                });
            }
        }
        let next = match self.pong_due {
            Some(due) => (now + every).min(due),
            None => now + every,
        };
        if let Some(t) = &mut self.ping {
            t.as_mut().reset(next);
        }
        None
    }

    /// Closes the connection with the code `e` earns, counted; or reports it gone.
    async fn fail(&mut self, e: &tokio_tungstenite::tungstenite::Error) -> Received {
        self.closed = true;
        let Some(code) = close::for_error(e) else {
            return Received::Closed {
                code: ABNORMAL,
                reason: String::new(),
            };
        };
        self.metrics.ws(match code {
            close::INVALID_DATA => WsEvent::InvalidData,
            close::TOO_BIG => WsEvent::TooBig,
            _ => WsEvent::ProtocolError,
        });
        let reason = match code {
            close::INVALID_DATA => "invalid UTF-8",
            close::TOO_BIG => "message too big",
            _ => "protocol error",
        };
        self.ending = Some(Received::Closed {
            code,
            reason: reason.into(),
        });
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(Some(frame))).await;
        self.ending.take().unwrap_or(Received::Closed {
            code,
            reason: reason.into(),
        })
    }

    /// Sends a text message (a `String` is framed without a copy of its bytes).
    pub async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.send_data(Bytes::from(text.into()), Data::Text).await
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, data: Bytes) -> Result<(), SendError> {
        self.send_data(data, Data::Binary).await
    }

    /// Sends one message of type `opcode` (text or binary): compressed when permessage-deflate
    /// was agreed on, in one frame, or in fragments when it is larger than [`SEND_PIECE`].
    async fn send_data(&mut self, payload: Bytes, opcode: Data) -> Result<(), SendError> {
        let (payload, compressed) = match &mut self.deflater {
            Some(d) => {
                let frame = d.frame(&payload, opcode);
                let compressed = frame.header().rsv1;
                (frame.into_payload(), compressed)
            }
            None => (payload, false),
        };
        if payload.len() <= SEND_PIECE {
            let mut frame = Frame::message(payload, OpCode::Data(opcode), true);
            frame.header_mut().rsv1 = compressed;
            return self.send(Message::Frame(frame)).await;
        }
        // Boxed: rare, and it would otherwise grow every parked WebSocket's future.
        Box::pin(self.send_cut(payload, opcode, compressed)).await
    }

    /// Sends `payload` as one message of type `opcode` in fragments of [`SEND_PIECE`]
    /// (`compressed`: RSV1 on the first, as RFC 7692 §6 puts it).
    async fn send_cut(
        &mut self,
        payload: Bytes,
        opcode: Data,
        compressed: bool,
    ) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        let mut start = 0;
        while start < payload.len() {
            let end = (start + SEND_PIECE).min(payload.len());
            let kind = if start == 0 { opcode } else { Data::Continue };
            let mut frame = Frame::message(
                payload.slice(start..end),
                OpCode::Data(kind),
                end == payload.len(),
            );
            frame.header_mut().rsv1 = compressed && start == 0;
            // Each piece is written at once (`write_buffer_size` 0); the last is flushed.
            let msg = Message::Frame(frame);
            let sent = if end == payload.len() {
                self.ws.send(msg).await
            } else {
                self.ws.feed(msg).await
            };
            sent.map_err(SendError::from)?;
            start = end;
        }
        Ok(())
    }

    async fn send(&mut self, msg: Message) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        self.ws.send(msg).await.map_err(SendError::from)
    }

    /// Starts the close handshake with `code` and `reason` (at most 123 bytes are sent).
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), SendError> {
        if !close::may_send(code) {
            return Err(SendError::BadCode(code));
        }
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason[..end].into(),
        };
        // The client's reply comes through `recv`, as `Closed`.
        self.ws.close(Some(frame)).await.map_err(SendError::from)
    }
}

#[cfg(test)]
mod tests;
