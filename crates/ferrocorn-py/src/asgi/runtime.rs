//! The worker's event loop as the core sees it: an [`App`] whose exchanges are taken off the
//! worker's queue by the loop itself, in batches, and whose inbox ([`Notify`]) collects the
//! tokens of exchanges that have news (a body piece, room to send, the end on the
//! connection's side).
//!
//! Waking the loop costs a write to an eventfd it watches (`loop.add_reader`), and is done
//! only when the loop said it sleeps: each drain that finds work schedules the next one with
//! `call_soon`, so a busy loop looks again at every turn and is never written to; a drain that
//! finds nothing sets the flag (then looks once more, so nothing queued meanwhile waits). The
//! I/O thread rings at most once per round of its ready work (the core's courier calls
//! `ring`), however many exchanges and tokens that round queued.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::types::PyList;

use ferrocorn::app::{App, Jobs};
use ferrocorn::remote::{Courier, Notify, RemoteApp};

use super::scope::ScopeShared;
use super::Call;

/// The most new exchanges one drain takes: the loop runs their first steps before it looks
/// at its sockets and timers again.
const BATCH: usize = 64;

/// How the hung-request check names the loop.
const LOOP_NAME: &str = "the ASGI event loop (blocked by the app)";

/// What the I/O thread and the loop thread share.
pub(crate) struct LoopShared {
    /// The worker's queue, handed over before the worker accepts.
    jobs: OnceLock<Jobs>,
    /// Tokens with news, in arrival order.
    inbox: Mutex<Vec<u64>>,
    /// The loop looks at the queue and the inbox only when woken.
    asleep: AtomicBool,
    bell: OwnedFd,
    courier: Arc<Courier>,
    pub(crate) scope: ScopeShared,
    /// The loop's side, whose coroutines wait for a call's token (`Runtime::set_waits`).
    waits: OnceLock<Py<PyAny>>,
}

impl LoopShared {
    pub fn new(scope: ScopeShared) -> std::io::Result<Arc<Self>> {
        // SAFETY: eventfd returns a new descriptor or -1, checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Self {
            jobs: OnceLock::new(),
            inbox: Mutex::new(Vec::new()),
            // Until its first drain the loop is not looking.
            asleep: AtomicBool::new(true),
            // SAFETY: `fd` is a fresh descriptor owned by nothing else.
            bell: unsafe { OwnedFd::from_raw_fd(fd) },
            courier: Arc::default(),
            scope,
            waits: OnceLock::new(),
        }))
    }

    fn ring_if_asleep(&self) {
        if self.asleep.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. A full counter
            // (EAGAIN) still leaves the loop woken.
            unsafe {
                libc::write(
                    self.bell.as_raw_fd(),
                    std::ptr::addr_of!(one).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_work(&self) -> bool {
        self.jobs.get().is_some_and(|j| !j.is_empty()) || !self.inbox().is_empty()
    }
}

impl Notify for LoopShared {
    fn notify(&self, token: u64) {
        self.inbox().push(token);
    }

    fn ring(&self) {
        self.ring_if_asleep();
    }
}

/// The app as the worker sees it: a remote app side (see `ferrocorn::remote`).
pub(crate) struct AsgiApp(pub Arc<LoopShared>);

impl App for AsgiApp {
    fn run_thread(&self, jobs: Jobs) {
        // Never started: a remote app takes its queue in `take_queue`.
        drop(jobs);
    }

    fn remote(&self) -> Option<RemoteApp> {
        Some(RemoteApp {
            notify: Arc::clone(&self.0) as Arc<dyn Notify>,
            courier: Arc::clone(&self.0.courier),
        })
    }

    fn take_queue(&self, jobs: Jobs) {
        // Named (and watched) from now on, not only from the loop's next tick.
        jobs.alive(LOOP_NAME);
        if self.0.jobs.set(jobs).is_err() {
            log::error!("the event loop was handed a second queue");
        }
        self.0.ring_if_asleep();
    }
}

/// The loop thread's handle on [`LoopShared`] (`ferrocorn._asgi` drives it).
#[pyclass(module = "ferrocorn._ferrocorn", name = "AsgiRuntime", frozen)]
pub(crate) struct Runtime(pub Arc<LoopShared>);

#[pymethods]
impl Runtime {
    /// The eventfd the loop watches with `add_reader`.
    #[getter]
    fn fd(&self) -> RawFd {
        self.0.bell.as_raw_fd()
    }

    /// Empties the eventfd after it woke the loop.
    fn clear_ring(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(
                self.0.bell.as_raw_fd(),
                std::ptr::addr_of_mut!(count).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// The loop's side: `receive_later(call)` and `room_later(call)` return the coroutines a
    /// call's `receive()` and `send()` answer with when they must wait for its token.
    fn set_waits(&self, waits: Py<PyAny>) -> PyResult<()> {
        self.0
            .waits
            .set(waits)
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the loop's side is set"))
    }

    /// New exchanges (as `AsgiCall`s) and the tokens with news, and whether to look again at
    /// the next turn of the loop (something was found); with nothing found, the loop counts
    /// as asleep until rung.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, Vec<u64>, bool)> {
        let shared = &self.0;
        let calls = PyList::empty(py);
        if let (Some(jobs), Some(waits)) = (shared.jobs.get(), shared.waits.get()) {
            for _ in 0..BATCH {
                let Some(mut exchange) = jobs.try_next() else {
                    break;
                };
                match exchange.request.websocket.take() {
                    Some(offer) => {
                        let ws = super::websocket::WsCall::new(exchange, offer)
                            .waiting_on(waits.clone_ref(py));
                        calls.append(Bound::new(py, ws)?)?;
                    }
                    None => {
                        let call = Call::new(exchange).waiting_on(waits.clone_ref(py));
                        calls.append(Bound::new(py, call)?)?;
                    }
                }
            }
        }
        let tokens = std::mem::take(&mut *shared.inbox());
        if !calls.is_empty() || !tokens.is_empty() {
            return Ok((calls, tokens, true));
        }
        shared.asleep.store(true, Ordering::SeqCst);
        // Whatever was queued before the flag was seen gets looked at now.
        if shared.has_work() {
            shared.asleep.store(false, Ordering::SeqCst);
            return Ok((calls, tokens, true));
        }
        Ok((calls, tokens, false))
    }

    /// The loop is alive (called from a timer): see `Jobs::alive`.
    fn tick(&self) {
        if let Some(jobs) = self.0.jobs.get() {
            jobs.alive(LOOP_NAME);
        }
    }
}
