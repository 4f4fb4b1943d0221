//! Memory shared between the master and its workers: anonymous shared mappings created by the
//! master before it forks, so every process sees the same bytes at the same address. Only
//! atomics live there.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Types that are valid when all their bytes are zero and hold only atomics, so they may be
/// shared between processes through a fresh mapping.
///
/// # Safety
/// Implementors must be `repr(C)` structs of atomics (or of other `Atomics` types).
pub unsafe trait Atomics: Sized {}

/// A zeroed shared mapping holding one `T`, unmapped when dropped.
#[derive(Debug)]
pub struct SharedPage<T: Atomics> {
    ptr: NonNull<T>,
}

// SAFETY: the page holds only atomics (see `Atomics`), safe to share between threads.
unsafe impl<T: Atomics> Send for SharedPage<T> {}
// SAFETY: as above: every access goes through an atomic.
unsafe impl<T: Atomics> Sync for SharedPage<T> {}

impl<T: Atomics> SharedPage<T> {
    pub fn new() -> std::io::Result<Self> {
        let len =
            NonZeroUsize::new(std::mem::size_of::<T>()).ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous shared mapping, zeroed: a valid `T` (see `Atomics`).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Self { ptr: ptr.cast() })
    }

    pub fn get(&self) -> &T {
        // SAFETY: the mapping lives as long as `self` and is only accessed through atomics.
        unsafe { self.ptr.as_ref() }
    }

    /// The view a forked worker keeps. Only valid in a process where `self` is never dropped:
    /// a worker, which exits without returning into the master's code.
    pub fn leak_in_child(&self) -> &'static T {
        // SAFETY: as documented: the mapping is never unmapped in the calling process.
        unsafe { &*self.ptr.as_ptr() }
    }
}

impl<T: Atomics> Drop for SharedPage<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this size and is not used after drop.
        let _ = unsafe { munmap(self.ptr.cast(), std::mem::size_of::<T>()) };
    }
}
