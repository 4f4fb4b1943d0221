//! Response framing for one exchange: which framing the body gets, the head's bytes, chunk
//! lines, and whether the client got a complete response.

use bytes::{Bytes, BytesMut};

use super::request::{RequestHead, Version};
use super::response::{encode_head, BodyFraming, ResponseHead};

/// Response framing state for one exchange.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub(crate) version: Version,
    pub(crate) is_head: bool,
    pub(crate) keep_alive: bool,
    pub(crate) started: bool,
    pub(crate) framing: BodyFraming,
    pub(crate) written: u64,
    pub(crate) finished: bool,
    /// The response goes back through a uwsgi front end: never chunked (the front end reads
    /// the body to the end of the connection), no interim responses.
    uwsgi: bool,
}

impl Writer {
    pub(crate) fn new(req: &RequestHead) -> Self {
        Self {
            version: req.version,
            is_head: &*req.method == "HEAD",
            keep_alive: req.keep_alive,
            started: false,
            framing: BodyFraming::Empty,
            written: 0,
            finished: false,
            uwsgi: false,
        }
    }

    /// For a request that came in a uwsgi packet: the response is plain HTTP/1.x, as uWSGI
    /// writes it, its body delimited by its length or by the end of the connection, which
    /// always closes after it.
    pub(crate) fn for_uwsgi(req: &RequestHead) -> Self {
        Self {
            keep_alive: false,
            uwsgi: true,
            ..Self::new(req)
        }
    }

    /// True while a 1xx interim response may go out: to an HTTP/1.1 client (RFC 9110 §15.2:
    /// never to HTTP/1.0), before the final response has started.
    pub(crate) fn interim_allowed(&self) -> bool {
        self.version == Version::Http11 && !self.started && !self.uwsgi
    }

    pub(crate) fn chunked(&self) -> bool {
        self.framing == BodyFraming::Chunked
    }

    /// Decides the framing and encodes the head into `out`.
    pub(crate) fn start(
        &mut self,
        head: &ResponseHead,
        first_len: usize,
        last: bool,
        closing: bool,
        out: &mut BytesMut,
    ) {
        self.started = true;
        let known = head.content_length.or(last.then_some(first_len as u64));
        self.framing = if self.is_head || head.bodiless() {
            BodyFraming::Empty
        } else if let Some(n) = known {
            BodyFraming::Length(n)
        } else if self.version == Version::Http11 && !self.uwsgi {
            BodyFraming::Chunked
        } else {
            BodyFraming::CloseDelimited
        };
        if self.framing == BodyFraming::CloseDelimited || closing {
            self.keep_alive = false;
        }
        out.clear();
        encode_head(
            head,
            self.version,
            self.framing,
            known,
            self.keep_alive,
            out,
        );
    }

    /// How much of a `len`-byte piece may still be sent under the framing.
    pub(crate) fn limit(&mut self, len: u64) -> u64 {
        match self.framing {
            BodyFraming::Empty => 0,
            BodyFraming::Length(total) => {
                let room = total.saturating_sub(self.written);
                if len > room {
                    log::warn!("response body is longer than its Content-Length ({total}); the excess is not sent");
                    self.keep_alive = false;
                }
                len.min(room)
            }
            BodyFraming::Chunked | BodyFraming::CloseDelimited => len,
        }
    }

    /// Returns the bytes of `data` to send, with a chunk-size line appended to `out` when chunked
    /// (the caller writes `out`, the data, then [`Writer::chunk_suffix`]).
    pub(crate) fn frame(&mut self, mut data: Bytes, out: &mut BytesMut) -> Bytes {
        let n = self.limit(data.len() as u64) as usize;
        if n == 0 {
            return Bytes::new();
        }
        self.written += n as u64;
        if self.chunked() {
            use std::fmt::Write as _;
            let mut line = String::with_capacity(12);
            let _ = write!(line, "{n:x}\r\n");
            out.extend_from_slice(line.as_bytes());
        }
        data.truncate(n); // not `slice`: that would allocate to share the buffer
        data
    }

    /// The CRLF that closes a chunk's data.
    pub(crate) fn chunk_suffix(&self, data: &[u8]) -> &'static [u8] {
        if self.chunked() && !data.is_empty() {
            b"\r\n"
        } else {
            b""
        }
    }

    /// Ends the body; returns the bytes that close it on the wire.
    pub(crate) fn finish(&mut self) -> &'static [u8] {
        if self.finished {
            return b"";
        }
        self.finished = true;
        match self.framing {
            BodyFraming::Chunked => b"0\r\n\r\n",
            _ => b"",
        }
    }

    /// True when the client got a complete, well-framed response.
    pub(crate) fn complete(&self) -> bool {
        match self.framing {
            BodyFraming::Length(n) => self.written == n,
            BodyFraming::CloseDelimited => false,
            BodyFraming::Empty | BodyFraming::Chunked => self.started && self.finished,
        }
    }
}
