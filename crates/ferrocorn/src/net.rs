//! Accepted connections over TCP, a unix socket or TLS over TCP, behind one type, with
//! sendfile(2) (and its bounded-copy stand-in for TLS).

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::addr::{Local, Peer};
use crate::http1::buffers::READ_SIZE;

/// A bound, listening socket owned by a worker.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Listener {
    /// True when a connection is waiting to be accepted.
    pub fn has_pending(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Self::Tcp(l) => l.as_raw_fd(),
            Self::Unix(l, _) => l.as_raw_fd(),
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout: poll only reports readiness.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
    }

    pub async fn accept(&self) -> io::Result<(Stream, Peer, Local)> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let local = s.local_addr()?;
                Ok((Stream::Tcp(s), Peer::Tcp(peer), Local::Tcp(local)))
            }
            Self::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix, Local::Unix(path.clone())))
            }
        }
    }
}

/// One client connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over TCP, after the handshake (`transport::tls`). rustls may hold decrypted bytes
    /// the socket no longer shows as readable, so reads go through the TLS stream, never by
    /// socket readiness alone.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The most encrypted bytes rustls holds for a TLS connection before the socket takes them,
/// and so the most plaintext encrypted per write: four full 16 KiB records (RFC 8446 §5.1),
/// which leave in one writev(2) while they are still in the CPU's cache. Measured against
/// larger batches (docs/design.md, TLS): 256 KiB was no cheaper, 1 MiB cost about 40% more
/// server CPU per 1 MiB response; below this, each response takes more syscalls.
pub(crate) const TLS_WRITE_CHUNK: usize = 64 * 1024;

/// The most encrypted bytes a TLS connection leaves queued in the kernel beyond what TCP has
/// sent (`TCP_NOTSENT_LOWAT`): one full record. Without it, a client slower than the server
/// (the usual case for bulk responses) lets up to the whole send buffer, megabytes, wait in the
/// kernel, and every ACK that opens the window then sends it from the *client's* context and
/// after it has left the cache. Measured on a 1 MiB response over TLS (wrk, 16 connections,
/// seven alternating rounds): 9% more responses per second, server CPU per response down 12%
/// and wrk's down 5% (docs/design.md, TLS). Not set on cleartext sockets: there one `writev`
/// hands the kernel a whole large body, which the limit would split into many (server CPU
/// +35% on the same response in cleartext).
pub(crate) const TLS_UNSENT_LOWAT: u32 = 16 * 1024;

/// Sets [`TLS_UNSENT_LOWAT`] on a TLS connection's socket. A kernel without the option keeps
/// its default; nothing else changes.
pub(crate) fn limit_unsent(tcp: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(TLS_UNSENT_LOWAT) {
        log::debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
}

/// Largest piece of a file read into memory at once when sendfile(2) cannot be used (TLS): one
/// TLS write's worth, so memory per connection stays at this plus what rustls holds.
const FILE_CHUNK: usize = TLS_WRITE_CHUNK;

impl Stream {
    /// The socket's descriptor (see [`crate::reclaim`]).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
            // Reclaiming shuts the TCP socket under TLS down: the connection ends at once.
            Self::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }

    /// Waits until the socket has bytes (or EOF) to read, then reads what is there into `buf`.
    /// Memory for the read is only reserved once data is ready, so an idle connection holds no
    /// buffer.
    pub async fn read_ready(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        if let Self::Tls(s) = self {
            return tls_read_ready(s, buf).await;
        }
        loop {
            match self {
                Self::Tcp(s) => s.readable().await?,
                Self::Unix(s) => s.readable().await?,
                Self::Tls(_) => unreachable!("handled above"),
            }
            if buf.capacity() == 0 {
                *buf = crate::http1::buffers::take();
            }
            buf.reserve(READ_SIZE);
            let room = buf.capacity() - buf.len();
            let r = match self {
                Self::Tcp(s) => s.try_read_buf(buf),
                Self::Unix(s) => s.try_read_buf(buf),
                Self::Tls(_) => unreachable!("handled above"),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(n) if n > 0 && n < room => {
                    // A short read emptied the socket: forget its readiness now, so the next
                    // wait goes to epoll instead of first trying a read that fails with
                    // EAGAIN (one syscall per keep-alive request; 3 -> 2 for hello). Bytes
                    // arriving after the read raise a fresh edge, so none can be missed.
                    self.forget_readable();
                    return Ok(n);
                }
                r => return r,
            }
        }
    }

    fn forget_readable(&self) {
        let would_block = || Err::<(), _>(io::ErrorKind::WouldBlock.into());
        let _ = match self {
            Self::Tcp(s) => s.try_io(Interest::READABLE, would_block),
            Self::Unix(s) => s.try_io(Interest::READABLE, would_block),
            Self::Tls(_) => Ok(()),
        };
    }

    /// Resolves when the peer has closed its end (EOF) while nothing is left to read; pends
    /// for ever once bytes arrive (the next pipelined request, or a TLS record such as a
    /// `close_notify`: those are not looked into), so it is only a hint that the client left.
    pub async fn peer_closed(&self) {
        let fd = self.raw_fd();
        loop {
            let ready = match self {
                Self::Tcp(s) => s.readable().await,
                Self::Unix(s) => s.readable().await,
                Self::Tls(s) => s.get_ref().0.readable().await,
            };
            if ready.is_err() {
                return;
            }
            let mut byte = 0u8;
            // SAFETY: a one-byte peek into a valid buffer on the connection's own socket.
            let n = unsafe {
                libc::recv(
                    fd,
                    std::ptr::addr_of_mut!(byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return,
                n if n > 0 => std::future::pending::<()>().await,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => {
                    // Readiness was stale: clear it and wait for a fresh edge.
                    let would_block = || Err::<(), _>(io::ErrorKind::WouldBlock.into());
                    let _ = match self {
                        Self::Tcp(s) => s.try_io(Interest::READABLE, would_block),
                        Self::Unix(s) => s.try_io(Interest::READABLE, would_block),
                        Self::Tls(s) => s.get_ref().0.try_io(Interest::READABLE, would_block),
                    };
                }
                _ => return, // a reset connection
            }
        }
    }

    /// Reads what is already waiting on the socket into `buf`, without waiting. True when
    /// something (or EOF) was there.
    pub fn read_ready_now(&mut self, buf: &mut bytes::BytesMut) -> io::Result<bool> {
        buf.reserve(64 * 1024);
        let r = match self {
            Self::Tcp(s) => s.try_read_buf(buf),
            Self::Unix(s) => s.try_read_buf(buf),
            Self::Tls(s) => tls_try_read_buf(s, buf),
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `len` bytes of `file` starting at `offset`, zero-copy; returns the bytes sent
    /// (fewer than `len` only if the file was shorter).
    pub async fn sendfile(&mut self, file: &File, mut offset: u64, len: u64) -> io::Result<u64> {
        if let Self::Tls(s) = self {
            return copy_file(s, file, offset, len).await;
        }
        let mut sent = 0u64;
        while sent < len {
            let chunk = usize::try_from(len - sent)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n = match self {
                Self::Tcp(s) => {
                    s.async_io(Interest::WRITABLE, || {
                        sendfile_once(s, file, &mut offset, chunk)
                    })
                    .await?
                }
                Self::Unix(s) => {
                    s.async_io(Interest::WRITABLE, || {
                        sendfile_once(s, file, &mut offset, chunk)
                    })
                    .await?
                }
                Self::Tls(_) => unreachable!("handled above"),
            };
            if n == 0 {
                break;
            }
            sent += n as u64;
        }
        Ok(sent)
    }
}

/// [`Stream::read_ready`] for TLS: waits on the socket only when rustls holds no decrypted
/// bytes (or close) already, so an idle connection still holds no read buffer.
async fn tls_read_ready(
    s: &mut tokio_rustls::server::TlsStream<TcpStream>,
    buf: &mut bytes::BytesMut,
) -> io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let (tcp, conn) = s.get_mut();
    let buffered = conn.process_new_packets().map_or(true, |state| {
        state.plaintext_bytes_to_read() > 0 || state.peer_has_closed()
    });
    if !buffered {
        tcp.readable().await?;
    }
    if buf.capacity() == 0 {
        *buf = crate::http1::buffers::take();
    }
    buf.reserve(READ_SIZE);
    s.read_buf(buf).await
}

/// [`Stream::read_ready_now`] for TLS: one poll of the TLS stream's read, which decrypts what
/// the socket has without waiting. A `Pending` leaves a no-op waker registered; the
/// connection's next wait polls again with its own.
fn tls_try_read_buf(
    s: &mut tokio_rustls::server::TlsStream<TcpStream>,
    buf: &mut bytes::BytesMut,
) -> io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(s, buf));
    match read.poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// sendfile(2) cannot see through TLS: the file is read in [`FILE_CHUNK`] pieces and each is
/// written (encrypted) before the next is read, so memory stays bounded.
async fn copy_file(
    s: &mut tokio_rustls::server::TlsStream<TcpStream>,
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    use tokio::io::AsyncWriteExt;
    let mut chunk = vec![0u8; FILE_CHUNK.min(usize::try_from(len).unwrap_or(FILE_CHUNK))];
    let mut sent = 0u64;
    while sent < len {
        let want = usize::try_from(len - sent).map_or(chunk.len(), |l| l.min(chunk.len()));
        // A page-cache read, as sendfile(2) itself would do on this thread.
        let n = file.read_at(&mut chunk[..want], offset + sent)?;
        if n == 0 {
            break;
        }
        s.write_all(&chunk[..n]).await?;
        sent += n as u64;
    }
    s.flush().await?;
    Ok(sent)
}

impl Stream {
    /// Writes all of `buf` flagged `MSG_MORE` on TCP: the kernel holds it back for the bytes
    /// that follow at once (a file's head before its `sendfile`), so the client gets the head
    /// with the body instead of a small segment of its own. Other streams write it plainly.
    pub async fn write_all_more(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let Self::Tcp(s) = self else {
            // Under TLS the head must leave rustls now (no file bytes may follow to flush it).
            tokio::io::AsyncWriteExt::write_all(self, buf).await?;
            return tokio::io::AsyncWriteExt::flush(self).await;
        };
        while !buf.is_empty() {
            let n = s
                .async_io(Interest::WRITABLE, || {
                    // SAFETY: a valid socket and a live buffer of `buf.len()` bytes.
                    let n = unsafe {
                        libc::send(
                            s.as_raw_fd(),
                            buf.as_ptr().cast(),
                            buf.len(),
                            libc::MSG_MORE | libc::MSG_NOSIGNAL,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }
}

fn sendfile_once(
    sock: &impl AsRawFd,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both descriptors are open for the duration of the call and `off` is a valid
    // pointer to a local; sendfile(2) reads the file and writes the socket, nothing more.
    let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as usize)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tls_socket_keeps_at_most_one_record_unsent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, _) = accepted.expect("accept");
        let _client = client.expect("connect");
        let sock = socket2::SockRef::from(&server);
        assert_eq!(
            sock.tcp_notsent_lowat().expect("getsockopt"),
            0,
            "the kernel's default"
        );
        limit_unsent(&server);
        assert_eq!(
            sock.tcp_notsent_lowat().expect("getsockopt"),
            TLS_UNSENT_LOWAT
        );
    }
}
