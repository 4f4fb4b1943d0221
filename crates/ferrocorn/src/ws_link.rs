//! A WebSocket the core speaks, as an app side on an event loop sees it (ASGI's websocket
//! scope): what the client offered ([`Offer`]) and the queue of its messages towards the app
//! ([`Inbox`]). The app's own messages go the other way in the exchange's mailbox
//! (`crate::remote`, as `AppMsg::Ws`).
//!
//! The inbox is bounded: the connection reads the client only while the inbox has room
//! ([`Inbox::has_room`]: fewer than [`QUEUED_MAX`] messages and [`QUEUED_BYTES_MAX`] bytes),
//! so a client that floods an app that does not receive waits in its TCP window, not in the
//! server's memory. The app taking a message off a full inbox wakes the connection (a remote
//! wake, only when it was waiting for room).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::remote::{Courier, Notify, RemoteApp};
use crate::websocket::Received;

/// Messages queued towards the app past which the client is not read.
pub const QUEUED_MAX: usize = 16;
/// Bytes queued towards the app past which the client is not read.
pub const QUEUED_BYTES_MAX: usize = 256 * 1024;

/// A WebSocket handshake handed to the app: what the client offered, and its messages.
#[derive(Debug)]
pub struct Offer {
    /// The subprotocols the client offered, in its order of preference.
    pub subprotocols: Vec<String>,
    pub inbox: Arc<Inbox>,
}

struct Queue {
    msgs: VecDeque<Received>,
    bytes: usize,
}

/// The client's messages on their way to the app, ending with one `Received::Closed`.
pub struct Inbox {
    queue: Mutex<Queue>,
    /// The connection waits for room (the app is told to wake it).
    waiting: AtomicBool,
    room: tokio::sync::Notify,
    token: u64,
    notify: Arc<dyn Notify>,
    courier: Arc<Courier>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("token", &self.token).finish()
    }
}

fn size(msg: &Received) -> usize {
    match msg {
        Received::Text(t) => t.len(),
        Received::Binary(b) => b.len(),
        Received::Closed { .. } => 0,
    }
}

impl Inbox {
    /// An inbox whose news reaches `app` with the exchange's `token`.
    pub(crate) fn new(app: &RemoteApp, token: u64) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue {
                msgs: VecDeque::new(),
                bytes: 0,
            }),
            waiting: AtomicBool::new(false),
            room: tokio::sync::Notify::new(),
            token,
            notify: Arc::clone(&app.notify),
            courier: Arc::clone(&app.courier),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Plain data behind the lock: a panic while holding it leaves nothing half-done.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn roomy(q: &Queue) -> bool {
        q.msgs.len() < QUEUED_MAX && q.bytes < QUEUED_BYTES_MAX
    }

    /// Connection side: true while the client may be read.
    pub(crate) fn has_room(&self) -> bool {
        Self::roomy(&self.lock())
    }

    /// Connection side: resolves once the app has taken enough for [`Inbox::has_room`].
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            self.waiting.store(true, Ordering::SeqCst);
            if self.has_room() {
                self.waiting.store(false, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }

    /// Connection side: queues a message of the client's (or the end) and tells the app.
    pub(crate) fn put(&self, msg: Received) {
        {
            let mut q = self.lock();
            q.bytes += size(&msg);
            q.msgs.push_back(msg);
        }
        self.notify.notify(self.token);
        self.courier.app_pending();
    }

    /// App side: the next message, if one has arrived.
    pub fn take(&self) -> Option<Received> {
        let mut q = self.lock();
        let msg = q.msgs.pop_front()?;
        q.bytes -= size(&msg).min(q.bytes);
        let roomy = Self::roomy(&q);
        drop(q);
        if roomy && self.waiting.swap(false, Ordering::SeqCst) {
            self.room.notify_one();
        }
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Count;

    #[tokio::test]
    async fn a_full_inbox_stops_reading_until_the_app_takes_messages() {
        let notes = Arc::new(Count::default());
        let app = RemoteApp {
            notify: Arc::clone(&notes) as Arc<dyn Notify>,
            courier: Arc::default(),
        };
        let inbox = Inbox::new(&app, 7);
        for i in 0..QUEUED_MAX {
            assert!(inbox.has_room());
            inbox.put(Received::Text(i.to_string()));
        }
        assert!(!inbox.has_room());
        assert_eq!(notes.0.load(Ordering::SeqCst), QUEUED_MAX);
        let waiter = {
            let inbox = Arc::clone(&inbox);
            tokio::spawn(async move { inbox.room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(inbox.take(), Some(Received::Text("0".into())));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("ran");
        // Bytes count too: one large message fills it.
        while inbox.take().is_some() {}
        inbox.put(Received::Binary(vec![0u8; QUEUED_BYTES_MAX].into()));
        assert!(!inbox.has_room());
        inbox.take();
        assert!(inbox.has_room());
    }
}
