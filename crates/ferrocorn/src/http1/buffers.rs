//! Read buffers, reused across requests on a worker's I/O thread.
//!
//! An idle keep-alive connection holds no buffer (10,000 idle connections would otherwise pin
//! 8 KiB each). Dropping the buffer at every pause and allocating a fresh one for the next
//! request cost a malloc/free of 8 KiB per request, glibc's slow path for that size; instead
//! the buffer goes back to a small per-thread stack, and the next connection that has bytes to
//! read takes it from there.

use std::cell::RefCell;

use bytes::BytesMut;

/// Bytes reserved for each read of a request head.
pub const READ_SIZE: usize = 8 * 1024;

/// Buffers kept for reuse per thread; more are freed (this many are in use at once only under
/// load, when they are reused at once).
const KEPT: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for a read.
pub fn take() -> BytesMut {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

/// Gives back `buf` (which must hold nothing the connection still needs): kept when its whole
/// allocation is free again (no body bytes split off from it are still held by the app).
pub fn give(mut buf: BytesMut) {
    buf.clear();
    // Grown for a body (64 KiB reads): freed, so that the stack never pins much memory.
    if buf.capacity() == 0 || !buf.try_reclaim(READ_SIZE) || buf.capacity() > 2 * READ_SIZE {
        return;
    }
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEPT {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_whole() {
        let mut buf = take();
        let ptr = buf.as_ptr();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let _ = buf.split_to(5); // parsed and dropped
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        assert!(again.capacity() >= READ_SIZE);
    }

    #[test]
    fn a_grown_buffer_is_freed() {
        let mut buf = take();
        buf.reserve(64 * 1024);
        give(buf);
        assert!(take().capacity() <= 2 * READ_SIZE);
    }

    #[test]
    fn a_buffer_whose_bytes_are_still_held_is_not_reused() {
        let mut buf = take();
        buf.extend_from_slice(b"body bytes the app keeps");
        let held = buf.split_to(10).freeze();
        give(buf);
        let other = take();
        assert_ne!(other.as_ptr(), held.as_ptr());
        assert_eq!(&held[..], b"body bytes");
    }
}
