//! Trusted-proxy handling: which peers may tell us the client's address, scheme, host and path
//! prefix, and what they told us (`X-Forwarded-*`, RFC 7239 `Forwarded`).
//!
//! Forwarded headers are honoured only when the direct peer is a trusted proxy. The client's
//! address is the right-most `X-Forwarded-For` entry that is not itself a trusted proxy: the
//! left-most entries are whatever the client sent and prove nothing.

use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

use crate::addr::Peer;
use crate::http1::request::Header;

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

/// Which kinds of forwarded information a trusted proxy's word is taken for
/// (`--forwarded-headers`). Like Werkzeug's `ProxyFix`, only the client address and the scheme
/// by default: nginx appends to `X-Forwarded-For` and is usually told to set
/// `X-Forwarded-Proto`, but passes a client's own `X-Forwarded-Host`, `-Port`, `-Prefix` and
/// `Forwarded` through untouched unless its config overwrites each, so trusting them by default
/// let any client choose the host of the app's absolute URLs (password-reset links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apply {
    pub client: bool,
    pub proto: bool,
    pub host: bool,
    pub port: bool,
    pub prefix: bool,
    /// RFC 7239 `Forwarded`, for whichever of client, proto and host are applied.
    pub rfc7239: bool,
}

impl Default for Apply {
    fn default() -> Self {
        Self {
            client: true,
            proto: true,
            host: false,
            port: false,
            prefix: false,
            rfc7239: false,
        }
    }
}

impl Apply {
    /// The words `--forwarded-headers` takes, in the order `--print-config` shows them.
    pub const WORDS: [&'static str; 6] = ["for", "proto", "host", "port", "prefix", "forwarded"];

    fn flag(&mut self, word: &str) -> Option<&mut bool> {
        Some(match word {
            "for" => &mut self.client,
            "proto" => &mut self.proto,
            "host" => &mut self.host,
            "port" => &mut self.port,
            "prefix" => &mut self.prefix,
            "forwarded" => &mut self.rfc7239,
            _ => return None,
        })
    }
}

impl FromStr for Apply {
    type Err = String;

    /// A comma-separated list of [`Apply::WORDS`], `all`, or `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Apply {
            client: false,
            proto: false,
            host: false,
            port: false,
            prefix: false,
            rfc7239: false,
        };
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let word = word.to_ascii_lowercase();
            match word.as_str() {
                "none" => {}
                "all" => {
                    for w in Self::WORDS {
                        if let Some(f) = out.flag(w) {
                            *f = true;
                        }
                    }
                }
                w => {
                    *out.flag(w).ok_or_else(|| {
                        format!(
                            "{w:?} is not a forwarded header kind (use {}, all or none)",
                            Self::WORDS.join(", ")
                        )
                    })? = true;
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for Apply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut copy = *self;
        let on: Vec<&str> = Self::WORDS
            .into_iter()
            .filter(|w| copy.flag(w).is_some_and(|f| *f))
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

/// Where forwarded information comes from; header names are configurable (lower case here).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub trusted: Trusted,
    /// Which of the headers below are applied at all.
    pub apply: Apply,
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
            apply: Apply::default(),
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
        // Most requests carry none of these headers; looking for them first spares them the
        // look-up of the peer's address among the trusted ones.
        if !headers.iter().any(|h| self.reads(&h.name)) || !self.trusts(peer) {
            return Ok(out);
        }
        let apply = self.apply;
        let rfc7239 = joined(headers, "forwarded")
            .filter(|_| apply.rfc7239)
            .map(|v| parse_forwarded(&v))
            .transpose()?;

        // Client address.
        if let Some(xff) = joined(headers, &self.for_header).filter(|_| apply.client) {
            let hops = parse_for_list(&xff, &self.for_header)?;
            if let Some((ip, port)) = self.client_of(&hops) {
                out.client = Some(ip);
                out.client_port = port;
            }
        }
        if let Some(fwd) = rfc7239.as_ref().filter(|_| apply.client) {
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

        if apply.proto {
            out.scheme = self.scheme(headers, rfc7239.as_deref())?;
        }
        if apply.host {
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
        }
        if let Some(port) = last_value(headers, &self.port_header).filter(|_| apply.port) {
            let p = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| ProxyError::Malformed(self.port_header.clone(), port.clone()))?;
            out.port = Some(p);
        }

        // Path prefix (becomes SCRIPT_NAME).
        if let Some(prefix) = last_value(headers, &self.prefix_header).filter(|_| apply.prefix) {
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

    /// The scheme the proxy says the client used: every source that speaks must agree.
    fn scheme(
        &self,
        headers: &[Header],
        rfc7239: Option<&[Element]>,
    ) -> Result<Option<&'static str>, ProxyError> {
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
        if let Some(proto) = rfc7239.and_then(|f| f.last()).and_then(|e| e.proto.clone()) {
            schemes.push(("forwarded".into(), scheme_word(&proto, "forwarded")?));
        }
        let Some((first_name, first)) = schemes.first() else {
            return Ok(None);
        };
        if let Some((name, s)) = schemes.iter().find(|(_, s)| s != first) {
            return Err(ProxyError::Conflict(format!(
                "{first_name} says {first}, {name} says {s}"
            )));
        }
        Ok(Some(first))
    }

    /// True when `name` is one of the headers a proxy's word is taken from. One pass over the
    /// head with this spares the usual request (none of them) a dozen scans.
    fn reads(&self, name: &str) -> bool {
        let is = |h: &str| name.eq_ignore_ascii_case(h);
        let a = self.apply;
        (a.rfc7239 && is("forwarded"))
            || (a.client && is(&self.for_header))
            || (a.proto
                && (is(&self.proto_header)
                    || self.secure_scheme_headers.iter().any(|(h, _)| is(h))))
            || (a.host && is(&self.host_header))
            || (a.port && is(&self.port_header))
            || (a.prefix && is(&self.prefix_header))
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

    /// Every kind of forwarded header applied (`--forwarded-headers all`).
    fn trusting_all() -> ProxyConfig {
        ProxyConfig {
            apply: "all".parse().unwrap(),
            ..ProxyConfig::default()
        }
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
        let cfg = trusting_all();
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
        let cfg = trusting_all();
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
            ..trusting_all()
        };
        let f = cfg
            .resolve(&peer("127.0.0.1"), &hdrs(&[("X-FHOST", "shop.example")]))
            .unwrap();
        assert_eq!(f.host.as_deref(), Some("shop.example"));
    }

    /// By default only the client address and the scheme are taken from a trusted proxy: a
    /// client's own Host, Port, Prefix and Forwarded headers, which nginx passes on untouched,
    /// change nothing.
    #[test]
    fn only_for_and_proto_apply_by_default() {
        let cfg = ProxyConfig::default();
        let spoofed = hdrs(&[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Port", "8443"),
            ("X-Forwarded-Prefix", "/evil"),
            ("Forwarded", "for=6.6.6.6;proto=http;host=evil.example"),
        ]);
        assert_eq!(
            cfg.resolve(&peer("127.0.0.1"), &spoofed).unwrap(),
            Forwarded {
                client: ip("203.0.113.9"),
                scheme: Some("https"),
                ..Default::default()
            }
        );
        // Malformed values of headers that are not applied are not even read.
        let junk = hdrs(&[("X-Forwarded-Host", "bad host"), ("Forwarded", "for=\"x")]);
        assert_eq!(
            cfg.resolve(&peer("127.0.0.1"), &junk).unwrap(),
            Forwarded::default()
        );
    }

    #[test]
    fn each_kind_is_turned_on_alone() {
        let h = hdrs(&[
            ("X-Forwarded-Host", "shop.example:8443"),
            ("X-Forwarded-Port", "444"),
            ("X-Forwarded-Prefix", "/app"),
        ]);
        let with = |words: &str| ProxyConfig {
            apply: words.parse().unwrap(),
            ..ProxyConfig::default()
        };
        let f = with("host").resolve(&peer("127.0.0.1"), &h).unwrap();
        assert_eq!(
            (f.host.as_deref(), f.port, f.prefix),
            (Some("shop.example:8443"), Some(8443), None)
        );
        let f = with("port").resolve(&peer("127.0.0.1"), &h).unwrap();
        assert_eq!((f.host, f.port), (None, Some(444)));
        let f = with("prefix").resolve(&peer("127.0.0.1"), &h).unwrap();
        assert_eq!((f.prefix.as_deref(), f.port), (Some("/app"), None));
        let f = with("forwarded,for")
            .resolve(
                &peer("127.0.0.1"),
                &hdrs(&[("Forwarded", "for=198.51.100.2;host=x.example")]),
            )
            .unwrap();
        assert_eq!((f.client, f.host), (ip("198.51.100.2"), None));
    }

    #[test]
    fn forwarded_headers_setting_words() {
        assert_eq!(Apply::default().to_string(), "for,proto");
        assert_eq!("none".parse::<Apply>().unwrap().to_string(), "none");
        assert_eq!(
            "all".parse::<Apply>().unwrap().to_string(),
            "for,proto,host,port,prefix,forwarded"
        );
        assert_eq!(
            " Host , for".parse::<Apply>().unwrap().to_string(),
            "for,host"
        );
        let e = "for,hots".parse::<Apply>().unwrap_err();
        assert!(e.contains("\"hots\""), "{e}");
    }
}
