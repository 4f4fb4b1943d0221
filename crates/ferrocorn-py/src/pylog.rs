//! `--logconfig-dict`: configures Python's `logging` with `logging.config.dictConfig` and hands
//! the error log, and the access log when the dictionary configures an access logger, to
//! Python loggers.

use std::sync::{Arc, OnceLock};

use ferrocorn::observe::accesslog::LineSink;
use pyo3::prelude::*;

/// The access line sink, when the dictionary configures an access logger.
static ACCESS: OnceLock<LineSink> = OnceLock::new();

/// Where the workers send access lines when no `--access-logfile` is given.
pub fn access_sink() -> Option<LineSink> {
    ACCESS.get().cloned()
}

/// Applies `json` (a dictConfig dictionary) and installs the bridges. The error is the
/// Python exception's text.
pub fn configure(py: Python<'_>, json: &str) -> Result<(), String> {
    let (error, access) = apply(py, json).map_err(|e| e.to_string())?;
    ferrocorn::error_log::set_sink(Box::new(move |level, message| {
        python_alive()
            && Python::attach(|py| {
                let level = match level {
                    log::Level::Error => 40,
                    log::Level::Warn => 30,
                    log::Level::Info => 20,
                    log::Level::Debug | log::Level::Trace => 10,
                };
                error.call_method1(py, "log", (level, message)).is_ok()
            })
    }));
    if let Some(access) = access {
        let sink: LineSink = Arc::new(move |batch: &str| {
            if !python_alive() {
                return;
            }
            Python::attach(|py| {
                for line in batch.lines() {
                    if let Err(e) = access.call_method1(py, "info", (line,)) {
                        e.print(py);
                        return;
                    }
                }
            });
        });
        let _ = ACCESS.set(sink);
    }
    Ok(())
}

/// Runs dictConfig; returns the error logger and the access logger, if one is configured.
fn apply(py: Python<'_>, json: &str) -> PyResult<(Py<PyAny>, Option<Py<PyAny>>)> {
    let config = py.import("json")?.call_method1("loads", (json,))?;
    py.import("logging.config")?
        .call_method1("dictConfig", (&config,))?;
    let mut configured: Vec<String> = Vec::new();
    if let Ok(loggers) = config.get_item("loggers") {
        for name in loggers.try_iter()? {
            configured.push(name?.extract()?);
        }
    }
    let has = |name: &str| configured.iter().any(|c| c == name);
    let logging = py.import("logging")?;
    let error_name = if !has("ferrocorn.error") && has("gunicorn.error") {
        "gunicorn.error"
    } else {
        "ferrocorn.error"
    };
    let error = logging.call_method1("getLogger", (error_name,))?.unbind();
    let access = ["ferrocorn.access", "gunicorn.access"]
        .into_iter()
        .find(|name| has(name))
        .map(|name| logging.call_method1("getLogger", (name,)))
        .transpose()?
        .map(Bound::unbind);
    Ok((error, access))
}

/// False once the interpreter is gone (a line logged while the process exits goes to stderr).
fn python_alive() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, with or without the GIL.
    unsafe { pyo3::ffi::Py_IsInitialized() != 0 }
}
