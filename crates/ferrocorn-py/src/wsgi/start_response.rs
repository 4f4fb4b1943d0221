//! `start_response` and the `write()` callable it returns (PEP 3333), and the response state
//! they share with the code that iterates the app's result.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use ferrocorn::app::{Disconnected, ResponseSink};
use ferrocorn::http1::request::Version;
use ferrocorn::http1::response::{server_response, EarlyHints, ResponseHead};

use super::{response_head, Failure};

/// How much of the response has gone to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Nothing,
    Head,
    Done,
}

struct State {
    called: bool,
    pending: Option<ResponseHead>,
    sent: Sent,
    disconnected: bool,
    /// This object's own bound `write` method, which `start_response` returns, while the
    /// object is kept for another request ([`Spare`]); `None` otherwise, when each call makes
    /// one. It refers back to this object: the cycle is broken at every [`Spare::give_back`].
    write: Option<Py<PyAny>>,
}

impl State {
    const fn new() -> Self {
        Self {
            called: false,
            pending: None,
            sent: Sent::Nothing,
            disconnected: false,
            write: None,
        }
    }
}

/// The response of one request, with the `start_response`, `write` and
/// `wsgi.early_hints` callables of PEP 3333 and Gunicorn as its methods.
///
/// Not `frozen`: a thread gets the object back for its next request when nothing else holds
/// it any longer ([`Spare`]), and gives it that request's sink; everything else changes
/// behind `state`.
#[pyclass(module = "ferrocorn")]
pub struct StartResponse {
    /// `None` once the object waits for its next request.
    sink: Option<ResponseSink>,
    state: Mutex<State>,
    /// The client may get interim responses: it spoke HTTP/1.1 (RFC 9110 §15.2).
    interim: bool,
}

/// A failed send: the client left, or the app's data was wrong.
pub(crate) enum SendError {
    Disconnected,
    Py(PyErr),
}

impl SendError {
    pub(crate) fn into_failure(self) -> Failure {
        match self {
            Self::Disconnected => Failure::Disconnected,
            Self::Py(e) => Failure::App(e),
        }
    }

    fn into_pyerr(self) -> PyErr {
        match self {
            Self::Disconnected => PyOSError::new_err("client disconnected"),
            Self::Py(e) => e,
        }
    }
}

/// A `wsgi.file_wrapper` over a regular file, ready for sendfile.
pub(crate) struct RealFile {
    file: File,
    offset: u64,
    len: u64,
}

/// Returns the wrapped file when it is a real, regular file (else the result is iterated).
pub(crate) fn real_file(wrapper: &Bound<'_, PyAny>) -> PyResult<Option<RealFile>> {
    let Ok(filelike) = wrapper.getattr("filelike") else {
        return Ok(None);
    };
    let Ok(fd) = filelike
        .call_method0("fileno")
        .and_then(|f| f.extract::<i32>())
    else {
        return Ok(None);
    };
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: the descriptor belongs to `filelike`, which stays open for this call; it is only
    // borrowed to duplicate it, and the duplicate is what we keep.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let Ok(owned) = borrowed.as_fd().try_clone_to_owned() else {
        return Ok(None);
    };
    let file = File::from(owned);
    let Ok(meta) = file.metadata() else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let offset: u64 = filelike
        .call_method0("tell")
        .and_then(|t| t.extract())
        .unwrap_or_default();
    Ok(Some(RealFile {
        file,
        offset,
        len: meta.len().saturating_sub(offset),
    }))
}

impl StartResponse {
    fn new(sink: ResponseSink, version: Version) -> Self {
        Self {
            sink: Some(sink),
            interim: version != Version::Http10,
            state: Mutex::new(State::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sent(&self) -> Sent {
        self.state().sent
    }

    pub(crate) fn disconnected(&self) -> bool {
        self.state().disconnected
    }

    /// Runs a send, releasing the GIL only if it may block.
    fn send(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&ResponseSink) -> Result<(), Disconnected> + Send,
    ) -> Result<(), SendError> {
        let Some(sink) = &self.sink else {
            return Err(SendError::Disconnected);
        };
        let r = if sink.has_room() {
            f(sink)
        } else {
            py.detach(|| f(sink))
        };
        r.map_err(|_| {
            self.state().disconnected = true;
            SendError::Disconnected
        })
    }

    /// Takes the head set by `start_response`, for sending now.
    fn take_head(&self, next: Sent) -> Result<ResponseHead, SendError> {
        let mut st = self.state();
        let head = st.pending.take().ok_or_else(|| {
            SendError::Py(PyRuntimeError::new_err(
                "the application produced body data before calling start_response()",
            ))
        })?;
        st.sent = next;
        Ok(head)
    }

    /// Sends a piece of body, preceded by the head if it has not gone yet.
    pub(crate) fn send_body(&self, py: Python<'_>, data: Bytes) -> Result<(), SendError> {
        if self.sent() == Sent::Nothing {
            let head = self.take_head(Sent::Head)?;
            self.send(py, move |s| s.send_head(head, data, false))
        } else {
            self.send(py, move |s| s.send_data(data))
        }
    }

    /// Sends the whole response at once: head and its only body piece.
    pub(crate) fn send_last(&self, py: Python<'_>, data: Bytes) -> Result<(), SendError> {
        let head = self.take_head(Sent::Done)?;
        self.send(py, move |s| s.send_head(head, data, true))
    }

    /// Sends a response whose body is a file, zero-copy.
    pub(crate) fn send_file(&self, py: Python<'_>, file: RealFile) -> Result<(), SendError> {
        let mut head = self.take_head(Sent::Done)?;
        let len = match head.content_length {
            Some(n) => n.min(file.len),
            None => {
                head.headers
                    .push("Content-Length", file.len.to_string().as_bytes());
                head.content_length = Some(file.len);
                file.len
            }
        };
        self.send(py, move |s| {
            s.send_head(head, Bytes::new(), false)?;
            s.send_file(file.file, file.offset, len)?;
            s.finish()
        })
    }

    /// Completes the response (an empty body if nothing was sent).
    pub(crate) fn finish(&self, py: Python<'_>) -> Result<(), SendError> {
        match self.sent() {
            Sent::Nothing => self.send_last(py, Bytes::new()),
            Sent::Head => {
                self.state().sent = Sent::Done;
                self.send(py, |s| s.finish())
            }
            Sent::Done => Ok(()),
        }
    }

    /// Sends an error response of the server's own (nothing may have been sent yet).
    pub(crate) fn send_error(&self, py: Python<'_>, status: u16, message: &str) {
        let (head, body) = server_response(status, message);
        self.state().sent = Sent::Done;
        let _ = self.send(py, move |s| s.send_head(head, body, true));
    }

    pub(crate) fn abort(&self) {
        self.state().sent = Sent::Done;
        if let Some(sink) = &self.sink {
            sink.abort();
        }
    }
}

/// What the app is given for one request: the bound `start_response` method of a
/// [`StartResponse`] (a method, so that Python calls it through vectorcall, without the tuple
/// of arguments a call of the object itself would make) and its bound `early_hints`.
pub(crate) struct Callables<'py> {
    pub start: Bound<'py, StartResponse>,
    pub start_response: Bound<'py, PyAny>,
    pub early_hints: Bound<'py, PyAny>,
}

/// A thread's [`Callables`], kept between requests so that a request does not make four Python
/// objects (and free them) that the app almost never keeps: the object, its `start_response`,
/// `environ["wsgi.early_hints"]` and the `write` method that `start_response` returns. Made
/// anew, they were about 7% of a hello request's instructions.
///
/// They are kept only when nothing but this server holds them once the request is over (their
/// reference counts say so, and no weak reference was taken to a method; the class itself
/// takes none), so an app that keeps any of them, or an environ holding one, keeps its own
/// objects and they keep reaching its own request, exactly as if every request had new ones.
pub(crate) struct Spare(Mutex<Option<Kept>>);

struct Kept {
    start: Py<StartResponse>,
    start_response: Py<PyAny>,
    early_hints: Py<PyAny>,
}

impl Spare {
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(None))
    }

    fn slot(&self) -> MutexGuard<'_, Option<Kept>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The callables for a request answered through `sink`.
    pub(crate) fn take<'py>(
        &self,
        py: Python<'py>,
        sink: ResponseSink,
        version: Version,
    ) -> PyResult<Callables<'py>> {
        let kept = self.slot().take();
        if let Some(kept) = kept {
            let c = Callables {
                start: kept.start.into_bound(py),
                start_response: kept.start_response.into_bound(py),
                early_hints: kept.early_hints.into_bound(py),
            };
            // Checked again: between two requests an object can still be found through the
            // garbage collector's lists (`gc.get_objects()`).
            let write = c.start.borrow().state().write.take();
            if alone(&c, write.as_ref()) {
                if let Ok(mut sr) = c.start.try_borrow_mut() {
                    sr.sink = Some(sink);
                    sr.interim = version != Version::Http10;
                    sr.state.get_mut().unwrap_or_else(|p| p.into_inner()).write = write;
                    drop(sr);
                    return Ok(c);
                }
            }
        }
        let start = Bound::new(py, StartResponse::new(sink, version))?;
        Ok(Callables {
            start_response: start.getattr(pyo3::intern!(py, "start_response"))?,
            early_hints: start.getattr(pyo3::intern!(py, "early_hints"))?,
            start,
        })
    }

    /// Ends the request's use of `c`: keeps them for the next request when this call holds
    /// the only references, else lets them go (breaking the cycle through a kept `write`
    /// method, so they are freed when the app drops them).
    pub(crate) fn give_back(&self, c: Callables<'_>) {
        let write = c.start.borrow().state().write.take();
        if !alone(&c, write.as_ref()) {
            return;
        }
        let write = match write {
            Some(w) => w,
            None => match c.start.getattr(pyo3::intern!(c.start.py(), "write")) {
                Ok(w) => w.unbind(),
                Err(_) => return,
            },
        };
        let Ok(mut sr) = c.start.try_borrow_mut() else {
            return;
        };
        sr.sink = None;
        *sr.state.get_mut().unwrap_or_else(|p| p.into_inner()) = State {
            write: Some(write),
            ..State::new()
        };
        drop(sr);
        *self.slot() = Some(Kept {
            start: c.start.unbind(),
            start_response: c.start_response.unbind(),
            early_hints: c.early_hints.unbind(),
        });
    }
}

/// True when the caller's references to the callables, and `write`'s (taken out of `start`),
/// are the only ones: nothing else can reach the object or call its methods.
fn alone(c: &Callables<'_>, write: Option<&Py<PyAny>>) -> bool {
    let method_alone = |m: &Bound<'_, PyAny>| refs(m) == 1 && no_weakrefs(m);
    // `start` is referred to by the caller and by each of its bound methods.
    let start_refs = 3 + isize::from(write.is_some());
    let write_alone = match write {
        Some(w) => method_alone(w.bind(c.start.py())),
        None => true,
    };
    method_alone(&c.start_response)
        && method_alone(&c.early_hints)
        && write_alone
        && refs(&c.start) == start_refs
}

fn refs<T>(obj: &Bound<'_, T>) -> isize {
    // SAFETY: a live object, and the GIL is held (the `Bound`).
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
}

/// True when no weak reference to this bound method exists (one could call it later).
fn no_weakrefs(method: &Bound<'_, PyAny>) -> bool {
    let ptr = method.as_ptr();
    // SAFETY: `ptr` is a live object; a builtin method (`PyCFunction` or its `PyCMethod`
    // subtype, which bound methods of a pyclass are) starts with `PyCFunctionObject`, whose
    // weak-reference list is null while no weak reference exists.
    unsafe {
        pyo3::ffi::PyCFunction_Check(ptr) != 0
            && (*ptr.cast::<pyo3::ffi::PyCFunctionObject>())
                .m_weakreflist
                .is_null()
    }
}

#[pymethods]
impl StartResponse {
    /// The `start_response` callable of PEP 3333 (the app is given this bound method).
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn start_response<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.borrow();
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str, e.g. '200 OK'"))?
            .to_str()?;
        match exc_info.filter(|e| !e.is_none()) {
            // PEP 3333: once the head has gone, the error is re-raised to the app.
            Some(exc) if this.sent() != Sent::Nothing => return Err(reraise(exc)),
            Some(_) => {}
            None if this.state().called => {
                return Err(PyRuntimeError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
            None => {}
        }
        let head = response_head(status, headers)?;
        let mut st = this.state();
        st.called = true;
        st.pending = Some(head);
        if let Some(write) = &st.write {
            return Ok(write.bind(slf.py()).clone());
        }
        drop(st);
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// `environ["wsgi.early_hints"]`, as Gunicorn defines it: sends a `103 Early Hints`
    /// response (RFC 8297) with `headers`, a list of `(name, value)` pairs (str or bytes),
    /// before the final response. The fields are validated as response headers are (a bad one
    /// raises `ValueError`, naming the field but not its value). Nothing is sent to an HTTP/1.0
    /// client, once the response has started, or for an empty list; the connection also drops
    /// it where it cannot send one (through a uwsgi front end). May be called several times.
    fn early_hints(&self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let hints = early_hints_from(headers)?;
        if hints.is_empty() || !self.interim || self.sent() != Sent::Nothing {
            return Ok(());
        }
        self.send(py, move |s| s.send_early_hints(hints))
            .map_err(SendError::into_pyerr)
    }

    /// The `write()` callable of PEP 3333 (for old-style apps).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        if bytes.as_bytes().is_empty() {
            return Ok(());
        }
        self.send_body(py, super::body_bytes(bytes))
            .map_err(SendError::into_pyerr)
    }
}

/// Validates the app's early hints into the fields of a 103 response.
fn early_hints_from(headers: &Bound<'_, PyAny>) -> PyResult<EarlyHints> {
    let wrong = || PyTypeError::new_err("early hints must be a list of (name, value) tuples");
    let mut hints = EarlyHints::default();
    for item in headers.try_iter().map_err(|_| wrong())? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item?.extract().map_err(|_| wrong())?;
        let name = latin1_bytes(&name, "a field name")?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| PyValueError::new_err("early hints: a field name is not ASCII"))?;
        let value = latin1_bytes(&value, &format!("the value of {name:?}"))?;
        hints
            .add(name, &value)
            .map_err(|e| PyValueError::new_err(format!("early hints: {e}")))?;
    }
    Ok(hints)
}

/// A str (latin-1 encoded, as header values are in WSGI) or bytes, as bytes.
fn latin1_bytes(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let s = v
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("early hints: {what} must be a str or bytes")))?;
    s.to_str()?
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| {
            PyValueError::new_err(format!("early hints: {what} is not latin-1 encodable"))
        })
}

/// Re-raises `exc_info`'s exception with its traceback.
fn reraise(exc: &Bound<'_, PyAny>) -> PyErr {
    let parts = exc.cast::<PyTuple>().ok().filter(|t| t.len() == 3);
    match parts {
        Some(t) => match (t.get_item(1), t.get_item(2)) {
            (Ok(value), Ok(tb)) => {
                let value = value.call_method1("with_traceback", (tb,)).unwrap_or(value);
                PyErr::from_value(value)
            }
            _ => PyTypeError::new_err("exc_info must be a (type, value, traceback) tuple"),
        },
        None => PyTypeError::new_err("exc_info must be a (type, value, traceback) tuple"),
    }
}
