//! h2c by upgrade (RFC 7540 §3.2, what `curl --http2` does over `http://`): an HTTP/1.1
//! request with `Upgrade: h2c` is answered `101 Switching Protocols`, and is then stream 1 of
//! the HTTP/2 connection that follows, its response going out through the usual HTTP/2 path.
//!
//! The `h2` crate has no server API that takes the upgrading request in as stream 1, so the
//! driver is given a byte stream (see [`super::Rewind`]) that reads as if the client had sent
//! that request over HTTP/2: its connection preface and first SETTINGS frame as they came,
//! then a HEADERS frame for stream 1 made here from the HTTP/1.1 head, then the rest of the
//! socket. The frame's header block uses only HPACK literals without indexing (RFC 7541
//! §6.2.2), so the decoder's dynamic table, which the client's own blocks index into, is
//! left exactly as the client expects it.
//!
//! The settings in `HTTP2-Settings` are not applied: the client repeats its settings in the
//! SETTINGS frame that opens its side of the connection, which `h2` reads before stream 1,
//! and nothing is sent to the client before that frame (stream 1's response included).

use base64::Engine;
use bytes::{BufMut, BytesMut};

use super::PREFACE;
use crate::http1::request::{Framing, RequestHead, Version};

/// The answer that switches the connection (RFC 7540 §3.2).
pub(crate) const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

/// Fields of the upgrading request that stay behind: the connection-specific ones (see
/// [`super::CONNECTION_SPECIFIC`]), the upgrade's own, and `Host`, which becomes `:authority`.
fn stays_behind(name: &str) -> bool {
    super::CONNECTION_SPECIFIC.contains(&name) || name == "http2-settings" || name == "host"
}

/// Frame types and flags (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const FRAME_HEAD: usize = 9;
/// The largest frame payload every HTTP/2 endpoint accepts (RFC 9113 §4.2).
const MIN_MAX_FRAME: usize = 16_384;

/// Why the bytes after a `101` are not the start of an HTTP/2 connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum StartError {
    #[error("the client did not send HTTP/2's connection preface after the 101")]
    Preface,
    #[error("the client's first HTTP/2 frame is not SETTINGS")]
    Settings,
}

/// Whether `head` asks to switch to h2c in a way the server takes up: an HTTP/1.1 request
/// naming `h2c` in `Upgrade`, with `Upgrade` and `HTTP2-Settings` as connection options and
/// exactly one well-formed `HTTP2-Settings` field (RFC 7540 §3.2.1), and no body. A request
/// with a body is served as HTTP/1.1 (the server may ignore an Upgrade, RFC 9110 §7.8):
/// taking the body in as DATA frames would mean writing more HTTP/2 by hand.
pub(crate) fn asks_for_h2c(head: &RequestHead) -> bool {
    if head.version != Version::Http11
        || !matches!(head.framing, Framing::None | Framing::Length(0))
    {
        return false;
    }
    let has_token = |name: &str, token: &str| {
        head.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "h2c")
        || !has_token("connection", "upgrade")
        || !has_token("connection", "http2-settings")
    {
        return false;
    }
    let mut settings = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("http2-settings"));
    match (settings.next(), settings.next()) {
        (Some(one), None) => settings_payload(&one.value).is_some(),
        _ => false,
    }
}

/// The SETTINGS payload a `HTTP2-Settings` value carries (base64url, RFC 7540 §3.2.1): six
/// bytes per setting.
fn settings_payload(value: &[u8]) -> Option<Vec<u8>> {
    let text = value.trim_ascii();
    let text = text
        .strip_suffix(b"==")
        .or(text.strip_suffix(b"="))
        .unwrap_or(text);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    (payload.len() % 6 == 0).then_some(payload)
}

/// How many bytes at the start of `buf` are the client's connection preface and its first
/// frame, which must be SETTINGS (RFC 9113 §3.4); `None` while more are needed.
pub(crate) fn client_start_len(buf: &[u8]) -> Result<Option<usize>, StartError> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Err(StartError::Preface);
    }
    let Some(frame) = buf.get(PREFACE.len()..PREFACE.len() + FRAME_HEAD) else {
        return Ok(None);
    };
    if frame[3] != SETTINGS {
        return Err(StartError::Settings);
    }
    let len = usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
    // A SETTINGS frame bigger than this is refused by `h2` anyway; do not wait for it.
    let end = PREFACE.len() + FRAME_HEAD + len.min(MIN_MAX_FRAME);
    Ok((buf.len() >= end).then_some(end))
}

/// Stream 1's frames when `head` asks for h2c and may have it ([`asks_for_h2c`],
/// [`stream_one`]); `None` leaves the request to HTTP/1.1.
pub(crate) fn requested(head: &RequestHead) -> Option<BytesMut> {
    asks_for_h2c(head).then(|| stream_one(head)).flatten()
}

/// Stream 1's HEADERS frame (and CONTINUATION frames, for a head larger than a frame) for
/// the upgrading request, ending the stream; `None` when its target is not one HTTP/2 can
/// carry as `:path` (an absolute-form or authority-form target).
pub(crate) fn stream_one(head: &RequestHead) -> Option<BytesMut> {
    let path = &*head.target;
    let options_star = path == "*" && head.method.eq_ignore_ascii_case("OPTIONS");
    if !path.starts_with('/') && !options_star {
        return None;
    }
    // Fields named in Connection are for this hop only (RFC 9110 §7.6.1).
    let named: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let mut block = BytesMut::new();
    literal(&mut block, b":method", head.method.as_bytes());
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", path.as_bytes());
    if let Some(host) = head.header("host") {
        literal(&mut block, b":authority", host);
    }
    for h in &head.headers {
        let name = h.name.to_ascii_lowercase();
        if stays_behind(&name)
            || named.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            // TE may only say "trailers" in HTTP/2 (RFC 9113 §8.2.2).
            || name == "te" && !h.value.trim_ascii().eq_ignore_ascii_case(b"trailers")
        {
            continue;
        }
        literal(&mut block, name.as_bytes(), &h.value);
    }
    let mut out = BytesMut::with_capacity(block.len() + 2 * FRAME_HEAD);
    let mut pieces = block.chunks(MIN_MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = END_STREAM;
    // The block is never empty: it has the pseudo-header fields at least.
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            flags |= END_HEADERS;
        }
        frame_head(&mut out, piece.len(), kind, flags);
        out.put_slice(piece);
        kind = CONTINUATION;
        flags = 0;
    }
    Some(out)
}

/// A frame's 9-byte head on stream 1 (RFC 9113 §4.1).
fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8) {
    // `len` is at most MIN_MAX_FRAME: three bytes hold it.
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(1);
}

/// A field as an HPACK literal without indexing, with a literal name (RFC 7541 §6.2.2: the
/// first byte `0000 0000`), name and value as plain (not Huffman) strings.
///
/// Written here rather than taken from a crate: `h2`'s encoder is private, and the HPACK
/// crates that expose one (`hpack`, `hpack_codec`) are unmaintained and keep encoder state
/// of their own; this needs no state, only the two string forms of RFC 7541 §5.
fn literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    string(out, name);
    string(out, value);
}

/// A string literal (RFC 7541 §5.2), H = 0: its length as a 7-bit-prefix integer (§5.1),
/// then its bytes.
fn string(out: &mut BytesMut, s: &[u8]) {
    let mut n = s.len();
    if n < 0x7f {
        out.put_u8(n as u8);
    } else {
        out.put_u8(0x7f);
        n -= 0x7f;
        while n >= 0x80 {
            out.put_u8((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        out.put_u8(n as u8);
    }
    out.put_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::request::{take_head, Limits};

    fn head(text: &str) -> RequestHead {
        let mut buf = BytesMut::from(text.as_bytes());
        take_head(&mut buf, &Limits::default())
            .expect("valid")
            .expect("whole")
            .0
    }

    const UPGRADE: &str = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n\
        Connection: Upgrade, HTTP2-Settings, X-Hop\r\nUpgrade: h2c\r\n\
        HTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Hop: 1\r\nTE: gzip\r\nCookie: a=1\r\n\r\n";

    #[test]
    fn upgrade_requests_are_recognised() {
        assert!(asks_for_h2c(&head(UPGRADE)));
        let no_settings =
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
        assert!(!asks_for_h2c(&head(no_settings)));
        let with_body = UPGRADE.replace("Cookie: a=1", "Content-Length: 3");
        assert!(!asks_for_h2c(&head(&with_body)));
        let chunked = UPGRADE.replace("Cookie: a=1", "Transfer-Encoding: chunked");
        assert!(!asks_for_h2c(&head(&chunked)));
        let websocket = UPGRADE.replace("Upgrade: h2c", "Upgrade: websocket");
        assert!(!asks_for_h2c(&head(&websocket)));
        let bad = UPGRADE.replace("AAMAAABkAAQAAP__", "AAMA!");
        assert!(!asks_for_h2c(&head(&bad)));
        let http10 = UPGRADE.replace("HTTP/1.1", "HTTP/1.0");
        assert!(!asks_for_h2c(&head(&http10)));
        let two = UPGRADE.replace("X-Hop: 1", "HTTP2-Settings: ");
        assert!(!asks_for_h2c(&head(&two)));
    }

    #[test]
    fn the_client_start_is_found() {
        let mut start = PREFACE.to_vec();
        start.extend_from_slice(&[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        assert_eq!(client_start_len(&start[..10]), Ok(None));
        assert_eq!(client_start_len(&start[..30]), Ok(None));
        assert_eq!(client_start_len(&start), Ok(Some(start.len())));
        start.extend_from_slice(b"more");
        assert_eq!(client_start_len(&start), Ok(Some(start.len() - 4)));
        assert_eq!(
            client_start_len(b"GET / HTTP/1.1\r\n"),
            Err(StartError::Preface)
        );
        let mut ping = PREFACE.to_vec();
        ping.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        assert_eq!(client_start_len(&ping), Err(StartError::Settings));
    }

    #[test]
    fn stream_one_carries_the_request_without_hop_fields() {
        let frames = stream_one(&head(UPGRADE)).expect("origin form");
        assert_eq!(frames[3], HEADERS);
        assert_eq!(frames[4], END_STREAM | END_HEADERS);
        assert_eq!(&frames[5..9], &[0, 0, 0, 1]);
        let block = &frames[9..];
        let text = String::from_utf8_lossy(block);
        for wanted in [
            ":method",
            "GET",
            ":path",
            "/a?b=1",
            ":authority",
            "example.com",
            "cookie",
        ] {
            assert!(text.contains(wanted), "{wanted} missing");
        }
        for unwanted in [
            "connection",
            "upgrade",
            "http2-settings",
            "x-hop",
            "te",
            "host",
        ] {
            let field = format!("\x00{}{unwanted}", unwanted.len() as u8 as char);
            assert!(!text.contains(&field), "{unwanted} forwarded");
        }
        assert!(stream_one(&head(&UPGRADE.replace("/a?b=1", "http://x/a"))).is_none());
    }

    #[test]
    fn long_heads_go_on_in_continuation_frames() {
        let big = "v".repeat(7000);
        let text = UPGRADE.replace("Cookie: a=1", &format!("A: {big}\r\nB: {big}\r\nC: {big}"));
        let limits = Limits {
            field_size: 8190 * 4,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(text.as_bytes());
        let head = take_head(&mut buf, &limits)
            .expect("valid")
            .expect("whole")
            .0;
        let frames = stream_one(&head).expect("origin form");
        assert_eq!(frames[4], END_STREAM);
        let second = FRAME_HEAD + MIN_MAX_FRAME;
        assert_eq!(frames[second + 3], CONTINUATION);
        assert_eq!(frames[second + 4], END_HEADERS);
    }

    #[test]
    fn long_strings_use_the_integer_continuation() {
        let mut out = BytesMut::new();
        string(&mut out, &[b'x'; 1337]);
        // 1337 - 127 = 1210 = 0b1001_0111010: 0xba, then 0x09.
        assert_eq!(&out[..3], &[0x7f, 0xba, 0x09]);
        assert_eq!(out.len(), 3 + 1337);
    }
}
