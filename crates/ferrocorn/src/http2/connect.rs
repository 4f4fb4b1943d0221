//! An HTTP/2 stream as a byte stream, for a WebSocket over an extended CONNECT (RFC 8441):
//! after the `200`, the stream's DATA frames carry the WebSocket's bytes both ways. Reading
//! gives the stream's flow-control window back only for the bytes taken, so a client is held
//! to its window while the session does not read; writing sends only what the peer's window
//! allows, so a client that does not read holds the session's writes back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The two halves of an extended CONNECT stream after its `200` (the receiving one is the
/// stream's body's, borrowed).
pub(crate) struct ConnectIo<'a> {
    send: SendStream<Bytes>,
    recv: &'a mut RecvStream,
    /// Received but not yet read.
    held: Bytes,
    ended: bool,
    /// END_STREAM was sent.
    shut: bool,
}

impl<'a> ConnectIo<'a> {
    pub(crate) fn new(send: SendStream<Bytes>, recv: &'a mut RecvStream) -> Self {
        Self {
            send,
            recv,
            held: Bytes::new(),
            ended: false,
            shut: false,
        }
    }
}

impl Drop for ConnectIo<'_> {
    /// The WebSocket is over: its last frames (the close handshake's) go out with END_STREAM,
    /// where dropping the stream's handles would reset it and drop what is still queued.
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}

fn broken(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

impl AsyncRead for ConnectIo<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.held.is_empty() && !this.ended {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => this.held = data,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(broken(e))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.held.len().min(buf.remaining());
        buf.put_slice(&this.held[..n]);
        this.held.advance(n);
        // The window comes back for what was taken; a stream already reset has none to give.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnectIo<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let send = &mut self.send;
        send.reserve_capacity(buf.len());
        loop {
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(0))) => continue,
                Poll::Ready(Some(Ok(n))) => {
                    let n = n.min(buf.len());
                    send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(broken)?;
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(broken(e))),
                Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes the frames `send_data` queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // END_STREAM; a stream already gone has nothing to end.
        if !self.shut {
            self.shut = true;
            let _ = self.send.send_data(Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}
