//! The response channel of an inline exchange: unbounded, for a producer that must never block
//! (the app runs on the I/O thread, which is also the consumer), and light.
//!
//! tokio's unbounded channel allocates a 512-byte cache-aligned header and a 2 KiB block of
//! slots for every channel; an inline request usually sends a single message. Here the channel
//! is one small allocation plus its queue's, and it is only ever touched by two parties, so a
//! mutex (never contended on the inline path) is all the synchronisation it needs. Profiled on
//! the hello app: the two large allocations per request were among the costliest in malloc.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

struct State<T> {
    /// The oldest message when it is the only one: most channels carry one, and it needs no
    /// allocation here.
    first: Option<T>,
    /// Messages after `first`.
    queue: VecDeque<T>,
    senders: usize,
    receiver_gone: bool,
    waker: Option<Waker>,
}

struct Shared<T>(Mutex<State<T>>);

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Plain data behind the lock: a panic while holding it leaves nothing half-done.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared(Mutex::new(State {
        first: None,
        queue: VecDeque::new(),
        senders: 1,
        receiver_gone: false,
        waker: None,
    })));
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiver is gone; the message comes back.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub T);

impl<T> Sender<T> {
    /// Queues `msg` without waiting.
    pub fn send(&self, msg: T) -> Result<(), Closed<T>> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(Closed(msg));
        }
        if state.first.is_none() && state.queue.is_empty() {
            state.first = Some(msg);
        } else {
            state.queue.push_back(msg);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let waker = if state.senders == 0 {
            state.waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

pub(crate) struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            if let Some(msg) = state.first.take().or_else(|| state.queue.pop_front()) {
                return Poll::Ready(Some(msg));
            }
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            keep_waker(&mut state.waker, cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl<T> Receiver<T> {
    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = self.0.lock();
        state.first.take().or_else(|| state.queue.pop_front())
    }

    /// Looks at the queued messages, oldest first, without taking them.
    pub fn peek<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &T>) -> R) -> R {
        let state = self.0.lock();
        f(&mut state.first.iter().chain(state.queue.iter()))
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // Messages nobody will read are dropped here, not when the last sender goes.
        let queued = (state.first.take(), std::mem::take(&mut state.queue));
        drop(state);
        drop(queued);
    }
}

/// Keeps `waker` in `slot` to be woken later, unless the one there already wakes the same task
/// (no clone per poll of a task that polls again and again).
pub(crate) fn keep_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        slot => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_arrive_in_order_then_none_when_senders_are_gone() {
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        tx.send(1).expect("open");
        tx2.send(2).expect("open");
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(tx2);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_from_another_thread() {
        let (tx, mut rx) = channel();
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).expect("open");
            }
        });
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(rx.recv().await, None);
        producer.join().expect("producer");
    }

    #[tokio::test]
    async fn order_holds_across_the_inline_slot() {
        let (tx, mut rx) = channel();
        tx.send(1).expect("open");
        tx.send(2).expect("open");
        assert_eq!(rx.recv().await, Some(1));
        tx.send(3).expect("open"); // the slot is free again, but 2 is still queued
        tx.send(4).expect("open");
        for want in [2, 3, 4] {
            assert_eq!(rx.recv().await, Some(want));
        }
        tx.send(5).expect("open");
        assert_eq!(rx.recv().await, Some(5));
    }

    #[test]
    fn sending_after_the_receiver_went_gives_the_message_back() {
        let (tx, rx) = channel();
        drop(rx);
        assert!(matches!(tx.send(7), Err(Closed(7))));
    }
}
