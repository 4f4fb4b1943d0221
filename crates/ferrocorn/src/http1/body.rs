//! Reading a request body off the connection as the app asks for it, by its framing.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::chunked::{ChunkedDecoder, Decoded};
use super::error::BodyError;
use super::request::Framing;
use crate::net::Stream;

/// How much is read from the socket at once.
const READ_SIZE: usize = 64 * 1024;

/// The unread rest of one request's body.
#[derive(Debug)]
pub enum BodyReader {
    Length(u64),
    /// A chunked body, with the bytes decoded so far and the most allowed (zero: no limit).
    Chunked(ChunkedDecoder, u64, u64),
    Done,
    /// Reading failed (bad framing, too large, stalled, closed): the rest of the stream cannot
    /// be trusted as body or as a next request, so the connection must close.
    Failed,
}

impl BodyReader {
    /// `max` is `--limit-request-body` (zero: none); a declared length over it is refused
    /// before the app runs, so it only matters here for chunked bodies.
    pub fn new(framing: Framing, max: u64) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::new(), 0, max),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// The whole body, if it has a declared length and is all in `buf` already.
    pub fn take_buffered(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        let Self::Length(n) = *self else { return None };
        let n = usize::try_from(n).ok().filter(|&n| n <= buf.len())?;
        *self = Self::Done;
        Some(buf.split_to(n).freeze())
    }

    /// The next piece of the body, at most `max` bytes; empty once the body is complete.
    /// Bytes past the body stay in `buf` for the next request.
    pub async fn read(
        &mut self,
        io: &mut Stream,
        buf: &mut BytesMut,
        max: usize,
        stall: Duration,
    ) -> Result<Bytes, BodyError> {
        let result = self.read_inner(io, buf, max, stall).await;
        if result.is_err() {
            *self = Self::Failed;
        }
        result
    }

    async fn read_inner(
        &mut self,
        io: &mut Stream,
        buf: &mut BytesMut,
        max: usize,
        stall: Duration,
    ) -> Result<Bytes, BodyError> {
        loop {
            match self {
                Self::Done => return Ok(Bytes::new()),
                Self::Failed => return Err(BodyError::Failed),
                Self::Length(remaining) => {
                    if !buf.is_empty() {
                        let n = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(buf.len())
                            .min(max);
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            *self = Self::Done;
                        }
                        return Ok(buf.split_to(n).freeze());
                    }
                }
                Self::Chunked(dec, seen, limit) => match dec.decode(buf, max)? {
                    Decoded::Data(d) => {
                        *seen += d.len() as u64;
                        if *limit > 0 && *seen > *limit {
                            return Err(BodyError::TooLarge(*limit));
                        }
                        return Ok(d);
                    }
                    Decoded::End => {
                        *self = Self::Done;
                        return Ok(Bytes::new());
                    }
                    Decoded::NeedMore => {}
                },
            }
            fill(io, buf, stall).await?;
        }
    }

    /// The whole body of a declared length, waiting for the client to send what is missing
    /// (each wait at most `stall`); empty for any other framing. Callers bound the length.
    pub async fn read_whole(
        &mut self,
        io: &mut Stream,
        buf: &mut BytesMut,
        stall: Duration,
    ) -> Result<Bytes, BodyError> {
        let Self::Length(n) = *self else {
            return Ok(Bytes::new());
        };
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        while buf.len() < n {
            if let Err(e) = fill(io, buf, stall).await {
                *self = Self::Failed;
                return Err(e);
            }
        }
        Ok(self.take_buffered(buf).unwrap_or_default())
    }

    /// Reads and discards what is left of the body, up to `limit` bytes. False when the body
    /// could not be finished that way (the connection must then be closed).
    pub async fn drain(
        &mut self,
        io: &mut Stream,
        buf: &mut BytesMut,
        limit: u64,
        stall: Duration,
    ) -> bool {
        let mut seen = 0u64;
        while !self.is_done() {
            if matches!(self, Self::Failed) {
                return false;
            }
            if let Self::Length(n) = self {
                if *n > limit.saturating_sub(seen) + buf.len() as u64 {
                    return false;
                }
            }
            match self.read(io, buf, READ_SIZE, stall).await {
                Ok(b) => {
                    seen += b.len() as u64;
                    if seen > limit {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// Reads more bytes from the client into `buf`, failing if it sends nothing for `stall`.
async fn fill(io: &mut Stream, buf: &mut BytesMut, stall: Duration) -> Result<(), BodyError> {
    buf.reserve(READ_SIZE);
    match tokio::time::timeout(stall, io.read_buf(buf)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(0)) => Err(BodyError::Incomplete),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(BodyError::Io(e.to_string())),
    }
}
