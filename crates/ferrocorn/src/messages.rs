//! What passes between a connection and the app side of an exchange: the app's messages
//! ([`AppMsg`]: body reads, hints, the response's head, data, files, its end) and the body
//! pieces the connection answers reads with. The channels that carry them are `crate::app`'s
//! (and `crate::remote`'s, for an event loop).

use std::fs::File;
use std::time::Duration;

use bytes::Bytes;

use crate::http1::error::BodyError;
use crate::http1::response::{EarlyHints, ResponseHead, Trailers};

/// Messages from the app side to the connection task.
#[derive(Debug)]
pub(crate) enum AppMsg {
    /// Read up to this many body bytes and answer on the body channel.
    ReadBody(usize),
    /// Send a `103 Early Hints` interim response now, if the connection can (an HTTP/1.1
    /// client or an HTTP/2 stream, the final response not started); dropped otherwise.
    Hints(Box<EarlyHints>),
    /// The response head, optionally with the first body bytes; `last` when nothing follows.
    Head {
        head: Box<ResponseHead>,
        body: Bytes,
        last: bool,
        /// With `last`: how long the app took to produce the response.
        took: Duration,
    },
    Data(Bytes),
    /// Send `len` bytes of `file` from `offset` with sendfile(2).
    File {
        file: File,
        offset: u64,
        len: u64,
    },
    /// The response is complete.
    End(Ending),
    /// The app failed after the head was sent: close the connection without completing it.
    Abort,
    /// A WebSocket message family's event (an app that speaks messages: ASGI's websocket
    /// scope); its denial responses use `Head`, `Data` and `End` above.
    Ws(WsOut),
}

/// How a response ends: after the app worked on it `took`, with the trailer fields it sent
/// (ASGI's `http.response.trailers`), which go out where the framing carries them.
#[derive(Debug)]
pub(crate) struct Ending {
    pub(crate) took: Duration,
    pub(crate) trailers: Option<Box<Trailers>>,
}

/// What an app sends on a WebSocket the core speaks (`crate::exchange::websocket`).
#[derive(Debug)]
pub enum WsOut {
    /// Accept the handshake: the `101` with the app's subprotocol (one the client offered)
    /// and extra fields (names and values already checked).
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(String, Bytes)>,
    },
    Text(String),
    Binary(Bytes),
    /// Start the close handshake (a code an endpoint may send, a reason of at most 123 bytes).
    Close {
        code: u16,
        reason: String,
    },
}

impl WsOut {
    /// The payload bytes, counted as a body's towards the client's backpressure bound.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
            Self::Accept { .. } | Self::Close { .. } => 0,
        }
    }
}

/// A piece of the request body from the connection, and whether the body is now complete.
pub(crate) type BodyPiece = Result<(Bytes, bool), BodyError>;
