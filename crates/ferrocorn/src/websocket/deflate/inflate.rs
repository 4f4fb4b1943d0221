//! The read side of permessage-deflate: [`Inflating`] sits between the connection and
//! `tungstenite` and turns each compressed message into plain fragments as it arrives.
//!
//! A compressed message becomes an empty non-final frame of its type (so `tungstenite` knows
//! a message is open from its first byte on), continuation frames of at most [`PIECE`]
//! inflated bytes, and an empty final continuation. The frames handed on carry a zero mask:
//! `tungstenite` still insists that client frames be masked, and the filter unmasked the
//! payload before inflating it. Control frames between fragments pass through between them.

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

/// Largest piece of an inflated message handed on at once (and so the most the filter holds).
pub const PIECE: usize = 16 * 1024;
/// Compressed bytes fed to the inflater at once (unmasked on the stack first).
const FEED: usize = 1024;
/// Bytes read from the connection at once.
const READ: usize = 4096;
/// What §7.2.2 says to append to a message's compressed bytes before inflating its end.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The mask of the frames handed on: XOR with zeros leaves the unmasked payload as it is.
const ZERO_MASK: [u8; 4] = [0; 4];

/// The connection's stream, inflating compressed messages when permessage-deflate was agreed
/// on (otherwise only passing the bytes through: the filter is allocated only then).
pub struct Inflating<S> {
    inner: S,
    filter: Option<Box<Filter>>,
}

impl<S> Inflating<S> {
    /// `inner`, inflating as `deflate` agreed, with messages of at most `max_size` bytes.
    pub fn new(inner: S, deflate: Option<&Deflate>, max_size: usize) -> Self {
        Self {
            inner,
            filter: deflate.map(|d| Box::new(Filter::new(d, max_size))),
        }
    }
}

/// Where the filter is in the frame it reads.
enum Frame {
    /// Before a frame header.
    Header,
    /// Inside a frame handed on as it is: payload bytes left.
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

pub(super) struct Filter {
    client_window_bits: u8,
    no_context_takeover: bool,
    max_size: usize,
    piece: usize,
    /// Read from the connection, not yet looked at.
    input: BytesMut,
    /// Ready for `tungstenite`.
    output: BytesMut,
    /// Where the inflater writes, reused within a message.
    scratch: Vec<u8>,
    frame: Frame,
    message: Message,
    /// The client's LZ77 context: kept between messages only with context takeover.
    inflater: Option<Decompress>,
    eof: bool,
}

fn io_error(e: InflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Filter {
    fn new(deflate: &Deflate, max_size: usize) -> Self {
        Self {
            client_window_bits: deflate.client_window_bits(),
            no_context_takeover: deflate.client_no_context_takeover,
            max_size,
            piece: PIECE.min(max_size.max(1)),
            input: BytesMut::new(),
            output: BytesMut::new(),
            scratch: Vec::new(),
            frame: Frame::Header,
            message: Message::None,
            inflater: None,
            eof: false,
        }
    }

    /// Waiting on the connection: gives back the buffers' memory, so that a connection idle
    /// after a large message holds none of it.
    fn idle(&mut self) {
        if self.input.is_empty() {
            self.input = BytesMut::new();
        }
        self.output = BytesMut::new();
        self.scratch = Vec::new();
    }

    /// Runs the inflater on `input` into the scratch buffer, emptied first: bytes of `input`
    /// used, whether the output filled the buffer, and whether the stream ended.
    fn run(&mut self, input: &[u8], flush: FlushDecompress) -> io::Result<(usize, bool, bool)> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.reserve(self.piece);
        let inflater = self.inflater();
        let before = inflater.total_in();
        let status = inflater
            .decompress_vec(input, &mut out, flush)
            .map_err(|_| io_error(InflateError::Corrupt))?;
        let used = usize::try_from(inflater.total_in() - before).unwrap_or(usize::MAX);
        let full = out.len() == out.capacity();
        let emitted = self.emit_inflated(&out);
        self.scratch = out;
        emitted?;
        Ok((used, full, status == Status::StreamEnd))
    }

    /// Hands on a frame of `payload` (plain, zero-masked).
    fn emit(&mut self, opcode: OpCode, is_final: bool, payload: &[u8]) {
        let header = FrameHeader {
            is_final,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(ZERO_MASK),
        };
        let len = payload.len() as u64;
        self.output.reserve(header.len(len) + payload.len());
        // Writing into a BytesMut cannot fail.
        let _ = header.format(len, &mut (&mut self.output).writer());
        self.output.put_slice(payload);
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
                let all = self.input.split();
                self.output.unsplit(all);
                Ok(false)
            }
            Frame::Header => Ok(self.header()),
            Frame::Pass(left) => {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.input.len());
                if n == 0 && left > 0 {
                    return Ok(false);
                }
                let bytes = self.input.split_to(n);
                self.output.unsplit(bytes);
                self.frame = match left - n as u64 {
                    0 => Frame::Header,
                    rest => Frame::Pass(rest),
                };
                Ok(true)
            }
            Frame::Inflate {
                left,
                mask,
                at,
                fin,
            } => self.inflate(left, mask, at, fin),
            Frame::Finish(fed) => self.finish(fed),
        }
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
        let compressed = match self.message {
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
        // Anything else goes on as it came, for `tungstenite` to take or refuse.
        if !header.rsv1 && plain_bits {
            match self.message {
                Message::None if starts && !header.is_final => self.message = Message::Plain,
                Message::Plain if continues && header.is_final => self.message = Message::None,
                _ => {}
            }
        }
        let raw = self.input.split_to(header_len);
        self.output.unsplit(raw);
        self.frame = Frame::Pass(len);
        true
    }

    /// The inflater for a message that begins, kept from the last one with context takeover.
    fn inflater(&mut self) -> &mut Decompress {
        let bits = self.client_window_bits.max(9);
        self.inflater
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits))
    }

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
        if used == 0 && self.scratch.is_empty() {
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
        if self.no_context_takeover || ended {
            self.inflater = None;
        }
        self.emit(OpCode::Data(Data::Continue), true, &[]);
        self.message = Message::None;
        self.frame = Frame::Header;
        Ok(true)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(filter) = this.filter.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if !filter.output.is_empty() {
                let n = buf.remaining().min(filter.output.len());
                buf.put_slice(&filter.output[..n]);
                filter.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if filter.step()? {
                continue;
            }
            if filter.eof {
                // What is left is a partial frame: `tungstenite` sees the connection end in it.
                let rest = filter.input.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                filter.output.unsplit(rest);
                continue;
            }
            let mut chunk = [0u8; READ];
            let mut read = ReadBuf::new(&mut chunk);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            if polled.is_pending() {
                filter.idle();
            }
            ready!(polled)?;
            if read.filled().is_empty() {
                filter.eof = true;
            }
            filter.input.extend_from_slice(read.filled());
        }
    }
}

writes_through!(Inflating, inner);
