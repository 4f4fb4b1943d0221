//! Server hooks from the config file (`ferrocorn._hooks` holds and calls them). Rust knows which
//! hooks are set, so a server without hooks never calls into Python for them.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The hooks that are set, and how to call them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hooks {
    set: Vec<String>,
}

/// One fact handed to a hook call.
pub(crate) enum Fact<'a> {
    Int(i64),
    Str(&'a str),
}

impl Hooks {
    /// Reads which hooks `ferrocorn._hooks` holds now.
    pub fn current(py: Python<'_>) -> Self {
        let set = py
            .import("ferrocorn._hooks")
            .and_then(|m| m.call_method0("configured"))
            .and_then(|names| names.extract::<Vec<String>>());
        match set {
            Ok(set) => Self { set },
            Err(e) => {
                log::error!("cannot read the server hooks: {e}");
                Self::default()
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.set.iter().any(|h| h == name)
    }

    /// Calls hook `name` (if set) with `facts`; its own errors are logged on the Python side.
    pub fn fire(&self, py: Python<'_>, name: &str, facts: &[(&str, Fact<'_>)]) {
        if !self.has(name) {
            return;
        }
        let called = (|| -> PyResult<()> {
            let dict = PyDict::new(py);
            for (key, value) in facts {
                match value {
                    Fact::Int(i) => dict.set_item(key, i)?,
                    Fact::Str(s) => dict.set_item(key, s)?,
                }
            }
            py.import("ferrocorn._hooks")?
                .call_method1("dispatch", (name, dict))?;
            Ok(())
        })();
        if let Err(e) = called {
            log::error!(
                "{name} hook failed:\n{}",
                crate::wsgi::format_exception(py, &e)
            );
        }
    }

    /// [`fire`](Self::fire), taking the GIL for it (for callers that run without it).
    pub fn fire_detached(&self, name: &str, facts: &[(&str, Fact<'_>)]) {
        if self.has(name) {
            Python::attach(|py| self.fire(py, name, facts));
        }
    }
}

/// `ferrocorn._ferrocorn.log(level, message)`: Python code (hooks' `server.log`) writing into
/// the error log.
#[pyfunction]
#[pyo3(name = "log")]
pub(crate) fn log_message(level: &str, message: &str) {
    let level = match level {
        "debug" => ::log::Level::Debug,
        "info" => ::log::Level::Info,
        "warning" | "warn" => ::log::Level::Warn,
        _ => ::log::Level::Error,
    };
    ::log::log!(level, "{message}");
}
