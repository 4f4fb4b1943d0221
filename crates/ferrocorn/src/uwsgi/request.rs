//! Turning a packet's CGI variables into the request the HTTP/1.1 driver would have made: the
//! same [`RequestHead`] (method, target, version, header fields, body framing), what the front
//! end says about the client ([`Forwarded`]), and the other variables for the environ.

use std::net::IpAddr;

use bytes::Bytes;
use percent_encoding::{percent_decode, percent_encode, AsciiSet, CONTROLS};

use super::packet::{Vars, MANAGE_PATH_INFO};
use super::UwsgiError;
use crate::http1::error::RequestError;
use crate::http1::request::{is_tchar, Framing, Header, Limits, RequestHead, Text, Version};
use crate::proxy::Forwarded;

/// A request read from a uwsgi packet.
#[derive(Debug)]
pub struct UwsgiRequest {
    pub head: RequestHead,
    pub forwarded: Forwarded,
    /// Variables passed to the environ as they are (see [`is_passed_through`]).
    pub extra: Vec<(Text, Bytes)>,
}

/// Variables the environ gets from the head and [`Forwarded`], the way it does for HTTP, so
/// they are not also passed through raw.
const MADE_FROM_THE_HEAD: &[&str] = &[
    "REQUEST_METHOD",
    "PATH_INFO",
    "SCRIPT_NAME",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_SOFTWARE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
];

/// Bytes of a decoded path that are percent-encoded again to make a request target: all but
/// RFC 3986's unreserved characters, sub-delims, ':', '@' and '/' (§3.3 `pchar`).
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Builds the request from a packet's variables, within Gunicorn's request limits (the
/// method and target count as a request line, each `HTTP_*` variable as a header field).
pub fn build(vars: &Vars, limits: &Limits) -> Result<UwsgiRequest, UwsgiError> {
    let method = vars
        .get("REQUEST_METHOD")
        .ok_or(UwsgiError::Missing("REQUEST_METHOD"))?;
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(UwsgiError::Invalid("REQUEST_METHOD"));
    }
    let method = ascii(method, "REQUEST_METHOD")?;
    let target = target(vars)?;
    if method.len() + 1 + target.len() + 9 > limits.request_line {
        return Err(UwsgiError::Limit(RequestError::LineTooLong(
            limits.request_line,
        )));
    }
    let version = match vars.get("SERVER_PROTOCOL") {
        Some(b"HTTP/1.0") => Version::Http10,
        // HTTP/1.1, and HTTP/2 or HTTP/3 spoken to the front end: the nearest we have.
        Some(p) if p.starts_with(b"HTTP/") => Version::Http11,
        None => Version::Http11,
        Some(_) => return Err(UwsgiError::Invalid("SERVER_PROTOCOL")),
    };

    let mut headers = Vec::new();
    let mut extra = Vec::new();
    for (name, value) in &vars.vars {
        if let Some(field) = name.strip_prefix(b"HTTP_") {
            // The CGI variables below are the ones that count for the body; nginx may send
            // the client's fields as HTTP_CONTENT_* as well.
            if field == b"CONTENT_LENGTH" || field == b"CONTENT_TYPE" {
                continue;
            }
            headers.push(field_from_var(field, value.clone())?);
        } else if let Some(key) = passed_through(name) {
            extra.push((key, value.clone()));
        }
    }
    let length = match vars.get("CONTENT_LENGTH") {
        None | Some(b"") => 0,
        Some(n) => std::str::from_utf8(n)
            .ok()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(UwsgiError::Invalid("CONTENT_LENGTH"))?,
    };
    if length > 0 {
        headers.push(Header {
            name: Text::from("Content-Length"),
            value: Bytes::from(length.to_string()),
        });
    }
    if let Some(ct) = vars.get("CONTENT_TYPE").filter(|v| !v.is_empty()) {
        headers.push(field_from_var(b"CONTENT_TYPE", Bytes::copy_from_slice(ct))?);
    }
    if headers.len() > limits.fields {
        return Err(UwsgiError::Limit(RequestError::TooManyHeaders(
            limits.fields,
        )));
    }
    if let Some(h) = headers
        .iter()
        .find(|h| h.name.len() + 2 + h.value.len() > limits.field_size)
    {
        log::debug!("uwsgi: header {} too large", h.name);
        return Err(UwsgiError::Limit(RequestError::HeaderTooLarge(
            limits.field_size,
        )));
    }

    let head = RequestHead {
        method: Text::from(method),
        target: Text::from(target.as_str()),
        version,
        headers,
        framing: if length > 0 {
            Framing::Length(length)
        } else {
            Framing::None
        },
        // uWSGI's way with nginx: one request per connection.
        keep_alive: false,
        // The front end answers `Expect: 100-continue` itself.
        expect_continue: false,
    };
    Ok(UwsgiRequest {
        head,
        forwarded: forwarded(vars)?,
        extra,
    })
}

/// The request target: REQUEST_URI as the client sent it when it still says what PATH_INFO
/// (with SCRIPT_NAME) and QUERY_STRING say, so the environ is what it would be over HTTP;
/// otherwise (the front end rewrote the request, or normalised its path) a target made from
/// those variables, which is what uWSGI hands the app.
fn target(vars: &Vars) -> Result<String, UwsgiError> {
    let uri = vars
        .get("REQUEST_URI")
        .filter(|u| !u.is_empty())
        .map(|u| {
            (u[0] == b'/' && u.iter().all(u8::is_ascii_graphic))
                .then_some(u)
                .ok_or(UwsgiError::Invalid("REQUEST_URI"))
        })
        .transpose()?;
    let query = vars
        .get("QUERY_STRING")
        .map(|q| {
            q.iter()
                .all(u8::is_ascii_graphic)
                .then_some(q)
                .ok_or(UwsgiError::Invalid("QUERY_STRING"))
        })
        .transpose()?;
    let Some(path_info) = vars.get("PATH_INFO") else {
        let uri = uri.ok_or(UwsgiError::Missing("REQUEST_URI or PATH_INFO"))?;
        return ascii(uri, "REQUEST_URI").map(str::to_owned);
    };
    let mut path = Vec::with_capacity(path_info.len() + 16);
    if vars.modifier1 != MANAGE_PATH_INFO {
        // PEP 3333: SCRIPT_NAME and PATH_INFO together make the whole path.
        path.extend_from_slice(vars.get("SCRIPT_NAME").unwrap_or_default());
    }
    path.extend_from_slice(path_info);
    if path.first() != Some(&b'/') {
        return Err(UwsgiError::Invalid("PATH_INFO"));
    }
    if let Some(uri) = uri {
        let (uri_path, uri_query) = split_target(uri);
        let same_path = percent_decode(uri_path).eq(path.iter().copied());
        if same_path && query.is_none_or(|q| q == uri_query) {
            return ascii(uri, "REQUEST_URI").map(str::to_owned);
        }
    }
    let mut target = percent_encode(&path, PATH_ESCAPES).to_string();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(ascii(q, "QUERY_STRING")?);
    }
    Ok(target)
}

/// A target's path and query (without any fragment).
fn split_target(uri: &[u8]) -> (&[u8], &[u8]) {
    let uri = uri.split(|&b| b == b'#').next().unwrap_or_default();
    match uri.iter().position(|&b| b == b'?') {
        Some(i) => (&uri[..i], &uri[i + 1..]),
        None => (uri, b""),
    }
}

/// What the front end says about the client and how it connected. Only allowed peers get
/// this far, and they are the proxy: their word replaces the socket's, as X-Forwarded-* from
/// a trusted proxy does over HTTP.
fn forwarded(vars: &Vars) -> Result<Forwarded, UwsgiError> {
    let mut f = Forwarded {
        // A front end reached over a unix socket sends "unix:"; the socket's peer stands then.
        client: vars
            .get("REMOTE_ADDR")
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<IpAddr>().ok()),
        ..Forwarded::default()
    };
    if f.client.is_some() {
        f.client_port = vars
            .get("REMOTE_PORT")
            .filter(|p| !p.is_empty())
            .map(|p| port(p, "REMOTE_PORT"))
            .transpose()?;
    }
    f.port = vars
        .get("SERVER_PORT")
        .filter(|p| !p.is_empty())
        .map(|p| port(p, "SERVER_PORT"))
        .transpose()?;
    // uWSGI's order: an explicit scheme, then HTTPS=on, then nginx's REQUEST_SCHEME.
    let explicit = vars
        .get("UWSGI_SCHEME")
        .or_else(|| vars.get("wsgi.url_scheme"));
    let https_on = vars.get("HTTPS").is_some_and(|v| {
        v.eq_ignore_ascii_case(b"on") || v == b"1" || v.eq_ignore_ascii_case(b"true")
    });
    let scheme = match explicit {
        Some(s) => Some(s),
        None if https_on => Some(&b"https"[..]),
        None => vars.get("REQUEST_SCHEME"),
    };
    f.scheme = match scheme {
        Some(s) if s.eq_ignore_ascii_case(b"https") => Some("https"),
        Some(s) if s.eq_ignore_ascii_case(b"http") || s.is_empty() => None,
        Some(_) => {
            return Err(UwsgiError::Invalid(
                "the scheme (UWSGI_SCHEME, REQUEST_SCHEME)",
            ))
        }
        None => None,
    };
    if let Some(prefix) = vars.get("SCRIPT_NAME").filter(|p| !p.is_empty()) {
        let prefix = std::str::from_utf8(prefix)
            .ok()
            .filter(|p| p.starts_with('/'))
            .ok_or(UwsgiError::Invalid("SCRIPT_NAME"))?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            f.prefix = Some(prefix.to_owned());
        }
    }
    Ok(f)
}

fn port(p: &[u8], var: &'static str) -> Result<u16, UwsgiError> {
    std::str::from_utf8(p)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or(UwsgiError::Invalid(var))
}

/// A header field from an `HTTP_*` variable: `ACCEPT_ENCODING` is `ACCEPT-ENCODING` (the
/// front end mapped `-` to `_`; nginx drops fields whose names hold `_` by default, so the
/// mapping back is exact for what it sends).
fn field_from_var(name: &[u8], value: Bytes) -> Result<Header, UwsgiError> {
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(UwsgiError::Invalid("an HTTP_* variable's name"));
    }
    // RFC 9110 §5.5: no CR, LF, NUL or other control character in a field value.
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(UwsgiError::Invalid("an HTTP_* variable's value"));
    }
    let name: String = name
        .iter()
        .map(|&b| if b == b'_' { '-' } else { char::from(b) })
        .collect();
    Ok(Header {
        name: Text::from(name.as_str()),
        value,
    })
}

/// The environ key for a variable passed through as it is: CGI-style names (upper-case
/// letters, digits, `_`) other than those the environ makes itself. `wsgi.*` and other
/// lower-case names never pass, so the front end cannot replace `wsgi.input`.
fn passed_through(name: &[u8]) -> Option<Text> {
    let ok = name.first().is_some_and(u8::is_ascii_uppercase)
        && name
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    let name = std::str::from_utf8(name).ok().filter(|_| ok)?;
    (!MADE_FROM_THE_HEAD.contains(&name)).then(|| Text::from(name))
}

fn ascii<'a>(b: &'a [u8], var: &'static str) -> Result<&'a str, UwsgiError> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| s.is_ascii())
        .ok_or(UwsgiError::Invalid(var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uwsgi::packet::{encode, take_packet};
    use bytes::BytesMut;

    /// What nginx's stock uwsgi_params send for `GET /a%20b?x=1` from 10.1.2.3:5555.
    fn nginx(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("QUERY_STRING", "x=1"),
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_TYPE", ""),
            ("CONTENT_LENGTH", ""),
            ("REQUEST_URI", "/a%20b?x=1"),
            ("PATH_INFO", "/a b"),
            ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_SCHEME", "http"),
            ("REMOTE_ADDR", "10.1.2.3"),
            ("REMOTE_PORT", "5555"),
            ("SERVER_PORT", "8080"),
            ("SERVER_NAME", "app.example"),
            ("HTTP_HOST", "app.example:8080"),
            ("HTTP_ACCEPT_ENCODING", "gzip"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, val) in extra {
            v.retain(|(key, _)| key != k);
            v.push(((*k).to_owned(), (*val).to_owned()));
        }
        v
    }

    fn req(vars: &[(String, String)]) -> Result<UwsgiRequest, UwsgiError> {
        req_with(vars, 0)
    }

    fn req_with(vars: &[(String, String)], modifier1: u8) -> Result<UwsgiRequest, UwsgiError> {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let mut packet = encode(&pairs);
        packet[0] = modifier1;
        let mut buf = BytesMut::from(&packet[..]);
        let vars = take_packet(&mut buf)?.expect("whole packet");
        build(&vars, &Limits::default())
    }

    #[test]
    fn nginx_defaults_make_the_http_request() {
        let r = req(&nginx(&[])).unwrap();
        assert_eq!(&*r.head.method, "GET");
        assert_eq!(&*r.head.target, "/a%20b?x=1");
        assert_eq!(r.head.version, Version::Http11);
        assert_eq!(r.head.framing, Framing::None);
        assert!(!r.head.keep_alive);
        assert_eq!(r.head.header("host"), Some(&b"app.example:8080"[..]));
        assert_eq!(r.head.header("accept-encoding"), Some(&b"gzip"[..]));
        assert_eq!(r.head.header("content-length"), None);
        assert_eq!(r.forwarded.client, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(r.forwarded.client_port, Some(5555));
        assert_eq!(r.forwarded.port, Some(8080));
        assert_eq!(r.forwarded.scheme, None);
        let extra: Vec<&str> = r.extra.iter().map(|(k, _)| &**k).collect();
        assert_eq!(extra, ["REQUEST_URI", "DOCUMENT_ROOT", "REQUEST_SCHEME"]);
    }

    #[test]
    fn body_https_and_script_name() {
        let r = req(&nginx(&[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "12"),
            ("CONTENT_TYPE", "text/plain"),
            ("HTTP_CONTENT_LENGTH", "99"),
            ("HTTPS", "on"),
            ("SCRIPT_NAME", "/app"),
            ("PATH_INFO", "/x"),
            ("REQUEST_URI", "/app/x?x=1"),
        ]))
        .unwrap();
        assert_eq!(r.head.framing, Framing::Length(12));
        assert_eq!(r.head.header("content-length"), Some(&b"12"[..]));
        assert_eq!(r.head.header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(r.forwarded.scheme, Some("https"));
        assert_eq!(r.forwarded.prefix.as_deref(), Some("/app"));
        assert_eq!(&*r.head.target, "/app/x?x=1");
    }

    #[test]
    fn modifier_30_strips_script_name_from_path_info() {
        // `uwsgi_param SCRIPT_NAME /app; uwsgi_modifier1 30;` for `GET /app/x`.
        let vars = nginx(&[
            ("SCRIPT_NAME", "/app"),
            ("PATH_INFO", "/app/x"),
            ("REQUEST_URI", "/app/x?x=1"),
        ]);
        let r = req_with(&vars, 30).unwrap();
        assert_eq!(&*r.head.target, "/app/x?x=1");
        assert_eq!(r.forwarded.prefix.as_deref(), Some("/app"));
        // Without the modifier the two are joined, as uWSGI does.
        assert_eq!(&*req(&vars).unwrap().head.target, "/app/app/x?x=1");
    }

    #[test]
    fn a_rewritten_request_follows_path_info() {
        // `rewrite ^/old/(.*) /new/$1`: REQUEST_URI is still what the client sent.
        let r = req(&nginx(&[
            ("REQUEST_URI", "/old/p%3F?x=1"),
            ("PATH_INFO", "/new/p?"),
            ("QUERY_STRING", "y=2"),
        ]))
        .unwrap();
        assert_eq!(&*r.head.target, "/new/p%3F?y=2");
        // Without REQUEST_URI at all.
        let mut vars = nginx(&[("PATH_INFO", "/é")]);
        vars.retain(|(k, _)| k != "REQUEST_URI");
        assert_eq!(&*req(&vars).unwrap().head.target, "/%C3%A9?x=1");
    }

    #[test]
    fn malformed_variables_are_refused() {
        for bad in [
            ("REQUEST_METHOD", "G T"),
            ("REQUEST_URI", "no-slash"),
            ("REQUEST_URI", "/a\u{1}"),
            ("QUERY_STRING", "a b"),
            ("CONTENT_LENGTH", "-1"),
            ("CONTENT_LENGTH", "1x"),
            ("SERVER_PROTOCOL", "SPDY/3"),
            ("HTTP_X_EVIL", "a\r\nSet-Cookie: x"),
            ("HTTP_BAD NAME", "v"),
            ("REMOTE_PORT", "99999"),
            ("SERVER_PORT", "x"),
            ("REQUEST_SCHEME", "gopher"),
            ("SCRIPT_NAME", "relative"),
        ] {
            assert!(req(&nginx(&[bad])).is_err(), "{bad:?} was accepted");
        }
        let mut vars = nginx(&[]);
        vars.retain(|(k, _)| k != "REQUEST_METHOD");
        assert!(matches!(
            req(&vars),
            Err(UwsgiError::Missing("REQUEST_METHOD"))
        ));
    }

    #[test]
    fn limits_apply_as_over_http() {
        let long = format!("/{}", "a".repeat(5000));
        let e = req(&nginx(&[("REQUEST_URI", &long), ("PATH_INFO", &long)])).unwrap_err();
        assert!(matches!(e, UwsgiError::Limit(RequestError::LineTooLong(_))));
        let big = "v".repeat(9000);
        let e = req(&nginx(&[("HTTP_X_BIG", &big)])).unwrap_err();
        assert!(matches!(
            e,
            UwsgiError::Limit(RequestError::HeaderTooLarge(_))
        ));
        let many: Vec<(String, String)> = (0..150)
            .map(|i| (format!("HTTP_X_{i}"), "v".to_owned()))
            .collect();
        let mut vars = nginx(&[]);
        vars.extend(many);
        let e = req(&vars).unwrap_err();
        assert!(matches!(
            e,
            UwsgiError::Limit(RequestError::TooManyHeaders(_))
        ));
    }

    #[test]
    fn only_cgi_style_names_pass_through() {
        let r = req(&nginx(&[
            ("wsgi.input", "x"),
            ("wsgi.url_scheme", "https"),
            ("MY_SETTING", "on"),
            ("lower", "x"),
            ("REMOTE_USER", "ann"),
        ]))
        .unwrap();
        let extra: Vec<&str> = r.extra.iter().map(|(k, _)| &**k).collect();
        assert!(extra.contains(&"MY_SETTING") && extra.contains(&"REMOTE_USER"));
        assert!(!extra.iter().any(|k| k.starts_with("wsgi") || *k == "lower"));
        assert_eq!(r.forwarded.scheme, Some("https"));
    }
}
