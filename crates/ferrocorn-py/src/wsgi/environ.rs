//! Building the WSGI environ (PEP 3333 "environ Variables") for a request: a per-thread template
//! of the constant keys, copied and filled in per request.

use std::borrow::Cow;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use ferrocorn::app::{Local, Peer, Request};
use ferrocorn::http::response::SERVER;

use super::errors::ErrorStream;
use super::input::InputStream;
use super::Shared;

/// The keys that are the same for every request a thread serves.
pub(crate) fn template<'py>(
    py: Python<'py>,
    shared: &Shared,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    d.set_item("wsgi.url_scheme", "http")?;
    d.set_item("wsgi.errors", Bound::new(py, ErrorStream)?)?;
    d.set_item("wsgi.multithread", shared.multithread)?;
    d.set_item("wsgi.multiprocess", shared.multiprocess)?;
    d.set_item("wsgi.run_once", false)?;
    d.set_item("wsgi.input_terminated", true)?;
    d.set_item("wsgi.file_wrapper", file_wrapper)?;
    d.set_item("SERVER_SOFTWARE", SERVER)?;
    d.set_item("SCRIPT_NAME", "")?;
    Ok(d)
}

/// The environ for one request.
pub(crate) fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    req: &Request,
    input: &Bound<'py, InputStream>,
) -> PyResult<Bound<'py, PyDict>> {
    let head = &req.head;
    let env = template.copy()?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "REQUEST_METHOD"), &*head.method)?;
    env.set_item(
        intern!(py, "PATH_INFO"),
        latin1_str(py, &percent_decode(head.path().as_bytes())),
    )?;
    env.set_item(intern!(py, "QUERY_STRING"), head.query())?;
    env.set_item(intern!(py, "RAW_URI"), &*head.target)?;
    env.set_item(intern!(py, "SERVER_PROTOCOL"), head.version.as_str())?;

    match &req.peer {
        Peer::Tcp(addr) => {
            env.set_item(intern!(py, "REMOTE_ADDR"), addr.ip().to_string())?;
            env.set_item(intern!(py, "REMOTE_PORT"), addr.port().to_string())?;
        }
        Peer::Unix => env.set_item(intern!(py, "REMOTE_ADDR"), "")?,
    }

    // HTTP_* keys (RFC 3875 §4.1.18). Repeated fields are joined with "," (RFC 9110 §5.3).
    // Names holding "_" are dropped: once "-" maps to "_" they could pass for another header
    // (X_Forwarded_For for X-Forwarded-For).
    let mut host: Option<&[u8]> = None;
    let mut merged: Vec<(String, Vec<u8>)> = Vec::with_capacity(head.headers.len());
    for h in &head.headers {
        if h.name.contains('_') {
            continue;
        }
        let key = if h.name.eq_ignore_ascii_case("content-type") {
            "CONTENT_TYPE".to_owned()
        } else if h.name.eq_ignore_ascii_case("content-length") {
            "CONTENT_LENGTH".to_owned()
        } else {
            if h.name.eq_ignore_ascii_case("host") {
                host = Some(&h.value);
            }
            let mut k = String::with_capacity(5 + h.name.len());
            k.push_str("HTTP_");
            k.extend(h.name.chars().map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            }));
            k
        };
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some((k, v)) if k != "CONTENT_LENGTH" => {
                let sep: &[u8] = if k == "HTTP_COOKIE" { b"; " } else { b"," };
                v.extend_from_slice(sep);
                v.extend_from_slice(&h.value);
            }
            Some(_) => {}
            None => merged.push((key, h.value.to_vec())),
        }
    }
    for (k, v) in &merged {
        env.set_item(k, latin1_str(py, v))?;
    }

    let (name, port) = server_name_port(host, &req.local);
    env.set_item(intern!(py, "SERVER_NAME"), name.as_ref())?;
    env.set_item(intern!(py, "SERVER_PORT"), port.as_ref())?;
    Ok(env)
}

/// SERVER_NAME and SERVER_PORT: from the Host header when present, else the local socket.
fn server_name_port<'a>(host: Option<&'a [u8]>, local: &Local) -> (Cow<'a, str>, Cow<'a, str>) {
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
        let port = port.filter(|p| !p.is_empty()).unwrap_or("80");
        return (Cow::Borrowed(name), Cow::Borrowed(port));
    }
    match local {
        Local::Tcp(a) => (
            Cow::Owned(a.ip().to_string()),
            Cow::Owned(a.port().to_string()),
        ),
        Local::Unix(_) => (Cow::Borrowed("localhost"), Cow::Borrowed("80")),
    }
}

/// Percent-decodes a path; invalid escapes are kept as they are.
fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
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

/// Bytes as a native string, decoded as latin-1 (PEP 3333 "Unicode Issues").
fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => PyString::new(py, s),
        _ => {
            let s: String = bytes.iter().map(|&b| char::from(b)).collect();
            PyString::new(py, &s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/caf%C3%A9"), b"/caf\xc3\xa9");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
        assert_eq!(&*percent_decode(b"/%41"), b"/A");
    }

    #[test]
    fn server_name_from_host() {
        let local = Local::Tcp("127.0.0.1:9000".parse().unwrap());
        let (n, p) = server_name_port(Some(b"example.com:8080"), &local);
        assert_eq!((n.as_ref(), p.as_ref()), ("example.com", "8080"));
        let (n, p) = server_name_port(Some(b"[::1]:81"), &local);
        assert_eq!((n.as_ref(), p.as_ref()), ("::1", "81"));
        let (n, p) = server_name_port(Some(b"example.com"), &local);
        assert_eq!((n.as_ref(), p.as_ref()), ("example.com", "80"));
        let (n, p) = server_name_port(None, &local);
        assert_eq!((n.as_ref(), p.as_ref()), ("127.0.0.1", "9000"));
    }
}
