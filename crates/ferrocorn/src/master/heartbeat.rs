//! A page of memory shared between the master and one worker: the worker's last beat, whether
//! it has booted, its open connections and its request metrics. The master reads it to find
//! hung workers; a page shared by all workers (the board) spreads connections over them.

use crate::clock::monotonic_ms;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::shared::{Atomics, SharedPage};
use crate::observe::metrics::Counters;

#[repr(C)]
#[derive(Debug, Default)]
struct Beat {
    /// Monotonic milliseconds of the last beat.
    last_ms: AtomicU64,
    /// The worker loaded its app and accepts connections.
    ready: AtomicBool,
    /// Connections the worker holds open (its share of [`AcceptBoard`]'s total).
    open: AtomicI64,
    /// The worker counts itself among the board's workers taking connections.
    accepting: AtomicBool,
    /// The worker's request metrics (kept when `--metrics-bind` is set).
    counters: Counters,
    /// Requests answered, and app threads busy with a request, as of the last beat (for
    /// `ferrocorn ctl show workers`).
    served: AtomicU64,
    busy_threads: AtomicU64,
}

// SAFETY: repr(C), atomics only; zeroed is the default value.
unsafe impl Atomics for Beat {}
// SAFETY: repr(C), atomics only.
unsafe impl Atomics for Counters {}

/// What every worker of a master shares: how many connections they hold together and how
/// many of them take connections from the same listening sockets (each worker counts itself in
/// once it accepts and out when it stops; the master settles for workers that died). A worker
/// holding more than its share leaves new connections to the others (see the worker's accept
/// pacing).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Board {
    open: AtomicI64,
    workers: AtomicU64,
}

// SAFETY: repr(C), atomics only.
unsafe impl Atomics for Board {}

impl Board {
    /// True when `mine` open connections are more than `slack` above the workers' average.
    pub fn above_share(&self, mine: usize, slack: usize) -> bool {
        let workers = self.workers.load(Ordering::Relaxed).max(1) as i64;
        let total = self.open.load(Ordering::Relaxed);
        (mine as i64) * workers > total + (slack as i64) * workers
    }

    /// The workers' average number of open connections.
    pub fn average(&self) -> usize {
        let workers = self.workers.load(Ordering::Relaxed).max(1) as i64;
        usize::try_from(self.open.load(Ordering::Relaxed) / workers).unwrap_or(0)
    }
}

/// The master's board, created once before the first fork.
#[derive(Debug, Clone)]
pub struct AcceptBoard(Arc<SharedPage<Board>>);

impl AcceptBoard {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(Arc::new(SharedPage::new()?)))
    }
}

/// The shared page of one worker. Created by the master before the fork; both processes see
/// the same memory.
#[derive(Debug)]
pub struct Heartbeat {
    page: SharedPage<Beat>,
    board: AcceptBoard,
}

impl Heartbeat {
    pub fn new(board: &AcceptBoard) -> std::io::Result<Self> {
        let hb = Self {
            page: SharedPage::new()?,
            board: board.clone(),
        };
        hb.beat();
        Ok(hb)
    }

    fn get(&self) -> &Beat {
        self.page.get()
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

    /// Requests answered, as of the worker's last beat.
    pub fn served(&self) -> u64 {
        self.get().served.load(Ordering::Relaxed)
    }

    /// App threads busy with a request, as of the worker's last beat.
    pub fn busy_threads(&self) -> u64 {
        self.get().busy_threads.load(Ordering::Relaxed)
    }

    /// Connections the worker holds open.
    pub fn open_connections(&self) -> u64 {
        self.get().open.load(Ordering::Relaxed).max(0) as u64
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis(
            monotonic_ms().saturating_sub(self.get().last_ms.load(Ordering::Relaxed)),
        )
    }

    /// The worker ended: it and the connections it held no longer count on the board.
    pub fn release_connections(&self) {
        let open = self.get().open.swap(0, Ordering::Relaxed);
        let board = self.board.0.get();
        board.open.fetch_sub(open, Ordering::Relaxed);
        if self.get().accepting.swap(false, Ordering::Relaxed) {
            board.workers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The handle a forked worker keeps. Only valid in a process where `self` is never dropped:
    /// a worker, which exits without returning into the master's code.
    pub fn handle(&self) -> BeatHandle {
        BeatHandle {
            beat: self.page.leak_in_child(),
            board: self.board.0.leak_in_child(),
        }
    }
}

/// The worker's view of its heartbeat page and of the board.
#[derive(Debug, Clone, Copy)]
pub struct BeatHandle {
    beat: &'static Beat,
    board: &'static Board,
}

impl BeatHandle {
    pub fn beat(&self) {
        self.beat.last_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn set_ready(&self) {
        self.beat.ready.store(true, Ordering::Relaxed);
    }

    /// The worker's request metrics, for the rest of the worker's life.
    pub fn counters(&self) -> &'static Counters {
        &self.beat.counters
    }

    /// Publishes the worker's figures for the master (see [`Heartbeat::served`]).
    pub fn report(&self, served: u64, busy_threads: u64) {
        self.beat.served.store(served, Ordering::Relaxed);
        self.beat
            .busy_threads
            .store(busy_threads, Ordering::Relaxed);
    }

    /// Counts the worker in (or out of) the workers taking connections.
    pub fn set_accepting(&self, on: bool) {
        if self.beat.accepting.swap(on, Ordering::Relaxed) != on {
            if on {
                self.board.workers.fetch_add(1, Ordering::Relaxed);
            } else {
                self.board.workers.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A connection was accepted (`+1`) or closed (`-1`).
    pub fn connections(&self, delta: i64) {
        self.beat.open.fetch_add(delta, Ordering::Relaxed);
        self.board.open.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn board(&self) -> &'static Board {
        self.board
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_and_ages() {
        let hb = Heartbeat::new(&AcceptBoard::new().unwrap()).unwrap();
        assert!(hb.age() < Duration::from_secs(1));
        assert!(!hb.is_ready());
        hb.set_ready();
        assert!(hb.is_ready());
    }
}

#[cfg(test)]
mod board_tests {
    use super::*;

    #[test]
    fn share_of_connections() {
        let board = AcceptBoard::new().unwrap();
        let a = Heartbeat::new(&board).unwrap();
        let b = Heartbeat::new(&board).unwrap();
        let (ha, hb) = (a.handle(), b.handle());
        ha.set_accepting(true);
        hb.set_accepting(true);
        for _ in 0..64 {
            ha.connections(1);
        }
        for _ in 0..30 {
            hb.connections(1);
        }
        assert_eq!(ha.board().average(), 47);
        assert!(ha.board().above_share(64, 0));
        assert!(ha.board().above_share(64, 4));
        assert!(!hb.board().above_share(30, 0));
        hb.connections(34);
        assert!(!ha.board().above_share(64, 0), "level: nobody yields");
        a.release_connections();
        assert_eq!(board.0.get().workers.load(Ordering::Relaxed), 1);
        assert_eq!(
            board.0.get().open.load(Ordering::Relaxed),
            64,
            "a dead worker's connections are gone"
        );
        assert!(
            !hb.board().above_share(64, 0),
            "a sole worker takes every connection"
        );
    }
}
