//! Building the WSGI environ (PEP 3333 "environ Variables") for a request: a per-thread template
//! of the constant keys, copied and filled in per request.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use ferrocorn::addr::{Local, Peer};
use ferrocorn::app::Request;
use ferrocorn::http1::request::{Header, Version};
use ferrocorn::http1::response::SERVER;

use super::errors::ErrorStream;
use super::input::InputStream;
use super::Shared;

/// Keys [`build`] sets on every request. The template holds them (as `None`) so that a
/// request's copy already has their slots and only replaces the values.
const EVERY_REQUEST: [&str; 10] = [
    "wsgi.input",
    "wsgi.early_hints",
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "SERVER_NAME",
    "SERVER_PORT",
];

/// The most keys a CPython dict table of 32 slots holds (two thirds of them); one more and
/// the table doubles to 64.
const SMALL_TABLE_KEYS: usize = 21;

/// The keys that are the same for every request a thread serves, and a slot for each key set
/// on every request.
///
/// CPython copies a dict with few deleted entries by cloning its key table, size included.
/// Padding keys (inserted, then deleted) grow that table to 64 slots so that every copy has
/// room for the request's header keys: without it the copy is resized on its first few headers, which
/// cost 3% of a hello request's instructions. Keys are interned, as [`build`]'s are, so that
/// lookups match by identity.
pub(crate) fn template<'py>(
    py: Python<'py>,
    shared: &Shared,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    d.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "http"))?;
    d.set_item(intern!(py, "wsgi.errors"), Bound::new(py, ErrorStream)?)?;
    d.set_item(intern!(py, "wsgi.multithread"), shared.multithread)?;
    d.set_item(intern!(py, "wsgi.multiprocess"), shared.multiprocess)?;
    d.set_item(intern!(py, "wsgi.run_once"), false)?;
    d.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    d.set_item(intern!(py, "wsgi.file_wrapper"), file_wrapper)?;
    d.set_item(intern!(py, "SERVER_SOFTWARE"), SERVER)?;
    d.set_item(intern!(py, "SCRIPT_NAME"), shared.root_path.as_str())?;
    for key in EVERY_REQUEST {
        d.set_item(PyString::intern(py, key), py.None())?;
    }
    let pads: Vec<String> = (d.len()..=SMALL_TABLE_KEYS)
        .map(|i| format!("ferrocorn.padding.{i}"))
        .collect();
    for pad in &pads {
        d.set_item(pad, py.None())?;
    }
    for pad in &pads {
        d.del_item(pad)?;
    }
    Ok(d)
}

/// The last value of one environ key and its str, reused while requests repeat it.
struct Memo<K> {
    last: RefCell<Option<(K, Py<PyString>)>>,
}

impl<K: PartialEq> Memo<K> {
    const fn new() -> Self {
        Self {
            last: RefCell::new(None),
        }
    }

    /// The str for `key`: the last one when `key` is the same as then, else `make`'s (kept
    /// for next time).
    fn get<'py, Q>(
        &self,
        py: Python<'py>,
        key: &Q,
        make: impl FnOnce() -> PyResult<Bound<'py, PyString>>,
    ) -> PyResult<Bound<'py, PyString>>
    where
        Q: ?Sized,
        K: std::borrow::Borrow<Q>,
        Q: PartialEq + ToOwned<Owned = K>,
    {
        let Ok(mut last) = self.last.try_borrow_mut() else {
            return make();
        };
        if let Some((k, s)) = &*last {
            if k.borrow() == key {
                return Ok(s.bind(py).clone());
            }
        }
        let s = make()?;
        match &mut *last {
            // A changed value (a path that varies) reuses the key's buffer: no allocation.
            Some((k, held)) => {
                key.clone_into(k);
                *held = s.clone().unbind();
            }
            None => *last = Some((key.to_owned(), s.clone().unbind())),
        }
        Ok(s)
    }
}

/// Per-thread memos of the environ values that repeat from one request to the next: the
/// client's address behind a proxy, the Host a site is reached by, a path polled again and
/// again. A repeat reuses the str made before (strs are immutable), which spares a hello
/// request six string objects and the text of an address.
pub(crate) struct Memos {
    remote_addr: Memo<IpAddr>,
    host: Memo<Vec<u8>>,
    server_name: Memo<Vec<u8>>,
    server_port: Memo<Vec<u8>>,
    path: Memo<Vec<u8>>,
    raw_uri: Memo<Vec<u8>>,
}

impl Memos {
    pub(crate) const fn new() -> Self {
        Self {
            remote_addr: Memo::new(),
            host: Memo::new(),
            server_name: Memo::new(),
            server_port: Memo::new(),
            path: Memo::new(),
            raw_uri: Memo::new(),
        }
    }
}

/// Longer values are not memoised: comparing them would cost about what making them does.
const MEMO_MAX: usize = 256;

/// `latin1_str` through `memo` for values of usual length.
fn memo_str<'py>(
    py: Python<'py>,
    memo: &Memo<Vec<u8>>,
    bytes: &[u8],
) -> PyResult<Bound<'py, PyString>> {
    if bytes.len() > MEMO_MAX {
        return latin1_str(py, bytes);
    }
    memo.get(py, bytes, || latin1_str(py, bytes))
}

/// The environ for one request.
pub(crate) fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    memos: &Memos,
    req: &Request,
    input: &Bound<'py, InputStream>,
    early_hints: &Bound<'py, PyAny>,
    root_path: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let head = &req.head;
    let fwd = &req.forwarded;
    let env = template.copy()?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.early_hints"), early_hints)?;
    // What a uwsgi front end sends besides the request itself (never a key set below).
    for (key, value) in &req.extra {
        env.set_item(&**key, latin1_str(py, value)?)?;
    }
    env.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, &head.method))?;
    let path = percent_decode(head.path().as_bytes());
    let script_name = match &fwd.prefix {
        Some(prefix) => {
            env.set_item(intern!(py, "SCRIPT_NAME"), prefix.as_str())?;
            prefix.as_str()
        }
        None => root_path,
    };
    env.set_item(
        intern!(py, "PATH_INFO"),
        memo_str(py, &memos.path, strip_prefix(&path, script_name))?,
    )?;
    let query = head.query();
    if query.is_empty() {
        env.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
    } else {
        env.set_item(
            intern!(py, "QUERY_STRING"),
            latin1_str(py, query.as_bytes())?,
        )?;
    }
    env.set_item(
        intern!(py, "RAW_URI"),
        memo_str(py, &memos.raw_uri, head.target.as_bytes())?,
    )?;
    let protocol = match head.version {
        Version::Http10 => intern!(py, "HTTP/1.0"),
        Version::Http11 => intern!(py, "HTTP/1.1"),
        Version::Http2 => intern!(py, "HTTP/2"),
    };
    env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    let scheme = fwd
        .scheme
        .unwrap_or(if req.tls.is_some() { "https" } else { "http" });
    if scheme != "http" {
        env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    }
    if let Some(tls) = &req.tls {
        tls_vars(py, &env, tls)?;
    }

    match (&fwd.client, &req.peer) {
        (Some(ip), _) => {
            let addr = memos.remote_addr.get(py, ip, || ip_str(py, ip))?;
            env.set_item(intern!(py, "REMOTE_ADDR"), addr)?;
            if let Some(port) = fwd.client_port {
                env.set_item(intern!(py, "REMOTE_PORT"), port_str(py, port)?)?;
            }
        }
        (None, Peer::Tcp(addr)) => {
            let ip = addr.ip();
            let text = memos.remote_addr.get(py, &ip, || ip_str(py, &ip))?;
            env.set_item(intern!(py, "REMOTE_ADDR"), text)?;
            env.set_item(intern!(py, "REMOTE_PORT"), port_str(py, addr.port())?)?;
        }
        (None, Peer::Unix) => env.set_item(intern!(py, "REMOTE_ADDR"), "")?,
    }

    // HTTP_* keys (RFC 3875 §4.1.18). Repeated fields are joined with "," (RFC 9110 §5.3).
    // Names holding "_" are dropped: once "-" maps to "_" they could pass for another header
    // (X_Forwarded_For for X-Forwarded-For).
    let mut host: Option<&[u8]> = fwd.host.as_deref().map(str::as_bytes);
    let repeats = has_repeated_fields(&head.headers);
    for (i, h) in head.headers.iter().enumerate() {
        if h.name.as_bytes().contains(&b'_') {
            continue;
        }
        if h.name.eq_ignore_ascii_case("host") {
            if fwd.host.is_some() {
                continue;
            }
            host = Some(&h.value); // the parser lets at most one through
        }
        let value = if repeats {
            if head.headers[..i]
                .iter()
                .any(|e| e.name.eq_ignore_ascii_case(&h.name))
            {
                continue; // joined into the first one
            }
            joined_value(&head.headers[i..], &h.name)
        } else {
            Cow::Borrowed(&h.value[..])
        };
        let value = if h.name.eq_ignore_ascii_case("host") {
            memo_str(py, &memos.host, &value)?
        } else {
            latin1_str(py, &value)?
        };
        env.set_item(header_key(py, &h.name)?, value)?;
    }
    if let Some(h) = &fwd.host {
        env.set_item(intern!(py, "HTTP_HOST"), h.as_str())?;
    }
    finish(py, env, memos, host, req, scheme)
}

/// A TLS connection's variables, named as nginx and Apache's mod_ssl name them, so an app can
/// authorise by client certificate: `HTTPS`, `SSL_PROTOCOL`, `SSL_CIPHER`,
/// `SSL_CLIENT_VERIFY`, and with a certificate `SSL_CLIENT_S_DN`, `SSL_CLIENT_I_DN` (RFC 4514
/// strings) and `SSL_CLIENT_CERT` (PEM).
fn tls_vars<'py>(
    py: Python<'py>,
    env: &Bound<'py, PyDict>,
    tls: &ferrocorn::transport::tls::TlsInfo,
) -> PyResult<()> {
    env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
    env.set_item(intern!(py, "SSL_PROTOCOL"), tls.protocol)?;
    env.set_item(intern!(py, "SSL_CIPHER"), tls.cipher.as_str())?;
    env.set_item(intern!(py, "SSL_CLIENT_VERIFY"), tls.client_verify())?;
    if let Some(client) = &tls.client {
        env.set_item(intern!(py, "SSL_CLIENT_S_DN"), client.subject.as_str())?;
        env.set_item(intern!(py, "SSL_CLIENT_I_DN"), client.issuer.as_str())?;
        env.set_item(intern!(py, "SSL_CLIENT_CERT"), client.pem.as_str())?;
    }
    Ok(())
}

/// Every value of field `name` in `fields`, joined: with "; " for Cookie (RFC 6265 §5.4), the
/// first only for Content-Length, with "," otherwise (RFC 9110 §5.3).
fn joined_value<'a>(fields: &'a [Header], name: &str) -> Cow<'a, [u8]> {
    let mut values = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| &f.value[..]);
    let first = values.next().unwrap_or_default();
    if name.eq_ignore_ascii_case("content-length") {
        return Cow::Borrowed(first);
    }
    let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b","
    };
    let mut joined = first.to_vec();
    for v in values {
        joined.extend_from_slice(sep);
        joined.extend_from_slice(v);
    }
    Cow::Owned(joined)
}

/// SERVER_NAME and SERVER_PORT, last.
fn finish<'py>(
    py: Python<'py>,
    env: Bound<'py, PyDict>,
    memos: &Memos,
    host: Option<&[u8]>,
    req: &Request,
    scheme: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let (name, port) = server_name_port(host, &req.local, scheme);
    let name = memo_str(py, &memos.server_name, name.as_bytes())?;
    env.set_item(intern!(py, "SERVER_NAME"), name)?;
    // The port the server really listens on, unless a trusted proxy's port header (applied
    // only when turned on) says otherwise: a client's Host header does not choose it.
    let port = match (req.forwarded.port, &req.local) {
        (Some(p), _) => port_str(py, p)?,
        (None, Local::Tcp(a)) => {
            let mut digits = StackStr::new();
            digits.push_decimal(a.port());
            memo_str(py, &memos.server_port, digits.as_bytes())?
        }
        (None, Local::Unix(_)) => memo_str(py, &memos.server_port, port.as_bytes())?,
    };
    env.set_item(intern!(py, "SERVER_PORT"), port)?;
    Ok(env)
}

/// True when some field name appears twice (its values are then joined into one key).
fn has_repeated_fields(headers: &[Header]) -> bool {
    headers.iter().enumerate().any(|(i, h)| {
        headers[..i]
            .iter()
            .any(|earlier| earlier.name.eq_ignore_ascii_case(&h.name))
    })
}

/// The environ key of header `name` (which holds no `_`): CONTENT_TYPE, CONTENT_LENGTH, or
/// HTTP_ and the name upper-cased with `-` as `_`. The common ones are interned strings.
fn header_key<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyString>> {
    macro_rules! known {
        ($($field:literal => $key:literal),* $(,)?) => {
            $(if name.eq_ignore_ascii_case($field) {
                return Ok(intern!(py, $key).clone());
            })*
        };
    }
    known!(
        "host" => "HTTP_HOST",
        "user-agent" => "HTTP_USER_AGENT",
        "accept" => "HTTP_ACCEPT",
        "accept-encoding" => "HTTP_ACCEPT_ENCODING",
        "accept-language" => "HTTP_ACCEPT_LANGUAGE",
        "connection" => "HTTP_CONNECTION",
        "content-type" => "CONTENT_TYPE",
        "content-length" => "CONTENT_LENGTH",
        "cookie" => "HTTP_COOKIE",
        "referer" => "HTTP_REFERER",
        "origin" => "HTTP_ORIGIN",
        "authorization" => "HTTP_AUTHORIZATION",
        "cache-control" => "HTTP_CACHE_CONTROL",
        "x-forwarded-for" => "HTTP_X_FORWARDED_FOR",
        "x-forwarded-proto" => "HTTP_X_FORWARDED_PROTO",
        "x-forwarded-host" => "HTTP_X_FORWARDED_HOST",
        "x-real-ip" => "HTTP_X_REAL_IP",
        "x-request-id" => "HTTP_X_REQUEST_ID",
    );
    let mut key = StackStr::new();
    for &b in b"HTTP_" {
        key.push_byte(b);
    }
    for b in name.bytes() {
        key.push_byte(if b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        });
    }
    key.to_py(py)
}

/// The method as a str; the common ones interned.
fn method_str<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    match method {
        "GET" => intern!(py, "GET").clone(),
        "POST" => intern!(py, "POST").clone(),
        "HEAD" => intern!(py, "HEAD").clone(),
        "PUT" => intern!(py, "PUT").clone(),
        "DELETE" => intern!(py, "DELETE").clone(),
        "OPTIONS" => intern!(py, "OPTIONS").clone(),
        "PATCH" => intern!(py, "PATCH").clone(),
        other => PyString::new(py, other),
    }
}

/// REMOTE_ADDR's text. IPv4 is written by hand: `Display` through `core::fmt` was 2% of the
/// hello request's CPU time.
fn ip_str<'py>(py: Python<'py>, ip: &IpAddr) -> PyResult<Bound<'py, PyString>> {
    let mut s = StackStr::new();
    s.push_ip(ip);
    s.to_py(py)
}

impl StackStr {
    fn push_ip(&mut self, ip: &IpAddr) {
        let s = self;
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        s.push_byte(b'.');
                    }
                    s.push_decimal(u16::from(octet));
                }
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write as _;
                let _ = write!(s, "{v6}");
            }
        }
    }
}

/// A port number's text.
fn port_str(py: Python<'_>, port: u16) -> PyResult<Bound<'_, PyString>> {
    let mut s = StackStr::new();
    s.push_decimal(port);
    s.to_py(py)
}

/// Text built on the stack, spilling to the heap past its size.
struct StackStr {
    buf: [u8; 64],
    len: usize,
    spilled: Option<String>,
}

impl StackStr {
    fn new() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
            spilled: None,
        }
    }

    /// Appends an ASCII byte.
    fn push_byte(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) if self.spilled.is_none() => {
                *slot = b;
                self.len += 1;
            }
            _ => {
                let _ = self.push(char::from(b));
            }
        }
    }

    fn push_decimal(&mut self, n: u16) {
        let mut digits = [0u8; 5];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.push_byte(d);
        }
    }

    fn push(&mut self, c: char) -> std::fmt::Result {
        std::fmt::Write::write_str(self, c.encode_utf8(&mut [0; 4]))
    }

    /// The bytes written, when they fit on the stack (a port's digits always do).
    fn as_bytes(&self) -> &[u8] {
        match &self.spilled {
            Some(s) => s.as_bytes(),
            None => &self.buf[..self.len],
        }
    }

    /// The text as a str (only ASCII is written to it).
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        match &self.spilled {
            Some(s) => Ok(PyString::new(py, s)),
            None => latin1_str(py, &self.buf[..self.len]),
        }
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Some(spilled) = &mut self.spilled {
            spilled.push_str(s);
        } else if self.len + s.len() <= self.buf.len() {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut spilled = String::with_capacity(self.len + s.len() + 32);
            spilled.push_str(std::str::from_utf8(&self.buf[..self.len]).unwrap_or(""));
            spilled.push_str(s);
            self.spilled = Some(spilled);
        }
        Ok(())
    }
}

/// PATH_INFO is the path after SCRIPT_NAME when the path still carries it (PEP 3333: the two
/// together make the whole path).
pub(crate) fn strip_prefix<'a>(path: &'a [u8], script_name: &str) -> &'a [u8] {
    if script_name.is_empty() {
        return path;
    }
    match path.strip_prefix(script_name.as_bytes()) {
        Some(rest) if rest.is_empty() || rest.starts_with(b"/") => rest,
        _ => path,
    }
}

/// SERVER_NAME and SERVER_PORT: from the Host header when present, else the local socket.
fn server_name_port<'a>(
    host: Option<&'a [u8]>,
    local: &Local,
    scheme: &str,
) -> (Cow<'a, str>, Cow<'a, str>) {
    let default_port = if scheme == "https" { "443" } else { "80" };
    if let Some(host) = host
        .and_then(|h| std::str::from_utf8(h).ok())
        .filter(|h| !h.is_empty())
    {
        let (name, port) = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((name, tail)) => (name, tail.strip_prefix(':')),
                None => (host, None),
            }
        } else {
            match host.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (host, None),
            }
        };
        let port = port.filter(|p| !p.is_empty()).unwrap_or(default_port);
        return (Cow::Borrowed(name), Cow::Borrowed(port));
    }
    match local {
        Local::Tcp(a) => (
            Cow::Owned(a.ip().to_string()),
            Cow::Owned(a.port().to_string()),
        ),
        Local::Unix(_) => (Cow::Borrowed("localhost"), Cow::Borrowed(default_port)),
    }
}

/// Percent-decodes a path; invalid escapes are kept as they are.
pub(crate) fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Bytes as a native string, decoded as latin-1 (PEP 3333 "Unicode Issues"). ASCII, the usual
/// case, is copied straight into a new str: no decoder runs.
fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too long"))?;
    // SAFETY: the new str's 1-byte buffer holds `len` characters (max char 127: ASCII), and is
    // filled from `bytes` before the object is used; DecodeLatin1 reads `len` bytes of `bytes`.
    unsafe {
        let ptr = if bytes.is_ascii() {
            let ptr = ffi::PyUnicode_New(len, 127);
            if !ptr.is_null() {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    ffi::PyUnicode_1BYTE_DATA(ptr),
                    bytes.len(),
                );
            }
            ptr
        } else {
            ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null())
        };
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_written_by_hand_as_display_would() {
        let text = |s: &StackStr| std::str::from_utf8(&s.buf[..s.len]).map(str::to_owned);
        for n in [0u16, 7, 10, 99, 100, 8080, 65535] {
            let mut s = StackStr::new();
            s.push_decimal(n);
            assert_eq!(text(&s).as_deref(), Ok(n.to_string().as_str()));
        }
        for ip in ["127.0.10.255", "0.0.0.0", "::1", "2001:db8::7"] {
            let mut s = StackStr::new();
            s.push_ip(&ip.parse().expect("address"));
            assert_eq!(text(&s).as_deref(), Ok(ip));
        }
    }

    #[test]
    fn repeated_fields_are_joined_by_their_rules() {
        let field = |n: &str, v: &str| Header {
            name: n.into(),
            value: bytes::Bytes::copy_from_slice(v.as_bytes()),
        };
        let fields = [
            field("X-Multi", "a"),
            field("Cookie", "k=1"),
            field("x-multi", "b"),
            field("Content-Length", "3"),
            field("cookie", "j=2"),
            field("Content-Length", "3"),
        ];
        assert_eq!(&*joined_value(&fields, "X-Multi"), b"a,b");
        assert_eq!(&*joined_value(&fields, "Cookie"), b"k=1; j=2");
        assert_eq!(&*joined_value(&fields, "Content-Length"), b"3");
    }

    #[test]
    fn stack_text_spills_to_the_heap_when_long() {
        use std::fmt::Write as _;
        let mut s = StackStr::new();
        s.write_str("HTTP_").expect("write");
        assert_eq!((s.len, s.spilled.is_none()), (5, true));
        let long = "X".repeat(100);
        s.write_str(&long).expect("write");
        assert_eq!(s.spilled.as_deref(), Some(format!("HTTP_{long}").as_str()));
        s.push('!').expect("write");
        assert!(s.spilled.as_deref().is_some_and(|t| t.ends_with("X!")));
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/caf%C3%A9"), b"/caf\xc3\xa9");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
        assert_eq!(&*percent_decode(b"/%41"), b"/A");
    }

    #[test]
    fn path_info_after_script_name() {
        assert_eq!(strip_prefix(b"/app/x", "/app"), b"/x");
        assert_eq!(strip_prefix(b"/app", "/app"), b"");
        assert_eq!(strip_prefix(b"/application", "/app"), b"/application");
        assert_eq!(strip_prefix(b"/x", ""), b"/x");
    }

    #[test]
    fn server_name_from_host() {
        let local = Local::Tcp("127.0.0.1:9000".parse().unwrap());
        let (n, p) = server_name_port(Some(b"example.com:8080"), &local, "http");
        assert_eq!((n.as_ref(), p.as_ref()), ("example.com", "8080"));
        let (n, p) = server_name_port(Some(b"[::1]:81"), &local, "http");
        assert_eq!((n.as_ref(), p.as_ref()), ("::1", "81"));
        let (n, p) = server_name_port(Some(b"example.com"), &local, "http");
        assert_eq!((n.as_ref(), p.as_ref()), ("example.com", "80"));
        let (_, p) = server_name_port(Some(b"example.com"), &local, "https");
        assert_eq!(p.as_ref(), "443");
        let (n, p) = server_name_port(None, &local, "http");
        assert_eq!((n.as_ref(), p.as_ref()), ("127.0.0.1", "9000"));
    }
}
