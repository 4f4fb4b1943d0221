//! [`Receiving`]: what `receive()` returns when no message is there yet.
//!
//! A WebSocket that waits for its client waits here for as long as it is idle, so this is
//! part of what every idle connection holds. An `async def` on the loop's side would hold a
//! coroutine with its frame besides the future it awaits; a `Receiving` is awaited like that
//! coroutine would be, and holds three references: it yields the loop's future for the
//! call's token (`LoopWorker._wait`), and once the task steps again (the token had news) it
//! asks the call for its message, which ends the await, or waits again. The message stays
//! with the call until the awaiting task runs, so a task cancelled meanwhile loses none: the
//! cancellation is thrown here, and the next `receive()` gets the message.
//!
//! Like [`super::done::Done`] it has a coroutine's `send`, `throw` and `close`, so that
//! `asyncio.iscoroutine` accepts it where an app hands `receive()` to `create_task`.

use pyo3::exceptions::PyStopIteration;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

/// A `receive()` waiting for its call's token.
#[pyclass(module = "ferrocorn._ferrocorn", name = "AsgiReceiving")]
pub(crate) struct Receiving {
    /// The `AsgiCall` or `AsgiWebSocket` asked again (`poll_receive`) after each wake.
    call: Py<PyAny>,
    /// The call's token, which the loop's side wakes it by.
    token: u64,
    /// The loop's side (`ferrocorn._asgi.LoopWorker`).
    waits: Py<PyAny>,
    /// The future yielded last, until the task that awaited it steps again.
    waiting: Option<Py<PyAny>>,
}

impl Receiving {
    pub(crate) fn awaitable<'py>(
        call: &Bound<'py, PyAny>,
        token: u64,
        waits: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(Bound::new(
            call.py(),
            Receiving {
                call: call.clone().unbind(),
                token,
                waits,
                waiting: None,
            },
        )?
        .into_any())
    }

    /// One step: after a wake, the call's message (as `StopIteration`'s value) if it has one;
    /// else the future for the call's token, to be awaited by the task.
    fn step<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let (call, token, waits, woken) = {
            let mut this = slf.borrow_mut();
            let woken = this.waiting.take().is_some();
            (
                this.call.clone_ref(py),
                this.token,
                this.waits.clone_ref(py),
                woken,
            )
        };
        let call = call.bind(py);
        // The first step follows a `receive()` that just found nothing: no need to ask again.
        if woken {
            let message = call.call_method0(intern!(py, "poll_receive"))?;
            if !message.is_none() {
                // StopIteration's value is its first argument.
                return Err(PyStopIteration::new_err((message.unbind(),)));
            }
        }
        let future = waits
            .bind(py)
            .call_method1(intern!(py, "_wait"), (token,))?;
        // What `Future.__await__` sets before it yields: the task takes it as a future to
        // wait for (and clears it).
        future.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
        slf.borrow_mut().waiting = Some(future.clone().unbind());
        Ok(future)
    }
}

#[pymethods]
impl Receiving {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::step(slf)
    }

    /// A coroutine's `send`: a task driving this directly sends None at each step.
    fn send<'py>(
        slf: &Bound<'py, Self>,
        _value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::step(slf)
    }

    /// A coroutine's `throw` (a cancellation, say): nothing here catches it, so it is raised;
    /// the future it interrupted is let go.
    #[pyo3(signature = (exc, _value=None, _traceback=None))]
    fn throw(
        &mut self,
        exc: Bound<'_, PyAny>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.waiting = None;
        Err(PyErr::from_value(exc))
    }

    /// A coroutine's `close`: the future awaited, if any, is let go.
    fn close(&mut self) {
        self.waiting = None;
    }

    // The future's callbacks lead back to the task awaiting this: a cycle the collector
    // must be able to see (and break) while it waits.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.call)?;
        visit.call(&self.waits)?;
        visit.call(&self.waiting)
    }

    fn __clear__(&mut self) {
        self.waiting = None;
    }
}
