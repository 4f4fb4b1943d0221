//! How one exchange goes on an HTTP/1.x connection (and a uwsgi one, whose responses are
//! HTTP/1.x too): the body read off the socket, the response framed by [`Writer`] and written
//! in as few writes as it can (a small body rides with its head; a file's head waits in the
//! kernel for its first bytes; queued pieces go out in one `writev`), and after it the rest
//! of an unread body drained so the connection can go on.

use std::fs::File;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::net::Stream;

use super::body::BodyReader;
use super::conn::Conn;
use super::error::BodyError;
use super::request::RequestHead;
use super::response::{encode_early_hints, encode_last_chunk, ResponseHead, Trailers};
use super::writer::Writer;
use crate::addr::{Local, Peer};
use crate::connection::ctx::ConnCtx;
use crate::exchange::{self, Source, Wire};
use crate::transport::tls::TlsInfo;
use crate::websocket::handshake::{Handshake, HandshakeError};

/// A response body up to this size is copied after the head and sent with it in one write.
const SMALL_BODY: usize = 2048;

impl Conn {
    /// Runs one request through the exchange on this connection. `Ok(true)` when the
    /// connection may serve another.
    pub(crate) async fn exchange(&mut self, head: RequestHead, source: Source) -> Result<bool, ()> {
        let uwsgi = matches!(source, Source::FrontEnd(_));
        let mut wire = H1Wire::new(self, &head, uwsgi);
        exchange::run(&mut wire, head, source).await
    }
}

/// One exchange on an HTTP/1.x connection.
pub(crate) struct H1Wire<'c> {
    conn: &'c mut Conn,
    writer: Writer,
    body: BodyReader,
    /// A refusal: `Connection: close`, and the connection ends after it.
    close: bool,
    /// The request came in a uwsgi packet: the connection is the front end's, not the
    /// client's, and is never handed to the app.
    uwsgi: bool,
}

impl<'c> H1Wire<'c> {
    /// `uwsgi`: the request came in a uwsgi packet; its response is plain HTTP/1.x, never
    /// chunked, without interim responses, and the connection closes after it.
    pub(crate) fn new(conn: &'c mut Conn, head: &RequestHead, uwsgi: bool) -> Self {
        let writer = if uwsgi {
            Writer::for_uwsgi(head)
        } else {
            Writer::new(head)
        };
        let body = BodyReader::new(head.framing, conn.ctx.config.max_body);
        Self {
            conn,
            writer,
            body,
            close: false,
            uwsgi,
        }
    }

    /// Sends `len` bytes of `file` from `offset` with `sendfile(2)` within `--write-timeout`.
    /// A short send (the file shrank under us) breaks the framing's promise: the connection
    /// must close.
    async fn sendfile(&mut self, file: &File, offset: u64, len: u64) -> Result<(), ()> {
        let timeout = self.conn.ctx.config.write_timeout;
        let sent = tokio::time::timeout(timeout, self.conn.io.sendfile(file, offset, len))
            .await
            .map_err(|_| log::debug!("{}: sendfile timed out", self.conn.peer))?
            .map_err(|e| log::debug!("{}: sendfile failed: {e}", self.conn.peer))?;
        self.writer.written += sent;
        if sent < len {
            return Err(());
        }
        Ok(())
    }
}

impl Wire for H1Wire<'_> {
    fn ctx(&self) -> &Arc<ConnCtx> {
        &self.conn.ctx
    }

    fn peer(&self) -> &Peer {
        &self.conn.peer
    }

    fn local(&self) -> &Local {
        &self.conn.local
    }

    fn tls(&self) -> Option<&Arc<TlsInfo>> {
        self.conn.tls.as_ref()
    }

    fn preload_body(&mut self) -> Bytes {
        self.conn.preload_body(&mut self.body)
    }

    async fn await_small_body(&mut self) -> Result<Bytes, BodyError> {
        self.conn.await_small_body(&mut self.body).await
    }

    fn body_done(&self) -> bool {
        self.body.is_done()
    }

    async fn read_body(&mut self, max: usize) -> Result<Bytes, BodyError> {
        let stall = self.conn.ctx.config.body_timeout;
        let r = self.conn.read_body(&mut self.body, max, stall).await;
        if r.is_err() {
            // The body's framing is lost: the connection cannot carry another request.
            self.writer.keep_alive = false;
        }
        r
    }

    async fn send_continue(&mut self) -> Result<(), ()> {
        if !self.writer.interim_allowed() {
            return Ok(());
        }
        self.conn.write(&[b"HTTP/1.1 100 Continue\r\n\r\n"]).await
    }

    async fn send_hints(&mut self, hints: &super::response::EarlyHints) -> Result<(), ()> {
        if !self.writer.interim_allowed() {
            return Ok(());
        }
        let mut out = BytesMut::new();
        encode_early_hints(hints, &mut out);
        self.conn.write(&[&out]).await
    }

    async fn send_head(
        &mut self,
        head: &ResponseHead,
        first: Bytes,
        last: bool,
        file_follows: bool,
    ) -> Result<u64, ()> {
        let conn = &mut *self.conn;
        if conn.out.capacity() == 0 {
            conn.out = crate::http1::buffers::take();
        }
        let closing = self.close || conn.shutting_down();
        self.writer
            .start(head, first.len(), last, closing, &mut conn.out);
        let data = self.writer.frame(first, &mut conn.out);
        let suffix = self.writer.chunk_suffix(&data);
        let tail = if last { self.writer.finish() } else { &b""[..] };
        let mut out = std::mem::take(&mut conn.out);
        let r = if file_follows && data.is_empty() && !self.writer.chunked() && !self.writer.is_head
        {
            // The head waits in the kernel for the file's first bytes (MSG_MORE) instead of
            // leaving in a segment of its own.
            let timeout = conn.ctx.config.write_timeout;
            match tokio::time::timeout(timeout, conn.io.write_all_more(&out)).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(()),
            }
        } else if data.len() <= SMALL_BODY {
            // Head and a small body in one buffer: one plain write.
            out.extend_from_slice(&data);
            out.extend_from_slice(suffix);
            out.extend_from_slice(tail);
            conn.write(&[&out]).await
        } else {
            conn.write(&[&out, &data, suffix, tail]).await
        };
        conn.out = out;
        r?;
        Ok(data.len() as u64)
    }

    async fn send_data(&mut self, pieces: &mut [Bytes]) -> Result<u64, ()> {
        let conn = &mut *self.conn;
        conn.out.clear();
        let sent = self.writer.frame_all(pieces, &mut conn.out);
        if sent == 0 {
            return Ok(0);
        }
        let suffix = self.writer.chunk_suffix(b"\r\n");
        let out = std::mem::take(&mut conn.out);
        let r = match pieces {
            [one] => conn.write(&[&out, one, suffix]).await,
            _ => {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(pieces.len() + 2);
                parts.push(&out);
                parts.extend(pieces.iter().map(|p| &p[..]));
                parts.push(suffix);
                conn.write(&parts).await
            }
        };
        conn.out = out;
        r?;
        Ok(sent)
    }

    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, ()> {
        let len = self.writer.limit(len);
        if len == 0 {
            return Ok(0);
        }
        if self.writer.chunked() {
            self.conn
                .write(&[format!("{len:x}\r\n").as_bytes()])
                .await?;
        }
        self.sendfile(file, offset, len).await?;
        if self.writer.chunked() {
            self.conn.write(&[b"\r\n"]).await?;
        }
        Ok(len)
    }

    async fn finish(&mut self) -> Result<(), ()> {
        let tail = self.writer.finish();
        if tail.is_empty() {
            return Ok(());
        }
        self.conn.write(&[tail]).await
    }

    async fn finish_with(&mut self, trailers: &Trailers) -> Result<(), ()> {
        // Only a chunked body has a place for them (not one with a length, not over uwsgi).
        if !self.writer.chunked() || self.writer.finished {
            return self.finish().await;
        }
        self.writer.finished = true;
        let mut out = BytesMut::new();
        encode_last_chunk(trailers, &mut out);
        self.conn.write(&[&out]).await
    }

    fn batches(&self) -> bool {
        true
    }

    fn abort(&mut self) {
        // The connection closes at the exchange's error; a client sees the body cut short.
    }

    fn close_after(&mut self) {
        self.close = true;
        self.writer.keep_alive = false;
    }

    async fn abandoned(&mut self) {
        // HTTP/1.1 has no word for it. For an app that can be told (an event loop's: ASGI's
        // `http.disconnect`), the socket is watched for the client's EOF once the body is
        // read; app threads find a client that left at the next write, as before (a
        // half-closed client still gets its answer).
        if self.conn.ctx.remote.is_none() || !self.body.is_done() {
            return std::future::pending::<()>().await;
        }
        self.conn.io.peer_closed().await;
    }

    fn byte_stream(&mut self) -> Option<(&mut Stream, &mut BytesMut)> {
        if self.uwsgi {
            return None;
        }
        let conn = &mut *self.conn;
        Some((&mut conn.io, &mut conn.buf))
    }

    fn websocket_handshake(&self, head: &RequestHead) -> Option<Result<Handshake, HandshakeError>> {
        (!self.uwsgi && crate::tunnel::asks_for_websocket(head)).then(|| Handshake::check(head))
    }

    async fn open_websocket(
        &mut self,
        hs: &Handshake,
        subprotocol: Option<&str>,
        fields: &[(&str, &[u8])],
    ) -> Result<u16, ()> {
        let switching = hs.accept(subprotocol, fields).map_err(drop)?;
        let timeout = self.conn.ctx.config.write_timeout;
        let conn = &mut *self.conn;
        let wrote = tokio::time::timeout(timeout, async {
            conn.io.write_all(&switching).await?;
            conn.io.flush().await
        })
        .await;
        if !matches!(wrote, Ok(Ok(()))) {
            return Err(());
        }
        // A client may send its first frames right behind its handshake: copied out, so that
        // the read buffer goes back to the thread's stack (the session reads through its own;
        // an idle WebSocket would otherwise hold both).
        let ahead = BytesMut::from(&conn.buf[..]);
        super::buffers::give(std::mem::replace(&mut conn.buf, ahead));
        Ok(101)
    }

    fn websocket_io(&mut self) -> Option<exchange::WsIo<'_>> {
        Some(Box::new(self.conn.websocket_stream()))
    }

    fn park_websocket(&mut self, ws: exchange::Opened) -> Option<exchange::Opened> {
        self.conn.parked = Some(Box::new(ws));
        None
    }

    async fn wrap_up(&mut self, unanswered_continue: bool) -> bool {
        if !self.writer.complete() || !self.writer.keep_alive {
            return false;
        }
        self.conn
            .drain_rest(&mut self.body, unanswered_continue)
            .await
    }
}
