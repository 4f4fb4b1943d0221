//! The I/O thread's runs of ready work, and which inline responses wait for the end of one.
//!
//! Writing a response wakes the client that waits for it. When that client shares the machine
//! (a proxy such as nginx, a load generator), each wake-up costs a context switch, often
//! taking the CPU from the worker itself. When several requests are ready at once, the first
//! response made inline goes out at once and the others at the end of the run: their
//! connection tasks yield, tokio runs the rest of the ready tasks, looks for new events, and
//! then resumes them, so their writes follow one another and the client is woken about once
//! per run. A lone request is answered at once, without the extra look for events.
//!
//! Measured with wrk on the same two cores (docs/benchmarks.md): Flask hello +19-36% req/s with
//! lower p50 and p99; hello p50 0.43 -> 0.26 ms but p99 1.0-1.6 -> 1.9-4.0 ms, as a held
//! response waits for the rest of the run (tokio bounds a run at 61 tasks between looks for
//! events).

use std::sync::atomic::{AtomicU32, Ordering};

/// Only responses this small wait for the end of a run. A larger one costs more to copy than
/// the wake-up it would save, and holding several back at once made the 64 KiB echo slower.
pub const SMALL_RESPONSE: usize = 16 * 1024;

/// Inline responses made since the I/O thread last waited for events.
///
/// Only the I/O thread touches it (its runtime has one thread), so plain loads and stores do.
#[derive(Debug, Default)]
pub struct Batch {
    made: AtomicU32,
}

impl Batch {
    /// The I/O thread is about to wait for events: the run is over.
    pub fn parked(&self) {
        self.made.store(0, Ordering::Relaxed);
    }

    /// Counts a response made inline; true when another was made before it in this run (it
    /// should then go out with the others, at the end of the run).
    pub fn hold(&self) -> bool {
        let before = self.made.load(Ordering::Relaxed);
        self.made.store(before.saturating_add(1), Ordering::Relaxed);
        before > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_response_of_a_run_goes_out_at_once() {
        let batch = Batch::default();
        assert!(!batch.hold());
        assert!(batch.hold());
        assert!(batch.hold());
        batch.parked();
        assert!(!batch.hold(), "a new run starts after each wait for events");
        assert!(batch.hold());
    }
}
