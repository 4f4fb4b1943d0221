//! The limits an HTTP/2 connection announces and enforces, set explicitly on `h2`'s builder
//! rather than left to the crate's defaults (which may change between versions).

use std::time::Duration;

/// HTTP/2 settings every connection of a worker shares (from `--http2-*`).
#[derive(Debug, Clone, Copy)]
pub struct Http2Config {
    /// Accept prior-knowledge h2c from trusted peers (`--http2-cleartext prior-knowledge`).
    pub prior_knowledge: bool,
    /// Accept `Upgrade: h2c` from trusted peers (`--http2-cleartext upgrade`).
    pub upgrade: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: request body bytes buffered per stream before the app
    /// reads some.
    pub initial_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: also bounds what HPACK may expand to.
    pub max_header_list_size: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            prior_knowledge: false,
            upgrade: false,
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            max_frame_size: 16_384,
            max_header_list_size: 65_536,
        }
    }
}

/// The connection-level receive window: room for 16 streams' windows, at most 16 MiB. It
/// bounds the request body bytes one connection can make the worker buffer.
pub(crate) fn connection_window(c: &Http2Config) -> u32 {
    c.initial_window_size
        .saturating_mul(16)
        .clamp(65_535, 16 << 20)
}

/// Response bytes `h2` may queue per stream beyond what the peer's window lets out.
pub(crate) const MAX_SEND_BUFFER: usize = 64 * 1024;

/// Streams a client may reset before the server has accepted them (CVE-2023-44487, rapid
/// reset): past this the connection is closed with ENHANCE_YOUR_CALM.
pub(crate) const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the server may be made to reset for a client's protocol errors (CVE-2025-8671,
/// MadeYouReset) before the connection is closed with ENHANCE_YOUR_CALM.
pub(crate) const MAX_LOCAL_ERROR_RESETS: usize = 200;

/// Locally reset streams whose late frames are still ignored (RFC 9113 §5.4.2), and for how
/// long.
pub(crate) const MAX_RESET_STREAMS: usize = 100;
pub(crate) const RESET_STREAM_DURATION: Duration = Duration::from_secs(1);

/// Streams a connection may have with the app at once, counting those the client has
/// already reset: a client that resets streams and opens new ones faster than the app
/// finishes them (rapid reset with accepted streams) is refused past this many times its
/// concurrency limit.
pub(crate) const LIVE_STREAMS_FACTOR: usize = 2;

/// Streams a client may reset after the server accepted them, while they are more than half
/// of its streams, before the connection is closed with ENHANCE_YOUR_CALM: rapid reset paced
/// so that each stream is accepted first (and so handed to the app) escapes `h2`'s
/// pending-accept bound. A browser cancelling now and then never comes near.
pub(crate) const MAX_CLIENT_RESETS: u32 = 100;

/// Streams refused for that reason before the connection is closed with ENHANCE_YOUR_CALM.
pub(crate) const MAX_REFUSED_STREAMS: u32 = 100;

/// With streams open, how often a PING goes out (RFC 9113 §6.7): every `--keep-alive`, kept
/// between 1 and 20 seconds. A peer that does not answer one within `--write-timeout` is
/// gone (its streams' responses would wait on it for ever) and the connection is closed;
/// `--write-timeout` rather than less, because a client busy uploading queues its answer
/// behind the body bytes it has already sent.
pub(crate) fn ping_interval(keep_alive: Duration) -> Duration {
    keep_alive.clamp(Duration::from_secs(1), Duration::from_secs(20))
}

/// After a GOAWAY, with no stream left, how long the connection may stay open: `h2` closes it
/// once the client has answered the PING sent with the GOAWAY (RFC 9113 §6.8), which a client
/// that does not read never does.
pub(crate) const GOAWAY_LINGER: Duration = Duration::from_secs(2);

/// The `h2` server builder with every limit set.
pub(crate) fn builder(c: &Http2Config) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(c.max_concurrent_streams)
        .initial_window_size(c.initial_window_size)
        .initial_connection_window_size(connection_window(c))
        .max_frame_size(c.max_frame_size)
        .max_header_list_size(c.max_header_list_size)
        // HPACK dynamic table the client may make us keep (RFC 7541 §4.2): the default.
        .header_table_size(4096)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_reset_streams(MAX_RESET_STREAMS)
        .reset_stream_duration(RESET_STREAM_DURATION);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_window_is_bounded() {
        let mut c = Http2Config::default();
        assert_eq!(connection_window(&c), 65_535 * 16);
        c.initial_window_size = 1024;
        assert_eq!(connection_window(&c), 65_535);
        c.initial_window_size = 2_147_483_647;
        assert_eq!(connection_window(&c), 16 << 20);
    }
}
