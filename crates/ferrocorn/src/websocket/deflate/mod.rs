//! permessage-deflate (RFC 7692) around `tungstenite`, which has none and refuses RSV1 frames.
//!
//! - [`negotiate`]: the client's offers and the server's answer (§5, §7.1).
//! - [`inflate`]: the read side, a filter between the connection and `tungstenite`: a
//!   compressed message (RSV1 on its first frame) is inflated as it arrives, in pieces of at
//!   most [`inflate::PIECE`] bytes handed on as plain fragments, so `tungstenite` still does
//!   message assembly, UTF-8, control frames and the close handshake; past `--ws-max-size`
//!   inflated bytes the message fails with 1009 before more is inflated. Every frame the
//!   filter does not take up (RSV1 on a control or continuation frame, RSV1 while a message is
//!   open, RSV1 without the extension) goes on untouched, and `tungstenite` fails it with 1002.
//! - [`compress`]: the send side: a message deflated whole and sent as one frame with RSV1.
//!
//! DEFLATE itself is `flate2` on `zlib-rs`; the framing is `tungstenite`'s `FrameHeader`.

pub mod compress;
pub mod inflate;
pub mod negotiate;

use std::fmt::Write as _;

/// The server's policy for permessage-deflate (`--ws-per-message-deflate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Keep each direction's LZ77 window from one message to the next. Off (the default from
    /// the command line), the server answers every offer with `server_no_context_takeover`
    /// and `client_no_context_takeover`, so an idle connection holds no compression state
    /// (zlib-rs: about 380 KiB to deflate and 47 KiB to inflate with 15-bit windows, which a
    /// message only borrows while it is compressed or inflated).
    pub context_takeover: bool,
}

/// What the handshake agreed on: the parameters of the server's answer (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, as answered (15 when absent).
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window, as answered (15 when absent).
    pub client_max_window_bits: Option<u8>,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the `101`.
    pub fn response(&self) -> String {
        let mut out = String::from(negotiate::NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(out, "; server_max_window_bits={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(out, "; client_max_window_bits={bits}");
        }
        out
    }

    /// The window the server compresses with.
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The window the client compresses with, at most.
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(15)
    }
}

/// Why a compressed message from the client could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("inflated message over {max_size} bytes")]
    TooBig { max_size: usize },
    #[error("compressed data that does not inflate")]
    Corrupt,
}

impl InflateError {
    /// The close code it earns: 1009 over the size limit, 1002 for bad compressed data.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooBig { .. } => super::close::TOO_BIG,
            Self::Corrupt => super::close::PROTOCOL_ERROR,
        }
    }

    /// The `InflateError` an I/O error from the filter carries, if it carries one.
    pub fn in_io(e: &std::io::Error) -> Option<&Self> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Self>())
    }
}

#[cfg(test)]
mod tests;
