//! The permessage-deflate offers in a client's `Sec-WebSocket-Extensions` (RFC 7692 §5, §7.1)
//! and the server's answer to the first one it can take up.

use super::{Deflate, DeflateConfig};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// One valid offer of permessage-deflate, as the client wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N` (8 to 15).
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`, with its value if it had one (8 to 15).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// A window size as §7.1.2 writes it: 8 to 15 in decimal, no leading zero; a quoted-string
/// holding the same is allowed too (§7.1).
fn window_bits(value: &[u8]) -> Option<u8> {
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        v => v,
    };
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

impl Offer {
    /// Parses one element of the extension list (`permessage-deflate; a; b=c`): `None` when it
    /// offers another extension, or this one with parameters §7.1 says to decline (unknown,
    /// repeated, or with a bad value).
    pub fn parse(element: &[u8]) -> Option<Self> {
        let mut parts = element.split(|&b| b == b';').map(<[u8]>::trim_ascii);
        if !parts.next()?.eq_ignore_ascii_case(NAME.as_bytes()) {
            return None;
        }
        let mut offer = Self::default();
        for param in parts {
            let (name, value) = match param.iter().position(|&b| b == b'=') {
                Some(at) => (param[..at].trim_ascii(), Some(param[at + 1..].trim_ascii())),
                None => (param, None),
            };
            let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                    offer.server_no_context_takeover = true;
                }
                ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                    offer.client_no_context_takeover = true;
                }
                ("server_max_window_bits", Some(v)) if offer.server_max_window_bits.is_none() => {
                    offer.server_max_window_bits = Some(window_bits(v)?);
                }
                ("client_max_window_bits", v) if offer.client_max_window_bits.is_none() => {
                    offer.client_max_window_bits = Some(match v {
                        Some(v) => Some(window_bits(v)?),
                        None => None,
                    });
                }
                _ => return None,
            }
        }
        Some(offer)
    }

    /// The parameters the server answers this offer with, or `None` if it cannot take it up.
    ///
    /// - `server_no_context_takeover` is echoed when offered (§7.1.1.1) and added when the
    ///   server keeps no context of its own (`config.context_takeover` off), which §7.1.1.1
    ///   allows; `client_no_context_takeover` likewise (§7.1.1.2 lets the server ask for it).
    /// - `server_max_window_bits=N` is echoed (§7.1.2.1: the answer must carry a value no
    ///   larger); 8 is declined, as zlib's deflate cannot use a 256-byte window.
    /// - `client_max_window_bits` is answered only when offered (§7.1.2.2), with the offered
    ///   value if it had one.
    pub fn accept(&self, config: &DeflateConfig) -> Option<Deflate> {
        if self.server_max_window_bits == Some(8) {
            return None;
        }
        Some(Deflate {
            server_no_context_takeover: self.server_no_context_takeover || !config.context_takeover,
            client_no_context_takeover: self.client_no_context_takeover || !config.context_takeover,
            server_max_window_bits: self.server_max_window_bits,
            client_max_window_bits: self.client_max_window_bits.flatten(),
        })
    }
}

/// The first of `offers` the server can take up, with the parameters it answers with.
pub fn first_acceptable(offers: &[Offer], config: &DeflateConfig) -> Option<Deflate> {
    offers.iter().find_map(|o| o.accept(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Offer> {
        Offer::parse(s.as_bytes())
    }

    const KEEP: DeflateConfig = DeflateConfig {
        context_takeover: true,
    };
    const FORGET: DeflateConfig = DeflateConfig {
        context_takeover: false,
    };

    #[test]
    fn offers_with_and_without_parameters_parse() {
        assert_eq!(parse("permessage-deflate"), Some(Offer::default()));
        assert_eq!(
            parse("Permessage-Deflate ;client_max_window_bits"),
            Some(Offer {
                client_max_window_bits: Some(None),
                ..Offer::default()
            })
        );
        assert_eq!(
            parse(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=\"9\""
            ),
            Some(Offer {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(10),
                client_max_window_bits: Some(Some(9)),
            })
        );
        assert_eq!(parse("x-webkit-deflate-frame"), None);
    }

    #[test]
    fn bad_parameters_decline_the_offer() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=1",
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; mystery",
            "permessage-deflate; =3",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_answer_follows_section_7_1() {
        let plain = parse("permessage-deflate").expect("offer");
        let keep = plain.accept(&KEEP).expect("taken");
        assert_eq!(keep.response(), "permessage-deflate");
        // The server asks for no context either way when it keeps none.
        let forget = plain.accept(&FORGET).expect("taken");
        assert_eq!(
            forget.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        // Offered parameters are echoed; a valueless client_max_window_bits is not answered.
        let asked = parse(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
             client_max_window_bits",
        )
        .expect("offer");
        assert_eq!(
            asked.accept(&KEEP).expect("taken").response(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        let client_bits = parse("permessage-deflate; client_max_window_bits=12").expect("offer");
        let d = client_bits.accept(&KEEP).expect("taken");
        assert_eq!(
            d.response(),
            "permessage-deflate; client_max_window_bits=12"
        );
        assert_eq!((d.client_window_bits(), d.server_window_bits()), (12, 15));
    }

    #[test]
    fn of_several_offers_the_first_acceptable_is_taken() {
        let offers: Vec<Offer> = [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=11",
            "permessage-deflate",
        ]
        .iter()
        .filter_map(|s| parse(s))
        .collect();
        let d = first_acceptable(&offers, &KEEP).expect("one is acceptable");
        assert_eq!(d.server_max_window_bits, Some(11));
        assert_eq!(first_acceptable(&offers[..1], &KEEP), None);
        assert_eq!(first_acceptable(&[], &KEEP), None);
    }
}
