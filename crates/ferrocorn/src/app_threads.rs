//! A worker's app threads, started when requests need them, up to `--threads`.
//!
//! Gunicorn's gthread worker grows its pool the same way. A thread costs a stack, a Python
//! thread state and an allocator arena: 64 threads started up front were 1 MiB of every
//! worker's memory, spent even by apps whose requests all run on the I/O thread (see
//! [`crate::inline`]). A thread is started when a request is queued and no thread is waiting
//! for work or about to; once started, a thread stays until the worker stops.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::{App, Exchange, Jobs, ThreadSlot};
use crate::jobs::Receiver;

pub(crate) struct AppThreads {
    app: Arc<dyn App>,
    rx: Receiver<Exchange>,
    /// One per thread that may be started (`--threads`), for the hung-request check.
    slots: Vec<Arc<ThreadSlot>>,
    /// Threads started that have not yet looked for their first request.
    starting: Arc<AtomicUsize>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Every thread of `--threads` is running: `grow` has nothing left to do.
    full: AtomicBool,
}

impl AppThreads {
    pub fn new(app: Arc<dyn App>, rx: Receiver<Exchange>, slots: Vec<Arc<ThreadSlot>>) -> Self {
        // No slots: the app takes the queue itself (an event loop), no thread is started.
        let full = slots.is_empty();
        Self {
            app,
            rx,
            slots,
            starting: Arc::default(),
            full: AtomicBool::new(full),
            handles: Mutex::default(),
        }
    }

    /// Called after a request was queued: starts a thread when the queue holds more requests
    /// than there are threads waiting for one (busy threads are not counted: a blocking app
    /// would leave the request waiting for a whole call).
    pub fn grow(&self) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let ready = self.rx.waiting() + self.starting.load(Ordering::Acquire);
        if self.rx.len() > ready {
            self.start_one();
        }
    }

    fn start_one(&self) {
        let Ok(mut handles) = self.handles.lock() else {
            return;
        };
        let i = handles.len();
        let Some(slot) = self.slots.get(i) else {
            return; // all of --threads are running
        };
        self.starting.fetch_add(1, Ordering::AcqRel);
        let jobs = Jobs::new(
            self.rx.clone(),
            Arc::clone(slot),
            Arc::clone(&self.starting),
        );
        let app = Arc::clone(&self.app);
        match std::thread::Builder::new()
            .name(format!("ferrocorn-app-{i}"))
            .spawn(move || app.run_thread(jobs))
        {
            Ok(handle) => {
                handles.push(handle);
                if handles.len() == self.slots.len() {
                    self.full.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                // `jobs` went with the failed spawn without arriving: undo its count.
                self.starting.fetch_sub(1, Ordering::AcqRel);
                log::error!("cannot start app thread {i}: {e}");
            }
        }
    }

    /// After the job queue closed: waits until `deadline` for the threads to finish their
    /// requests and leave. True when some were still busy.
    pub fn join(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let handles = match self.handles.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(_) => return true,
        };
        let mut busy = false;
        for t in handles {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                busy = true;
            }
        }
        busy
    }
}
