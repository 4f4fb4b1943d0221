//! A stream's request body for the app: flow-control capacity is released only for the bytes
//! handed to the app, so a stream the app does not read holds its window, not the worker's
//! memory (RFC 9113 §5.2: the receiver's window is the sender's backpressure).

use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::RecvStream;

use crate::http1::error::BodyError;

pub(crate) struct H2Body {
    recv: RecvStream,
    /// Received but not yet given to the app (its capacity not yet released).
    held: Bytes,
    received: u64,
    /// `--limit-request-body` (zero: none).
    max: u64,
    ended: bool,
}

impl H2Body {
    pub(crate) fn new(recv: RecvStream, max: u64) -> Self {
        let ended = recv.is_end_stream();
        Self {
            recv,
            held: Bytes::new(),
            received: 0,
            max,
            ended,
        }
    }

    /// The stream itself, for a WebSocket over it (`super::connect`; nothing of it read as a
    /// body before).
    pub(crate) fn stream(&mut self) -> &mut RecvStream {
        &mut self.recv
    }

    /// True when the whole body has been handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.held.is_empty() && self.ended
    }

    /// Up to `max` bytes for the app: waits (at most `stall`) for the first, then takes what
    /// has already arrived without waiting, so one round trip brings a whole `read(n)` when
    /// the client is quick. Empty at the end of the body.
    pub(crate) async fn read(&mut self, max: usize, stall: Duration) -> Result<Bytes, BodyError> {
        let max = max.max(1);
        // Empty DATA frames (without END_STREAM) bring nothing: wait on for bytes or the end.
        while self.held.is_empty() && !self.ended {
            match tokio::time::timeout(stall, self.recv.data()).await {
                Err(_) => return Err(BodyError::Timeout),
                Ok(next) => self.take(next)?,
            }
        }
        let first = self.give(max)?;
        if first.len() >= max || self.ended && self.held.is_empty() {
            return Ok(first);
        }
        let mut acc = BytesMut::from(&first[..]);
        while acc.len() < max {
            if self.held.is_empty() {
                if self.ended {
                    break;
                }
                // Only what is already here: never wait on a slow client for more.
                let ready = std::future::poll_fn(|cx| match self.recv.poll_data(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending => Poll::Ready(None),
                })
                .await;
                match ready {
                    Some(r) => self.take(r)?,
                    None => break,
                }
            }
            let more = self.give(max - acc.len())?;
            acc.extend_from_slice(&more);
        }
        Ok(acc.freeze())
    }

    /// Reads and drops the rest of the body, giving its window back, while it stays within
    /// `max` bytes and keeps coming within `stall`; true when it ended.
    pub(crate) async fn drain(&mut self, max: u64, stall: Duration) -> bool {
        // Dropped bytes are not the app's: `--limit-request-body` no longer applies.
        self.max = 0;
        let mut dropped = 0u64;
        while !self.is_done() {
            let Ok(piece) = self.read(64 * 1024, stall).await else {
                return false;
            };
            dropped += piece.len() as u64;
            if dropped > max {
                return false;
            }
        }
        true
    }

    fn take(&mut self, next: Option<Result<Bytes, h2::Error>>) -> Result<(), BodyError> {
        match next {
            None => {
                self.ended = true;
                Ok(())
            }
            Some(Err(e)) => Err(BodyError::Io(e.to_string())),
            Some(Ok(data)) => {
                self.received += data.len() as u64;
                if self.max > 0 && self.received > self.max {
                    return Err(BodyError::TooLarge(self.max));
                }
                self.held = data;
                if self.recv.is_end_stream() {
                    self.ended = true;
                }
                Ok(())
            }
        }
    }

    /// Hands out up to `n` held bytes and gives their window back to the client.
    fn give(&mut self, n: usize) -> Result<Bytes, BodyError> {
        let piece = self.held.split_to(n.min(self.held.len()));
        if !piece.is_empty() {
            self.recv
                .flow_control()
                .release_capacity(piece.len())
                .map_err(|e| BodyError::Io(e.to_string()))?;
        }
        Ok(piece)
    }
}
