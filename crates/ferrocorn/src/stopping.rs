//! The worker's stop, as its accept loops and connections see it: a flag to look at, and a
//! wake-up for whoever waits on the flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Set once when the worker starts to stop; never cleared.
#[derive(Debug, Default)]
pub struct Stopping {
    set: AtomicBool,
    notify: Arc<Notify>,
}

impl Stopping {
    /// Starts the stop: every waiter wakes.
    pub fn begin(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Completes once the stop has begun.
    pub async fn wait(&self) {
        // Created before the flag is read: a stop that begins in between still wakes it.
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await;
    }

    /// A wait that stays registered from one poll to the next, for a connection to poll at
    /// each of its idle waits without registering anew each time.
    pub fn standing_wait(&self) -> StandingWait {
        StandingWait(Box::pin(Arc::clone(&self.notify).notified_owned()))
    }
}

/// See [`Stopping::standing_wait`]. Created before the flag is read, it completes for any stop
/// that begins after its creation.
pub struct StandingWait(Pin<Box<OwnedNotified>>);

impl StandingWait {
    pub fn poll_stop(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_made_before_the_stop_complete_and_later_ones_do_not_block() {
        let s = Arc::new(Stopping::default());
        let mut standing = s.standing_wait();
        let waiting = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.wait().await }
        });
        assert!(!s.is_set());
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(standing.poll_stop(cx)))
                .await
                .is_pending()
        );
        s.begin();
        assert!(s.is_set());
        waiting.await.expect("the waiter ends");
        std::future::poll_fn(|cx| standing.poll_stop(cx)).await;
        s.wait().await;
    }
}
