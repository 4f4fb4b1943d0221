//! The app threads of a worker: each stays attached to the interpreter for its whole life and
//! releases the GIL while it waits for the next request.

use pyo3::prelude::*;

use ferrocorn::app::{App, Jobs};

use crate::wsgi::{self, Shared};

pub(crate) struct WsgiApp {
    pub shared: Shared,
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
}
