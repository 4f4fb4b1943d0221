//! The HTTP connection scope (ASGI HTTP spec 2.4) of one request, made from the same
//! `Request` the WSGI environ is made from: the same trusted-proxy facts, the same root path
//! rule (`--root-path`, or a trusted `X-Forwarded-Prefix`), the same TLS facts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use ferrocorn::addr::{Local, Peer};
use ferrocorn::app::Request;
use ferrocorn::http1::request::Version;

use super::names::HeaderNames;
use crate::wsgi::environ::{percent_decode, strip_prefix};

/// The ASGI version and the HTTP scope's spec version this server implements.
pub(crate) const ASGI_VERSION: &str = "3.0";
pub(crate) const HTTP_SPEC_VERSION: &str = "2.4";

/// What every scope of a worker shares.
pub(crate) struct ScopeShared {
    /// `--root-path`, used when no trusted proxy sends a prefix.
    pub root_path: String,
    /// `{"version": "3.0", "spec_version": "2.4"}`.
    asgi: Py<PyDict>,
    /// The `server` tuples made so far, by address and port: a worker has a few listeners, so
    /// each request's is one of a few (immutable) tuples, made once.
    servers: Mutex<Vec<(SocketAddr, Py<PyTuple>)>>,
    /// Every key of a scope, in order: each scope starts as a copy of it, so that filling it
    /// in replaces values instead of growing the dict (three resizes otherwise). The keys
    /// whose value is most often the same immutable object hold it already (`type`
    /// "http", `http_version` "1.1", `scheme` "http", `root_path` `--root-path`,
    /// `query_string` b""), and are only set when the request's differs; the others hold None.
    template: Py<PyDict>,
    /// The last client address made into a str, and that str (a worker's clients are often
    /// a few addresses, a proxy's one; the str is immutable, so requests may share it).
    last_client: Mutex<Option<(IpAddr, Py<PyString>)>>,
    /// The common header names, one `bytes` each for every scope.
    names: HeaderNames,
}

/// A scope's keys, in the order they are filled in.
const KEYS: [&str; 14] = [
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "state",
    "extensions",
];

/// The most `server` tuples kept (a proxy's `X-Forwarded-Port` can vary the port).
const SERVERS_KEPT: usize = 16;

impl ScopeShared {
    pub fn new(py: Python<'_>, root_path: String) -> PyResult<Self> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", ASGI_VERSION)?;
        asgi.set_item("spec_version", HTTP_SPEC_VERSION)?;
        let template = PyDict::new(py);
        for key in KEYS {
            template.set_item(PyString::intern(py, key), py.None())?;
        }
        template.set_item(intern!(py, "type"), intern!(py, "http"))?;
        template.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        template.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
        template.set_item(intern!(py, "query_string"), PyBytes::new(py, b""))?;
        template.set_item(intern!(py, "root_path"), PyString::new(py, &root_path))?;
        Ok(Self {
            root_path,
            asgi: asgi.unbind(),
            servers: Mutex::new(Vec::new()),
            template: template.unbind(),
            last_client: Mutex::new(None),
            names: HeaderNames::new(py),
        })
    }

    /// The client's address as the scope's `client` host: the str made for the last one
    /// when it is the same address.
    fn client_host<'py>(&self, py: Python<'py>, ip: IpAddr) -> Bound<'py, PyString> {
        let mut last = self.last_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, text)) = last.as_ref() {
            if *addr == ip {
                return text.bind(py).clone();
            }
        }
        let text = PyString::new(py, &ip_text(ip));
        *last = Some((ip, text.clone().unbind()));
        text
    }

    /// The `(host, port)` tuple of a TCP listener's address as the scope's `server`.
    fn server<'py>(&self, py: Python<'py>, addr: SocketAddr) -> PyResult<Bound<'py, PyTuple>> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tuple)) = servers.iter().find(|(a, _)| *a == addr) {
            return Ok(tuple.bind(py).clone());
        }
        let tuple = (ip_text(addr.ip()), addr.port()).into_pyobject(py)?;
        if servers.len() >= SERVERS_KEPT {
            servers.remove(0);
        }
        servers.push((addr, tuple.clone().unbind()));
        Ok(tuple)
    }
}

/// An address as `IpAddr`'s `Display` writes it, an IPv4 one without the formatting
/// machinery (the client's address is made into text for every request).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The scope of `req`. `state` is the lifespan's state, shallow-copied into the scope.
pub(crate) fn build<'py>(
    py: Python<'py>,
    shared: &ScopeShared,
    req: &Request,
    state: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let head = &req.head;
    let fwd = &req.forwarded;
    // `type`, and the usual `http_version`, `scheme`, `root_path` and `query_string`, are
    // in the template already (see `ScopeShared::template`).
    let scope = shared.template.bind(py).copy()?;
    // A copy: an app that changes its scope's `asgi` dict changes no other request's.
    scope.set_item(intern!(py, "asgi"), shared.asgi.bind(py).copy()?)?;
    let version = match head.version {
        Version::Http10 => Some(intern!(py, "1.0")),
        Version::Http11 => None,
        Version::Http2 => Some(intern!(py, "2")),
    };
    if let Some(version) = version {
        scope.set_item(intern!(py, "http_version"), version)?;
    }
    scope.set_item(intern!(py, "method"), method(py, &head.method))?;
    let scheme = fwd
        .scheme
        .unwrap_or(if req.tls.is_some() { "https" } else { "http" });
    if scheme != "http" {
        scope.set_item(intern!(py, "scheme"), scheme)?;
    }

    // `path` is decoded (UTF-8, as Uvicorn's `unquote`), `raw_path` as sent. The root path is
    // part of `path` (asgiref: "root_path ... path includes it"): a path that does not carry
    // it already (a proxy that strips its prefix) gets it in front.
    let raw = head.path();
    let root_path = fwd.prefix.as_deref().unwrap_or(&shared.root_path);
    let decoded = percent_decode(raw.as_bytes());
    let path = String::from_utf8_lossy(&decoded);
    let carries_root = strip_prefix(path.as_bytes(), root_path).len() < path.len();
    if root_path.is_empty() || carries_root {
        scope.set_item(intern!(py, "path"), path.as_ref())?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw.as_bytes()))?;
    } else {
        scope.set_item(intern!(py, "path"), format!("{root_path}{path}"))?;
        scope.set_item(
            intern!(py, "raw_path"),
            PyBytes::new(py, format!("{root_path}{raw}").as_bytes()),
        )?;
    }
    let query = head.query();
    if !query.is_empty() {
        scope.set_item(
            intern!(py, "query_string"),
            PyBytes::new(py, query.as_bytes()),
        )?;
    }
    if let Some(prefix) = fwd.prefix.as_deref() {
        scope.set_item(intern!(py, "root_path"), prefix)?;
    }

    // Fields as received, names lower-cased; a trusted proxy's host (when applied) replaces
    // the client's, as it does HTTP_HOST.
    // One buffer for every name lower-cased, not an allocation each; the list made at its
    // length (no growing).
    let mut name = Vec::with_capacity(32);
    let pairs = head.headers.iter().map(|h| {
        name.clear();
        name.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
        let value: &[u8] = match &fwd.host {
            Some(host) if name == b"host" => host.as_bytes(),
            _ => &h.value,
        };
        (shared.names.get(py, &name), PyBytes::new(py, value))
    });
    let headers = PyList::new(py, pairs)?;
    scope.set_item(intern!(py, "headers"), headers)?;

    let client = match (&fwd.client, &req.peer) {
        (Some(ip), _) => Some((*ip, fwd.client_port.unwrap_or(0))),
        (None, Peer::Tcp(addr)) => Some((addr.ip(), addr.port())),
        (None, Peer::Unix) => None,
    };
    if let Some((ip, port)) = client {
        let client = (shared.client_host(py, ip), port).into_pyobject(py)?;
        scope.set_item(intern!(py, "client"), client)?;
    }
    match &req.local {
        Local::Tcp(addr) => {
            let addr = SocketAddr::new(addr.ip(), fwd.port.unwrap_or(addr.port()));
            scope.set_item(intern!(py, "server"), shared.server(py, addr)?)?;
        }
        Local::Unix(path) => scope.set_item(
            intern!(py, "server"),
            (path.display().to_string(), py.None()),
        )?,
    }
    match state {
        Some(state) => scope.set_item(intern!(py, "state"), state.copy()?)?,
        None => scope.del_item(intern!(py, "state"))?,
    }
    scope.set_item(intern!(py, "extensions"), extensions(py, req)?)?;
    Ok(scope)
}

/// The request's method as a str: the common ones interned (made once), others made anew.
fn method<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    let common = match method {
        "GET" => intern!(py, "GET"),
        "POST" => intern!(py, "POST"),
        "HEAD" => intern!(py, "HEAD"),
        "PUT" => intern!(py, "PUT"),
        "DELETE" => intern!(py, "DELETE"),
        "PATCH" => intern!(py, "PATCH"),
        "OPTIONS" => intern!(py, "OPTIONS"),
        other => return PyString::new(py, other),
    };
    common.clone()
}

/// `http.response.pathsend`, `http.response.zerocopysend`, `http.response.early_hint` and
/// `http.response.trailers` always (a 103 and trailers go out where the protocol and the
/// client allow them, see `Call::post`);
/// `tls` on TLS connections (asgiref's TLS extension: the certificates in PEM, the client's
/// as the WSGI environ's SSL_CLIENT_* give it).
fn extensions<'py>(py: Python<'py>, req: &Request) -> PyResult<Bound<'py, PyDict>> {
    let ext = PyDict::new(py);
    ext.set_item(intern!(py, "http.response.pathsend"), PyDict::new(py))?;
    ext.set_item(intern!(py, "http.response.zerocopysend"), PyDict::new(py))?;
    ext.set_item(intern!(py, "http.response.early_hint"), PyDict::new(py))?;
    ext.set_item(intern!(py, "http.response.trailers"), PyDict::new(py))?;
    if let Some(tls) = &req.tls {
        let t = PyDict::new(py);
        t.set_item("server_cert", tls.server_cert.as_deref())?;
        let chain = PyList::empty(py);
        match &tls.client {
            Some(client) => {
                chain.append(PyString::new(py, &client.pem))?;
                for pem in &client.chain {
                    chain.append(PyString::new(py, pem))?;
                }
                t.set_item("client_cert_name", client.subject.as_str())?;
            }
            None => t.set_item("client_cert_name", py.None())?,
        }
        t.set_item("client_cert_chain", chain)?;
        // rustls refuses a certificate that does not verify during the handshake.
        t.set_item("client_cert_error", py.None())?;
        t.set_item("tls_version", tls.version)?;
        t.set_item("cipher_suite", tls.suite)?;
        ext.set_item(intern!(py, "tls"), t)?;
    }
    Ok(ext)
}

#[cfg(test)]
mod tests {
    use super::ip_text;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_read_as_display_writes_them() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 99, 100, 255)),
            IpAddr::V4(Ipv4Addr::new(9, 10, 199, 200)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
        ] {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
