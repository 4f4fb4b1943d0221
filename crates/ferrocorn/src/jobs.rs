//! The queue between a worker's connections (async, on the I/O thread) and its app threads
//! (blocking, one Python call at a time).
//!
//! A general-purpose channel wakes a sleeping consumer for every message. Here most of those
//! wake-ups are wasted under load: an app thread that has just finished a request is about to
//! look for the next one anyway. So an app thread with nothing to do first spins for a few
//! microseconds (without the GIL), and a producer wakes a sleeping thread only when no thread
//! is spinning; a thread that takes an item and leaves others queued wakes the next sleeper. A
//! blocking app (threads asleep in `time.sleep`, say) has no spinners, so every request still
//! gets a thread at once: concurrency is not traded for the fast path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long an idle app thread looks for new work before it goes to sleep.
const SPIN: Duration = Duration::from_micros(40);

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    sleepers: usize,
    /// Senders waiting for room in a full queue.
    blocked: usize,
}

struct Queue<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    /// App threads spinning for work right now.
    spinning: AtomicUsize,
    /// Items queued, readable without the lock (for spinning and `len`).
    len: AtomicUsize,
    /// Consumers in `recv_blocking` (spinning, asleep, or about to be).
    waiting: AtomicUsize,
    /// Signalled once for every item taken while senders wait for room.
    space: Notify,
    capacity: usize,
}

impl<T> Queue<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves plain data behind; go on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop_locked(&self, state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        // One slot freed, one waiting sender woken. (Waking only when the queue had been full
        // lost wake-ups: two items taken before the first woken sender ran left the others
        // asleep with room in the queue, their requests never served.)
        if state.blocked > 0 {
            self.space.notify_one();
        }
        // Items queued while a thread was spinning woke nobody; the thread that takes one
        // passes the baton, so a burst of blocking requests spreads over the sleeping threads
        // instead of waiting for this one to finish.
        if !state.items.is_empty()
            && state.sleepers > 0
            && self.spinning.load(Ordering::Acquire) == 0
        {
            self.wake.notify_one();
        }
        Some(item)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
        self.space.notify_waiters();
    }
}

/// Creates a queue holding at most `capacity` items.
pub fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let queue = Arc::new(Queue {
        state: Mutex::new(State {
            items: VecDeque::with_capacity(capacity),
            closed: false,
            sleepers: 0,
            blocked: 0,
        }),
        wake: Condvar::new(),
        spinning: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        space: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            guard: Arc::new(CloseOnDrop(Arc::clone(&queue))),
        },
        Receiver { queue },
    )
}

/// Closes the queue when the last sender goes.
struct CloseOnDrop<T>(Arc<Queue<T>>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The connections' end. Cloning shares it; the queue closes when every clone is dropped.
pub struct Sender<T> {
    guard: Arc<CloseOnDrop<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            guard: Arc::clone(&self.guard),
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("len", &self.len()).finish()
    }
}

impl<T> Sender<T> {
    /// Items waiting for an app thread.
    pub fn len(&self) -> usize {
        self.guard.0.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `item`, waiting while the queue is full; gives it back if the queue is closed.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let queue = &self.guard.0;
        loop {
            let space = queue.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = queue.lock();
                if state.closed {
                    return Err(item);
                }
                if state.items.len() < queue.capacity {
                    state.items.push_back(item);
                    queue.len.fetch_add(1, Ordering::AcqRel);
                    let wake = state.sleepers > 0 && queue.spinning.load(Ordering::Acquire) == 0;
                    drop(state);
                    if wake {
                        queue.wake.notify_one();
                    }
                    return Ok(());
                }
                state.blocked += 1;
            }
            let _waiting = Blocked(queue);
            space.await;
        }
    }
}

/// A sender waiting for room, counted while it waits (also when its future is dropped).
struct Blocked<'a, T>(&'a Queue<T>);

impl<T> Drop for Blocked<'_, T> {
    fn drop(&mut self) {
        self.0.lock().blocked -= 1;
    }
}

/// A consumer in `recv_blocking`, counted until it returns.
struct Waiting<'a, T>(&'a Queue<T>);

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An app thread's end.
pub struct Receiver<T> {
    queue: Arc<Queue<T>>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Self {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<T> Receiver<T> {
    /// The next item if one is waiting.
    pub fn try_recv(&self) -> Option<T> {
        let queue = &self.queue;
        if queue.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        queue.pop_locked(&mut queue.lock())
    }

    fn spin(&self) -> Option<T> {
        let deadline = Instant::now() + SPIN;
        let mut spins = 0u32;
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if Instant::now() >= deadline {
                return None;
            }
            spins += 1;
            if spins.is_multiple_of(16) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.queue.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consumers blocked in (or entering) `recv_blocking`: ready for the next item.
    pub fn waiting(&self) -> usize {
        self.queue.waiting.load(Ordering::Acquire)
    }

    /// Blocks until the next item; `None` once the queue is closed and empty.
    pub fn recv_blocking(&self) -> Option<T> {
        let queue = &self.queue;
        queue.waiting.fetch_add(1, Ordering::AcqRel);
        let _leaving = Waiting(queue);
        if let Some(item) = self.try_recv() {
            return Some(item);
        }
        // One spinner at a time: more would only take the CPU from the I/O thread.
        if queue
            .spinning
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let found = self.spin();
            queue.spinning.store(0, Ordering::Release);
            if found.is_some() {
                // Taken while spinning, so `pop_locked` did not pass the baton: do it now.
                if queue.len.load(Ordering::Acquire) > 0 {
                    let state = queue.lock();
                    if !state.items.is_empty() && state.sleepers > 0 {
                        queue.wake.notify_one();
                    }
                }
                return found;
            }
        }
        let mut state = queue.lock();
        loop {
            if let Some(item) = queue.pop_locked(&mut state) {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state.sleepers += 1;
            state = queue.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            state.sleepers -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_waiting_for_room_are_all_woken() {
        // Many senders blocked on a tiny queue, a consumer that takes items in bursts: every
        // item must arrive (a lost wake-up leaves senders asleep with room in the queue).
        for _ in 0..50 {
            let (tx, rx) = queue::<u32>(2);
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let consumer = std::thread::spawn(move || {
                let mut n = 0;
                while rx.recv_blocking().is_some() {
                    n += 1;
                    if n == 64 {
                        let _ = done_tx.send(());
                    }
                }
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let sends: Vec<_> = (0..64)
                    .map(|i| {
                        let tx = tx.clone();
                        tokio::spawn(async move { tx.send(i).await.is_ok() })
                    })
                    .collect();
                let all_sent = async {
                    for s in sends {
                        assert!(s.await.unwrap());
                    }
                };
                tokio::time::timeout(Duration::from_secs(5), all_sent)
                    .await
                    .expect("senders left waiting with room in the queue");
            });
            assert!(
                done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
                "items left undelivered"
            );
            drop(tx);
            consumer.join().unwrap();
        }
    }

    #[test]
    fn every_item_arrives_once_across_threads_and_close_ends_them() {
        let (tx, rx) = queue::<u32>(4);
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(i) = rx.recv_blocking() {
                        got.push(i);
                    }
                    got
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..10_000 {
                tx.send(i).await.unwrap();
            }
        });
        drop(tx);
        let mut all: Vec<u32> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_closed_queue_gives_the_item_back() {
        let (tx, rx) = queue::<u32>(1);
        rx.queue.close();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(tx.send(7)), Err(7));
    }
}
