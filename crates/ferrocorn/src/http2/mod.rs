//! HTTP/2 (RFC 9113) on any byte stream, on the `h2` crate: framing, HPACK and flow control
//! are the crate's; this module turns each stream into the same [`crate::app::Exchange`] an
//! HTTP/1.1 request becomes, and bounds what a client can make the worker hold.
//!
//! The TLS layer calls [`serve`] when ALPN chose `h2`; the HTTP/1.1 connection calls it when
//! a trusted peer opens with the h2c preface (`--http2-cleartext prior-knowledge`) or asks to
//! switch with `Upgrade: h2c` (`--http2-cleartext upgrade`, see [`upgrade`]).

mod body;
mod connect;
mod driver;
mod h2c;
mod head;
pub(crate) mod limits;
mod rewind;
mod stream;
pub(crate) mod upgrade;

pub(crate) use driver::serve;
pub(crate) use h2c::{serve_h2c, sniff_preface, switch as switch_h2c};
pub use limits::Http2Config;
pub(crate) use rewind::Rewind;

/// The client connection preface (RFC 9113 §3.4) that starts prior-knowledge h2c.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Fields that belong to one HTTP/1.1 connection and are malformed in HTTP/2 (RFC 9113
/// §8.2.2), lower case. `TE` is one too unless it says only `trailers`.
pub(crate) const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];
