//! The HAProxy PROXY protocol preamble, versions 1 (text) and 2 (binary), as sent by HAProxy
//! and AWS NLB before the HTTP bytes: it carries the client's real address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid PROXY protocol preamble")]
pub struct PreambleError;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes (the spec's worst case).
const V1_MAX: usize = 107;

/// Parses the preamble at the start of `buf`. `Ok(None)`: more bytes needed. On success,
/// returns the client address (`None` for `UNKNOWN`/`LOCAL`, meaning "use the peer") and the
/// number of bytes used.
pub fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, PreambleError> {
    if buf.len() >= 5 && buf.starts_with(b"PROXY") {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    if b"PROXY".starts_with(&buf[..buf.len().min(5)]) {
        return Ok(None);
    }
    Err(PreambleError)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, PreambleError> {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(PreambleError)
        } else {
            Ok(None)
        };
    };
    let line = buf[..end].strip_suffix(b"\r").ok_or(PreambleError)?;
    let line = std::str::from_utf8(line).map_err(|_| PreambleError)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let addr = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| PreambleError)?;
            if (*fam == "TCP4") != ip.is_ipv4() {
                return Err(PreambleError);
            }
            let port: u16 = sport.parse().map_err(|_| PreambleError)?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(PreambleError),
    };
    Ok(Some((addr, end + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, PreambleError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(PreambleError);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let addr = match (ver_cmd & 0x0f, buf[13]) {
        // LOCAL: a health check from the proxy itself.
        (0, _) => None,
        // PROXY over TCP/IPv4.
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        // PROXY over TCP/IPv6.
        (1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        // Other families (unix, UDP, unspecified): keep the peer address.
        (1, _) => None,
        _ => return Err(PreambleError),
    };
    Ok(Some((addr, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1() {
        let raw = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let (addr, used) = parse(raw).unwrap().unwrap();
        assert_eq!(addr, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(&raw[used..used + 3], b"GET");
        let (addr, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(addr, Some("[2001:db8::1]:1000".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0, None);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1").unwrap(), None);
        assert_eq!(parse(b"PRO").unwrap(), None);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn v2() {
        let mut raw = V2_SIGNATURE.to_vec();
        raw.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb,
        ]);
        raw.extend_from_slice(b"GET");
        let (addr, used) = parse(&raw).unwrap().unwrap();
        assert_eq!(addr, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(&raw[used..], b"GET");
        assert_eq!(parse(&raw[..20]).unwrap(), None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap().0, None);
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&bad).is_err());
    }
}
