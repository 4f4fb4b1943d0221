//! Parsing and validating a request head (RFC 9112 §2–§6) into a [`RequestHead`].
//!
//! `httparse` does the tokenising; this module adds what RFC 9112 asks of a server on top of it:
//! Gunicorn's size limits, exactly one Host in HTTP/1.1, message framing that cannot be read two
//! ways (no Content-Length beside Transfer-Encoding, chunked last and once), and a request target
//! of visible ASCII only.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::error::RequestError;

/// HTTP version of a request (only 1.0 and 1.1 are spoken on HTTP/1 connections; 2 is a
/// stream of an HTTP/2 connection, see `crate::http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Gunicorn's request limits (`--limit-request-line`, `--limit-request-fields`,
/// `--limit-request-field_size`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
        }
    }
}

impl Limits {
    /// The most bytes a whole head may take: the line, every field, and their line ends.
    pub fn max_head(&self) -> usize {
        self.request_line + 2 + self.fields * (self.field_size + 2) + 2
    }
}

/// One header field as received: the name as sent (case kept), the value with surrounding
/// whitespace removed (RFC 9112 §5.1). Both are slices of the received head, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Text,
    pub value: Bytes,
}

/// Text sliced from a received head (the method, the target, a field name), shared with it
/// instead of copied: a request's strings cost no allocation of their own.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// The bytes of `head` at `span`, which must be where a `&str` lay in it (UTF-8 that
    /// begins and ends on character boundaries).
    fn within(head: &Bytes, span: std::ops::Range<usize>) -> Self {
        debug_assert!(std::str::from_utf8(&head[span.clone()]).is_ok());
        Self(head.slice(span))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        // SAFETY: a `Text` is only made from a `&str` (`From<&str>`) or from the span of one
        // within the head it slices (`within`, given the parser's `&str`s), so its bytes are
        // UTF-8; checking again on every access cost more than the copies this type avoids.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// Header fields parsed without a heap allocation (Gunicorn's default limit is 100).
const STACK_FIELDS: usize = 100;

/// Where a field's name and value lie in the request head.
type Spans = (std::ops::Range<usize>, std::ops::Range<usize>);

/// A parsed, validated request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Text,
    /// The request target exactly as sent (visible ASCII).
    pub target: Text,
    pub version: Version,
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// The connection should stay open after the response (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (RFC 9110 §10.1.1).
    pub expect_continue: bool,
}

impl RequestHead {
    /// A head made field by field, for unit tests of what reads heads.
    #[cfg(test)]
    pub(crate) fn for_test(
        method: &str,
        target: &str,
        version: Version,
        fields: &[(&str, &str)],
    ) -> Self {
        Self {
            method: Text::from(method),
            target: Text::from(target),
            version,
            headers: fields
                .iter()
                .map(|(n, v)| Header {
                    name: Text::from(*n),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
            framing: Framing::None,
            keep_alive: true,
            expect_continue: false,
        }
    }

    /// Moves the head's bytes out of the connection's read buffer (which its fields slice)
    /// into one allocation sized to them: for a head kept while the connection goes on
    /// without that buffer (a WebSocket's, held for the session), which would otherwise pin
    /// the buffer's whole 8 KiB.
    pub fn detach(&mut self) {
        let size = self.method.0.len()
            + self.target.0.len()
            + self
                .headers
                .iter()
                .map(|h| h.name.0.len() + h.value.len())
                .sum::<usize>();
        let mut own = BytesMut::with_capacity(size);
        let mut moved = |b: &mut Bytes| {
            own.extend_from_slice(b);
            *b = own.split().freeze();
        };
        moved(&mut self.method.0);
        moved(&mut self.target.0);
        for h in &mut self.headers {
            moved(&mut h.name.0);
            moved(&mut h.value);
        }
    }

    /// The target's path, without the query, for origin-form and absolute-form targets.
    pub fn path(&self) -> &str {
        target_path(&self.target)
    }

    /// The raw query string (after `?`, before any `#`), empty when there is none.
    pub fn query(&self) -> &str {
        let t = &*self.target;
        match t.bytes().position(|b| b == b'?') {
            Some(i) => {
                let q = &t[i + 1..];
                &q[..q.bytes().position(|b| b == b'#').unwrap_or(q.len())]
            }
            None => "",
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &*h.value)
    }

    /// The client takes trailer fields: `trailers` among its `TE` field's members (RFC 9110
    /// §10.1.4).
    pub fn takes_trailers(&self) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("te"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|member| {
                let token = member.split(|&b| b == b';').next().unwrap_or_default();
                trim_ows(token).eq_ignore_ascii_case(b"trailers")
            })
    }
}

/// Parses the head at the start of `buf`. `Ok(None)` means more bytes are needed; on success the
/// head and the number of bytes it used are returned.
pub fn parse_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, RequestError> {
    take_head(&mut BytesMut::from(buf), limits)
}

/// [`parse_head`] on a connection's read buffer: a complete head is split off the front of
/// `buf` and its strings are slices of it.
pub fn take_head(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, RequestError> {
    // RFC 9112 §2.2 lets a server ignore empty lines before the request line; one (a CRLF an
    // old client sent after a POST body) is ignored, more are refused as Gunicorn 27 does.
    let start = match &buf[..] {
        [b'\r'] | [b'\r', b'\n'] => return Ok(None),
        [b'\r', b'\n', rest @ ..] => match rest.first() {
            Some(b'\r' | b'\n') => return Err(RequestError::LeadingEmptyLines),
            _ => 2,
        },
        [b'\n', ..] => return Err(RequestError::BareLf),
        [b'\r', _, ..] => return Err(RequestError::NewLine),
        _ => 0,
    };
    let line_end = buf[start..].iter().position(|&b| b == b'\n');
    match line_end {
        None if buf.len() - start > limits.request_line + 1 => {
            return Err(RequestError::LineTooLong(limits.request_line))
        }
        None => return Ok(None),
        Some(n) => {
            let line = &buf[start..start + n];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > limits.request_line {
                return Err(RequestError::LineTooLong(limits.request_line));
            }
            check_request_line(line)?;
        }
    }

    // Header slots on the stack for the usual limit (a 3.2 KiB allocation per request before);
    // on the heap only for a raised --limit-request-fields.
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut on_heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.fields <= STACK_FIELDS {
        &mut on_stack[..limits.fields]
    } else {
        on_heap.resize_with(limits.fields, MaybeUninit::uninit);
        &mut on_heap
    };
    let mut req = httparse::Request::new(&mut []);
    let used = match req.parse_with_uninit_headers(&buf[..], slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head() {
                return Err(RequestError::HeaderTooLarge(limits.field_size));
            }
            check_partial_fields(&buf[..], limits)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::TooManyHeaders(limits.fields))
        }
        Err(e) => return Err(classify(e, &buf[..])),
    };

    check_line_ends(&buf[start..used])?;
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    let version = match req.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    check_target(method, target)?;

    // Where each string lies in the head, so that they can be sliced once it is split off.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        // Every string the parser returns lies in the head; an empty one might not.
        match (s.as_ptr() as usize).checked_sub(base) {
            Some(at) if at + s.len() <= used => at..at + s.len(),
            _ => 0..0,
        }
    };
    let (method, target) = (span(method.as_bytes()), span(target.as_bytes()));
    // Left uninitialised: filling 100 pairs of ranges was a 3.2 KiB memset per request.
    let mut on_stack = [const { MaybeUninit::<Spans>::uninit() }; STACK_FIELDS];
    let mut on_heap = Vec::new();
    let n = req.headers.len();
    let slots = if n <= STACK_FIELDS {
        &mut on_stack[..n]
    } else {
        on_heap.resize_with(n, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    for (h, slot) in req.headers.iter().zip(slots.iter_mut()) {
        let (name, value) = (span(h.name.as_bytes()), span(trim_ows(h.value)));
        // Counted as Gunicorn counts it: the whole line as sent (name, colon, the value with
        // its whitespace) and its CRLF, so one configuration refuses the same requests.
        let line_end = value.end.max(name.end)
            + buf[value.end.max(name.end)..used]
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(0);
        if line_end - name.start + 2 > limits.field_size {
            return Err(RequestError::HeaderTooLarge(limits.field_size));
        }
        slot.write((name, value));
    }
    // SAFETY: `req.headers` and `slots` both have `n` items, and the loop above wrote every
    // slot (it returns early only with an error, before any slot is read).
    let spans = slots.iter().map(|slot| unsafe { slot.assume_init_ref() });
    let raw = buf.split_to(used).freeze();
    let headers: Vec<Header> = spans
        .map(|(name, value)| Header {
            name: Text::within(&raw, name.clone()),
            value: raw.slice(value.clone()),
        })
        .collect();
    let framing = framing(version, &headers)?;
    let (keep_alive, expect_continue) = connection_options(version, &headers)?;
    Ok(Some((
        RequestHead {
            method: Text::within(&raw, method),
            target: Text::within(&raw, target),
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
        },
        used,
    )))
}

/// The request line's own checks, before the fields are parsed: `method SP target SP version`,
/// single spaces (RFC 9112 §3), a target of visible ASCII (RFC 9112 §3.2, RFC 3986).
fn check_request_line(line: &[u8]) -> Result<(), RequestError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::RequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(RequestError::Method);
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(RequestError::Target);
    }
    match version {
        b"HTTP/1.1" | b"HTTP/1.0" => Ok(()),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(RequestError::Version)
        }
        _ => Err(RequestError::VersionSyntax),
    }
}

/// RFC 9112 §2.2 allows a server to take a bare LF as a line end; Gunicorn 27 refuses it, and
/// so do we: a front proxy that reads the same bytes differently could be made to see other
/// requests than we do (request smuggling). The head is checked whole, once it is complete.
fn check_line_ends(head: &[u8]) -> Result<(), RequestError> {
    // Only the LFs are looked at (memchr finds them many bytes at a time): a byte-by-byte
    // loop over the head was the costliest line of a hello request.
    for at in memchr::memchr_iter(b'\n', head) {
        if at == 0 || head[at - 1] != b'\r' {
            return Err(RequestError::BareLf);
        }
    }
    Ok(())
}

/// While the head is still incomplete, refuse a field line that is already over the limit, so
/// a client cannot make us buffer up to the whole-head limit one field at a time.
fn check_partial_fields(buf: &[u8], limits: &Limits) -> Result<(), RequestError> {
    let tail = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => &buf[i + 1..],
        None => return Ok(()),
    };
    if tail.len() > limits.field_size + 1 {
        return Err(RequestError::HeaderTooLarge(limits.field_size));
    }
    Ok(())
}

fn classify(e: httparse::Error, buf: &[u8]) -> RequestError {
    match e {
        httparse::Error::HeaderName => {
            // A field line that starts with whitespace is obs-fold (RFC 9112 §5.2).
            let folded = buf
                .windows(2)
                .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'));
            if folded {
                RequestError::LineFolding
            } else {
                RequestError::HeaderName
            }
        }
        httparse::Error::HeaderValue => RequestError::HeaderValue,
        httparse::Error::NewLine => RequestError::NewLine,
        httparse::Error::Version => RequestError::VersionSyntax,
        httparse::Error::Token | httparse::Error::Status => RequestError::RequestLine,
        httparse::Error::TooManyHeaders => RequestError::TooManyHeaders(0),
    }
}

/// RFC 9112 §3.2: origin-form for most methods, absolute-form from proxies, authority-form only
/// for CONNECT and asterisk-form only for OPTIONS.
fn check_target(method: &str, target: &str) -> Result<(), RequestError> {
    let ok = if target.starts_with('/') {
        true
    } else if target == "*" {
        method == "OPTIONS"
    } else if method == "CONNECT" {
        !target.contains('/')
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    };
    if ok {
        Ok(())
    } else {
        Err(RequestError::Target)
    }
}

/// RFC 9112 §6.1–§6.3: decides how the body is delimited, refusing anything a proxy in front of
/// us could read another way (the root of request smuggling).
fn framing(version: Version, headers: &[Header]) -> Result<Framing, RequestError> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut has_te = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(&h.value).ok_or(RequestError::ContentLength)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(RequestError::ContentLength);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            let value =
                std::str::from_utf8(&h.value).map_err(|_| RequestError::UnsupportedEncoding)?;
            for coding in value.split(',') {
                let coding = coding.trim_matches([' ', '\t']);
                if coding.is_empty() {
                    continue;
                }
                codings.push(coding.to_ascii_lowercase());
            }
        }
    }
    if !has_te {
        return Ok(length.map_or(Framing::None, Framing::Length));
    }
    if version == Version::Http10 {
        return Err(RequestError::EncodingInHttp10);
    }
    if length.is_some() {
        return Err(RequestError::LengthAndEncoding);
    }
    let chunked_count = codings.iter().filter(|c| *c == "chunked").count();
    match codings.last().map(String::as_str) {
        Some("chunked") if chunked_count == 1 => {}
        _ if chunked_count > 0 || codings.is_empty() => return Err(RequestError::ChunkedNotLast),
        _ => return Err(RequestError::UnsupportedEncoding),
    }
    // Only plain chunked is decoded; gzip/deflate underneath it are not implemented.
    if codings.len() > 1 {
        return Err(RequestError::UnsupportedEncoding);
    }
    Ok(Framing::Chunked)
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no spaces inside, no list.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The path of a request target, without query or fragment: the target itself in origin form
/// (checked first: no substring search for the usual case), the part after the authority in
/// absolute form.
pub fn target_path(target: &str) -> &str {
    let absolute = (!target.starts_with('/'))
        .then(|| target.find("://"))
        .flatten();
    let t = match absolute {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => target,
    };
    let end = t
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(t.len());
    &t[..end]
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2); empty is allowed.
fn valid_host(value: &[u8]) -> bool {
    /// unreserved / pct-encoded / sub-delims.
    const REG_NAME: [bool; 256] = alnum_and(b"-._~%!$&'()*+,;=");
    fn reg_name_byte(b: u8) -> bool {
        REG_NAME[usize::from(b)]
    }
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        if literal.is_empty() || !literal.iter().all(|&b| reg_name_byte(b) || b == b':') {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&value[..0], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &value[..0]),
        }
    };
    host.iter().all(|&b| reg_name_byte(b)) && port.iter().all(u8::is_ascii_digit)
}

/// Host rules (RFC 9112 §3.2), the `Connection` options and `Expect`.
fn connection_options(version: Version, headers: &[Header]) -> Result<(bool, bool), RequestError> {
    let mut hosts = 0;
    let mut content_types = 0;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(&h.value) {
                return Err(RequestError::InvalidHost);
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            // Two media types for one body: an app and a proxy may each pick another one.
            content_types += 1;
            if content_types > 1 {
                return Err(RequestError::DuplicateContentType);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for opt in h.value.split(|&b| b == b',') {
                let opt = trim_ows(opt);
                if opt.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect")
            && h.value.eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = version == Version::Http11;
        }
    }
    if hosts > 1 {
        return Err(RequestError::DuplicateHost);
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(RequestError::MissingHost);
    }
    let persistent = match version {
        Version::Http11 | Version::Http2 => !close,
        Version::Http10 => keep_alive && !close,
    };
    Ok((persistent, expect_continue))
}

pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// `tchar` from RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    const TCHAR: [bool; 256] = alnum_and(b"!#$%&'*+-.^_`|~");
    TCHAR[usize::from(b)]
}

/// A byte class as a table: ASCII letters and digits, and `extra`. (Searching a list of
/// punctuation for each byte was a tenth of the head's checks.)
const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<RequestHead>, RequestError> {
        parse_head(raw, &Limits::default()).map(|o| o.map(|(h, _)| h))
    }

    fn err(raw: &[u8]) -> RequestError {
        match parse(raw) {
            Err(e) => e,
            Ok(h) => panic!(
                "expected an error for {:?}, got {h:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }

    #[test]
    fn te_trailers_is_a_member_of_the_te_field() {
        let takes = |te: &str| {
            RequestHead::for_test("GET", "/", Version::Http11, &[("TE", te)]).takes_trailers()
        };
        assert!(takes("trailers"));
        assert!(takes("gzip;q=0.5, Trailers"));
        assert!(!takes("gzip"));
        assert!(!takes("trailersx"));
        assert!(!RequestHead::for_test("GET", "/", Version::Http11, &[]).takes_trailers());
    }

    #[test]
    fn simple_get() {
        let h = parse(b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(&*h.method, "GET");
        assert_eq!(h.path(), "/a/b");
        assert_eq!(h.query(), "x=1&y=%20");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn a_detached_head_keeps_its_fields_but_not_the_read_buffer() {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.extend_from_slice(
            b"GET /chat?room=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        );
        let (mut h, _) = take_head(&mut buf, &Limits::default()).unwrap().unwrap();
        let before = format!("{h:?}");
        h.detach();
        assert_eq!(format!("{h:?}"), before);
        assert_eq!(h.query(), "room=1");
        // The read buffer's allocation is no longer shared: it can be taken back whole.
        assert!(buf.try_reclaim(8 * 1024));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let full = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
        for i in 0..full.len() {
            assert!(parse(&full[..i]).unwrap().is_none(), "prefix {i}");
        }
        let (h, used) = parse_head(full, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, full.len());
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn absolute_form_path() {
        let h = parse(b"GET http://example.com/p?q HTTP/1.1\r\nHost: e\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path(), "/p");
        assert_eq!(h.query(), "q");
    }

    #[test]
    fn http10_keep_alive_rules() {
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn refusals_and_their_statuses() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET /\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
            (b"GET / FOO/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(
                err(raw).status(),
                *status,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn same_content_length_twice_is_accepted() {
        let h =
            parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn limits() {
        let limits = Limits::default();
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
        assert_eq!(err(long.as_bytes()).status(), 414);
        // Even before the line is complete.
        let long = format!("GET /{}", "a".repeat(5000));
        assert_eq!(err(long.as_bytes()).status(), 414);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(err(raw.as_bytes()).status(), 431);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "v".repeat(8190)
        );
        assert_eq!(err(big.as_bytes()).status(), 431);
        let partial = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}", "v".repeat(9000));
        assert_eq!(err(partial.as_bytes()).status(), 431);
        let at_limit = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "v".repeat(8190 - 5)
        );
        assert!(parse_head(at_limit.as_bytes(), &limits).unwrap().is_some());
    }

    #[test]
    fn expect_continue_only_in_http11() {
        let h = parse(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
        let h = parse(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.expect_continue);
    }

    #[test]
    fn one_leading_empty_line_is_skipped_and_more_are_refused() {
        let h = parse(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(&*h.method, "GET");
        for partial in [&b"\r"[..], b"\r\n"] {
            assert!(parse(partial).unwrap().is_none());
        }
        assert_eq!(
            err(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            RequestError::LeadingEmptyLines
        );
        assert_eq!(err(b"\r\n\r"), RequestError::LeadingEmptyLines);
        assert_eq!(
            err(b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            RequestError::BareLf
        );
        assert_eq!(
            err(b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            RequestError::NewLine
        );
    }

    #[test]
    fn a_bare_lf_anywhere_in_the_head_is_refused() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: 2\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: x\n\n",
        ] {
            assert_eq!(err(raw).status(), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn a_second_content_type_is_refused() {
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\ncontent-type: c/d\r\nContent-Length: 0\r\n\r\n"),
            RequestError::DuplicateContentType
        );
        assert!(parse(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap()
        .is_some());
    }

    #[test]
    fn field_size_counts_the_whole_line_and_its_crlf() {
        let limits = Limits {
            field_size: 20,
            ..Limits::default()
        };
        let req = |line: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n");
        // 18 bytes of line + CRLF = 20: at the limit.
        let ok = req("X-Name: 1234567890");
        assert!(parse_head(ok.as_bytes(), &limits).unwrap().is_some());
        // The whitespace around the value counts too, as in Gunicorn.
        for over in [
            "X-Name: 12345678901",
            "X-Name:   1234567890",
            "X-Name: 1234567890 ",
        ] {
            let raw = req(over);
            assert_eq!(
                parse_head(raw.as_bytes(), &limits).unwrap_err(),
                RequestError::HeaderTooLarge(20),
                "{over:?}"
            );
        }
    }

    #[test]
    fn host_values() {
        for ok in [
            "",
            "x",
            "example.com:8080",
            "[::1]",
            "[::1]:80",
            "127.0.0.1:",
            "a-b_c.~%41",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in ["a b", "a/b", "a:b", "[::1", "[]", "[::1]x", "a@b", "a\tb"] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }
}
