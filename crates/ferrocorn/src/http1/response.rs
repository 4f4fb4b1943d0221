//! Validating a response head handed over by the app and encoding it for HTTP/1.x.
//!
//! An app can never split a response: names must be tokens, values may hold no CR, LF or other
//! control character (RFC 9110 §5.5), and hop-by-hop fields are refused (PEP 3333, "Other HTTP
//! Features"): framing and connection management belong to the server.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use super::error::{RequestError, ResponseError};
use super::request::{is_tchar, trim_ows, Version};

pub const SERVER: &str = concat!("ferrocorn/", env!("CARGO_PKG_VERSION"));

/// A validated response head from the app.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Cow<'static, str>,
    pub headers: HeaderBlock,
    /// The app's own `Content-Length`, when it sent one.
    pub content_length: Option<u64>,
    has_date: bool,
    has_server: bool,
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

impl ResponseHead {
    /// Validates a WSGI status line (`"200 OK"`) and header list.
    pub fn new(status: &str, headers: Vec<(String, Vec<u8>)>) -> Result<Self, ResponseError> {
        let mut head = Self::start(status)?;
        for (name, value) in &headers {
            head.add(name, value)?;
        }
        Ok(head)
    }

    /// A head with a validated status line and no fields yet.
    pub fn start(status: &str) -> Result<Self, ResponseError> {
        let (status, reason) = parse_status(status)?;
        Ok(Self {
            status,
            reason: common_reason(reason)
                .map_or_else(|| Cow::Owned(reason.to_owned()), Cow::Borrowed),
            // Room for a typical app's few fields at once, not one allocation per field.
            headers: HeaderBlock::with_capacity(TYPICAL_BLOCK),
            content_length: None,
            has_date: false,
            has_server: false,
        })
    }

    /// The head [`ResponseHead::start`] makes of `"{status} {reason(status)}"`, without
    /// writing and parsing that line (an ASGI app gives the code alone); None for a status
    /// `start` refuses (outside 200 to 599).
    pub fn with_status(status: u16) -> Option<Self> {
        (200..=599).contains(&status).then(|| Self {
            status,
            reason: Cow::Borrowed(reason(status)),
            headers: HeaderBlock::with_capacity(TYPICAL_BLOCK),
            content_length: None,
            has_date: false,
            has_server: false,
        })
    }

    /// Validates one field from the app and adds it.
    /// The `Trailer` field (RFC 9110 §6.6.2), which names the trailer fields to come: an
    /// ASGI app that sends `http.response.trailers` announces them with it (PEP 3333 has no
    /// trailers, and [`ResponseHead::add`] refuses it as RFC 2616 listed it hop-by-hop).
    pub fn add_trailer_names(&mut self, value: &[u8]) -> Result<(), ResponseError> {
        let value = trim_ows(value);
        check_field("x", value).map_err(|_| ResponseError::HeaderValue("Trailer".into()))?;
        self.headers.push("Trailer", value);
        Ok(())
    }

    pub fn add(&mut self, name: &str, value: &[u8]) -> Result<(), ResponseError> {
        // A field value has no leading or trailing whitespace (RFC 9110 §5.5): an app's
        // `"Set-Cookie", " a=b"` would otherwise go out with two spaces after the colon.
        let value = trim_ows(value);
        check_field(name, value)?;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("content-length") {
            let wrong =
                || ResponseError::ContentLength(String::from_utf8_lossy(value).into_owned());
            let n = value
                .iter()
                .try_fold(0u64, |n, &d| {
                    d.is_ascii_digit()
                        .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
                        .flatten()
                })
                .filter(|_| !value.is_empty())
                .ok_or_else(wrong)?;
            if self.content_length.is_some_and(|prev| prev != n) {
                return Err(wrong());
            }
            self.content_length = Some(n);
        } else if is("date") {
            self.has_date = true;
        } else if is("server") {
            self.has_server = true;
        }
        self.headers.push(name, value);
        Ok(())
    }

    /// A plain-text response the server itself sends (errors).
    pub fn plain(status: u16, reason: &str) -> Self {
        Self {
            status,
            reason: Cow::Owned(reason.to_owned()),
            headers: {
                let mut h = HeaderBlock::default();
                h.push("Content-Type", b"text/plain; charset=utf-8");
                h
            },
            content_length: None,
            has_date: false,
            has_server: false,
        }
    }

    /// True when this status never carries a body (RFC 9110 §6.4.1).
    pub fn bodiless(&self) -> bool {
        self.status < 200 || self.status == 204 || self.status == 304
    }
}

/// Checks a field the app wants sent: a token for a name (RFC 9110 §5.1), no CR, LF or other
/// control character in the value (§5.5), so that it cannot split the response; no hop-by-hop
/// field (PEP 3333: connection management belongs to the server).
fn check_field(name: &str, value: &[u8]) -> Result<(), ResponseError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(ResponseError::HeaderName(name.to_owned()));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ResponseError::HeaderValue(name.to_owned()));
    }
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(ResponseError::HopByHop(name.to_owned()));
    }
    Ok(())
}

/// The fields of a `103 Early Hints` response (RFC 8297), validated as the final response's
/// are. The connection decides whether it goes out (not to an HTTP/1.0 client, not once the
/// final response has started) and how: a status line and these fields on HTTP/1.1
/// ([`encode_early_hints`]); on HTTP/2 a HEADERS frame with `:status 103` (RFC 9113 §8.1,
/// `http2/stream.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EarlyHints {
    pub headers: HeaderBlock,
}

impl EarlyHints {
    /// Validates one field and adds it. Besides the checks every response field gets, a 1xx
    /// response carries no content, so no `Content-Length` (RFC 9110 §8.6).
    pub fn add(&mut self, name: &str, value: &[u8]) -> Result<(), ResponseError> {
        check_field(name, value)?;
        if name.eq_ignore_ascii_case("content-length") {
            return Err(ResponseError::HintField(name.to_owned()));
        }
        self.headers.push(name, trim_ows(value));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}

/// Trailer fields (RFC 9110 §6.5), sent after the body where the response's framing carries
/// them: after HTTP/1.1's last chunk ([`encode_last_chunk`]), or as HTTP/2's trailing HEADERS
/// frame. Validated as the head's fields are, and none of those a recipient must not take from
/// a trailer (§6.5.1: framing, routing, the content's type and coding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailers {
    pub fields: HeaderBlock,
}

/// Fields never sent as trailers.
const NOT_TRAILERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "trailer",
    "te",
    "host",
    "content-type",
    "content-encoding",
    "content-range",
];

impl Trailers {
    /// Validates one field and adds it.
    pub fn add(&mut self, name: &str, value: &[u8]) -> Result<(), ResponseError> {
        check_field(name, value)?;
        if NOT_TRAILERS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            return Err(ResponseError::TrailerField(name.to_owned()));
        }
        self.fields.push(name, trim_ows(value));
        Ok(())
    }
}

/// HTTP/1.1's last chunk with the trailer section (RFC 9112 §7.1.2), which ends a chunked body.
pub fn encode_last_chunk(trailers: &Trailers, out: &mut BytesMut) {
    out.reserve(7 + trailers.fields.as_bytes().len());
    out.put_slice(b"0\r\n");
    out.put_slice(trailers.fields.as_bytes());
    out.put_slice(b"\r\n");
}

/// An HTTP/1.1 `103 Early Hints` interim response (RFC 8297 §2): the status line and the
/// fields, with no Date or Server (RFC 9110 §6.6.1 asks for Date only on final responses).
pub fn encode_early_hints(hints: &EarlyHints, out: &mut BytesMut) {
    out.reserve(32 + hints.headers.as_bytes().len());
    out.put_slice(b"HTTP/1.1 103 Early Hints\r\n");
    out.put_slice(hints.headers.as_bytes());
    out.put_slice(b"\r\n");
}

/// Bytes first reserved for an app's header block.
const TYPICAL_BLOCK: usize = 128;

/// Response header fields as they go on the wire, one `Name: value\r\n` line after another:
/// one allocation for all of them (two per field before), copied to the socket buffer in one
/// piece. Names are tokens and values hold no CR or LF (checked by [`ResponseHead::add`]), so
/// the lines split back unambiguously.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock(Vec<u8>);

impl HeaderBlock {
    /// Appends a field already known to be valid.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.reserve(name.len() + value.len() + 4);
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// An empty block with room for `bytes` of fields.
    pub fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.split_inclusive(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r\n")?;
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name, line.get(colon + 2..).unwrap_or_default()))
        })
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The usual reason phrases, kept without a copy.
fn common_reason(reason: &str) -> Option<&'static str> {
    const COMMON: &[&str] = &[
        "OK",
        "Created",
        "No Content",
        "Moved Permanently",
        "Found",
        "See Other",
        "Not Modified",
        "Bad Request",
        "Unauthorized",
        "Forbidden",
        "Not Found",
        "Method Not Allowed",
        "Internal Server Error",
    ];
    COMMON.iter().copied().find(|c| *c == reason)
}

/// `status = 3DIGIT SP reason-phrase`, where the reason may be empty but not contain controls.
fn parse_status(line: &str) -> Result<(u16, &str), ResponseError> {
    let bad = || ResponseError::Status(line.to_owned());
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code: u16 = line[..3].parse().map_err(|_| bad())?;
    if !(200..=599).contains(&code) {
        return Err(bad());
    }
    let reason = match &line[3..] {
        "" => "",
        rest if rest.starts_with(' ') => &rest[1..],
        _ => return Err(bad()),
    };
    if reason
        .bytes()
        .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(bad());
    }
    Ok((code, reason))
}

/// How the body of a response is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body is sent (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    CloseDelimited,
}

/// Writes the status line and header section.
pub fn encode_head(
    head: &ResponseHead,
    version: Version,
    framing: BodyFraming,
    declared_length: Option<u64>,
    keep_alive: bool,
    out: &mut BytesMut,
) {
    out.reserve(256 + head.headers.as_bytes().len());
    out.put_slice(version.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(&itoa3(head.status));
    out.put_u8(b' ');
    out.put_slice(head.reason.as_bytes());
    out.put_slice(b"\r\n");
    if framing == BodyFraming::Chunked && head.content_length.is_some() {
        for (name, value) in head.headers.iter() {
            if !name.eq_ignore_ascii_case("content-length") {
                out.put_slice(name.as_bytes());
                out.put_slice(b": ");
                out.put_slice(value);
                out.put_slice(b"\r\n");
            }
        }
    } else {
        out.put_slice(head.headers.as_bytes());
    }
    if !head.has_server {
        out.put_slice(b"Server: ");
        out.put_slice(SERVER.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !head.has_date {
        out.put_slice(b"Date: ");
        with_date(|d| out.put_slice(d.as_bytes()));
        out.put_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::Length(n) if head.content_length.is_none() => {
            let mut s = String::with_capacity(24);
            let _ = write!(s, "Content-Length: {n}\r\n");
            out.put_slice(s.as_bytes());
        }
        BodyFraming::Empty if head.content_length.is_none() && !head.bodiless() => {
            // A HEAD response: announce the length the GET would have had, when known.
            if let Some(n) = declared_length {
                let mut s = String::with_capacity(24);
                let _ = write!(s, "Content-Length: {n}\r\n");
                out.put_slice(s.as_bytes());
            }
        }
        _ => {}
    }
    match (version, keep_alive) {
        (Version::Http11, false) => out.put_slice(b"Connection: close\r\n"),
        (Version::Http10, true) => out.put_slice(b"Connection: keep-alive\r\n"),
        _ => {}
    }
    out.put_slice(b"\r\n");
}

fn itoa3(n: u16) -> [u8; 3] {
    [
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

/// The canonical reason phrase for a status the server sends itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A response the server makes itself (errors, refusals), whatever the protocol: a plain-text
/// body naming the problem, its `Content-Length`, and `Retry-After: 1` on a 503.
pub fn server_response(status: u16, message: &str) -> (ResponseHead, bytes::Bytes) {
    let body = format!("{} {}: {}\n", status, reason(status), message);
    let mut head = ResponseHead::plain(status, reason(status));
    head.headers
        .push("Content-Length", body.len().to_string().as_bytes());
    head.content_length = Some(body.len() as u64);
    if status == 503 {
        head.headers.push("Retry-After", b"1");
    }
    (head, bytes::Bytes::from(body))
}

/// [`server_response`] encoded for HTTP/1.x, for errors before an exchange exists (a request
/// head the parser refused); the connection is closed after it.
pub fn error_response(status: u16, message: &str, version: Version) -> BytesMut {
    let (head, body) = server_response(status, message);
    let mut out = BytesMut::with_capacity(256 + body.len());
    encode_head(
        &head,
        version,
        BodyFraming::Length(body.len() as u64),
        None,
        false,
        &mut out,
    );
    out.put_slice(&body);
    out
}

/// The response to a request the parser refused.
pub fn request_error_response(err: &RequestError) -> BytesMut {
    error_response(err.status(), &err.to_string(), Version::Http11)
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current IMF-fixdate, formatted at most once a second per thread.
pub fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, httpdate::fmt_http_date(now));
        }
        f(&cache.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_alone_makes_the_head_its_line_makes() {
        for code in [200, 201, 204, 299, 304, 404, 418, 500, 503, 599] {
            let line = format!("{code} {}", reason(code));
            let (made, parsed) = (
                ResponseHead::with_status(code).expect("in range"),
                ResponseHead::start(&line).expect("a valid line"),
            );
            assert_eq!((made.status, &made.reason), (parsed.status, &parsed.reason));
            assert!(made.headers.is_empty() && made.content_length.is_none());
        }
        for code in [0, 100, 103, 199, 600] {
            assert!(ResponseHead::with_status(code).is_none());
        }
    }

    #[test]
    fn trailers_are_checked_and_end_a_chunked_body() {
        let mut t = Trailers::default();
        t.add("x-checksum", b" abc ").unwrap();
        t.add("grpc-status", b"0").unwrap();
        for name in ["Content-Length", "content-type", "Host"] {
            assert!(matches!(
                t.add(name, b"1"),
                Err(ResponseError::TrailerField(_))
            ));
        }
        // Hop-by-hop as in a head.
        for name in ["transfer-encoding", "Trailer", "TE"] {
            assert!(t.add(name, b"1").is_err());
        }
        assert!(t.add("x-a", b"1\r\nx-b: 2").is_err());
        let mut out = BytesMut::new();
        encode_last_chunk(&t, &mut out);
        assert_eq!(&out[..], b"0\r\nx-checksum: abc\r\ngrpc-status: 0\r\n\r\n");
        let mut head = ResponseHead::start("200 OK").unwrap();
        head.add_trailer_names(b"x-checksum, grpc-status").unwrap();
        assert!(head.add_trailer_names(b"x\r\ny").is_err());
        assert!(head.add("Trailer", b"x").is_err());
    }

    fn head(status: &str, headers: &[(&str, &[u8])]) -> Result<ResponseHead, ResponseError> {
        ResponseHead::new(
            status,
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn statuses() {
        assert_eq!(head("200 OK", &[]).unwrap().status, 200);
        let h = head("299 Custom Reason", &[]).unwrap();
        assert_eq!((h.status, &*h.reason), (299, "Custom Reason"));
        for bad in [
            "20 OK",
            "2000 OK",
            "abc OK",
            "200OK",
            "099 X",
            "600 X",
            "200 a\r\nX: y",
            "",
        ] {
            assert!(
                matches!(head(bad, &[]), Err(ResponseError::Status(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(matches!(
            head("200 OK", &[("X-A", b"a\r\nSet-Cookie: x")]),
            Err(ResponseError::HeaderValue(_))
        ));
        assert!(matches!(
            head("200 OK", &[("X A", b"a")]),
            Err(ResponseError::HeaderName(_))
        ));
        assert!(matches!(
            head("200 OK", &[("X\nA", b"a")]),
            Err(ResponseError::HeaderName(_))
        ));
        for hop in ["Connection", "Transfer-Encoding", "keep-alive", "Upgrade"] {
            assert!(
                matches!(
                    head("200 OK", &[(hop, b"x")]),
                    Err(ResponseError::HopByHop(_))
                ),
                "{hop}"
            );
        }
        assert!(head("200 OK", &[("X-Latin", b"caf\xe9")]).is_ok());
    }

    #[test]
    fn value_whitespace_is_trimmed() {
        let h = head(
            "200 OK",
            &[("Set-Cookie", b"  csrftoken=abc"), ("X-T", b"\tv \t")],
        )
        .unwrap();
        let fields: Vec<_> = h.headers.iter().collect();
        assert_eq!(
            fields,
            [("Set-Cookie", &b"csrftoken=abc"[..]), ("X-T", &b"v"[..])]
        );
        assert_eq!(
            h.headers.as_bytes(),
            b"Set-Cookie: csrftoken=abc\r\nX-T: v\r\n"
        );
    }

    #[test]
    fn content_length_is_read() {
        assert_eq!(
            head("200 OK", &[("Content-Length", b"12")])
                .unwrap()
                .content_length,
            Some(12)
        );
        assert!(head("200 OK", &[("Content-Length", b"-1")]).is_err());
        assert!(head("200 OK", &[("Content-Length", b"")]).is_err());
    }

    #[test]
    fn header_block_gives_back_what_went_in() {
        let h = head(
            "200 OK",
            &[
                ("Content-Type", b"text/plain"),
                ("X-Empty", b""),
                ("X-Latin", b"caf\xe9"),
            ],
        )
        .unwrap();
        let fields: Vec<(&str, &[u8])> = h.headers.iter().collect();
        assert_eq!(
            fields,
            [
                ("Content-Type", &b"text/plain"[..]),
                ("X-Empty", b""),
                ("X-Latin", b"caf\xe9")
            ]
        );
    }

    /// The head as encoded for a chunked HTTP/1.1 response.
    fn chunked_head(h: &ResponseHead, keep_alive: bool) -> String {
        let mut out = BytesMut::new();
        encode_head(
            h,
            Version::Http11,
            BodyFraming::Chunked,
            None,
            keep_alive,
            &mut out,
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn a_chunked_response_drops_the_apps_content_length() {
        let h = head("200 OK", &[("Content-Length", b"5"), ("X-A", b"1")]).unwrap();
        let text = chunked_head(&h, true);
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.contains("\r\nX-A: 1\r\n"), "{text}");
    }

    #[test]
    fn encodes_head() {
        let h = head("200 OK", &[("Content-Type", b"text/plain")]).unwrap();
        let text = chunked_head(&h, false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: ferrocorn/")
        );
        assert!(text.contains("\r\nDate: "));
        assert!(text.ends_with("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"));
    }
}
