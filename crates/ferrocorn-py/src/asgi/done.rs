//! [`Done`]: what `receive()` and `send()` return when they need not wait.
//!
//! An `async def` wrapper would cost a coroutine object and a frame per message on the loop
//! thread, the one thread a worker's ASGI requests all share. A `Done` is awaited like a
//! coroutine that returns at once: `await` takes its iterator (itself), whose first step stops
//! with the value. It also has a coroutine's `send`, `throw` and `close`, so that
//! `asyncio.iscoroutine` (which checks for them) accepts it where an app hands `send(...)` to
//! `create_task` or `ensure_future`.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// An awaitable that is already done: awaiting it gives `value` (None when absent).
#[pyclass(module = "ferrocorn._ferrocorn", name = "AsgiDone", frozen)]
pub(crate) struct Done {
    value: Option<Py<PyAny>>,
}

/// The one `Done` without a value: every `send()` that may go on returns it.
static READY: PyOnceLock<Py<Done>> = PyOnceLock::new();

impl Done {
    /// The shared awaitable that gives None.
    pub(crate) fn ready(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let ready = READY.get_or_try_init(py, || Py::new(py, Done { value: None }))?;
        Ok(ready.bind(py).clone().into_any())
    }

    /// An awaitable that gives `value`.
    pub(crate) fn with<'py>(value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = value.py();
        Ok(Bound::new(
            py,
            Done {
                value: Some(value.unbind()),
            },
        )?
        .into_any())
    }

    fn stop(&self, py: Python<'_>) -> PyErr {
        match &self.value {
            // StopIteration's value is its first argument.
            Some(v) => PyStopIteration::new_err((v.clone_ref(py),)),
            None => PyStopIteration::new_err(()),
        }
    }
}

#[pymethods]
impl Done {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The first step stops. Without a value, by returning nothing (no exception is made:
    /// the iterator protocol's cheap end, which `await` takes as None).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<()>> {
        match self.value {
            None => Ok(None),
            Some(_) => Err(self.stop(py)),
        }
    }

    /// A coroutine's `send`: the first step already stops.
    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(self.stop(py))
    }

    /// A coroutine's `throw`: nothing is suspended to catch it, so it is raised.
    #[pyo3(signature = (exc, _value=None, _traceback=None))]
    fn throw(
        &self,
        exc: Bound<'_, PyAny>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Err(PyErr::from_value(exc))
    }

    /// A coroutine's `close`: nothing to close.
    fn close(&self) {}
}
