//! The uwsgi packet framing: a 4-byte header, then the request's variables (the protocol as
//! uWSGI and nginx's `ngx_http_uwsgi_module` speak it).

use bytes::{Buf, Bytes, BytesMut};

use super::UwsgiError;

/// `modifier1` (1 byte), the vars block's size (u16, little-endian), `modifier2` (1 byte).
pub const HEADER_LEN: usize = 4;

/// `modifier1` 30 (uWSGI's `UWSGI_MODIFIER_MANAGE_PATH_INFO`, nginx's `uwsgi_modifier1 30`):
/// PATH_INFO still starts with SCRIPT_NAME, which the server strips.
pub const MANAGE_PATH_INFO: u8 = 30;

/// One request's variables, in the order they came; names and values are slices of the
/// received block.
#[derive(Debug, Default)]
pub struct Vars {
    pub vars: Vec<(Bytes, Bytes)>,
    /// The packet's `modifier1` (0, or [`MANAGE_PATH_INFO`]).
    pub modifier1: u8,
}

impl Vars {
    /// The last value of variable `name` (a front end that sends one twice meant the last).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k[..] == *name.as_bytes())
            .map(|(_, v)| &v[..])
    }
}

/// The size of the packet whose header starts `buf` (header and vars block), once the header
/// is there. Only WSGI requests are spoken (`modifier1` 0, or 30 for a PATH_INFO that still
/// holds SCRIPT_NAME; `modifier2` 0); anything else, such as HTTP sent to a uwsgi listener,
/// is refused here after four bytes.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, UwsgiError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if !matches!(header[0], 0 | MANAGE_PATH_INFO) || header[3] != 0 {
        return Err(UwsgiError::Modifier(header[0], header[3]));
    }
    let size = u16::from_le_bytes([header[1], header[2]]);
    Ok(Some(HEADER_LEN + usize::from(size)))
}

/// Takes a whole packet off the front of `buf` and splits its vars block; `Ok(None)` while
/// more bytes are needed. What follows the packet (the request body) stays in `buf`.
pub fn take_packet(buf: &mut BytesMut) -> Result<Option<Vars>, UwsgiError> {
    let Some(len) = packet_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let mut block = buf.split_to(len).freeze();
    let modifier1 = block[0];
    block.advance(HEADER_LEN);
    let mut vars = parse_vars(block)?;
    vars.modifier1 = modifier1;
    Ok(Some(vars))
}

/// Splits a vars block: each variable is a u16 LE name length, the name, a u16 LE value
/// length, the value. The block must end exactly after the last value.
pub fn parse_vars(mut block: Bytes) -> Result<Vars, UwsgiError> {
    let mut vars = Vec::new();
    while !block.is_empty() {
        let name = take_string(&mut block, "a variable name")?;
        if name.is_empty() {
            return Err(UwsgiError::EmptyName);
        }
        let value = take_string(&mut block, "a variable value")?;
        vars.push((name, value));
    }
    Ok(Vars { vars, modifier1: 0 })
}

fn take_string(block: &mut Bytes, what: &'static str) -> Result<Bytes, UwsgiError> {
    if block.len() < 2 {
        return Err(UwsgiError::Truncated(what));
    }
    let len = usize::from(block.get_u16_le());
    if block.len() < len {
        return Err(UwsgiError::Truncated(what));
    }
    Ok(block.split_to(len))
}

/// A packet as a front end sends it, for tests.
#[cfg(test)]
pub(crate) fn encode(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        for s in [k, v] {
            block.extend_from_slice(&(s.len() as u16).to_le_bytes());
            block.extend_from_slice(s.as_bytes());
        }
    }
    let mut out = vec![0];
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_a_packet_and_leaves_the_body() {
        let mut buf = BytesMut::from(&encode(&[("REQUEST_METHOD", "GET"), ("A", "")])[..]);
        buf.extend_from_slice(b"body");
        let vars = take_packet(&mut buf).unwrap().unwrap();
        assert_eq!(vars.get("REQUEST_METHOD"), Some(&b"GET"[..]));
        assert_eq!(vars.get("A"), Some(&b""[..]));
        assert_eq!(vars.get("B"), None);
        assert_eq!(&buf[..], b"body");
    }

    #[test]
    fn waits_for_the_whole_packet_byte_by_byte() {
        let packet = encode(&[("REQUEST_METHOD", "POST"), ("PATH_INFO", "/x")]);
        let mut buf = BytesMut::new();
        for (i, b) in packet.iter().enumerate() {
            assert!(
                take_packet(&mut buf).unwrap().is_none(),
                "complete after {i} bytes"
            );
            buf.extend_from_slice(&[*b]);
        }
        let vars = take_packet(&mut buf).unwrap().unwrap();
        assert_eq!(vars.vars.len(), 2);
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_other_packet_types_and_http() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(matches!(
            take_packet(&mut buf),
            Err(UwsgiError::Modifier(b'G', b' '))
        ));
        let mut packet = encode(&[("A", "b")]);
        packet[0] = 5; // a PSGI request, in uWSGI's numbering
        assert!(take_packet(&mut BytesMut::from(&packet[..])).is_err());
        let mut packet = encode(&[("A", "b")]);
        packet[3] = 1;
        assert!(take_packet(&mut BytesMut::from(&packet[..])).is_err());
    }

    #[test]
    fn refuses_malformed_blocks() {
        // A value length running past the block.
        let block = Bytes::from_static(b"\x01\x00A\x09\x00abc");
        assert!(matches!(parse_vars(block), Err(UwsgiError::Truncated(_))));
        // A lone byte after the last variable.
        let block = Bytes::from_static(b"\x01\x00A\x01\x00b\x07");
        assert!(matches!(parse_vars(block), Err(UwsgiError::Truncated(_))));
        // An empty name.
        let block = Bytes::from_static(b"\x00\x00\x01\x00b");
        assert!(matches!(parse_vars(block), Err(UwsgiError::EmptyName)));
        // The largest block the header can announce is 65535 bytes.
        let big = "x".repeat(65_000);
        let packet = encode(&[("X", &big)]);
        assert_eq!(packet_len(&packet).unwrap(), Some(packet.len()));
    }
}
