//! Where the bytes an app sends through a taken-over connection stand: in its HTTP response
//! head, at a WebSocket frame boundary, or inside a frame (RFC 6455 §5.2). The relay does not
//! speak the protocol (the app does, permessage-deflate included); it only needs to know where
//! a frame ends, so that on a graceful stop it can add a close frame of its own between two of
//! the app's frames instead of inside one.

/// The longest response head the app may write before its frames; past it the stream is
/// treated as opaque.
const MAX_HEAD: usize = 8 * 1024;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of masking key.
const MAX_HEADER: usize = 14;

/// The position in the stream of bytes the app sends to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// In the app's HTTP response head: `seen` bytes so far, the last four of them in `tail`,
    /// the status line's first bytes in `start`.
    Head {
        seen: usize,
        tail: [u8; 4],
        start: [u8; 12],
    },
    /// Between frames (`len` 0) or inside a frame's header (`len` of its bytes so far).
    Header { buf: [u8; MAX_HEADER], len: usize },
    /// Inside a frame's payload, with this many bytes of it to come.
    Payload(u64),
    /// Not a WebSocket stream (the app's answer was not a 101, or its head too long): no
    /// frame boundary is known.
    Opaque,
}

/// Follows the app's side of a tunnel; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing(State);

impl Default for Outgoing {
    fn default() -> Self {
        Self(State::Head {
            seen: 0,
            tail: [0; 4],
            start: [0; 12],
        })
    }
}

/// The length of a frame header whose first two bytes are `b0`, `b1`.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// The payload length a complete frame header declares.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    }
}

impl Outgoing {
    /// Takes in bytes the app sent, in order.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.0 {
                State::Opaque => return,
                State::Head { seen, tail, start } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if let Some(slot) = start.get_mut(*seen) {
                        *slot = b;
                    }
                    *seen += 1;
                    tail.rotate_left(1);
                    tail[3] = b;
                    if tail == b"\r\n\r\n" {
                        let switched = start.starts_with(b"HTTP/1.1 101")
                            || start.starts_with(b"HTTP/1.0 101");
                        self.0 = if switched {
                            State::Header {
                                buf: [0; MAX_HEADER],
                                len: 0,
                            }
                        } else {
                            State::Opaque
                        };
                    } else if *seen > MAX_HEAD {
                        self.0 = State::Opaque;
                    }
                }
                State::Header { buf, len } => {
                    let want = if *len < 2 { 2 } else { header_len(buf[1]) };
                    let take = (want - *len).min(bytes.len());
                    buf[*len..*len + take].copy_from_slice(&bytes[..take]);
                    *len += take;
                    bytes = &bytes[take..];
                    if *len >= 2 && *len == header_len(buf[1]) {
                        let payload = payload_len(&buf[..*len]);
                        self.0 = if payload == 0 {
                            State::Header {
                                buf: [0; MAX_HEADER],
                                len: 0,
                            }
                        } else {
                            State::Payload(payload)
                        };
                    }
                }
                State::Payload(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    // `take` is at most `bytes.len()`, so it fits.
                    bytes = &bytes[usize::try_from(take).unwrap_or(bytes.len())..];
                    if *left == 0 {
                        self.0 = State::Header {
                            buf: [0; MAX_HEADER],
                            len: 0,
                        };
                    }
                }
            }
        }
    }

    /// How many more bytes may be taken in without passing the next frame boundary: 0 at a
    /// boundary, `None` where none is known (the head is not over, or the stream is opaque).
    /// Inside a header, the bytes that complete what is known of it.
    pub(crate) fn to_boundary(&self) -> Option<usize> {
        match &self.0 {
            State::Head { .. } | State::Opaque => None,
            State::Header { len: 0, .. } => Some(0),
            State::Header { buf, len } => {
                let want = if *len < 2 { 2 } else { header_len(buf[1]) };
                Some(want - len)
            }
            State::Payload(left) => Some(usize::try_from(*left).unwrap_or(usize::MAX)),
        }
    }

    /// True between two frames of a switched connection.
    pub(crate) fn at_boundary(&self) -> bool {
        self.to_boundary() == Some(0)
    }
}

/// A server's close frame (unmasked, RFC 6455 §5.5.1) with `code` and a short `reason`.
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    // A control frame's payload is at most 125 bytes: the code and 123 of reason.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88); // FIN, close
    frame.push(2 + reason.len() as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    fn frame(opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_head_then_frames_of_every_length_form() {
        let mut o = Outgoing::default();
        assert_eq!(o.to_boundary(), None);
        o.feed(HEAD);
        assert!(o.at_boundary());
        for len in [0usize, 5, 125, 126, 300, 65_535, 65_536, 200_000] {
            let f = frame(0x2, &vec![7; len], false);
            o.feed(&f[..1]);
            assert_eq!(o.to_boundary(), Some(1));
            o.feed(&f[1..f.len() - 1]);
            assert!(len == 0 || o.to_boundary() == Some(1), "len {len}");
            o.feed(&f[f.len() - 1..]);
            assert!(o.at_boundary(), "len {len}");
        }
    }

    #[test]
    fn byte_by_byte_feeding_finds_the_same_boundaries() {
        let mut stream = HEAD.to_vec();
        let mut ends = Vec::new();
        for (i, len) in [3usize, 130, 0, 70_000].into_iter().enumerate() {
            stream.extend(frame(
                if i % 2 == 0 { 1 } else { 9 },
                &vec![b'a'; len],
                i == 1,
            ));
            ends.push(stream.len());
        }
        let mut o = Outgoing::default();
        let mut found = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            o.feed(std::slice::from_ref(b));
            if o.at_boundary() {
                found.push(i + 1);
            }
        }
        let mut expected = vec![HEAD.len()];
        expected.extend(ends);
        assert_eq!(found, expected);
    }

    #[test]
    fn a_payload_reports_what_is_left_of_it() {
        let mut o = Outgoing::default();
        o.feed(HEAD);
        let f = frame(0x1, &[b'x'; 10], false);
        o.feed(&f[..5]);
        assert_eq!(o.to_boundary(), Some(7));
        // With a mask bit the header is 6 bytes: after two, four more are asked for.
        let mut o = Outgoing::default();
        o.feed(HEAD);
        o.feed(&[0x81, 0x80 | 3]);
        assert_eq!(o.to_boundary(), Some(4));
    }

    #[test]
    fn an_answer_that_is_not_a_switch_is_opaque() {
        let mut o = Outgoing::default();
        o.feed(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(o.to_boundary(), None);
        o.feed(&frame(1, b"hi", false));
        assert_eq!(o.to_boundary(), None);
        let mut o = Outgoing::default();
        o.feed(&vec![b'a'; MAX_HEAD + 1]);
        o.feed(b"\r\n\r\n");
        assert_eq!(o.to_boundary(), None);
    }

    #[test]
    fn close_frames_carry_the_code_and_a_bounded_reason() {
        assert_eq!(close_frame(1001, "bye"), b"\x88\x05\x03\xe9bye");
        let long = "é".repeat(100);
        let f = close_frame(1000, &long);
        assert!(f.len() - 2 <= 125);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
