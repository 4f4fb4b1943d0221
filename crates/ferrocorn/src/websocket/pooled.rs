//! The byte stream under a WebSocket session, read through a buffer that the connection holds
//! only while bytes wait in it.
//!
//! `tungstenite` reads into its own buffer at most `read_buffer_size` bytes at a time, and
//! zero-fills that much before every read (0.30, `FrameCodec::read_in`), so all of it stays
//! resident on every connection, idle or not. The session keeps that buffer small
//! ([`super::READ_BUFFER`]); to keep a large message from costing a system call per few
//! kilobytes, a read smaller than [`READ_SIZE`] goes through one of the worker thread's
//! reusable read buffers (`crate::http1::buffers`), taken when the socket is read and given
//! back as soon as `tungstenite` has taken what it held. An idle connection holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use crate::http1::buffers::{self, READ_SIZE};

pub(crate) struct Pooled<S> {
    inner: S,
    /// Bytes read from `inner` that the session has not taken yet (no allocation when none).
    held: BytesMut,
}

impl<S> Pooled<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            held: BytesMut::new(),
        }
    }

    /// Moves what fits of the held bytes into `buf`; the buffer goes back once emptied.
    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.held.len().min(buf.remaining());
        buf.put_slice(&self.held[..n]);
        self.held.advance(n);
        if self.held.is_empty() {
            buffers::give(std::mem::take(&mut self.held));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Pooled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            this.hand_over(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_SIZE {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut spare = buffers::take();
        let read = {
            let mut into = ReadBuf::uninit(spare.spare_capacity_mut());
            match Pin::new(&mut this.inner).poll_read(cx, &mut into) {
                Poll::Ready(Ok(())) => Ok(into.filled().len()),
                Poll::Ready(Err(e)) => Err(e),
                Poll::Pending => {
                    buffers::give(spare);
                    return Poll::Pending;
                }
            }
        };
        match read {
            Ok(n) => {
                // SAFETY: `poll_read` filled (initialised) the first `n` bytes of the spare
                // capacity, which begins at `spare.len()` (0: the buffer was empty).
                unsafe { spare.set_len(spare.len() + n) };
                this.held = spare;
                if this.held.is_empty() {
                    // The end of the stream: `buf` left unfilled says so.
                    buffers::give(std::mem::take(&mut this.held));
                } else {
                    this.hand_over(buf);
                }
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                buffers::give(spare);
                Poll::Ready(Err(e))
            }
        }
    }
}

writes_through!(Pooled, inner);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_hold_nothing_after() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut pooled = Pooled::new(server);
        let mut got = Vec::new();
        let mut piece = [0u8; 1000];
        loop {
            let n = pooled.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, sent);
        assert_eq!(pooled.held.capacity(), 0);
    }

    #[tokio::test]
    async fn a_large_read_goes_straight_through() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[7u8; 10_000]).await.unwrap();
        let mut pooled = Pooled::new(server);
        let mut big = vec![0u8; 2 * READ_SIZE];
        let n = pooled.read(&mut big).await.unwrap();
        assert_eq!(n, 10_000);
        assert!(big[..n].iter().all(|&b| b == 7));
        assert_eq!(pooled.held.capacity(), 0);
    }
}
