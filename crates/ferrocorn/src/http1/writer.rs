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

    /// [`Writer::frame`] for several pieces sent in one write: each is cut to what the framing
    /// still allows, and when chunked they go out as one chunk (its size line appended to
    /// `out`; the caller writes `out`, the pieces, then [`Writer::chunk_suffix`]). Returns the
    /// bytes framed.
    pub(crate) fn frame_all(&mut self, pieces: &mut [Bytes], out: &mut BytesMut) -> u64 {
        let mut total = 0u64;
        for piece in pieces.iter_mut() {
            let n = self.limit(piece.len() as u64);
            piece.truncate(n as usize);
            self.written += n;
            total += n;
        }
        if self.chunked() && total > 0 {
            use std::fmt::Write as _;
            let mut line = String::with_capacity(20);
            let _ = write!(line, "{total:x}\r\n");
            out.extend_from_slice(line.as_bytes());
        }
        total
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::request::parse_head;

    fn writer(framing: BodyFraming) -> Writer {
        let (head, _) = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &Default::default())
            .unwrap()
            .unwrap();
        let mut w = Writer::new(&head);
        w.started = true;
        w.framing = framing;
        w
    }

    #[test]
    fn pieces_sent_together_are_one_chunk() {
        let mut w = writer(BodyFraming::Chunked);
        let mut out = BytesMut::new();
        let mut pieces = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        assert_eq!(w.frame_all(&mut pieces, &mut out), 11);
        assert_eq!(&out[..], b"b\r\n");
        assert_eq!(w.chunk_suffix(&pieces[0]), b"\r\n");
        assert_eq!(w.written, 11);
    }

    #[test]
    fn pieces_past_the_content_length_are_cut() {
        let mut w = writer(BodyFraming::Length(8));
        let mut out = BytesMut::new();
        let mut pieces = vec![
            Bytes::from_static(b"12345"),
            Bytes::from_static(b"6789"),
            Bytes::from_static(b"xyz"),
        ];
        assert_eq!(w.frame_all(&mut pieces, &mut out), 8);
        assert!(out.is_empty());
        assert_eq!(&pieces[1][..], b"678");
        assert!(pieces[2].is_empty());
        assert!(!w.keep_alive);
        assert!(w.complete());
    }
}
