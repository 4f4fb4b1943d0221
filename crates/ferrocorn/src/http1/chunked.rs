//! A sans-I/O decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! Strict on purpose: sizes are bare hex digits (no sign, no `0x`, no whitespace before them),
//! every line ends in CRLF, sizes that overflow 64 bits are refused, and trailer fields that
//! would change framing, routing or authentication (RFC 9110 §6.5.1) are refused.

use bytes::{Buf, Bytes, BytesMut};

use super::error::BodyError;
use super::request::is_tchar;

/// Longest chunk-size line (with extensions) we accept.
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes the whole trailer section may take.
const MAX_TRAILERS: usize = 16 * 1024;

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some body bytes.
    Data(Bytes),
    /// The buffer holds no complete unit: read more from the connection.
    NeedMore,
    /// The last chunk and the trailer section have been read.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`, consuming what it uses, returning at most `max` bytes.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Size => {
                    let Some(line) = take_line(buf, MAX_SIZE_LINE, BodyError::ChunkSize)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size_line(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len())
                        .min(max.max(1));
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(BodyError::ChunkDataEnd);
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::ChunkDataEnd);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(line) = take_line(buf, MAX_TRAILERS, BodyError::TrailerTooLarge)?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(BodyError::TrailerTooLarge);
                    }
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        check_trailer(&line)?;
                    }
                }
            }
        }
    }
}

/// Takes one CRLF-terminated line off `buf` (without the CRLF), or `None` if it is incomplete.
fn take_line(
    buf: &mut BytesMut,
    limit: usize,
    too_long: BodyError,
) -> Result<Option<Bytes>, BodyError> {
    match buf.iter().position(|&b| b == b'\n') {
        None if buf.len() > limit => Err(too_long),
        None => Ok(None),
        Some(0) => Err(BodyError::ChunkSize),
        Some(i) if buf[i - 1] != b'\r' => Err(BodyError::ChunkSize),
        Some(i) if i > limit => Err(too_long),
        Some(i) => {
            let line = buf.split_to(i + 1).freeze();
            Ok(Some(line.slice(..i - 1)))
        }
    }
}

/// `chunk-size [ chunk-ext ]` where `chunk-size = 1*HEXDIG`.
fn parse_size_line(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::ChunkSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).ok_or(BodyError::ChunkSize)?;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(BodyError::ChunkSizeOverflow)?;
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if ext.is_empty() {
        // Whitespace after the size with no extension is not in the grammar.
        return if rest.is_empty() {
            Ok(size)
        } else {
            Err(BodyError::ChunkSize)
        };
    }
    // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): we ignore extensions but
    // refuse control characters in them.
    if ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(BodyError::ChunkSize);
    }
    if !valid_extensions(ext) {
        return Err(BodyError::ChunkSize);
    }
    Ok(size)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`, ext-val a token or quoted-string.
fn valid_extensions(mut s: &[u8]) -> bool {
    fn skip_ws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> (&[u8], &[u8]) {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        s.split_at(n)
    }
    loop {
        s = skip_ws(s);
        let [b';', rest @ ..] = s else {
            return s.is_empty();
        };
        let (name, rest) = token(skip_ws(rest));
        if name.is_empty() {
            return false;
        }
        s = skip_ws(rest);
        if let [b'=', rest @ ..] = s {
            s = skip_ws(rest);
            if let [b'"', rest @ ..] = s {
                let mut i = 0;
                loop {
                    match rest.get(i) {
                        None => return false,
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(_) => i += 1,
                    }
                }
                s = &rest[i + 1..];
            } else {
                let (value, rest) = token(s);
                if value.is_empty() {
                    return false;
                }
                s = rest;
            }
        }
    }
}

/// Trailer fields that must never be honoured (RFC 9110 §6.5.1): framing, routing, request
/// modifiers, authentication and content metadata.
const FORBIDDEN_TRAILERS: &[&str] = &[
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "content-type",
    "cookie",
    "expect",
    "host",
    "keep-alive",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "www-authenticate",
];

fn check_trailer(line: &[u8]) -> Result<(), BodyError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BodyError::Trailer)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(BodyError::Trailer);
    }
    let value = &line[colon + 1..];
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(BodyError::Trailer);
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    if FORBIDDEN_TRAILERS.contains(&name.as_str()) || name.starts_with("if-") {
        return Err(BodyError::ForbiddenTrailer(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, BodyError> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match dec.decode(&mut buf, 7)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => return Err(BodyError::Incomplete),
            }
        }
    }

    #[test]
    fn chunk_extension_grammar() {
        for ok in [
            &b""[..],
            b";a",
            b" ; a = b",
            b";a=\"x;y \\\" z\";b",
            b";a;b=1",
        ] {
            assert!(valid_extensions(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b";"[..],
            b";=b",
            b";a=",
            b";a=\"open",
            b"x",
            b";a b",
            b";a=b c",
        ] {
            assert!(!valid_extensions(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = decode_all(b"5\r\nhello\r\n6;name=val\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n")
            .unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn byte_by_byte_feeding() {
        let input = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while let Decoded::Data(d) = dec.decode(&mut buf, 1024).unwrap() {
                out.extend_from_slice(&d);
            }
        }
        assert!(dec.is_done());
        assert_eq!(out, b"abc0123456789abcdef");
    }

    #[test]
    fn refuses_bad_sizes_and_framing() {
        for bad in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"zz\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            decode_all(b"ffffffffffffffffffff\r\n"),
            Err(BodyError::ChunkSizeOverflow)
        );
    }

    #[test]
    fn refuses_forbidden_trailers() {
        for name in ["Content-Length", "Transfer-Encoding", "Host", "If-Match"] {
            let raw = format!("1\r\na\r\n0\r\n{name}: 5\r\n\r\n");
            assert!(
                matches!(
                    decode_all(raw.as_bytes()),
                    Err(BodyError::ForbiddenTrailer(_))
                ),
                "{name}"
            );
        }
        assert_eq!(
            decode_all(b"0\r\nbad name: x\r\n\r\n"),
            Err(BodyError::Trailer)
        );
    }

    #[test]
    fn incomplete_input_needs_more() {
        assert_eq!(decode_all(b"5\r\nhel"), Err(BodyError::Incomplete));
    }
}
