//! The app threads of a worker: each stays attached to the interpreter for its whole life and
//! releases the GIL while it waits for the next request.

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
        // The worker's I/O thread keeps its Python thread state while detached, so attaching
        // here only takes the GIL.
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
}
