//! [`super::Session`] against a client on the other end of an in-memory pipe: a real
//! `tungstenite` client for the well-behaved cases, raw frames for the bad ones.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{close, Received, Session, WsConfig};
use crate::observe::metrics::RequestMetrics;

fn config(max_size: usize, ping: Option<Duration>) -> WsConfig {
    WsConfig {
        max_size,
        ping_interval: ping,
        ping_timeout: Duration::from_millis(200),
        deflate: None,
    }
}

async fn session(cfg: &WsConfig) -> (Session<DuplexStream>, DuplexStream) {
    let (server, client) = tokio::io::duplex(1 << 20);
    (
        Session::new(server, cfg, RequestMetrics::default(), None).await,
        client,
    )
}

/// A client frame with first byte `first` (FIN, RSV bits, opcode), masked with a fixed key.
pub(super) fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The close code of the close frame the server sent first.
async fn close_code_sent(client: &mut DuplexStream) -> u16 {
    let mut head = [0u8; 4];
    client.read_exact(&mut head).await.expect("a close frame");
    assert_eq!(head[0], 0x88, "a close frame, unfragmented");
    assert_eq!(head[1] & 0x80, 0, "unmasked");
    u16::from_be_bytes([head[2], head[3]])
}

#[tokio::test]
async fn messages_both_ways_and_the_close_handshake() {
    let cfg = config(1 << 20, None);
    let (mut server, client) = session(&cfg).await;
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    client
        .send(Message::Text("héllo".into()))
        .await
        .expect("send");
    assert_eq!(server.recv().await, Received::Text("héllo".into()));
    client
        .send(Message::Binary(Bytes::from_static(b"\x00\xff")))
        .await
        .expect("send");
    assert_eq!(
        server.recv().await,
        Received::Binary(Bytes::from_static(b"\x00\xff"))
    );
    server.send_text("back").await.expect("send");
    assert_eq!(
        client.next().await.expect("a message").expect("ok"),
        Message::Text("back".into())
    );
    // A ping from the client is answered, and is not a message.
    client
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .expect("ping");
    client
        .send(Message::Text("after".into()))
        .await
        .expect("send");
    assert_eq!(server.recv().await, Received::Text("after".into()));
    assert_eq!(
        client.next().await.expect("a pong").expect("ok"),
        Message::Pong(Bytes::from_static(b"p"))
    );
    assert!(matches!(
        server.close(999, "x").await,
        Err(super::SendError::BadCode(999))
    ));
    server.close(4000, "done").await.expect("close");
    match client.next().await.expect("the close").expect("ok") {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4000);
            assert_eq!(f.reason.as_str(), "done");
        }
        other => panic!("{other:?}"),
    }
    // The client's reply ends the server's side.
    let _ = client.flush().await;
    assert_eq!(
        server.recv().await,
        Received::Closed {
            code: 4000,
            reason: "done".into()
        }
    );
}

#[tokio::test]
async fn bad_input_is_closed_with_the_rfcs_codes() {
    let cfg = config(1000, None);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Unmasked text frame.
        (vec![0x81, 0x02, b'h', b'i'], close::PROTOCOL_ERROR),
        // RSV1 set, no extension negotiated.
        (masked(0xc1, b"hi"), close::PROTOCOL_ERROR),
        // Opcode 3 (reserved data) and 0xB (reserved control).
        (masked(0x83, b"hi"), close::PROTOCOL_ERROR),
        (masked(0x8b, b""), close::PROTOCOL_ERROR),
        // A ping of 126 bytes, and a fragmented one.
        (masked(0x89, &[0; 126]), close::PROTOCOL_ERROR),
        (masked(0x09, b"p"), close::PROTOCOL_ERROR),
        // A continuation with nothing to continue.
        (masked(0x80, b"x"), close::PROTOCOL_ERROR),
        // Text that is not UTF-8, whole and across fragments.
        (masked(0x81, &[0xce, 0xba, 0xff]), close::INVALID_DATA),
        (
            [masked(0x01, &[0xce]), masked(0x80, &[0x28])].concat(),
            close::INVALID_DATA,
        ),
        // Over --ws-max-size, in one frame and across fragments.
        (masked(0x82, &[0; 1001]), close::TOO_BIG),
        (
            [masked(0x02, &[0; 600]), masked(0x80, &[0; 600])].concat(),
            close::TOO_BIG,
        ),
    ];
    for (input, code) in cases {
        let (mut server, mut client) = session(&cfg).await;
        client.write_all(&input).await.expect("write");
        match server.recv().await {
            Received::Closed { code: got, .. } => assert_eq!(got, code, "{input:02x?}"),
            other => panic!("{input:02x?}: {other:?}"),
        }
        assert_eq!(close_code_sent(&mut client).await, code, "{input:02x?}");
    }
}

#[tokio::test]
async fn a_control_frame_between_fragments_is_fine() {
    let cfg = config(1000, None);
    let (mut server, mut client) = session(&cfg).await;
    let input = [
        masked(0x01, b"hel"),
        masked(0x89, b"ping"),
        masked(0x80, b"lo"),
    ]
    .concat();
    client.write_all(&input).await.expect("write");
    assert_eq!(server.recv().await, Received::Text("hello".into()));
}

#[tokio::test]
async fn an_unanswered_ping_closes_with_1011() {
    let cfg = config(1000, Some(Duration::from_millis(50)));
    let (mut server, mut client) = session(&cfg).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), server.recv())
        .await
        .expect("closed in time");
    assert_eq!(
        ended,
        Received::Closed {
            code: close::INTERNAL_ERROR,
            reason: "keepalive ping timeout".into()
        }
    );
    // The client saw the ping (opcode 9), then the close.
    let mut ping = [0u8; 2];
    client.read_exact(&mut ping).await.expect("ping");
    assert_eq!(ping, [0x89, 0x00]);
    assert_eq!(close_code_sent(&mut client).await, close::INTERNAL_ERROR);
}

#[tokio::test]
async fn an_answered_ping_keeps_the_connection() {
    let cfg = config(1000, Some(Duration::from_millis(30)));
    let (mut server, client) = session(&cfg).await;
    // The tungstenite client answers pings whenever it reads.
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            if let Message::Text(t) = &m {
                if t.as_str() == "stop" {
                    break;
                }
            }
            got.push(m);
        }
        (client, got)
    });
    // Several ping intervals and timeouts pass with nothing from the client but pongs.
    let until = tokio::time::Instant::now() + Duration::from_millis(600);
    let waited = tokio::time::timeout_at(until, server.recv()).await;
    assert!(waited.is_err(), "closed early: {waited:?}");
    server.send_text("stop").await.expect("send");
    let (_client, got) = reader.await.expect("reader");
    assert!(
        got.iter().filter(|m| matches!(m, Message::Ping(_))).count() >= 3,
        "{got:?}"
    );
}

/// The size of the future `f` returns: the bytes a task running it holds while it waits.
fn future_size<A, F: FnOnce(A) -> Fut, Fut>(_: F) -> usize {
    std::mem::size_of::<Fut>()
}

/// An open WebSocket on HTTP/1.1 waits in what its connection parked (`Conn::into_websocket`:
/// the connection, the relay and the session), which is held whole for as long as it is
/// open, so it is part of what an idle connection costs; the future the connection served
/// HTTP in (the exchange's states inline) is boxed and freed when the WebSocket starts.
#[test]
fn an_idle_websocket_holds_a_small_future() {
    use crate::addr::{Local, Peer};
    use crate::connection::ctx::ConnCtx;
    use crate::exchange::Opened;
    use crate::http1::conn::Conn;
    use crate::net::Stream;
    use std::sync::Arc;
    let http = future_size(
        |(io, peer, local, ctx): (Stream, Peer, Local, Arc<ConnCtx>)| {
            crate::connection::serve(io, peer, local, ctx)
        },
    );
    let parked = future_size(|(conn, ws): (Conn, Box<Opened>)| conn.serve_websocket(ws));
    let session = std::mem::size_of::<Session<crate::http2::Rewind<&mut Stream>>>();
    eprintln!("connection future: {http} bytes; parked WebSocket: {parked}; session: {session}");
    assert!(http <= 8 * 1024, "the connection's future is {http} bytes");
    // 2,616 bytes before the session was lent to the relay (not moved into it: held twice)
    // and the rare states of `Session::recv` (a ping due, a failure) were boxed.
    assert!(
        parked <= 2 * 1024,
        "a parked WebSocket's future is {parked} bytes"
    );
}

/// The frames the server wrote (FIN, RSV1, opcode, payload), read raw off `client` until one
/// with FIN.
async fn server_message(client: &mut DuplexStream) -> Vec<(bool, bool, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.expect("a frame");
        assert_eq!(head[1] & 0x80, 0, "unmasked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                client.read_exact(&mut n).await.expect("length");
                u64::from(u16::from_be_bytes(n))
            }
            127 => {
                let mut n = [0u8; 8];
                client.read_exact(&mut n).await.expect("length");
                u64::from_be_bytes(n)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("length")];
        client.read_exact(&mut payload).await.expect("payload");
        let fin = head[0] & 0x80 != 0;
        frames.push((fin, head[0] & 0x40 != 0, head[0] & 0x0f, payload));
        if fin {
            return frames;
        }
    }
}

/// A message longer than a piece goes out in fragments of at most [`super::SEND_PIECE`]: the
/// first of its type, continuations after it, FIN on the last only; a shorter one in one frame.
#[tokio::test]
async fn a_large_message_is_sent_in_fragments() {
    let cfg = config(1 << 22, None);
    let (mut server, mut client) = session(&cfg).await;
    let text: String = "héllo wörld ".repeat(10_000);
    let data = Bytes::from(
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for (opcode, payload) in [(1u8, Bytes::from(text.clone())), (2, data.clone())] {
        let sent = if opcode == 1 {
            server.send_text(text.clone()).await
        } else {
            server.send_binary(data.clone()).await
        };
        sent.expect("send");
        let frames = server_message(&mut client).await;
        assert_eq!(frames.len(), payload.len().div_ceil(super::SEND_PIECE));
        for (i, (fin, rsv1, code, piece)) in frames.iter().enumerate() {
            assert_eq!(*fin, i == frames.len() - 1);
            assert!(!rsv1);
            assert_eq!(*code, if i == 0 { opcode } else { 0 });
            assert!(piece.len() <= super::SEND_PIECE);
        }
        let whole: Vec<u8> = frames.into_iter().flat_map(|f| f.3).collect();
        assert_eq!(whole, payload);
    }
    server.send_text("short").await.expect("send");
    assert_eq!(
        server_message(&mut client).await,
        vec![(true, false, 1, b"short".to_vec())]
    );
}

/// A large frame from the client reaches the app whole, as does a fragmented message whose
/// fragments are large, with a ping between them; text cut inside a character is still
/// checked as a whole (a bad byte past the first piece is 1007).
#[tokio::test]
async fn large_frames_from_the_client_arrive_whole() {
    let cfg = config(1 << 22, None);
    let (mut server, mut client) = session(&cfg).await;
    let data: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8).collect();
    client.write_all(&masked(0x82, &data)).await.expect("write");
    assert_eq!(
        server.recv().await,
        Received::Binary(Bytes::from(data.clone()))
    );

    let text = "ünïcode ".repeat(30_000);
    let bytes = text.as_bytes();
    let third = bytes.len() / 3 + 1; // inside a two-byte character
    let mut frames = masked(0x01, &bytes[..third]);
    frames.extend(masked(0x89, b"ping"));
    frames.extend(masked(0x00, &bytes[third..2 * third]));
    frames.extend(masked(0x80, &bytes[2 * third..]));
    client.write_all(&frames).await.expect("write");
    assert_eq!(server.recv().await, Received::Text(text.clone()));

    let mut bad = bytes.to_vec();
    bad[100_000] = 0xff;
    client.write_all(&masked(0x81, &bad)).await.expect("write");
    assert_eq!(
        server.recv().await,
        Received::Closed {
            code: close::INVALID_DATA,
            reason: "invalid UTF-8".into()
        }
    );
}

/// A large frame sent unmasked is refused as any unmasked frame (1002), a large orphan
/// continuation as any other (1002), and one over the limit as any other (1009).
#[tokio::test]
async fn a_large_frame_is_checked_as_any_frame() {
    let cfg = config(100_000, None);
    let mut unmasked = vec![0x82, 126];
    unmasked.extend_from_slice(&50_000u16.to_be_bytes());
    unmasked.extend(std::iter::repeat_n(7u8, 50_000));
    let cases = [
        (unmasked, close::PROTOCOL_ERROR),
        (masked(0x80, &[1u8; 50_000]), close::PROTOCOL_ERROR),
        (masked(0x82, &[1u8; 100_001]), close::TOO_BIG),
        (
            [masked(0x02, &[1u8; 60_000]), masked(0x80, &[1u8; 60_000])].concat(),
            close::TOO_BIG,
        ),
    ];
    for (input, code) in cases {
        let (mut server, mut client) = session(&cfg).await;
        client.write_all(&input).await.expect("write");
        match server.recv().await {
            Received::Closed { code: got, .. } => assert_eq!(got, code),
            other => panic!("{other:?}"),
        }
        assert_eq!(close_code_sent(&mut client).await, code);
    }
}
