//! permessage-deflate end to end: the handshake's answer, then a [`Session`] against a client
//! on an in-memory pipe that writes raw frames and compresses with its own `flate2` streams.

use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::compress::deflate;
use super::inflate::{Inflating, CUT, PIECE};
use super::{Deflate, DeflateConfig, InflateError};
use crate::http1::request::{RequestHead, Version};
use crate::observe::metrics::RequestMetrics;
use crate::websocket::handshake::Handshake;
use crate::websocket::tests::masked;
use crate::websocket::{close, Received, Session, WsConfig};

/// Context takeover both ways, 15-bit windows: what a bare offer gets from a keeping server.
const KEEP: Deflate = Deflate {
    server_no_context_takeover: false,
    client_no_context_takeover: false,
    server_max_window_bits: None,
    client_max_window_bits: None,
};
/// What the server answers by default (it keeps no context).
const FORGET: Deflate = Deflate {
    server_no_context_takeover: true,
    client_no_context_takeover: true,
    ..KEEP
};

fn config(max_size: usize) -> WsConfig {
    WsConfig {
        max_size,
        ping_interval: None,
        ping_timeout: Duration::from_secs(1),
        deflate: Some(DeflateConfig {
            context_takeover: false,
        }),
    }
}

async fn session(
    max_size: usize,
    deflate: Option<Deflate>,
) -> (Session<DuplexStream>, DuplexStream) {
    let (server, client) = tokio::io::duplex(1 << 20);
    let cfg = config(max_size);
    (
        Session::new(server, &cfg, RequestMetrics::default(), deflate).await,
        client,
    )
}

fn compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::default(), false, bits)
}

/// A client's compressed message: `data` deflated with `c`.
fn compressed(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    deflate(c, data).expect("compressed")
}

/// The next frame the server sent: its first byte and payload.
async fn server_frame(client: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await.expect("a frame");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => u64::from(client.read_u16().await.expect("length")),
        127 => client.read_u64().await.expect("length"),
        n => u64::from(n),
    };
    let mut payload = vec![0; usize::try_from(len).expect("fits")];
    client.read_exact(&mut payload).await.expect("payload");
    (head[0], payload)
}

/// The next message the server sent, whole: its first frame's first byte without FIN (RSV1,
/// opcode) and the payloads of its frames (pieces of at most 64 KiB, continuations after
/// the first) put together.
async fn server_message(client: &mut DuplexStream) -> (u8, Vec<u8>) {
    let (first, mut payload) = server_frame(client).await;
    let mut fin = first & 0x80 != 0;
    assert!(payload.len() <= 64 * 1024);
    while !fin {
        let (next, more) = server_frame(client).await;
        assert_eq!(next & 0x7f, 0x00, "a continuation");
        assert!(more.len() <= 64 * 1024);
        payload.extend_from_slice(&more);
        fin = next & 0x80 != 0;
    }
    (first & 0x7f, payload)
}

/// A compressed message from the server, inflated with `d`.
fn inflated(d: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflates");
    out
}

/// Text that compresses, of about `n` bytes.
fn chatter(n: usize) -> String {
    let mut s = String::new();
    let mut i = 0u32;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"seq\":{i},\"user\":\"zoë\",\"text\":\"hello there\"}}"
        ));
        i += 1;
    }
    s
}

/// `n` bytes no shorter match can stand for (a linear congruential sequence).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

async fn closed_with(server: &mut Session<DuplexStream>, client: &mut DuplexStream) -> u16 {
    let code = match server.recv().await {
        Received::Closed { code, .. } => code,
        other => panic!("not closed: {other:?}"),
    };
    let (first, payload) = server_frame(client).await;
    assert_eq!(first, 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
    code
}

#[test]
fn the_handshake_answers_the_first_acceptable_offer() {
    let head = |ext: &'static str| {
        RequestHead::for_test(
            "GET",
            "/chat",
            Version::Http11,
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Extensions", ext),
            ],
        )
    };
    let offers = "permessage-deflate; server_max_window_bits=8, \
                  permessage-deflate; mystery, \
                  permessage-deflate; server_max_window_bits=10; client_max_window_bits, \
                  permessage-deflate";
    let mut hs = Handshake::check(&head(offers)).expect("valid");
    // Nothing is taken up until the server negotiates.
    let plain = hs.accept(None, &[]).expect("101");
    assert!(!String::from_utf8_lossy(&plain).contains("Extensions"));
    let agreed = hs.negotiate(&config(1000)).expect("taken up");
    assert_eq!(hs.deflate(), Some(agreed));
    assert_eq!(agreed.server_max_window_bits, Some(10));
    let resp = hs.accept(None, &[]).expect("101");
    assert!(String::from_utf8_lossy(&resp).contains(
        "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
         client_no_context_takeover; server_max_window_bits=10\r\n"
    ));
    // Off: every offer declined.
    let off = WsConfig {
        deflate: None,
        ..config(1000)
    };
    assert_eq!(hs.negotiate(&off), None);
    assert!(!String::from_utf8_lossy(&hs.accept(None, &[]).expect("101")).contains("Extensions"));
    // Only bad offers: declined, the handshake still succeeds (RFC 7692 §5).
    let mut bad =
        Handshake::check(&head("permessage-deflate; client_max_window_bits=16")).expect("valid");
    assert_eq!(bad.negotiate(&config(1000)), None);
}

#[tokio::test]
async fn compressed_text_and_binary_both_ways() {
    let (mut server, mut client) = session(1 << 20, Some(KEEP)).await;
    let mut c = compressor(15);
    let text = chatter(3000);
    client
        .write_all(&masked(0xc1, &compressed(&mut c, text.as_bytes())))
        .await
        .expect("write");
    assert_eq!(server.recv().await, Received::Text(text.clone()));
    let blob = [noise(500), noise(500)].concat();
    client
        .write_all(&masked(0xc2, &compressed(&mut c, &blob)))
        .await
        .expect("write");
    assert_eq!(
        server.recv().await,
        Received::Binary(Bytes::from(blob.clone()))
    );
    // An empty compressed message is one 0x00 byte (§7.2.3.6).
    client
        .write_all(&masked(0xc1, &[0x00]))
        .await
        .expect("write");
    assert_eq!(server.recv().await, Received::Text(String::new()));
    // Uncompressed messages still pass.
    client
        .write_all(&masked(0x81, b"plain"))
        .await
        .expect("write");
    assert_eq!(server.recv().await, Received::Text("plain".into()));

    let mut d = Decompress::new_with_window_bits(false, 15);
    server.send_text(&text).await.expect("send");
    let (first, payload) = server_frame(&mut client).await;
    assert_eq!(first, 0xc1, "FIN, RSV1, text");
    assert!(payload.len() < text.len() / 4, "{} bytes", payload.len());
    assert_eq!(inflated(&mut d, &payload), text.as_bytes());
    server
        .send_binary(Bytes::from(blob.clone()))
        .await
        .expect("send");
    let (first, payload) = server_frame(&mut client).await;
    assert_eq!(first, 0xc2, "FIN, RSV1, binary");
    assert_eq!(inflated(&mut d, &payload), blob);
}

#[tokio::test]
async fn a_fragmented_compressed_message_with_control_frames_between() {
    let (mut server, mut client) = session(1 << 20, Some(FORGET)).await;
    let text = chatter(5000);
    let data = compressed(&mut compressor(15), text.as_bytes());
    let (a, rest) = data.split_at(data.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let input = [
        // RSV1 on the first frame only.
        masked(0x41, a),
        masked(0x89, b"ping"),
        masked(0x00, b),
        masked(0x8a, b"unsolicited pong"),
        masked(0x00, &[]),
        masked(0x80, c),
    ]
    .concat();
    client.write_all(&input).await.expect("write");
    assert_eq!(server.recv().await, Received::Text(text));
    assert_eq!(server_frame(&mut client).await, (0x8a, b"ping".to_vec()));
    // The next message, a plain fragmented one, and then a compressed one again.
    let input = [
        masked(0x01, b"he"),
        masked(0x80, b"llo"),
        masked(0xc1, &compressed(&mut compressor(15), b"again")),
    ]
    .concat();
    client.write_all(&input).await.expect("write");
    assert_eq!(server.recv().await, Received::Text("hello".into()));
    assert_eq!(server.recv().await, Received::Text("again".into()));
}

#[tokio::test]
async fn context_takeover_carries_the_window_over_and_no_context_takeover_does_not() {
    let text = chatter(2000);
    // Kept: the client's second message refers back into the first, and so do the server's.
    let (mut server, mut client) = session(1 << 20, Some(KEEP)).await;
    let mut c = compressor(15);
    let first = compressed(&mut c, text.as_bytes());
    let second = compressed(&mut c, text.as_bytes());
    assert!(
        second.len() < first.len() / 4,
        "{} vs {}",
        second.len(),
        first.len()
    );
    client
        .write_all(&[masked(0xc1, &first), masked(0xc1, &second)].concat())
        .await
        .expect("write");
    assert_eq!(server.recv().await, Received::Text(text.clone()));
    assert_eq!(server.recv().await, Received::Text(text.clone()));
    let mut d = Decompress::new_with_window_bits(false, 15);
    server.send_text(&text).await.expect("send");
    server.send_text(&text).await.expect("send");
    let (_, one) = server_frame(&mut client).await;
    let (_, two) = server_frame(&mut client).await;
    assert!(two.len() < one.len() / 4, "{} vs {}", two.len(), one.len());
    assert_eq!(inflated(&mut d, &one), text.as_bytes());
    assert_eq!(inflated(&mut d, &two), text.as_bytes());

    // Not kept: each server message inflates on its own, and the client's inflate with a
    // window the server dropped after each message.
    let (mut server, mut client) = session(1 << 20, Some(FORGET)).await;
    server.send_text(&text).await.expect("send");
    server.send_text(&text).await.expect("send");
    let (_, one) = server_frame(&mut client).await;
    let (_, two) = server_frame(&mut client).await;
    assert_eq!(one, two);
    let fresh = || Decompress::new_with_window_bits(false, 15);
    assert_eq!(inflated(&mut fresh(), &two), text.as_bytes());
    for _ in 0..2 {
        let msg = compressed(&mut compressor(15), text.as_bytes());
        client.write_all(&masked(0xc1, &msg)).await.expect("write");
        assert_eq!(server.recv().await, Received::Text(text.clone()));
    }
}

#[tokio::test]
async fn window_bits_bound_the_distances_each_side_uses() {
    // A 1000-byte block twice: with a 9-bit window (512 bytes) the repeat is out of reach.
    let block = noise(1000);
    let data = [block.clone(), block].concat();
    let narrow = Deflate {
        server_max_window_bits: Some(9),
        client_max_window_bits: Some(10),
        ..KEEP
    };
    let (mut server, mut client) = session(1 << 20, Some(narrow)).await;
    server
        .send_binary(Bytes::from(data.clone()))
        .await
        .expect("send");
    let (_, small_window) = server_frame(&mut client).await;
    // An inflater with a 9-bit window fails on any distance past 512.
    let mut d = Decompress::new_with_window_bits(false, 9);
    assert_eq!(inflated(&mut d, &small_window), data);
    assert!(small_window.len() > 1900, "{} bytes", small_window.len());
    let (mut wide, mut wide_client) = session(1 << 20, Some(KEEP)).await;
    wide.send_binary(Bytes::from(data.clone()))
        .await
        .expect("send");
    let (_, big_window) = server_frame(&mut wide_client).await;
    assert!(big_window.len() < 1100, "{} bytes", big_window.len());
    // The client compresses with the 10-bit window it was given.
    let msg = compressed(&mut compressor(10), &data);
    client.write_all(&masked(0xc2, &msg)).await.expect("write");
    assert_eq!(server.recv().await, Received::Binary(Bytes::from(data)));
}

/// 10 MiB of zeros, compressed to about 10 KiB.
fn bomb() -> Vec<u8> {
    let zeros = vec![0u8; 10 << 20];
    let data = compressed(&mut compressor(15), &zeros);
    assert!(data.len() < 20 << 10, "{} bytes", data.len());
    data
}

#[tokio::test]
async fn a_deflate_bomb_closes_with_1009() {
    let (mut server, mut client) = session(1 << 20, Some(FORGET)).await;
    client
        .write_all(&masked(0xc2, &bomb()))
        .await
        .expect("write");
    assert_eq!(closed_with(&mut server, &mut client).await, close::TOO_BIG);
}

#[tokio::test]
async fn a_deflate_bomb_is_inflated_no_further_than_the_limit() {
    let (pipe, mut client) = tokio::io::duplex(1 << 20);
    let max_size = 1 << 20;
    let mut filter = Inflating::new(pipe, Some(&FORGET), max_size);
    client
        .write_all(&masked(0xc2, &bomb()))
        .await
        .expect("write");
    // Read it as tungstenite would, a buffer at a time, counting what comes out.
    let mut buf = vec![0u8; 16 << 10];
    let mut handed_on = 0usize;
    let err = loop {
        match filter.read(&mut buf).await {
            Ok(0) => panic!("ended without an error after {handed_on} bytes"),
            Ok(n) => handed_on += n,
            Err(e) => break e,
        }
    };
    assert_eq!(
        InflateError::in_io(&err),
        Some(&InflateError::TooBig { max_size })
    );
    // The frames handed on hold at most the limit, with a few bytes of framing per piece.
    assert!(handed_on <= max_size + PIECE, "{handed_on} bytes");
    assert!(handed_on >= max_size - PIECE, "{handed_on} bytes");
}

#[tokio::test]
async fn rsv1_where_it_does_not_belong_is_1002() {
    let body = compressed(&mut compressor(15), b"hello");
    let cases: Vec<(Option<Deflate>, Vec<u8>)> = vec![
        // Without the extension.
        (None, masked(0xc1, &body)),
        // On control frames.
        (Some(FORGET), masked(0xc9, b"ping")),
        (Some(FORGET), masked(0xc8, &[0x03, 0xe8])),
        // On a continuation frame.
        (
            Some(FORGET),
            [masked(0x41, &body[..2]), masked(0xc0, &body[2..])].concat(),
        ),
        // On a new message inside another.
        (
            Some(FORGET),
            [masked(0x41, &body[..2]), masked(0xc1, &body)].concat(),
        ),
        // RSV2 and RSV3 mean nothing here.
        (Some(FORGET), masked(0xe1, &body)),
        (Some(FORGET), masked(0x91, b"x")),
        // A compressed frame that is not masked.
        (
            Some(FORGET),
            [vec![0xc1, body.len() as u8], body.clone()].concat(),
        ),
        // Compressed data that does not inflate (a block of the reserved type 3).
        (Some(FORGET), masked(0xc1, &[0xff, 0xff, 0xff])),
    ];
    for (deflate, input) in cases {
        let (mut server, mut client) = session(1000, deflate).await;
        client.write_all(&input).await.expect("write");
        assert_eq!(
            closed_with(&mut server, &mut client).await,
            close::PROTOCOL_ERROR,
            "{deflate:?} {input:02x?}"
        );
    }
}

#[tokio::test]
async fn utf8_is_checked_after_inflating() {
    let (mut server, mut client) = session(1000, Some(FORGET)).await;
    let body = compressed(&mut compressor(15), &[b'o', b'k', 0xce, 0xba, 0xff]);
    client.write_all(&masked(0xc1, &body)).await.expect("write");
    assert_eq!(
        closed_with(&mut server, &mut client).await,
        close::INVALID_DATA
    );
}

#[tokio::test]
async fn a_compressed_frame_over_the_limit_is_refused_unread() {
    let (mut server, mut client) = session(1000, Some(FORGET)).await;
    let body = compressed(&mut compressor(15), &noise(1500));
    assert!(body.len() > 1000);
    client.write_all(&masked(0xc2, &body)).await.expect("write");
    assert_eq!(closed_with(&mut server, &mut client).await, close::TOO_BIG);
}

/// The filter adds nothing when the extension was not agreed on.
#[tokio::test]
async fn without_the_extension_bytes_pass_untouched() {
    let (pipe, mut client) = tokio::io::duplex(1 << 16);
    let mut filter = Inflating::new(pipe, None, 1000);
    let input = [masked(0xc1, b"anything"), vec![0xff, 0x00]].concat();
    client.write_all(&input).await.expect("write");
    drop(client);
    let mut out = Vec::new();
    read_all(&mut filter, &mut out).await;
    assert_eq!(out, input);
}

async fn read_all(r: &mut (impl AsyncRead + Unpin), out: &mut Vec<u8>) {
    r.read_to_end(out).await.expect("read");
}

/// What a connection with the extension agreed on holds while idle, beyond the connection:
/// the filter's fixed part (its buffers are given back when it waits, and without context
/// takeover there is no inflater or compressor between messages).
#[test]
fn an_idle_connection_holds_little() {
    let filter = std::mem::size_of::<super::inflate::Filter>();
    let deflater = std::mem::size_of::<super::compress::Deflater>();
    eprintln!("idle: filter {filter} B, deflater {deflater} B");
    assert!(filter + deflater <= 512, "{filter} + {deflater} bytes");
}

/// The client's side of an agreed configuration: its compressor and its view of the server's.
struct Peer {
    agreed: Deflate,
    compressor: Compress,
    inflater: Decompress,
}

impl Peer {
    fn new(agreed: Deflate) -> Self {
        Self {
            agreed,
            compressor: compressor(agreed.client_window_bits().max(9)),
            inflater: Decompress::new_with_window_bits(false, agreed.server_window_bits()),
        }
    }

    /// `data` as a compressed message of `opcode`, in frames of at most `fragment` bytes.
    fn frames(&mut self, opcode: u8, data: &[u8], fragment: usize) -> Vec<u8> {
        if self.agreed.client_no_context_takeover {
            self.compressor.reset();
        }
        let body = compressed(&mut self.compressor, data);
        let pieces: Vec<&[u8]> = if body.is_empty() {
            vec![&body[..]]
        } else {
            body.chunks(fragment).collect()
        };
        let last = pieces.len() - 1;
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let fin = if i == last { 0x80 } else { 0 };
            let first = if i == 0 { 0x40 | opcode } else { 0 };
            out.extend(masked(fin | first, piece));
        }
        out
    }

    /// A message from the server, inflated; with no server context, by a fresh inflater.
    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        if self.agreed.server_no_context_takeover {
            self.inflater =
                Decompress::new_with_window_bits(false, self.agreed.server_window_bits());
        }
        inflated(&mut self.inflater, payload)
    }
}

/// Autobahn's sections 12 (payload sizes and kinds) and 13 (offers): each offer negotiated as
/// the handshake does, then messages of 16 bytes to 128 KiB, text that compresses and binary
/// that does not, sent whole or in 4 KiB fragments, echoed by the session and checked by a
/// client that follows the agreed parameters to the letter.
#[tokio::test]
async fn autobahn_style_echo_over_every_offer_and_size() {
    let offers = [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=15",
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ];
    let sizes = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072];
    for policy in [true, false] {
        let cfg = DeflateConfig {
            context_takeover: policy,
        };
        for offer in offers {
            let parsed = super::negotiate::Offer::parse(offer.as_bytes()).expect("valid");
            let agreed = parsed.accept(&cfg).expect("acceptable");
            let (mut server, mut client) = session(1 << 20, Some(agreed)).await;
            let mut peer = Peer::new(agreed);
            for (i, size) in sizes.iter().copied().enumerate() {
                let text = chatter(size);
                let cut = (0..=size)
                    .rev()
                    .find(|&n| text.is_char_boundary(n))
                    .unwrap_or(0);
                let text = &text[..cut];
                let binary = noise(size);
                let fragment = if i % 2 == 0 { 4096 } else { usize::MAX };
                client
                    .write_all(&peer.frames(0x1, text.as_bytes(), fragment))
                    .await
                    .expect("write");
                let got = server.recv().await;
                assert_eq!(got, Received::Text(text.to_owned()), "{offer} {size}");
                server.send_text(text).await.expect("send");
                let (first, payload) = server_message(&mut client).await;
                assert_eq!(first, 0x41, "{offer} {size}");
                assert_eq!(peer.inflate(&payload), text.as_bytes(), "{offer} {size}");

                client
                    .write_all(&peer.frames(0x2, &binary, fragment))
                    .await
                    .expect("write");
                let got = server.recv().await;
                assert_eq!(
                    got,
                    Received::Binary(Bytes::from(binary.clone())),
                    "{offer} {size}"
                );
                server
                    .send_binary(Bytes::from(binary.clone()))
                    .await
                    .expect("send");
                let (first, payload) = server_message(&mut client).await;
                assert_eq!(first, 0x42, "{offer} {size}");
                assert_eq!(peer.inflate(&payload), binary, "{offer} {size}");
            }
        }
    }
}

/// A compressed message longer than a piece goes out in fragments: RSV1 on the first only
/// (RFC 7692 §6.1), their payloads together one deflated message.
#[tokio::test]
async fn a_large_compressed_message_is_sent_in_fragments() {
    let (mut server, mut client) = session(1 << 22, Some(FORGET)).await;
    let blob = noise(300_000);
    server
        .send_binary(Bytes::from(blob.clone()))
        .await
        .expect("send");
    let (first, joined) = server_message(&mut client).await;
    assert_eq!(first, 0x42, "RSV1, binary");
    assert!(joined.len() > 64 * 1024, "more than one piece");
    let mut d = Decompress::new_with_window_bits(false, 15);
    assert_eq!(inflated(&mut d, &joined), blob);
}

/// With the extension agreed on, a large uncompressed frame is cut into pieces too, and the
/// app gets it whole.
#[tokio::test]
async fn a_large_plain_frame_on_a_compressed_connection_arrives_whole() {
    let (mut server, mut client) = session(1 << 22, Some(FORGET)).await;
    let blob = noise(200_000);
    client.write_all(&masked(0x82, &blob)).await.expect("write");
    assert_eq!(server.recv().await, Received::Binary(Bytes::from(blob)));
}

/// What `tungstenite` is handed for a large plain frame: pieces of at most [`CUT`], each
/// masked as its bytes were (the frame's mask from where the piece begins in it), the first of
/// the frame's type, the last with its FIN.
#[tokio::test]
async fn a_large_frame_is_handed_on_in_pieces() {
    let (pipe, mut client) = tokio::io::duplex(1 << 20);
    let mut filter = Inflating::new(pipe, None, 1 << 20);
    let data = noise(3 * CUT + 5);
    client.write_all(&masked(0x82, &data)).await.expect("write");
    drop(client);
    let mut out = Vec::new();
    read_all(&mut filter, &mut out).await;
    let mut at = &out[..];
    let mut pieces = Vec::new();
    while !at.is_empty() {
        let mut cursor = std::io::Cursor::new(at);
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("a header")
            .expect("whole");
        let start = cursor.position() as usize;
        let end = start + usize::try_from(len).expect("fits");
        let mask = header.mask.expect("masked");
        let piece = at[start..end]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]);
        pieces.push((header.is_final, header.opcode, piece.collect::<Vec<u8>>()));
        at = &at[end..];
    }
    assert_eq!(pieces.len(), 4);
    for (i, (fin, opcode, piece)) in pieces.iter().enumerate() {
        assert_eq!(*fin, i == 3);
        let kind = if i == 0 { Data::Binary } else { Data::Continue };
        assert_eq!(*opcode, OpCode::Data(kind));
        assert!(piece.len() <= CUT);
    }
    let whole: Vec<u8> = pieces.into_iter().flat_map(|p| p.2).collect();
    assert_eq!(whole, data);
}
