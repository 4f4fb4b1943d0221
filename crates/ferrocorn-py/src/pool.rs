//! The app threads of a worker: each stays attached to the interpreter for its whole life and
//! releases the GIL while it waits for the next request.

use std::cell::Cell;
use std::sync::OnceLock;

use pyo3::prelude::*;

use ferrocorn::app::{App, Exchange, Jobs};

use crate::wsgi::{self, Shared};

pub(crate) struct WsgiApp {
    pub shared: Shared,
    /// The I/O thread's own context, for requests it runs inline (made on first use).
    pub inline_ctx: OnceLock<wsgi::ThreadCtx>,
}

impl App for WsgiApp {
    fn run_thread(&self, jobs: Jobs) {
        Python::attach(|py| {
            let ctx = match wsgi::ThreadCtx::new(py, &self.shared) {
                Ok(ctx) => ctx,
                Err(e) => {
                    log::error!(
                        "cannot start an app thread:\n{}",
                        wsgi::format_exception(py, &e)
                    );
                    return;
                }
            };
            while let Some(exchange) = jobs.try_next().or_else(|| py.detach(|| jobs.next())) {
                wsgi::handle(py, &ctx, exchange);
            }
        });
    }

    fn run_inline(&self, exchange: Exchange) -> Option<Exchange> {
        hold_gil();
        // The GIL is held (see `hold_gil`), so attaching only counts a reference.
        Python::attach(|py| {
            let ctx = match self.inline_ctx.get() {
                Some(ctx) => ctx,
                None => match wsgi::ThreadCtx::new(py, &self.shared) {
                    Ok(ctx) => self.inline_ctx.get_or_init(|| ctx),
                    Err(e) => {
                        log::warn!(
                            "cannot serve requests on the I/O thread:\n{}",
                            wsgi::format_exception(py, &e)
                        );
                        return Some(exchange);
                    }
                },
            };
            wsgi::handle(py, ctx, exchange);
            None
        })
    }

    /// Gunicorn's `environ["gunicorn.socket"]` on WebSocket upgrade requests.
    fn takes_sockets(&self) -> bool {
        true
    }

    fn release_inline(&self) {
        if let Some(state) = HELD.take() {
            // SAFETY: `state` came from `PyGILState_Ensure` on this thread (`hold_gil`), which
            // is released exactly once, here.
            unsafe { pyo3::ffi::PyGILState_Release(state) };
        }
    }
}

thread_local! {
    /// The I/O thread's hold on the GIL between inline calls, if it has one.
    static HELD: Cell<Option<pyo3::ffi::PyGILState_STATE>> = const { Cell::new(None) };
}

/// Takes the GIL for inline calls unless this thread already holds it from the last one.
/// Taking and dropping it around every call was 2-3% of a hello request's CPU time; under
/// load the I/O thread now takes it once per batch of events. Others waiting for it are not
/// starved: `release_inline` runs before the thread waits for events and before a request goes
/// to the app threads, and while the app runs, Python hands the GIL over as usual.
fn hold_gil() {
    if HELD.get().is_none() {
        // SAFETY: the interpreter is initialised (this is one of its worker processes) and the
        // thread has a thread state; the matching release is in `release_inline`.
        HELD.set(Some(unsafe { pyo3::ffi::PyGILState_Ensure() }));
    }
}
