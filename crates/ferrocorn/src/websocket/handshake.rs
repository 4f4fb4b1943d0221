//! The opening handshake, server side (RFC 6455 §4.2): the client's request checked as §4.2.1
//! asks, the subprotocol and extensions it offers, and the `101` that accepts it.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

use super::deflate::negotiate::{self, Offer};
use super::deflate::Deflate;
use super::WsConfig;
use crate::http1::request::{is_tchar, Framing, RequestHead, Version};

/// The GUID every accept key is made with (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request does not open a WebSocket; each is answered with [`HandshakeError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("a WebSocket handshake must be an HTTP/1.1 GET without a body")]
    NotGet,
    #[error("no `Upgrade: websocket`")]
    NoUpgrade,
    #[error("no `Connection: upgrade`")]
    NoConnectionUpgrade,
    #[error("Sec-WebSocket-Key missing, repeated, or not 16 bytes in base64")]
    BadKey,
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    BadVersion,
    #[error("malformed Sec-WebSocket-Protocol")]
    BadSubprotocols,
    #[error("subprotocol {0:?} was not offered by the client")]
    NotOffered(String),
}

impl HandshakeError {
    /// The status the request is answered with: 426 with `Sec-WebSocket-Version: 13` for a
    /// version the server does not speak (§4.4), 400 otherwise (§4.2.1); 500 when the app
    /// chose a subprotocol the client did not offer (the app's fault).
    pub fn status(&self) -> u16 {
        match self {
            Self::BadVersion => 426,
            Self::NotOffered(_) => 500,
            _ => 400,
        }
    }
}

/// A valid opening handshake, waiting for the app's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `Sec-WebSocket-Accept`'s value.
    accept: String,
    /// The subprotocols the client offered, in its order of preference.
    pub subprotocols: Vec<String>,
    /// The extensions the client offered, by name.
    pub extensions: Vec<String>,
    /// Its valid offers of permessage-deflate, in its order (invalid ones are declined).
    deflate_offers: Vec<Offer>,
    /// What [`Self::negotiate`] took up, answered by [`Self::accept`].
    deflate: Option<Deflate>,
}

/// Every value of the fields named `name`, split at commas and trimmed.
fn tokens<'a>(head: &'a RequestHead, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2, item 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

impl Handshake {
    /// Checks `head` as RFC 6455 §4.2.1 asks of a server.
    pub fn check(head: &RequestHead) -> Result<Self, HandshakeError> {
        if head.version != Version::Http11
            || &*head.method != "GET"
            || !matches!(head.framing, Framing::None | Framing::Length(0))
        {
            return Err(HandshakeError::NotGet);
        }
        if !tokens(head, "upgrade").any(|t| t.eq_ignore_ascii_case(b"websocket")) {
            return Err(HandshakeError::NoUpgrade);
        }
        if !tokens(head, "connection").any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
            return Err(HandshakeError::NoConnectionUpgrade);
        }
        let mut keys = head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"));
        let key = match (keys.next(), keys.next()) {
            (Some(k), None) => k.value.trim_ascii(),
            _ => return Err(HandshakeError::BadKey),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| HandshakeError::BadKey)?;
        if decoded.len() != 16 {
            return Err(HandshakeError::BadKey);
        }
        Self::offered(head, accept_key(key))
    }

    /// Checks an HTTP/2 extended CONNECT (RFC 8441 §4: `:method CONNECT` with `:protocol
    /// websocket`, which the HTTP/2 driver has seen; `Sec-WebSocket-Version: 13`, and no
    /// `Sec-WebSocket-Key`: the stream is the connection, nothing to prove). Its answer is a
    /// `200` with the app's subprotocol ([`Self::subprotocol`]) and [`Self::deflate`]'s
    /// response, not [`Self::accept`]'s `101`.
    pub fn check_extended_connect(head: &RequestHead) -> Result<Self, HandshakeError> {
        if head.version != Version::Http2 || &*head.method != "CONNECT" {
            return Err(HandshakeError::NotGet);
        }
        Self::offered(head, String::new())
    }

    /// The rest of a handshake's check, for both: version 13, and the subprotocols and
    /// extensions offered.
    fn offered(head: &RequestHead, accept: String) -> Result<Self, HandshakeError> {
        let mut versions = head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-version"));
        match (versions.next(), versions.next()) {
            (Some(v), None) if v.value.trim_ascii() == b"13" => {}
            _ => return Err(HandshakeError::BadVersion),
        }
        let mut subprotocols = Vec::new();
        for t in tokens(head, "sec-websocket-protocol") {
            if !t.iter().all(|&b| is_tchar(b)) {
                return Err(HandshakeError::BadSubprotocols);
            }
            // Tokens are ASCII.
            subprotocols.push(String::from_utf8_lossy(t).into_owned());
        }
        let extensions = tokens(head, "sec-websocket-extensions")
            .filter_map(|t| t.split(|&b| b == b';').next())
            .map(|name| String::from_utf8_lossy(name.trim_ascii()).into_owned())
            .collect();
        let deflate_offers = tokens(head, "sec-websocket-extensions")
            .filter_map(Offer::parse)
            .collect();
        Ok(Self {
            accept,
            subprotocols,
            extensions,
            deflate_offers,
            deflate: None,
        })
    }

    /// The app's choice of subprotocol, checked: one the client offered.
    pub fn subprotocol<'a>(
        &self,
        chosen: Option<&'a str>,
    ) -> Result<Option<&'a str>, HandshakeError> {
        match chosen {
            Some(p) if !self.subprotocols.iter().any(|o| o == p) => {
                Err(HandshakeError::NotOffered(p.to_owned()))
            }
            _ => Ok(chosen),
        }
    }

    /// Takes up the first permessage-deflate offer `config` allows (RFC 7692 §7.1), or none
    /// when `config.deflate` is off; returns what was agreed, which [`Self::accept`] answers
    /// and [`super::Session::new`] is given. Without this call no extension is taken up.
    pub fn negotiate(&mut self, config: &WsConfig) -> Option<Deflate> {
        self.deflate = config
            .deflate
            .and_then(|policy| negotiate::first_acceptable(&self.deflate_offers, &policy));
        self.deflate
    }

    /// The permessage-deflate agreed on by [`Self::negotiate`], if any.
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    /// The `101 Switching Protocols` that accepts the handshake, with the app's choice of
    /// `subprotocol` (which must be one the client offered), `Sec-WebSocket-Extensions` when
    /// [`Self::negotiate`] took an offer up, and the app's own fields `extra` (already
    /// validated names and values, e.g. `Set-Cookie`).
    pub fn accept(
        &self,
        subprotocol: Option<&str>,
        extra: &[(&str, &[u8])],
    ) -> Result<Bytes, HandshakeError> {
        let subprotocol = self.subprotocol(subprotocol)?;
        let mut out = BytesMut::with_capacity(160);
        out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        out.put_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.put_slice(self.accept.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(p) = subprotocol {
            out.put_slice(b"Sec-WebSocket-Protocol: ");
            out.put_slice(p.as_bytes());
            out.put_slice(b"\r\n");
        }
        if let Some(d) = &self.deflate {
            out.put_slice(b"Sec-WebSocket-Extensions: ");
            out.put_slice(d.response().as_bytes());
            out.put_slice(b"\r\n");
        }
        for (name, value) in extra {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::request::Text;

    fn head(fields: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test("GET", "/chat", Version::Http11, fields)
    }

    const GOOD: [(&str, &str); 5] = [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> RequestHead {
        let mut fields = GOOD.to_vec();
        fields.extend_from_slice(extra);
        head(&fields)
    }

    fn without(name: &str) -> RequestHead {
        head(
            &GOOD
                .iter()
                .copied()
                .filter(|f| f.0 != name)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_rfcs_example_key_gives_its_accept_value() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let hs = Handshake::check(&head(&GOOD)).expect("valid");
        let resp = hs.accept(None, &[]).expect("101");
        assert_eq!(
            &resp[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"[..]
        );
    }

    #[test]
    fn each_missing_or_bad_part_is_refused_with_its_status() {
        let cases: Vec<(RequestHead, HandshakeError)> = vec![
            (without("Upgrade"), HandshakeError::NoUpgrade),
            (without("Connection"), HandshakeError::NoConnectionUpgrade),
            (without("Sec-WebSocket-Key"), HandshakeError::BadKey),
            (without("Sec-WebSocket-Version"), HandshakeError::BadVersion),
            (
                with(&[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]),
                HandshakeError::BadKey,
            ),
            (
                head(&[
                    ("Upgrade", "websocket"),
                    ("Connection", "upgrade"),
                    ("Sec-WebSocket-Key", "c2hvcnQ="), // "short": 5 bytes
                    ("Sec-WebSocket-Version", "13"),
                ]),
                HandshakeError::BadKey,
            ),
            (
                head(&[
                    ("Upgrade", "websocket"),
                    ("Connection", "upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "8"),
                ]),
                HandshakeError::BadVersion,
            ),
            (
                with(&[("Sec-WebSocket-Protocol", "chat, a b")]),
                HandshakeError::BadSubprotocols,
            ),
        ];
        for (h, expected) in cases {
            assert_eq!(Handshake::check(&h), Err(expected));
        }
        let mut post = head(&GOOD);
        post.method = Text::from("POST");
        assert_eq!(Handshake::check(&post), Err(HandshakeError::NotGet));
        assert_eq!(HandshakeError::BadVersion.status(), 426);
        assert_eq!(HandshakeError::BadKey.status(), 400);
    }

    #[test]
    fn subprotocols_are_offered_and_only_an_offered_one_is_accepted() {
        let hs = Handshake::check(&with(&[
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Protocol", "v2"),
            (
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ]))
        .expect("valid");
        assert_eq!(hs.subprotocols, ["chat", "superchat", "v2"]);
        assert_eq!(hs.extensions, ["permessage-deflate"]);
        let resp = hs
            .accept(Some("superchat"), &[("Set-Cookie", b"a=1")])
            .expect("101");
        let text = std::str::from_utf8(&resp).expect("ascii");
        assert!(text.contains("\r\nSec-WebSocket-Protocol: superchat\r\n"));
        assert!(text.contains("\r\nSet-Cookie: a=1\r\n"));
        assert!(!text.contains("Sec-WebSocket-Extensions"));
        assert_eq!(
            hs.accept(Some("mqtt"), &[]),
            Err(HandshakeError::NotOffered("mqtt".into()))
        );
    }
}
