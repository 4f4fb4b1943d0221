//! Forking worker processes from the Python master, the way `os.fork()` does it (so
//! `os.register_at_fork` hooks run), and the life of a worker process after the fork.

use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{fork, ForkResult, Pid};
use pyo3::prelude::*;

use ferrocorn::bind::BoundListener;
use ferrocorn::config::Settings;
use ferrocorn::master::heartbeat::{monotonic_ms, BeatHandle, Heartbeat};
use ferrocorn::master::signals::SignalQueue;
use ferrocorn::master::{Spawn, EXIT_APP_LOAD, EXIT_WORKER_BOOT};
use ferrocorn::worker::{self, WorkerConfig};

use crate::pool::WsgiApp;
use crate::wsgi::Shared;

/// Everything a worker needs, held by the master and inherited through the fork.
pub(crate) struct Forker {
    pub settings: Settings,
    pub listeners: Vec<BoundListener>,
    /// The app, when `--preload` imported it in the master.
    pub preloaded: Option<Py<PyAny>>,
    pub master_pid: u32,
}

impl Spawn for Forker {
    fn spawn(
        &mut self,
        heartbeat: &Heartbeat,
        signals: &SignalQueue,
        worker_id: u64,
    ) -> std::io::Result<Pid> {
        Python::attach(|py| {
            // SAFETY: called with the GIL held, bracketing fork() exactly as os.fork() does.
            unsafe { pyo3::ffi::PyOS_BeforeFork() };
            // SAFETY: the master is single-threaded (no runtime, no app threads), so the child
            // starts from a consistent state; it runs only what `worker_process` does.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    // SAFETY: paired with PyOS_BeforeFork above, GIL held.
                    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
                    Ok(child)
                }
                Ok(ForkResult::Child) => {
                    // SAFETY: first thing in the child, GIL held.
                    unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
                    signals.forget_in_child();
                    let code = self.worker_process(py, heartbeat.handle(), worker_id);
                    exit_process(py, code)
                }
                Err(e) => {
                    // SAFETY: paired with PyOS_BeforeFork above, GIL held.
                    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
                    Err(e.into())
                }
            }
        })
    }
}

impl Forker {
    /// The worker: load the app (unless preloaded), serve, return the exit code.
    fn worker_process(&self, py: Python<'_>, heartbeat: BeatHandle, worker_id: u64) -> i32 {
        enable_faulthandler(py);
        let app = match &self.preloaded {
            Some(app) => app.clone_ref(py),
            None => match crate::loader::load(py, &self.settings.app) {
                Ok(app) => app,
                Err(message) => {
                    eprintln!("Error: {message}");
                    return EXIT_APP_LOAD;
                }
            },
        };
        let listeners = match self
            .listeners
            .iter()
            .map(BoundListener::try_clone)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot use the listening sockets: {e}");
                return EXIT_WORKER_BOOT;
            }
        };
        let settings = &self.settings;
        let threads = usize::from(settings.threads);
        let app = Arc::new(WsgiApp {
            shared: Shared {
                app,
                multithread: threads > 1,
                multiprocess: settings.workers > 1,
            },
        });
        let config = WorkerConfig {
            threads,
            conn: settings.conn_config(),
            graceful_timeout: Duration::from_secs(settings.graceful_timeout),
            timeout: Duration::from_secs(settings.timeout),
            max_requests: max_requests(settings, worker_id),
            heartbeat: Some(heartbeat),
            master_pid: Some(self.master_pid),
        };
        match py.detach(|| worker::run(listeners, app, config, || {})) {
            Ok(_) => 0,
            Err(e) => {
                log::error!("worker failed: {e}");
                EXIT_WORKER_BOOT
            }
        }
    }
}

/// `--max-requests` plus a per-worker share of `--max-requests-jitter`.
fn max_requests(settings: &Settings, worker_id: u64) -> u64 {
    if settings.max_requests == 0 {
        return 0;
    }
    let spread = settings.max_requests_jitter + 1;
    let seed = u64::from(std::process::id())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(monotonic_ms())
        .wrapping_add(worker_id);
    settings.max_requests + seed % spread
}

/// faulthandler prints every thread's Python traceback on SIGABRT, which the master sends to a
/// hung worker before killing it.
fn enable_faulthandler(py: Python<'_>) {
    let enabled = py
        .import("faulthandler")
        .and_then(|fh| fh.call_method1("enable", (py.import("sys")?.getattr("stderr")?, true)));
    if let Err(e) = enabled {
        log::warn!("faulthandler unavailable: {e}");
    }
}

/// Leaves the worker process: Python's atexit hooks run and output is flushed, but the
/// interpreter is not finalised and nothing returns into the master's code.
fn exit_process(py: Python<'_>, code: i32) -> ! {
    if let Ok(atexit) = py.import("atexit") {
        let _ = atexit.call_method0("_run_exitfuncs");
    }
    if let Ok(sys) = py.import("sys") {
        for stream in ["stdout", "stderr"] {
            let _ = sys.getattr(stream).and_then(|s| s.call_method0("flush"));
        }
    }
    std::process::exit(code)
}
