//! Loading the WSGI app from its `APP` spec, through `ferrocorn._loader` (Python is the natural
//! place to import modules and evaluate factory calls).

use pyo3::prelude::*;

/// Imports the app; on failure returns the one-line message for the user.
pub(crate) fn load(py: Python<'_>, spec: &str) -> Result<Py<PyAny>, String> {
    load_with(py, spec, false)
}

/// [`load`]; with `traceback`, a failure's whole traceback goes to the error log too (for
/// `--reload`, where the developer needs to see where their edit broke).
pub(crate) fn load_with(py: Python<'_>, spec: &str, traceback: bool) -> Result<Py<PyAny>, String> {
    let loaded = py
        .import("ferrocorn._loader")
        .and_then(|m| m.getattr("load_app"))
        .and_then(|f| f.call1((spec,)));
    match loaded {
        Ok(app) => Ok(app.unbind()),
        Err(e) => {
            let is_load_error = py
                .import("ferrocorn._loader")
                .and_then(|m| m.getattr("AppLoadError"))
                .is_ok_and(|cls| e.is_instance(py, &cls));
            if traceback {
                log::error!("{}", crate::wsgi::format_exception(py, &e));
            } else if log::log_enabled!(log::Level::Debug) {
                log::debug!("{}", crate::wsgi::format_exception(py, &e));
            }
            let msg = e.value(py).to_string();
            if is_load_error {
                Err(msg)
            } else {
                Err(format!(
                    "{}: {}",
                    e.get_type(py)
                        .name()
                        .map_or_else(|_| "Error".into(), |n| n.to_string()),
                    msg
                ))
            }
        }
    }
}
