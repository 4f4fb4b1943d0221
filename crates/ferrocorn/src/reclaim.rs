//! Room for new clients at `--worker-connections`: when every slot is held and a new client
//! waits, the worker closes its longest-idle keep-alive connection (nginx does the same when it
//! runs out of connections), then a slow client's unfinished head. Without it, idle keep-alive
//! connections held every slot and new clients waited in the listen backlog until one timed out.
//!
//! Each connection keeps its phase and deadline in one atomic word of a [`Slot`]: a store per
//! phase change, no lock, no syscall. Only a reclaim (rare: at the cap, with a client waiting)
//! takes the registry's lock and scans it.
//!
//! An HTTP/2 connection is idle while it has no stream open, busy while it has one. It is not
//! shut down from here but told to go (its driver sends GOAWAY, RFC 9113 §6.8, and closes):
//! the client then knows no request of its was lost.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a connection is doing, as far as reclaiming goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading a request body, in the app, writing a response, draining: never reclaimed.
    Busy = 0,
    /// Kept alive between requests with nothing of the next one received.
    Idle = 1,
    /// Waiting for a request head (the first one after connecting, or the rest of one).
    Head = 2,
}

impl Phase {
    fn of(state: u64) -> Self {
        match state & 3 {
            1 => Self::Idle,
            2 => Self::Head,
            _ => Self::Busy,
        }
    }
}

/// One connection's entry: its phase and the deadline of its current wait, packed as
/// `deadline_ms << 2 | phase`, and its socket, shut down when it is reclaimed.
#[derive(Debug)]
pub(crate) struct Slot {
    state: AtomicU64,
    fd: RawFd,
    /// For an HTTP/2 connection: how a reclaim tells its driver to close (see
    /// [`Reclaimer::register_h2`]).
    goaway: Option<Notify>,
}

impl Slot {
    /// Records what the connection does now; `deadline_ms` is from [`Reclaimer::ms`].
    pub(crate) fn set(&self, phase: Phase, deadline_ms: u64) {
        self.state
            .store(deadline_ms << 2 | phase as u64, Ordering::Relaxed);
    }

    pub(crate) fn busy(&self) {
        self.state.store(Phase::Busy as u64, Ordering::Relaxed);
    }

    /// Resolves when a reclaim picked this (HTTP/2) connection; never for the others.
    pub(crate) async fn reclaimed(&self) {
        match &self.goaway {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// A connection's place in the registry; hand it back with [`Reclaimer::unregister`].
#[derive(Debug)]
pub(crate) struct Registration {
    index: usize,
    pub(crate) slot: Arc<Slot>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Arc<Slot>>>,
    free: Vec<usize>,
}

/// A worker's registry of its connections.
#[derive(Debug)]
pub(crate) struct Reclaimer {
    epoch: Instant,
    head_timeout_ms: u64,
    /// `--worker-connections`: slow heads beyond half of it may go before their half-time.
    cap: usize,
    slots: Mutex<Slots>,
}

/// How many busy-looking candidates one reclaim looks past before it gives up.
const ATTEMPTS: usize = 4;

impl Reclaimer {
    pub(crate) fn new(cap: usize, head_timeout: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            head_timeout_ms: u64::try_from(head_timeout.as_millis()).unwrap_or(u64::MAX >> 3),
            cap,
            slots: Mutex::default(),
        }
    }

    /// `at` as milliseconds since the registry was made: the deadlines' unit.
    pub(crate) fn ms(&self, at: tokio::time::Instant) -> u64 {
        let ms = at
            .into_std()
            .saturating_duration_since(self.epoch)
            .as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX >> 3)
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves only plain data behind: keep using it.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, fd: RawFd) -> Registration {
        self.add(fd, None)
    }

    /// Registers an HTTP/2 connection: a reclaim wakes [`Slot::reclaimed`] instead of shutting
    /// the socket down.
    pub(crate) fn register_h2(&self, fd: RawFd) -> Registration {
        self.add(fd, Some(Notify::new()))
    }

    fn add(&self, fd: RawFd, goaway: Option<Notify>) -> Registration {
        let slot = Arc::new(Slot {
            state: AtomicU64::new(Phase::Busy as u64),
            fd,
            goaway,
        });
        let mut slots = self.lock();
        let index = match slots.free.pop() {
            Some(i) => {
                slots.entries[i] = Some(Arc::clone(&slot));
                i
            }
            None => {
                slots.entries.push(Some(Arc::clone(&slot)));
                slots.entries.len() - 1
            }
        };
        Registration { index, slot }
    }

    /// Forgets a connection; called before its socket is closed.
    pub(crate) fn unregister(&self, reg: &Registration) {
        let mut slots = self.lock();
        if let Some(entry) = slots.entries.get_mut(reg.index) {
            *entry = None;
            slots.free.push(reg.index);
        }
    }

    /// Closes one connection to make room for a waiting client: the longest-idle keep-alive
    /// connection, else the oldest slow head that has used half its `--header-timeout` (or
    /// any slow head while they hold more than half of the slots). Returns what the closed
    /// connection was doing, or `None` when every connection is busy with a request.
    pub(crate) fn reclaim_one(&self) -> Option<Phase> {
        let now = self.ms(tokio::time::Instant::now());
        let slots = self.lock();
        let mut passed_over: Vec<usize> = Vec::new();
        for _ in 0..ATTEMPTS {
            let states = slots
                .entries
                .iter()
                .enumerate()
                .filter(|(i, _)| !passed_over.contains(i))
                .filter_map(|(i, e)| e.as_ref().map(|s| (i, s.state.load(Ordering::Relaxed))));
            let (index, state) = pick(states, now, self.head_timeout_ms, self.cap)?;
            let slot = slots.entries[index].as_ref()?;
            let phase = Phase::of(state);
            if phase == Phase::Idle && has_bytes(slot.fd) {
                // Its next request is arriving: let it be served.
                passed_over.push(index);
                continue;
            }
            // Busy from now on, so it is not picked again; the connection sees the end of its
            // socket at its next read and closes.
            slot.busy();
            if let Some(goaway) = &slot.goaway {
                // `notify_one` keeps the wake-up if the driver is not waiting at this moment.
                goaway.notify_one();
                return Some(phase);
            }
            // SAFETY: the descriptor belongs to a live connection (its entry is removed before
            // the socket is closed, on this same thread); shutdown(2) ends the stream without
            // closing the descriptor, which the connection still owns.
            unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
            return Some(phase);
        }
        None
    }
}

/// The connection to reclaim among `(index, state)` pairs at `now`, as described at
/// [`Reclaimer::reclaim_one`]: idle ones first, the one whose deadline is nearest (the longest
/// idle), then heads.
fn pick(
    states: impl Iterator<Item = (usize, u64)>,
    now: u64,
    head_timeout: u64,
    cap: usize,
) -> Option<(usize, u64)> {
    let mut idle: Option<(usize, u64)> = None;
    let mut head: Option<(usize, u64)> = None;
    let mut heads = 0usize;
    let oldest = |best: &mut Option<(usize, u64)>, i: usize, s: u64| {
        if best.is_none_or(|(_, b)| s >> 2 < b >> 2) {
            *best = Some((i, s));
        }
    };
    let mut ripe_head: Option<(usize, u64)> = None;
    for (i, s) in states {
        match Phase::of(s) {
            Phase::Idle => oldest(&mut idle, i, s),
            Phase::Head => {
                heads += 1;
                oldest(&mut head, i, s);
                // Half of its time to send the head has run.
                if now + head_timeout / 2 >= s >> 2 {
                    oldest(&mut ripe_head, i, s);
                }
            }
            Phase::Busy => {}
        }
    }
    idle.or(ripe_head)
        .or_else(|| head.filter(|_| heads > cap / 2))
}

/// True when the socket has bytes waiting to be read.
fn has_bytes(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd and a zero timeout: poll only reports readiness.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(phase: Phase, deadline: u64) -> u64 {
        deadline << 2 | phase as u64
    }

    #[test]
    fn the_longest_idle_goes_first() {
        let states = [
            (0, st(Phase::Busy, 0)),
            (1, st(Phase::Idle, 900)),
            (2, st(Phase::Idle, 500)),
            (3, st(Phase::Head, 100)),
            (4, st(Phase::Idle, 700)),
        ];
        assert_eq!(
            pick(states.into_iter(), 0, 10_000, 100).map(|p| p.0),
            Some(2)
        );
    }

    #[test]
    fn busy_connections_are_never_picked() {
        let states = [(0, st(Phase::Busy, 0)), (1, st(Phase::Busy, 5))];
        assert_eq!(pick(states.into_iter(), 1_000_000, 10_000, 1), None);
    }

    #[test]
    fn a_slow_head_goes_once_half_its_time_has_run() {
        // Heads with 10 s to send: one due at 12 s (started at 2 s), one due at 18 s (at 8 s).
        let states = [(0, st(Phase::Head, 18_000)), (1, st(Phase::Head, 12_000))];
        // At 4 s neither has used half its time, and they hold few of the 100 slots.
        assert_eq!(pick(states.into_iter(), 4_000, 10_000, 100), None);
        // At 7 s the older one has.
        assert_eq!(
            pick(states.into_iter(), 7_000, 10_000, 100).map(|p| p.0),
            Some(1)
        );
    }

    #[test]
    fn slow_heads_holding_more_than_half_the_slots_go_early() {
        let states = [
            (0, st(Phase::Head, 19_000)),
            (1, st(Phase::Head, 18_000)),
            (2, st(Phase::Head, 17_000)),
        ];
        assert_eq!(pick(states.into_iter(), 0, 10_000, 4).map(|p| p.0), Some(2));
        assert_eq!(pick(states.into_iter(), 0, 10_000, 6), None);
    }

    #[test]
    fn registry_reuses_freed_places() {
        let r = Reclaimer::new(10, Duration::from_secs(10));
        let a = r.register(-1);
        let b = r.register(-1);
        assert_ne!(a.index, b.index);
        r.unregister(&a);
        let c = r.register(-1);
        assert_eq!(c.index, a.index);
        assert_eq!(r.lock().entries.len(), 2);
        // Nothing idle: nothing to reclaim.
        assert_eq!(r.reclaim_one(), None);
    }

    #[tokio::test]
    async fn an_idle_http2_connection_is_told_to_go() {
        let r = Reclaimer::new(10, Duration::from_secs(10));
        // A descriptor with no bytes waiting: the write end of a pipe.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let h2 = r.register_h2(fds[1]);
        h2.slot.set(Phase::Idle, 5);
        assert_eq!(r.reclaim_one(), Some(Phase::Idle));
        tokio::time::timeout(Duration::from_secs(1), h2.slot.reclaimed())
            .await
            .expect("woken");
        // Busy now: not picked twice.
        assert_eq!(r.reclaim_one(), None);
        // SAFETY: both descriptors are ours and closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
