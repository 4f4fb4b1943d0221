//! The send side of permessage-deflate: each message deflated whole into one frame with RSV1
//! (RFC 7692 §7.2.1).
//!
//! Without context takeover the compressor is the worker thread's, borrowed for the message
//! and reset after it: zlib-rs's deflate state is about 250 KiB (9-bit window) to 380 KiB
//! (15-bit), too much to allocate per message or to keep per idle connection. With context
//! takeover each connection keeps its own, from its first message on.

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

use super::Deflate;

/// What a sync flush ends with, and §7.2.1 says to take off.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    /// One compressor per worker thread for messages that keep no context, with its window.
    static SPARE: RefCell<Option<(u8, Compress)>> = const { RefCell::new(None) };
}

fn compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::default(), false, bits)
}

/// A connection's compressing side.
pub struct Deflater {
    bits: u8,
    /// The connection's own compressor, with context takeover.
    kept: Option<Compress>,
    keep_context: bool,
}

impl Deflater {
    pub fn new(deflate: &Deflate) -> Self {
        Self {
            bits: deflate.server_window_bits(),
            kept: None,
            keep_context: !deflate.server_no_context_takeover,
        }
    }

    /// `data` as one frame of type `opcode` (text or binary): compressed with RSV1, or as it
    /// is if the compressor failed (which a raw stream with valid parameters does not do; the
    /// compressor is then dropped, and the next message starts a fresh window).
    pub fn frame(&mut self, data: &[u8], opcode: Data) -> Frame {
        let bits = self.bits;
        let payload = if self.keep_context {
            let c = self.kept.get_or_insert_with(|| compressor(bits));
            let payload = deflate(c, data);
            if payload.is_none() {
                self.kept = None;
            }
            payload
        } else {
            SPARE.with(|spare| {
                let mut spare = spare.borrow_mut();
                let mut c = match spare.take() {
                    Some((b, c)) if b == bits => c,
                    _ => compressor(bits),
                };
                let payload = deflate(&mut c, data);
                if payload.is_some() {
                    c.reset();
                    *spare = Some((bits, c));
                }
                payload
            })
        };
        match payload {
            Some(payload) => {
                let mut frame = Frame::message(payload, OpCode::Data(opcode), true);
                frame.header_mut().rsv1 = true;
                frame
            }
            None => Frame::message(data.to_vec(), OpCode::Data(opcode), true),
        }
    }
}

/// `data` deflated and sync-flushed, without the flush's trailing empty block.
pub(super) fn deflate(c: &mut Compress, data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let done = usize::try_from(c.total_in() - start).ok()?;
        c.compress_vec(data.get(done..)?, &mut out, FlushCompress::Sync)
            .ok()?;
        let used = usize::try_from(c.total_in() - start).ok()?;
        if used >= data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Some(out)
}
