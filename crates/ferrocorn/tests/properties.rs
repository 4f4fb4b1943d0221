//! Property tests for the request parser and the chunked decoder: arbitrary bytes never panic,
//! valid messages survive any split, and decoding gives back exactly what was encoded.

use bytes::BytesMut;
use ferrocorn::http1::chunked::{ChunkedDecoder, Decoded};
use ferrocorn::http1::request::{parse_head, Framing, Limits};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^`|~-]{1,12}"
}

fn header_value() -> impl Strategy<Value = String> {
    "[ -~]{0,40}".prop_map(|v| v.trim().to_owned())
}

prop_compose! {
    fn valid_request()(
        method in "[A-Z]{1,8}",
        path in "/[A-Za-z0-9/._~%!$&'()*+,;=:@?-]{0,60}",
        headers in proptest::collection::vec((token(), header_value()), 0..12),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) -> (Vec<u8>, String, usize, Vec<u8>) {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: example\r\n");
        let mut count = 1;
        for (name, value) in &headers {
            let lower = name.to_ascii_lowercase();
            if ["host", "content-length", "transfer-encoding", "connection", "expect"].contains(&lower.as_str()) {
                continue;
            }
            raw.push_str(&format!("{name}: {value}\r\n"));
            count += 1;
        }
        raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        count += 1;
        let head_len = raw.len();
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(&body);
        (bytes, method, head_len, vec![count as u8])
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_head(&input, &Limits::default());
    }

    #[test]
    fn parser_never_panics_on_near_valid_heads(
        (raw, _, head_len, _) in valid_request(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut raw = raw[..head_len].to_vec();
        for (i, b) in flips {
            let at = i.index(raw.len());
            raw[at] = b;
        }
        let _ = parse_head(&raw, &Limits::default());
    }

    #[test]
    fn valid_heads_parse_whole_and_wait_on_every_prefix((raw, method, head_len, count) in valid_request()) {
        let limits = Limits::default();
        for cut in 0..head_len {
            prop_assert!(parse_head(&raw[..cut], &limits).unwrap().is_none(), "prefix {}", cut);
        }
        let (head, used) = parse_head(&raw, &limits).unwrap().unwrap();
        prop_assert_eq!(used, head_len);
        prop_assert_eq!(&*head.method, method.as_str());
        prop_assert_eq!(head.headers.len(), usize::from(count[0]));
        prop_assert_eq!(head.framing, Framing::Length((raw.len() - head_len) as u64));
    }

    #[test]
    fn chunked_round_trip(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in proptest::collection::vec(1usize..300, 1..20),
        feed in proptest::collection::vec(1usize..64, 1..50),
        with_ext in any::<bool>(),
    ) {
        // Encode with the given chunk sizes.
        let mut wire = Vec::new();
        let mut rest = &body[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            let ext = if with_ext { ";name=\"v\"" } else { "" };
            wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        wire.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\nNEXT");
        // Decode, feeding the bytes in the given pieces.
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut j = 0;
        while !dec.is_done() {
            match dec.decode(&mut buf, 97).unwrap() {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => break,
                Decoded::NeedMore => {
                    prop_assert!(pos < wire.len(), "decoder wants more than was sent");
                    let n = feed[j % feed.len()].min(wire.len() - pos);
                    buf.extend_from_slice(&wire[pos..pos + n]);
                    pos += n;
                    j += 1;
                }
            }
        }
        prop_assert_eq!(out, body);
        // Bytes after the body stay for the next request.
        let mut left = buf.to_vec();
        left.extend_from_slice(&wire[pos..]);
        prop_assert_eq!(left, b"NEXT".to_vec());
    }

    #[test]
    fn chunked_never_panics_or_invents_bytes(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&input[..]);
        let mut produced = 0;
        for _ in 0..1000 {
            match dec.decode(&mut buf, 64) {
                Ok(Decoded::Data(d)) => produced += d.len(),
                _ => break,
            }
        }
        prop_assert!(produced <= input.len());
    }
}
