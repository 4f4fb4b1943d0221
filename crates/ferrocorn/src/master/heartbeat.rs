//! A page of memory shared between the master and one worker: the worker's last beat, whether
//! it has booted, and its request metrics. The master reads it to find hung workers.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

use crate::observe::metrics::Counters;

#[repr(C)]
struct Beat {
    /// Monotonic milliseconds of the last beat.
    last_ms: AtomicU64,
    /// The worker loaded its app and accepts connections.
    ready: AtomicBool,
    /// The worker's request metrics (kept when `--metrics-bind` is set).
    counters: Counters,
}

/// The shared page. Created by the master before the fork; both processes see the same memory.
#[derive(Debug)]
pub struct Heartbeat {
    beat: NonNull<Beat>,
}

// SAFETY: the page holds only atomics, which are safe to share between threads and processes.
unsafe impl Send for Heartbeat {}
// SAFETY: as above: every access goes through an atomic.
unsafe impl Sync for Heartbeat {}

/// Milliseconds on the system-wide monotonic clock (the same in every process).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

impl Heartbeat {
    pub fn new() -> std::io::Result<Self> {
        let len = NonZeroUsize::new(std::mem::size_of::<Beat>())
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous shared mapping; it is zeroed, a valid `Beat` (all atomics).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(std::io::Error::from)?;
        let hb = Self { beat: ptr.cast() };
        hb.beat();
        Ok(hb)
    }

    fn get(&self) -> &Beat {
        // SAFETY: the mapping lives as long as `self` and is only accessed through atomics.
        unsafe { self.beat.as_ref() }
    }

    pub fn beat(&self) {
        self.get().last_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn set_ready(&self) {
        self.get().ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.get().ready.load(Ordering::Relaxed)
    }

    /// The worker's request metrics.
    pub fn counters(&self) -> &Counters {
        &self.get().counters
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis(
            monotonic_ms().saturating_sub(self.get().last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// The worker's view of its heartbeat page: a copy of the pointer that never unmaps it (the
/// worker process ends with the page still mapped).
#[derive(Debug, Clone, Copy)]
pub struct BeatHandle {
    beat: NonNull<Beat>,
}

// SAFETY: as for `Heartbeat`: only atomics are reached through the pointer.
unsafe impl Send for BeatHandle {}
// SAFETY: as above.
unsafe impl Sync for BeatHandle {}

impl Heartbeat {
    /// The handle a forked worker keeps. Only valid in a process where `self` is never dropped:
    /// a worker, which exits without returning into the master's code.
    pub fn handle(&self) -> BeatHandle {
        BeatHandle { beat: self.beat }
    }
}

impl BeatHandle {
    fn get(&self) -> &Beat {
        // SAFETY: the page stays mapped for the life of the worker process (see `handle`).
        unsafe { self.beat.as_ref() }
    }

    pub fn beat(&self) {
        self.get().last_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn set_ready(&self) {
        self.get().ready.store(true, Ordering::Relaxed);
    }

    /// The worker's request metrics, for the rest of the worker's life.
    pub fn counters(&self) -> &'static Counters {
        // SAFETY: the page is never unmapped in a worker (see `Heartbeat::handle`), and
        // `Counters` holds only atomics.
        unsafe { &(*self.beat.as_ptr()).counters }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this size and is not used after drop.
        let _ = unsafe { munmap(self.beat.cast(), std::mem::size_of::<Beat>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_and_ages() {
        let hb = Heartbeat::new().unwrap();
        assert!(hb.age() < Duration::from_secs(1));
        assert!(!hb.is_ready());
        hb.set_ready();
        assert!(hb.is_ready());
    }
}
