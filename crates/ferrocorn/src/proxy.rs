//! Trusted-proxy handling: which peers may tell us the client's address, scheme, host and path
//! prefix, and what they told us (`X-Forwarded-*`, RFC 7239 `Forwarded`).
//!
//! Forwarded headers are honoured only when the direct peer is a trusted proxy. The client's
//! address is the right-most `X-Forwarded-For` entry that is not itself a trusted proxy: the
//! left-most entries are whatever the client sent and prove nothing.

use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

use crate::app::Peer;
use crate::http::request::Header;

/// A forwarded header from a trusted proxy that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProxyError {
    #[error("malformed {0} header: {1:?}")]
    Malformed(String, String),
    #[error("conflicting forwarded headers: {0}")]
    Conflict(String),
}

/// A set of trusted addresses: IPs and CIDR ranges, or everyone (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    all: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl FromStr for Trusted {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut t = Trusted {
            all: false,
            nets: Vec::new(),
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                t.all = true;
                continue;
            }
            let (ip, bits) = match item.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (item, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|&b| b <= max)
                    .ok_or_else(|| format!("{item:?} has an invalid prefix length"))?,
                None => max,
            };
            t.nets.push((ip, bits));
        }
        Ok(t)
    }
}

impl Trusted {
    /// `127.0.0.1` and `::1`, the default.
    pub fn loopback() -> Self {
        Self {
            all: false,
            nets: vec![
                (IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 32),
                (IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|&(net, bits)| match (canonical(net), ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
                (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
                _ => false,
            })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// Where forwarded information comes from; header names are configurable (lower case here).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub trusted: Trusted,
    pub for_header: String,
    pub proto_header: String,
    pub host_header: String,
    pub port_header: String,
    pub prefix_header: String,
    /// Gunicorn's `secure_scheme_headers`: a header and the value that means https.
    pub secure_scheme_headers: Vec<(String, String)>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            trusted: Trusted::loopback(),
            for_header: "x-forwarded-for".into(),
            proto_header: "x-forwarded-proto".into(),
            host_header: "x-forwarded-host".into(),
            port_header: "x-forwarded-port".into(),
            prefix_header: "x-forwarded-prefix".into(),
            secure_scheme_headers: vec![
                ("x-forwarded-protocol".into(), "ssl".into()),
                ("x-forwarded-ssl".into(), "on".into()),
            ],
        }
    }
}

/// What a trusted proxy told us about the original request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub client: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// `"http"` or `"https"`.
    pub scheme: Option<&'static str>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub prefix: Option<String>,
}

impl ProxyConfig {
    /// Whether `peer` may send forwarded headers. A unix-socket peer is trusted: only processes
    /// allowed by the socket file's permissions (the local proxy) can connect.
    pub fn trusts(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Tcp(addr) => self.trusted.contains(addr.ip()),
            Peer::Unix => true,
        }
    }

    /// Reads the forwarded headers of a request from `peer`. Nothing is taken from an untrusted
    /// peer.
    pub fn resolve(&self, peer: &Peer, headers: &[Header]) -> Result<Forwarded, ProxyError> {
        let mut out = Forwarded::default();
        if !self.trusts(peer) || !headers.iter().any(|h| self.reads(&h.name)) {
            return Ok(out);
        }
        let rfc7239 = joined(headers, "forwarded")
            .map(|v| parse_forwarded(&v))
            .transpose()?;

        // Client address.
        if let Some(xff) = joined(headers, &self.for_header) {
            let hops = parse_for_list(&xff, &self.for_header)?;
            if let Some((ip, port)) = self.client_of(&hops) {
                out.client = Some(ip);
                out.client_port = port;
            }
        }
        if let Some(fwd) = &rfc7239 {
            let hops: Vec<(IpAddr, Option<u16>)> = fwd.iter().filter_map(|e| e.client).collect();
            if let Some((ip, port)) = self.client_of(&hops) {
                match out.client {
                    Some(prev) if prev != ip => {
                        return Err(ProxyError::Conflict(format!(
                            "Forwarded says the client is {ip}, {} says {prev}",
                            self.for_header
                        )))
                    }
                    _ => {
                        out.client = Some(ip);
                        out.client_port = out.client_port.or(port);
                    }
                }
            }
        }

        // Scheme: every source that speaks must agree.
        let mut schemes: Vec<(String, &'static str)> = Vec::new();
        if let Some(v) = last_value(headers, &self.proto_header) {
            schemes.push((
                self.proto_header.clone(),
                scheme_word(&v, &self.proto_header)?,
            ));
        }
        for (name, secure) in &self.secure_scheme_headers {
            if let Some(v) = last_value(headers, name) {
                let s = if v.eq_ignore_ascii_case(secure) {
                    "https"
                } else {
                    "http"
                };
                schemes.push((name.clone(), s));
            }
        }
        if let Some(proto) = rfc7239
            .as_ref()
            .and_then(|f| f.last())
            .and_then(|e| e.proto.clone())
        {
            schemes.push(("forwarded".into(), scheme_word(&proto, "forwarded")?));
        }
        if let Some((first_name, first)) = schemes.first() {
            if let Some((name, s)) = schemes.iter().find(|(_, s)| s != first) {
                return Err(ProxyError::Conflict(format!(
                    "{first_name} says {first}, {name} says {s}"
                )));
            }
            out.scheme = Some(first);
        }

        // Host and port.
        let host = last_value(headers, &self.host_header)
            .map(|h| (h, self.host_header.as_str()))
            .or_else(|| {
                rfc7239
                    .as_ref()
                    .and_then(|f| f.last())
                    .and_then(|e| e.host.clone())
                    .map(|h| (h, "forwarded"))
            });
        if let Some((host, source)) = host {
            let (_, port) = split_host(&host)
                .ok_or_else(|| ProxyError::Malformed(source.into(), host.clone()))?;
            out.host = Some(host.clone());
            out.port = port;
        }
        if let Some(port) = last_value(headers, &self.port_header) {
            let p = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| ProxyError::Malformed(self.port_header.clone(), port.clone()))?;
            out.port = Some(p);
        }

        // Path prefix (becomes SCRIPT_NAME).
        if let Some(prefix) = last_value(headers, &self.prefix_header) {
            let ok = prefix.starts_with('/')
                && !prefix.split('/').any(|seg| seg == "..")
                && prefix.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ProxyError::Malformed(self.prefix_header.clone(), prefix));
            }
            out.prefix = Some(prefix.trim_end_matches('/').to_owned());
        }
        Ok(out)
    }

    /// True when `name` is one of the headers a proxy's word is taken from. One pass over the
    /// head with this spares the usual request (none of them) a dozen scans.
    fn reads(&self, name: &str) -> bool {
        let is = |h: &str| name.eq_ignore_ascii_case(h);
        is("forwarded")
            || is(&self.for_header)
            || is(&self.proto_header)
            || is(&self.host_header)
            || is(&self.port_header)
            || is(&self.prefix_header)
            || self.secure_scheme_headers.iter().any(|(h, _)| is(h))
    }

    /// The right-most hop that is not a trusted proxy (or the left-most if all are).
    fn client_of(&self, hops: &[(IpAddr, Option<u16>)]) -> Option<(IpAddr, Option<u16>)> {
        hops.iter()
            .rev()
            .find(|(ip, _)| !self.trusted.contains(*ip))
            .or_else(|| hops.first())
            .copied()
    }
}

/// All values of a header, joined with "," in order (RFC 9110 §5.3).
fn joined(headers: &[Header], name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = String::from_utf8_lossy(&h.value);
        match &mut out {
            Some(s) => {
                s.push(',');
                s.push_str(&v);
            }
            None => out = Some(v.into_owned()),
        }
    }
    out
}

/// The right-most list element of a header: the one our closest (trusted) proxy set.
fn last_value(headers: &[Header], name: &str) -> Option<String> {
    let all = joined(headers, name)?;
    all.rsplit(',')
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

fn scheme_word(v: &str, source: &str) -> Result<&'static str, ProxyError> {
    match v.to_ascii_lowercase().as_str() {
        "http" => Ok("http"),
        "https" => Ok("https"),
        _ => Err(ProxyError::Malformed(source.into(), v.into())),
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]` or `[::1]:80`.
fn parse_node(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        let ip: IpAddr = ip.parse().ok()?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':')?.parse().ok()?),
        };
        return Some((ip, port));
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some((IpAddr::V4(ip.parse().ok()?), Some(port.parse().ok()?)))
}

fn parse_for_list(v: &str, source: &str) -> Result<Vec<(IpAddr, Option<u16>)>, ProxyError> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_node(s).ok_or_else(|| ProxyError::Malformed(source.into(), v.into())))
        .collect()
}

/// `host[:port]` with a valid host name or IP literal.
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        (ip, tail.strip_prefix(':'))
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && (h.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !valid {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

/// One element of an RFC 7239 `Forwarded` header.
#[derive(Debug, Default)]
struct Element {
    client: Option<(IpAddr, Option<u16>)>,
    proto: Option<String>,
    host: Option<String>,
}

fn parse_forwarded(v: &str) -> Result<Vec<Element>, ProxyError> {
    let bad = || ProxyError::Malformed("forwarded".into(), v.into());
    let mut out = Vec::new();
    for element in split_outside_quotes(v, ',') {
        let mut e = Element::default();
        for pair in split_outside_quotes(&element, ';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (k, val) = pair.split_once('=').ok_or_else(bad)?;
            let val = val.trim();
            let val = match val.strip_prefix('"') {
                Some(q) => q.strip_suffix('"').ok_or_else(bad)?.replace("\\\"", "\""),
                None => val.to_owned(),
            };
            match k.trim().to_ascii_lowercase().as_str() {
                // Obfuscated identifiers and "unknown" (RFC 7239 §6) name no address.
                "for" if val.eq_ignore_ascii_case("unknown") || val.starts_with('_') => {}
                "for" => e.client = Some(parse_node(&val).ok_or_else(bad)?),
                "proto" => e.proto = Some(val),
                "host" => e.host = Some(val),
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter()
            .map(|(n, v)| Header {
                name: (*n).into(),
                value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            })
            .collect()
    }

    fn peer(ip: &str) -> Peer {
        Peer::Tcp(std::net::SocketAddr::new(ip.parse().unwrap(), 5555))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn trusted_sets() {
        let t: Trusted = "127.0.0.1, 10.0.0.0/8, ::1, fd00::/8".parse().unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!("*"
            .parse::<Trusted>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["nope", "10.0.0.0/33", "::1/129"] {
            assert!(bad.parse::<Trusted>().is_err(), "{bad}");
        }
    }

    /// A row of the trust table: peer, request headers, what the app sees.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Forwarded,
    );

    /// peer × headers → what the app will see.
    #[test]
    fn trust_table() {
        let cfg = ProxyConfig::default();
        let cases: &[Case] = &[
            // An untrusted peer changes nothing, whatever it sends.
            (
                "127.0.0.7",
                &[
                    ("X-Forwarded-For", "1.2.3.4"),
                    ("X-Forwarded-Proto", "https"),
                ],
                Forwarded::default(),
            ),
            // A trusted proxy: client, scheme, host.
            (
                "127.0.0.1",
                &[
                    ("X-Forwarded-For", "203.0.113.9"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "example.com"),
                ],
                Forwarded {
                    client: ip("203.0.113.9"),
                    scheme: Some("https"),
                    host: Some("example.com".into()),
                    ..Default::default()
                },
            ),
            // The right-most untrusted hop wins, not the forgeable left-most one.
            (
                "127.0.0.1",
                &[("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 127.0.0.1")],
                Forwarded {
                    client: ip("203.0.113.9"),
                    ..Default::default()
                },
            ),
            // Entries with ports.
            (
                "::1",
                &[("X-Forwarded-For", "[2001:db8::5]:4711")],
                Forwarded {
                    client: ip("2001:db8::5"),
                    client_port: Some(4711),
                    ..Default::default()
                },
            ),
            // RFC 7239.
            (
                "127.0.0.1",
                &[(
                    "Forwarded",
                    "for=\"[2001:db8::1]:80\";proto=https;host=a.example",
                )],
                Forwarded {
                    client: ip("2001:db8::1"),
                    client_port: Some(80),
                    scheme: Some("https"),
                    host: Some("a.example".into()),
                    ..Default::default()
                },
            ),
            (
                "127.0.0.1",
                &[("X-Forwarded-Ssl", "on")],
                Forwarded {
                    scheme: Some("https"),
                    ..Default::default()
                },
            ),
            (
                "127.0.0.1",
                &[
                    ("X-Forwarded-Host", "example.com:8443"),
                    ("X-Forwarded-Prefix", "/app/"),
                ],
                Forwarded {
                    host: Some("example.com:8443".into()),
                    port: Some(8443),
                    prefix: Some("/app".into()),
                    ..Default::default()
                },
            ),
            (
                "127.0.0.1",
                &[("X-Forwarded-Port", "443")],
                Forwarded {
                    port: Some(443),
                    ..Default::default()
                },
            ),
        ];
        for (p, h, want) in cases {
            assert_eq!(&cfg.resolve(&peer(p), &hdrs(h)).unwrap(), want, "{p} {h:?}");
        }
    }

    #[test]
    fn unix_socket_peers_are_trusted() {
        let cfg = ProxyConfig::default();
        let f = cfg
            .resolve(&Peer::Unix, &hdrs(&[("X-Forwarded-For", "198.51.100.1")]))
            .unwrap();
        assert_eq!(f.client, ip("198.51.100.1"));
    }

    #[test]
    fn malformed_and_conflicting_values_are_refused() {
        let cfg = ProxyConfig::default();
        for h in [
            &[("X-Forwarded-For", "not-an-ip")][..],
            &[("X-Forwarded-Proto", "gopher")],
            &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")],
            &[("X-Forwarded-Host", "bad host")],
            &[("X-Forwarded-Host", "a@b")],
            &[("X-Forwarded-Port", "99999")],
            &[("X-Forwarded-Prefix", "app")],
            &[("X-Forwarded-Prefix", "/a/../b")],
            &[("Forwarded", "for=1.2.3.4"), ("X-Forwarded-For", "5.6.7.8")],
            &[("Forwarded", "for=\"unterminated")],
        ] {
            assert!(cfg.resolve(&peer("127.0.0.1"), &hdrs(h)).is_err(), "{h:?}");
            // The same headers from an untrusted peer are simply ignored.
            assert_eq!(
                cfg.resolve(&peer("127.0.0.9"), &hdrs(h)).unwrap(),
                Forwarded::default()
            );
        }
    }

    #[test]
    fn configurable_header_names() {
        let cfg = ProxyConfig {
            host_header: "x-fhost".into(),
            ..ProxyConfig::default()
        };
        let f = cfg
            .resolve(&peer("127.0.0.1"), &hdrs(&[("X-FHOST", "shop.example")]))
            .unwrap();
        assert_eq!(f.host.as_deref(), Some("shop.example"));
    }
}
