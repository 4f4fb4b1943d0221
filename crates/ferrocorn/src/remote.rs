//! The channel of an exchange served by an app side that must never block: an event loop on a
//! thread of its own (ASGI). The app threads' channel blocks a sender on a full queue, and
//! tokio's wakes the connection task from the app's thread, which writes the I/O thread's
//! eventfd for every message; neither suits a loop serving thousands of exchanges at once.
//!
//! - **Towards the connection** ([`Mailbox`]): messages queue without a bound on their count,
//!   but the body bytes in flight (queued, or taken by the relay and not yet written) are
//!   counted; past [`IN_FLIGHT_MAX`] a send is still accepted but answers [`Flow::Full`], and
//!   the app side waits for a [`Notify::notify`] with the exchange's token, sent when the relay
//!   has written enough. A client that does not read therefore holds the app's `send` back,
//!   and the server never holds more than about that bound per exchange.
//! - **Waking the connection task** ([`Courier`]): the app's thread does not wake the task
//!   itself; it hands the task's waker to the worker's courier, a task on the I/O thread that
//!   wakes them there (a local wake, no syscall). The courier is rung (one remote wake) only
//!   when it sleeps; while responses keep coming it stays awake, yielding between rounds, so a
//!   busy I/O thread takes any number of responses without a syscall for each.
//! - **Towards the app** ([`Notify`]): a body piece the app asked for, room to send again, or
//!   the end of the exchange on the connection's side (the client went away, or the response
//!   is done; only while the app side still holds the exchange) are each a token handed to
//!   the app side's `Notify`, which queues it for its loop. New exchanges and tokens only mark the courier; it rings the app (which wakes its
//!   loop only if that sleeps) once per round of the I/O thread's ready work, however many
//!   exchanges that round queued.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::messages::{AppMsg, BodyPiece};

/// Body bytes an exchange may have in flight towards its client before the app's sends are
/// answered [`Flow::Full`].
pub const IN_FLIGHT_MAX: usize = 256 * 1024;

/// Once the app waits for room, it is told when the bytes in flight fall to this.
const IN_FLIGHT_LOW: usize = IN_FLIGHT_MAX / 2;

/// The app side's inbox: told, by token, that something changed for one of its exchanges,
/// and woken. Called from the I/O thread; must not block.
pub trait Notify: Send + Sync + 'static {
    /// Queues `token` for the app side, without waking it (the courier rings once for all
    /// the tokens and exchanges of a round of the I/O thread's ready work).
    fn notify(&self, token: u64);
    /// Wakes the app side, if it sleeps, to look at its queue of exchanges and its tokens.
    fn ring(&self);
}

/// Whether the app may go on sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Ready,
    /// Accepted, but over the bound: wait for the exchange's token before sending more.
    Full,
}

struct State {
    msgs: VecDeque<AppMsg>,
    /// Body bytes queued or being written.
    in_flight: usize,
    /// The body bytes of the message the relay took last, written once it takes the next.
    taken: usize,
    waker: Option<Waker>,
    /// The app side waits for room.
    wants_room: bool,
    /// Body pieces the connection read for the app, not yet taken.
    body: VecDeque<BodyPiece>,
    /// The connection's side is gone (response done, or the client left).
    rx_gone: bool,
    /// Every sender on the app's side is gone.
    tx_gone: bool,
}

/// One exchange's channel, shared by its connection task and the app side.
pub struct Mailbox {
    state: Mutex<State>,
    token: u64,
    notify: Arc<dyn Notify>,
    courier: Arc<Courier>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("token", &self.token)
            .finish()
    }
}

/// Tokens are unique within a worker process.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn body_len(msg: &AppMsg) -> usize {
    match msg {
        AppMsg::Head { body, .. } => body.len(),
        AppMsg::Data(b) => b.len(),
        AppMsg::Ws(w) => w.len(),
        _ => 0,
    }
}

impl Mailbox {
    pub(crate) fn new(notify: Arc<dyn Notify>, courier: Arc<Courier>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                msgs: VecDeque::new(),
                in_flight: 0,
                taken: 0,
                waker: None,
                wants_room: false,
                body: VecDeque::new(),
                rx_gone: false,
                tx_gone: false,
            }),
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            notify,
            courier,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data behind the lock: a panic while holding it leaves nothing half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token the app side is notified with.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Queues `msg` for the connection (app side; never blocks).
    pub(crate) fn send(&self, msg: AppMsg) -> Result<Flow, AppMsg> {
        let mut state = self.lock();
        if state.rx_gone {
            return Err(msg);
        }
        state.in_flight += body_len(&msg);
        state.msgs.push_back(msg);
        let flow = if state.in_flight > IN_FLIGHT_MAX {
            state.wants_room = true;
            Flow::Full
        } else {
            Flow::Ready
        };
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            self.courier.deliver(w);
        }
        Ok(flow)
    }

    /// True when a send would be answered [`Flow::Ready`].
    pub fn has_room(&self) -> bool {
        self.lock().in_flight <= IN_FLIGHT_MAX
    }

    /// True once the connection's side has ended the exchange.
    pub fn is_closed(&self) -> bool {
        self.lock().rx_gone
    }

    /// The app side lets go (all its senders dropped).
    fn close_tx(&self) {
        let mut state = self.lock();
        state.tx_gone = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            self.courier.deliver(w);
        }
    }

    /// Connection side: the next message, if queued. The previous one's bytes count as
    /// written now.
    pub(crate) fn try_recv(&self) -> Option<AppMsg> {
        let mut state = self.lock();
        let msg = state.msgs.pop_front();
        self.settle(&mut state, msg.as_ref().map_or(0, body_len));
        msg
    }

    /// Counts the last message taken as written, takes the next (`now` bytes), and tells a
    /// waiting app once the bytes in flight fall low.
    fn settle(&self, state: &mut State, now: usize) {
        state.in_flight -= state.taken.min(state.in_flight);
        state.taken = now;
        if state.wants_room && state.in_flight <= IN_FLIGHT_LOW {
            state.wants_room = false;
            self.tell_app();
        }
    }

    /// Connection side: gives back the queues' room when nothing waits in them (a WebSocket
    /// as its session starts: what the handshake's messages grew them to would otherwise be
    /// held by every idle connection).
    pub(crate) fn release_room(&self) {
        let mut state = self.lock();
        if state.msgs.is_empty() {
            state.msgs = VecDeque::new();
        }
        if state.body.is_empty() {
            state.body = VecDeque::new();
        }
    }

    /// Connection side: the next message; `None` once the app side is gone with nothing
    /// queued.
    pub(crate) async fn recv(&self) -> Option<AppMsg> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if let Some(msg) = state.msgs.pop_front() {
                let n = body_len(&msg);
                self.settle(&mut state, n);
                return Poll::Ready(Some(msg));
            }
            // Everything taken has been written by the time the relay waits again.
            self.settle(&mut state, 0);
            if state.tx_gone {
                return Poll::Ready(None);
            }
            crate::local::keep_waker(&mut state.waker, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Connection side: a body piece the app asked for.
    pub(crate) fn put_body(&self, piece: BodyPiece) {
        self.lock().body.push_back(piece);
        self.tell_app();
    }

    /// Queues this exchange's token for the app side; the courier rings it.
    fn tell_app(&self) {
        self.notify.notify(self.token);
        self.courier.app_pending();
    }

    /// App side: a body piece that has arrived, if any.
    pub fn take_body(&self) -> Option<BodyPiece> {
        self.lock().body.pop_front()
    }

    /// Connection side: the exchange is over there (the relay is done or broke off). The app
    /// side hears of it only while it still holds the exchange: once all its senders are
    /// gone (its call finished, which answers every later `receive()`/`send()` at once and
    /// wakes whatever waited), the token would wake nobody.
    fn close_rx(&self) {
        let mut state = self.lock();
        state.rx_gone = true;
        let app_holds = !state.tx_gone;
        // Messages nobody will write are dropped here (a lent Python buffer among them goes
        // back to pyo3's pending releases), not on the app's thread later.
        let queued = std::mem::take(&mut state.msgs);
        drop(state);
        drop(queued);
        if app_holds {
            self.tell_app();
        }
    }
}

/// The app side's end of a [`Mailbox`]; the last one dropped tells the connection.
#[derive(Debug)]
pub(crate) struct RemoteTx(pub(crate) Arc<Mailbox>);

impl Drop for RemoteTx {
    fn drop(&mut self) {
        self.0.close_tx();
    }
}

/// The connection's end of a [`Mailbox`]; dropping it tells the app side.
pub(crate) struct RemoteRx(pub(crate) Arc<Mailbox>);

impl Drop for RemoteRx {
    fn drop(&mut self) {
        self.0.close_rx();
    }
}

/// Wakes connection tasks on the I/O thread for an app side on another thread (see the
/// module's documentation).
#[derive(Default)]
pub struct Courier {
    wakers: Mutex<Vec<Waker>>,
    /// The app side has news (exchanges queued, tokens): ring it at the end of this round.
    app_pending: AtomicBool,
    /// The courier task is (about to be) waiting for a ring.
    asleep: AtomicBool,
    ring: tokio::sync::Notify,
}

impl Courier {
    /// On the I/O thread: an exchange was queued for the app side, or a token. The app is
    /// rung once the I/O thread's other ready tasks have run (the courier is woken locally,
    /// without a syscall), so a round that queues many exchanges rings it once.
    pub fn app_pending(&self) {
        self.app_pending.store(true, Ordering::SeqCst);
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.ring.notify_one();
        }
    }

    /// Hands `waker` to the I/O thread; rings only when the courier sleeps.
    fn deliver(&self, waker: Waker) {
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(waker);
        if self.asleep.swap(false, Ordering::SeqCst) {
            self.ring.notify_one();
        }
    }

    fn take(&self) -> Vec<Waker> {
        std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The courier task: runs on the I/O thread for the worker's life.
    pub(crate) async fn run(self: Arc<Self>, app: Arc<dyn Notify>) {
        let mut batch = Vec::new();
        loop {
            let rang = self.app_pending.swap(false, Ordering::SeqCst);
            if rang {
                app.ring();
            }
            std::mem::swap(
                &mut batch,
                &mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()),
            );
            if rang || !batch.is_empty() {
                for w in batch.drain(..) {
                    w.wake();
                }
                // Work is flowing: look again after the other ready tasks have run, without
                // being rung.
                tokio::task::yield_now().await;
                continue;
            }
            self.asleep.store(true, Ordering::SeqCst);
            let late = self.take();
            if !late.is_empty() || self.app_pending.load(Ordering::SeqCst) {
                self.asleep.store(false, Ordering::SeqCst);
                for w in late {
                    w.wake();
                }
                continue;
            }
            // A ring sent between the store and here is kept as a permit.
            self.ring.notified().await;
        }
    }
}

/// How the exchange module reaches an app side of this kind.
#[derive(Clone)]
pub struct RemoteApp {
    pub notify: Arc<dyn Notify>,
    pub courier: Arc<Courier>,
}

impl RemoteApp {
    pub(crate) fn mailbox(&self) -> Arc<Mailbox> {
        Mailbox::new(Arc::clone(&self.notify), Arc::clone(&self.courier))
    }
}

/// A `Notify` for tests: counts the tokens it is given.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Count(pub(crate) std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl Notify for Count {
    fn notify(&self, _token: u64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn ring(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A mailbox whose notes to the app are counted in `notes`.
    fn counted_mailbox(notes: &Arc<Count>) -> Arc<Mailbox> {
        Mailbox::new(
            Arc::clone(notes) as Arc<dyn Notify>,
            Arc::new(Courier::default()),
        )
    }

    #[tokio::test]
    async fn sends_past_the_bound_wait_for_the_relay_to_write() {
        let notes = Arc::new(Count::default());
        let mb = counted_mailbox(&notes);
        let piece = Bytes::from(vec![0u8; 64 * 1024]);
        let mut flows = Vec::new();
        for _ in 0..5 {
            flows.push(mb.send(AppMsg::Data(piece.clone())).expect("open"));
        }
        assert_eq!(flows.last(), Some(&Flow::Full));
        assert!(!mb.has_room());
        assert_eq!(notes.0.load(Ordering::SeqCst), 0);
        // The relay takes and writes them one by one: the app hears once room is back.
        while mb.try_recv().is_some() {}
        assert!(mb.recv_now_pending());
        assert!(mb.has_room());
        assert_eq!(notes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_app_hears_when_the_connection_side_goes() {
        let notes = Arc::new(Count::default());
        let mb = counted_mailbox(&notes);
        let rx = RemoteRx(Arc::clone(&mb));
        drop(rx);
        assert!(mb.is_closed());
        assert_eq!(notes.0.load(Ordering::SeqCst), 1);
        assert!(mb
            .send(AppMsg::End(crate::messages::Ending {
                took: std::time::Duration::ZERO,
                trailers: None,
            }))
            .is_err());
    }

    #[test]
    fn an_app_side_that_let_go_is_not_told_of_the_end() {
        let notes = Arc::new(Count::default());
        let mb = counted_mailbox(&notes);
        drop(RemoteTx(Arc::clone(&mb)));
        drop(RemoteRx(Arc::clone(&mb)));
        assert!(mb.is_closed());
        assert_eq!(notes.0.load(Ordering::SeqCst), 0);
    }

    impl Mailbox {
        /// Settles what was taken, as the relay does before it waits again.
        fn recv_now_pending(&self) -> bool {
            let mut state = self.lock();
            self.settle(&mut state, 0);
            state.msgs.is_empty()
        }
    }
}
