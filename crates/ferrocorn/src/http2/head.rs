//! A stream's request head (pseudo-header fields and fields, already decoded by `h2`) as the
//! same [`RequestHead`] an HTTP/1.1 request yields, under the same `--limit-request-*`.

use bytes::Bytes;

use crate::http1::error::RequestError;
use crate::http1::request::{Framing, Header, Limits, RequestHead, Text, Version};

/// Why a stream's head is refused, before the app sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("method {0} is not supported over HTTP/2")]
    Method(String),
}

impl HeadError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::Request(e) => e.status(),
            Self::Method(_) => 501,
        }
    }
}

/// True for an extended CONNECT that asks for a WebSocket (RFC 8441 §4: `:protocol
/// websocket`; `h2` takes `:protocol` only where the driver enabled it).
pub(crate) fn is_websocket(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::CONNECT
        && parts
            .extensions
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// The head of `parts`; `end_stream` when the request has no body (HEADERS carried
/// END_STREAM).
pub(crate) fn request_head(
    parts: &http::request::Parts,
    end_stream: bool,
    limits: &Limits,
) -> Result<RequestHead, HeadError> {
    if parts.method == http::Method::CONNECT && !is_websocket(parts) {
        // Tunnels (RFC 9113 §8.5) have no WSGI meaning; a WebSocket's extended CONNECT
        // (RFC 8441, offered to ASGI apps only) is the exchange's to check.
        return Err(HeadError::Method(parts.method.to_string()));
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // What HTTP/1.1's --limit-request-line bounds: method, target and version on one line.
    if parts.method.as_str().len() + target.len() + 10 > limits.request_line {
        return Err(RequestError::LineTooLong(limits.request_line).into());
    }
    let authority = parts.uri.authority();
    let count = parts.headers.len() + usize::from(authority.is_some());
    if count > limits.fields {
        return Err(RequestError::TooManyHeaders(limits.fields).into());
    }
    let mut headers = Vec::with_capacity(count);
    if let Some(a) = authority {
        // RFC 9113 §8.3.1: :authority stands for Host, and wins over a Host field.
        headers.push(Header {
            name: Text::from("host"),
            value: Bytes::copy_from_slice(a.as_str().as_bytes()),
        });
    }
    let mut length = None;
    for (name, value) in &parts.headers {
        // Counted as an HTTP/1.1 field line: "name: value" and its CRLF.
        if name.as_str().len() + value.len() + 4 > limits.field_size {
            return Err(RequestError::HeaderTooLarge(limits.field_size).into());
        }
        if authority.is_some() && name == http::header::HOST {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            // `h2` has checked it is a number that the DATA frames will match (RFC 9113 §8.1.1).
            let n = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(RequestError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(RequestError::ContentLength.into());
            }
            length = Some(n);
        }
        headers.push(Header {
            name: Text::from(name.as_str()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        });
    }
    let framing = match length {
        Some(n) => Framing::Length(n),
        None if end_stream => Framing::None,
        // A body of unknown length, delimited by END_STREAM (RFC 9113 §8.1).
        None => Framing::Chunked,
    };
    Ok(RequestHead {
        method: Text::from(parts.method.as_str()),
        target: Text::from(target),
        version: Version::Http2,
        headers,
        framing,
        keep_alive: true,
        // RFC 9110 §10.1.1: the client waits for a 100 (or the final response) before it
        // sends the body; only meaningful when a body is to come.
        expect_continue: !end_stream
            && parts.headers.get_all(http::header::EXPECT).iter().any(|v| {
                v.as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue")
            }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn authority_becomes_host_and_cookies_stay_apart() {
        let req = http::Request::builder()
            .method("POST")
            .uri("https://example.com:8443/a/b?x=1")
            .header("host", "other.example")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("content-length", "5")
            .body(())
            .expect("valid request");
        let head = request_head(&parts(req), false, &Limits::default()).expect("accepted");
        assert_eq!(&*head.target, "/a/b?x=1");
        assert_eq!(head.header("host"), Some(&b"example.com:8443"[..]));
        assert_eq!(
            head.headers.iter().filter(|h| &*h.name == "host").count(),
            1
        );
        assert_eq!(
            head.headers.iter().filter(|h| &*h.name == "cookie").count(),
            2
        );
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(head.version, Version::Http2);
    }

    #[test]
    fn limits_apply() {
        let limits = Limits {
            request_line: 64,
            fields: 3,
            field_size: 40,
        };
        let long = http::Request::builder()
            .uri(format!("http://h/{}", "a".repeat(100)))
            .body(())
            .expect("valid");
        let e = request_head(&parts(long), true, &limits).expect_err("too long");
        assert_eq!(e.status(), 414);
        let mut many = http::Request::builder().uri("http://h/");
        for i in 0..4 {
            many = many.header(format!("x-{i}"), "v");
        }
        let e = request_head(&parts(many.body(()).expect("valid")), true, &limits)
            .expect_err("too many");
        assert_eq!(e.status(), 431);
        let big = http::Request::builder()
            .uri("http://h/")
            .header("x-big", "v".repeat(50))
            .body(())
            .expect("valid");
        let e = request_head(&parts(big), true, &limits).expect_err("too big");
        assert_eq!(e.status(), 431);
        let connect = http::Request::builder()
            .method("CONNECT")
            .uri("h:443")
            .body(())
            .expect("valid");
        let e = request_head(&parts(connect), true, &limits).expect_err("no tunnels");
        assert_eq!(e.status(), 501);
    }

    #[test]
    fn a_websocket_extended_connect_goes_to_the_exchange() {
        use crate::websocket::handshake::{Handshake, HandshakeError};
        let connect = |fields: &[(&str, &str)]| {
            let mut b = http::Request::builder()
                .method("CONNECT")
                .uri("https://h/chat?room=1")
                .extension(h2::ext::Protocol::from("websocket"));
            for (name, value) in fields {
                b = b.header(*name, *value);
            }
            parts(b.body(()).expect("valid"))
        };
        let p = connect(&[
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat, v2"),
        ]);
        assert!(is_websocket(&p));
        let head = request_head(&p, false, &Limits::default()).expect("taken");
        assert_eq!((&*head.method, &*head.target), ("CONNECT", "/chat?room=1"));
        let hs = Handshake::check_extended_connect(&head).expect("valid");
        assert_eq!(hs.subprotocols, ["chat", "v2"]);
        assert_eq!(hs.subprotocol(Some("v2")), Ok(Some("v2")));
        assert_eq!(
            hs.subprotocol(Some("mqtt")),
            Err(HandshakeError::NotOffered("mqtt".into()))
        );
        let old = request_head(
            &connect(&[("sec-websocket-version", "8")]),
            false,
            &Limits::default(),
        )
        .expect("taken");
        assert_eq!(
            Handshake::check_extended_connect(&old),
            Err(HandshakeError::BadVersion)
        );
    }

    #[test]
    fn body_framing() {
        let req = http::Request::builder()
            .uri("http://h/")
            .body(())
            .expect("valid");
        let p = parts(req);
        assert_eq!(
            request_head(&p, true, &Limits::default())
                .expect("ok")
                .framing,
            Framing::None
        );
        assert_eq!(
            request_head(&p, false, &Limits::default())
                .expect("ok")
                .framing,
            Framing::Chunked
        );
    }
}
