//! The read side of a WebSocket: [`Inflating`] sits between the connection and `tungstenite`,
//! turns each compressed message into plain fragments as it arrives (permessage-deflate), and
//! cuts a large frame into fragments, so that `tungstenite` never holds a frame larger than
//! [`CUT`].
//!
//! A compressed message becomes an empty non-final frame of its type (so `tungstenite` knows
//! a message is open from its first byte on), continuation frames of at most [`PIECE`]
//! inflated bytes, and an empty final continuation. A plain data frame larger than [`CUT`]
//! becomes fragments of that size, the first of its type, the last with its FIN bit.
//! `tungstenite` reserves room for a whole frame in its read buffer and never gives it back
//! (0.30): without the cut, one large message left the connection holding its size for as
//! long as it stayed open. The pieces of a large frame keep its mask (each piece's header the
//! mask from where the piece begins in it); the inflated frames carry a zero mask:
//! `tungstenite` still insists that client frames be masked, and the filter unmasked the
//! compressed payload before inflating it. Control frames between fragments pass through
//! between them.

use std::io;
use std::io::Cursor;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::{Deflate, InflateError};
use crate::http1::buffers;

/// Largest piece of an inflated message handed on at once (and so the most the filter holds).
pub const PIECE: usize = 16 * 1024;
/// Largest plain frame handed on as it came; a larger one goes on in pieces of this size.
/// Smaller than this, a frame costs nothing more than before the cut: `tungstenite` turns a
/// one-frame message into the app's bytes without a copy, but copies fragments together
/// (and checks text twice), so cutting 64 KiB messages into 16 KiB pieces cost a 64 KiB echo
/// a third more instructions (callgrind).
pub const CUT: usize = 64 * 1024;
/// Compressed bytes fed to the inflater at once (unmasked on the stack first).
const FEED: usize = 1024;
/// Bytes read from the connection at once, into one of the thread's reusable read buffers.
const READ: usize = buffers::READ_SIZE;
/// What §7.2.2 says to append to a message's compressed bytes before inflating its end.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The mask of the frames handed on: XOR with zeros leaves the unmasked payload as it is.
const ZERO_MASK: [u8; 4] = [0; 4];

/// The connection's stream, inflating compressed messages when permessage-deflate was agreed
/// on, and cutting large frames.
pub struct Inflating<S> {
    inner: S,
    filter: Box<Filter>,
}

impl<S> Inflating<S> {
    /// `inner`, inflating as `deflate` agreed (if it was), with messages of at most
    /// `max_size` bytes.
    pub fn new(inner: S, deflate: Option<&Deflate>, max_size: usize) -> Self {
        Self {
            inner,
            filter: Box::new(Filter::new(deflate, max_size)),
        }
    }
}

/// Where the filter is in the frame it reads.
enum Frame {
    /// Before a frame header.
    Header,
    /// Inside a frame handed on as it is: bytes left of it (its header's too, at first).
    Pass(u64),
    /// Inside a frame of a compressed message: payload bytes left, the mask and how far into
    /// it the next byte is, and whether the frame ends the message.
    Inflate {
        left: u64,
        mask: [u8; 4],
        at: usize,
        fin: bool,
    },
    /// The message's last frame is in: inflating [`TAIL`] (bytes of it fed so far).
    Finish(usize),
    /// Inside a plain data frame larger than a piece, handed on in pieces: payload bytes
    /// left, the mask and how far into it the next byte is, whether the frame ends the
    /// message, and the next piece's opcode (the frame's for the first, then continuation).
    Cut {
        left: u64,
        mask: [u8; 4],
        at: usize,
        fin: bool,
        opcode: OpCode,
    },
    /// A header `tungstenite` will refuse too: from here on, bytes pass through unread.
    Opaque,
}

/// The message the filter is inside.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Message {
    None,
    /// An uncompressed fragmented message: its continuations pass through.
    Plain,
    /// A compressed message: inflated bytes handed on so far.
    Compressed(usize),
}

/// What the filter needs only when permessage-deflate was agreed on (boxed: most sessions
/// held open are idle, and without the extension they hold none of it).
struct Inflate {
    client_window_bits: u8,
    no_context_takeover: bool,
    piece: usize,
    /// Where the inflater writes, reused within a message.
    scratch: Vec<u8>,
    /// The client's LZ77 context: kept between messages only with context takeover.
    inflater: Option<Decompress>,
}

pub(super) struct Filter {
    /// permessage-deflate was agreed on: compressed messages are inflated (else RSV1 frames
    /// pass through, for `tungstenite` to refuse).
    inflate: Option<Box<Inflate>>,
    max_size: usize,
    /// Read from the connection, not yet looked at.
    input: BytesMut,
    /// Ready for `tungstenite`.
    output: BytesMut,
    /// Ready for `tungstenite` after `output`: the payload of a piece of a large frame (split
    /// off `input`, not copied, still masked).
    then: BytesMut,
    frame: Frame,
    message: Message,
    eof: bool,
}

fn io_error(e: InflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Filter {
    fn new(deflate: Option<&Deflate>, max_size: usize) -> Self {
        Self {
            inflate: deflate.map(|d| {
                Box::new(Inflate {
                    client_window_bits: d.client_window_bits(),
                    no_context_takeover: d.client_no_context_takeover,
                    piece: PIECE.min(max_size.max(1)),
                    scratch: Vec::new(),
                    inflater: None,
                })
            }),
            max_size,
            input: BytesMut::new(),
            output: BytesMut::new(),
            then: BytesMut::new(),
            frame: Frame::Header,
            message: Message::None,
            eof: false,
        }
    }

    /// Waiting on the connection: gives back the buffers' memory, so that a connection idle
    /// after a large message holds none of it.
    fn idle(&mut self) {
        if self.input.is_empty() {
            buffers::give(std::mem::take(&mut self.input));
        }
        self.output = BytesMut::new();
        if let Some(inflate) = self.inflate.as_deref_mut() {
            inflate.scratch = Vec::new();
        }
    }

    /// Runs the inflater on `input` into the scratch buffer, emptied first: bytes of `input`
    /// used, whether the output filled the buffer, and whether the stream ended.
    fn run(&mut self, input: &[u8], flush: FlushDecompress) -> io::Result<(usize, bool, bool)> {
        // Only a compressed message comes here, and only with the extension agreed on.
        let Some(inflate) = self.inflate.as_deref_mut() else {
            return Err(io_error(InflateError::Corrupt));
        };
        let mut out = std::mem::take(&mut inflate.scratch);
        out.clear();
        out.reserve(inflate.piece);
        let inflater = inflate.inflater();
        let before = inflater.total_in();
        let status = inflater
            .decompress_vec(input, &mut out, flush)
            .map_err(|_| io_error(InflateError::Corrupt))?;
        let used = usize::try_from(inflater.total_in() - before).unwrap_or(usize::MAX);
        let full = out.len() == out.capacity();
        let emitted = self.emit_inflated(&out);
        if let Some(inflate) = self.inflate.as_deref_mut() {
            inflate.scratch = out;
        }
        emitted?;
        Ok((used, full, status == Status::StreamEnd))
    }

    /// Hands on a frame of `payload` (plain, zero-masked).
    fn emit(&mut self, opcode: OpCode, is_final: bool, payload: &[u8]) {
        self.emit_header(opcode, is_final, payload.len() as u64, ZERO_MASK);
        self.output.put_slice(payload);
    }

    /// Hands on the header of a frame of `len` bytes masked with `mask`.
    fn emit_header(&mut self, opcode: OpCode, is_final: bool, len: u64, mask: [u8; 4]) {
        let header = FrameHeader {
            is_final,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(mask),
        };
        self.output.reserve(header.len(len));
        // Writing into a BytesMut cannot fail.
        let _ = header.format(len, &mut (&mut self.output).writer());
    }

    /// Counts `inflated` bytes of the message and hands them on.
    fn emit_inflated(&mut self, inflated: &[u8]) -> io::Result<()> {
        if inflated.is_empty() {
            return Ok(());
        }
        let Message::Compressed(so_far) = self.message else {
            return Ok(());
        };
        let total = so_far + inflated.len();
        if total > self.max_size {
            return Err(io_error(InflateError::TooBig {
                max_size: self.max_size,
            }));
        }
        self.message = Message::Compressed(total);
        self.emit(OpCode::Data(Data::Continue), false, inflated);
        Ok(())
    }

    /// One step with what is in `input`: `Ok(false)` when more input is needed.
    fn step(&mut self) -> io::Result<bool> {
        match self.frame {
            Frame::Opaque => {
                if self.input.is_empty() {
                    return Ok(false);
                }
                let all = self.input.split();
                self.output.unsplit(all);
                Ok(true)
            }
            Frame::Header => Ok(self.header()),
            // Handed on straight from `input` (`pass`); here only when it is empty.
            Frame::Pass(0) => {
                self.frame = Frame::Header;
                Ok(true)
            }
            Frame::Pass(_) => Ok(false),
            Frame::Inflate {
                left,
                mask,
                at,
                fin,
            } => self.inflate(left, mask, at, fin),
            Frame::Finish(fed) => self.finish(fed),
            Frame::Cut {
                left,
                mask,
                at,
                fin,
                opcode,
            } => Ok(self.cut(left, mask, at, fin, opcode)),
        }
    }

    /// Hands on the next piece (of [`CUT`] bytes) of a large plain frame, once it is all in
    /// `input`: `false` when more input is needed.
    fn cut(&mut self, left: u64, mask: [u8; 4], at: usize, fin: bool, opcode: OpCode) -> bool {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(CUT);
        if self.input.len() < n {
            return false;
        }
        // Still masked: the piece's header carries the mask from where the piece begins in it.
        let piece = self.input.split_to(n);
        let left = left - n as u64;
        let from: [u8; 4] = std::array::from_fn(|i| mask[(at + i) % 4]);
        self.emit_header(opcode, fin && left == 0, n as u64, from);
        self.then = piece;
        self.frame = if left == 0 {
            Frame::Header
        } else {
            Frame::Cut {
                left,
                mask,
                at: (at + n) % 4,
                fin,
                opcode: OpCode::Data(Data::Continue),
            }
        };
        true
    }

    /// Reads a frame header from `input`, if it is all there, and decides the frame's fate.
    fn header(&mut self) -> bool {
        let mut cursor = Cursor::new(&self.input[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return false,
            Err(_) => {
                self.frame = Frame::Opaque;
                return true;
            }
        };
        let header_len = cursor.position() as usize;
        let plain_bits = !header.rsv2 && !header.rsv3;
        let fits = usize::try_from(len).is_ok_and(|n| n <= self.max_size);
        let mask = header.mask.filter(|_| plain_bits && fits);
        let starts = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        let continues = header.opcode == OpCode::Data(Data::Continue);
        // A compressed message begins (RSV1 on its first frame only), or goes on.
        let compressed = self.inflate.is_some()
            && match self.message {
                Message::None => starts && header.rsv1,
                Message::Compressed(_) => continues && !header.rsv1,
                Message::Plain => false,
            };
        if let (Some(mask), true) = (mask, compressed) {
            self.input.advance(header_len);
            if self.message == Message::None {
                self.message = Message::Compressed(0);
                self.emit(header.opcode, false, &[]);
            }
            self.frame = Frame::Inflate {
                left: len,
                mask,
                at: 0,
                fin: header.is_final,
            };
            return true;
        }
        if !header.rsv1 && plain_bits {
            match self.message {
                Message::None if starts && !header.is_final => self.message = Message::Plain,
                Message::Plain if continues && header.is_final => self.message = Message::None,
                _ => {}
            }
            // A large data frame goes on in pieces (checked by `tungstenite` as any others).
            if let (Some(mask), true) = (mask, (starts || continues) && len > CUT as u64) {
                self.input.advance(header_len);
                self.frame = Frame::Cut {
                    left: len,
                    mask,
                    at: 0,
                    fin: header.is_final,
                    opcode: header.opcode,
                };
                return true;
            }
        }
        // Anything else goes on as it came, for `tungstenite` to take or refuse.
        self.frame = Frame::Pass(len.saturating_add(header_len as u64));
        true
    }

    /// Moves what `buf` takes of a frame handed on as it is straight from `input`; false when
    /// there is none.
    fn pass(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Frame::Pass(left) = self.frame else {
            return false;
        };
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.input.len())
            .min(buf.remaining());
        if n == 0 {
            return false;
        }
        buf.put_slice(&self.input[..n]);
        self.input.advance(n);
        self.frame = match left - n as u64 {
            0 => Frame::Header,
            rest => Frame::Pass(rest),
        };
        true
    }
}

impl Inflate {
    /// The inflater for a message that begins, kept from the last one with context takeover.
    fn inflater(&mut self) -> &mut Decompress {
        let bits = self.client_window_bits.max(9);
        self.inflater
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits))
    }
}

impl Filter {
    /// Inflates up to [`FEED`] bytes of a compressed frame, handing on what comes out.
    fn inflate(&mut self, left: u64, mask: [u8; 4], at: usize, fin: bool) -> io::Result<bool> {
        if left == 0 {
            self.frame = if fin { Frame::Finish(0) } else { Frame::Header };
            return Ok(true);
        }
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.input.len())
            .min(FEED);
        if n == 0 {
            return Ok(false);
        }
        let mut fed = [0u8; FEED];
        for (i, (out, b)) in fed.iter_mut().zip(&self.input[..n]).enumerate() {
            *out = b ^ mask[(at + i) % 4];
        }
        let (used, _, _) = self.run(&fed[..n], FlushDecompress::None)?;
        if used == 0 && self.inflate.as_ref().is_none_or(|i| i.scratch.is_empty()) {
            // Nothing taken, nothing given: the stream ended (BFINAL) and more data follows.
            return Err(io_error(InflateError::Corrupt));
        }
        self.input.advance(used);
        self.frame = Frame::Inflate {
            left: left - used as u64,
            mask,
            at: (at + used) % 4,
            fin,
        };
        Ok(true)
    }

    /// Inflates [`TAIL`] after the message's last frame, then ends the message.
    fn finish(&mut self, fed: usize) -> io::Result<bool> {
        let (used, full, ended) = self.run(&TAIL[fed..], FlushDecompress::Sync)?;
        let fed = fed + used;
        if (fed < TAIL.len() || full) && !ended {
            self.frame = Frame::Finish(fed);
            return Ok(true);
        }
        // A final block (BFINAL) ends the LZ77 stream: the next message starts a new one.
        if let Some(inflate) = self
            .inflate
            .as_deref_mut()
            .filter(|i| i.no_context_takeover || ended)
        {
            inflate.inflater = None;
        }
        self.emit(OpCode::Data(Data::Continue), true, &[]);
        self.message = Message::None;
        self.frame = Frame::Header;
        Ok(true)
    }
}

/// Moves what `buf` takes of `ready` into it; false when `ready` is empty.
fn hand_over(ready: &mut BytesMut, buf: &mut ReadBuf<'_>) -> bool {
    if ready.is_empty() {
        return false;
    }
    let n = buf.remaining().min(ready.len());
    buf.put_slice(&ready[..n]);
    ready.advance(n);
    true
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filter = &mut *this.filter;
        loop {
            if hand_over(&mut filter.output, buf) || filter.pass(buf) {
                return Poll::Ready(Ok(()));
            }
            if hand_over(&mut filter.then, buf) {
                if filter.then.is_empty() {
                    // Lets `input` grow in place again (they shared its allocation).
                    filter.then = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if filter.step()? {
                continue;
            }
            if filter.eof {
                // What is left is a partial frame: `tungstenite` sees the connection end in it
                // (inside a frame being cut, right after its last whole piece).
                if matches!(filter.frame, Frame::Cut { .. }) {
                    filter.input.clear();
                }
                let rest = filter.input.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                filter.output.unsplit(rest);
                continue;
            }
            // Straight into `input` (one of the thread's reusable buffers while it holds
            // bytes, see `idle`), not zero-filled first.
            if filter.input.capacity() == 0 {
                filter.input = buffers::take();
            }
            filter.input.reserve(READ);
            let mut read = ReadBuf::uninit(&mut filter.input.spare_capacity_mut()[..READ]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let n = read.filled().len();
            if polled.is_pending() {
                filter.idle();
            }
            ready!(polled)?;
            if n == 0 {
                filter.eof = true;
            }
            // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity, which
            // begins at `input.len()`.
            unsafe { filter.input.set_len(filter.input.len() + n) };
        }
    }
}

writes_through!(Inflating, inner);
