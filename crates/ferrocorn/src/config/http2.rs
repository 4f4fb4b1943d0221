//! Settings for HTTP/2: which protocols are offered, h2c, and the limits a connection
//! announces in its SETTINGS frame (RFC 9113 §6.5.2). Gunicorn 27's names.

use clap::{Args, ValueEnum};

/// HTTP/2 flags, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct Http2Settings {
    /// Protocols offered, in order of preference: h1 (HTTP/1.1), h2 (HTTP/2), comma-separated.
    /// Over TLS this is the ALPN list; h2 first because a client (or a load balancer) that
    /// speaks it then needs one connection instead of one per concurrent request. Plain TCP
    /// needs --http2-cleartext for h2.
    #[arg(long, value_name = "LIST", default_value = "h2,h1", value_parser = parse_protocols)]
    pub http_protocols: Protocols,

    /// HTTP/2 without TLS (h2c), accepted from --forwarded-allow-ips peers and unix sockets
    /// only. prior-knowledge: the client starts with HTTP/2's preface, as Envoy, Cloud Run and
    /// GCP's H2C backends do. upgrade: an HTTP/1.1 request with Upgrade: h2c (curl --http2,
    /// RFC 7540 §3.2) is answered 101 and on HTTP/2. both: either. Other peers are answered
    /// as HTTP/1.1.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Cleartext::Off)]
    pub http2_cleartext: Cleartext,

    /// Most streams (requests) a client may have open at once on one HTTP/2 connection.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub http2_max_concurrent_streams: u32,

    /// Bytes of request body a client may send on a stream before the app reads some (the
    /// HTTP/2 flow-control window; the connection's window is 16 of these, at most 16 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = 65_535,
          value_parser = clap::value_parser!(u32).range(1024..=2_147_483_647))]
    pub http2_initial_window_size: u32,

    /// Largest HTTP/2 frame payload the server accepts (RFC 9113 §4.2: 16384 to 16777215).
    #[arg(long, value_name = "BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    pub http2_max_frame_size: u32,

    /// Largest decoded request header list in bytes (names, values and 32 bytes per field;
    /// RFC 9113 §6.5.2): a larger one is refused with 431, an HPACK bomb included.
    #[arg(long, value_name = "BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub http2_max_header_list_size: u32,
}

impl Http2Settings {
    /// What each connection needs of these settings.
    pub fn config(&self) -> crate::http2::Http2Config {
        crate::http2::Http2Config {
            prior_knowledge: matches!(
                self.http2_cleartext,
                Cleartext::PriorKnowledge | Cleartext::Both
            ) && self.http_protocols.offers(Protocol::Http2),
            upgrade: matches!(self.http2_cleartext, Cleartext::Upgrade | Cleartext::Both)
                && self.http_protocols.offers(Protocol::Http2),
            max_concurrent_streams: self.http2_max_concurrent_streams,
            initial_window_size: self.http2_initial_window_size,
            max_frame_size: self.http2_max_frame_size,
            max_header_list_size: self.http2_max_header_list_size,
        }
    }
}

/// `--http2-cleartext`: how HTTP/2 without TLS may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cleartext {
    Off,
    /// The connection starts with the client preface (RFC 9113 §3.3).
    PriorKnowledge,
    /// An HTTP/1.1 request asks to switch with `Upgrade: h2c` (RFC 7540 §3.2).
    Upgrade,
    /// Either of the two.
    Both,
}

/// A protocol named in `--http-protocols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// The protocol's ALPN identifier (RFC 7301; RFC 9113 §3.2).
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Self::Http1 => b"http/1.1",
            Self::Http2 => b"h2",
        }
    }
}

/// `--http-protocols`: the protocols offered, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocols(pub Vec<Protocol>);

impl Protocols {
    pub fn offers(&self, p: Protocol) -> bool {
        self.0.contains(&p)
    }

    /// The ALPN list for a TLS listener, in order of preference.
    pub fn alpn(&self) -> Vec<Vec<u8>> {
        self.0.iter().map(|p| p.alpn().to_vec()).collect()
    }
}

impl std::fmt::Display for Protocols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .0
            .iter()
            .map(|p| match p {
                Protocol::Http1 => "h1",
                Protocol::Http2 => "h2",
            })
            .collect();
        f.write_str(&names.join(","))
    }
}

fn parse_protocols(s: &str) -> Result<Protocols, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let p = match name.to_ascii_lowercase().as_str() {
            "h1" | "http/1.1" => Protocol::Http1,
            "h2" => Protocol::Http2,
            _ => return Err(format!("{name:?} is not a protocol (h1 or h2)")),
        };
        if out.contains(&p) {
            return Err(format!("{name:?} is named twice"));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err("name at least one protocol (h1, h2)".into());
    }
    Ok(Protocols(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lists() {
        let p = parse_protocols("h2, h1").expect("valid");
        assert_eq!(p.0, vec![Protocol::Http2, Protocol::Http1]);
        assert_eq!(p.alpn(), vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(p.to_string(), "h2,h1");
        assert!(parse_protocols("h3").is_err());
        assert!(parse_protocols("h1,h1").is_err());
        assert!(parse_protocols("").is_err());
    }
}
