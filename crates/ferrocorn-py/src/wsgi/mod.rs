//! PEP 3333: calling the app for one exchange and turning what it returns into response events.

pub(crate) mod environ;
pub(crate) mod errors;
pub(crate) mod input;
pub(crate) mod start_response;

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use ferrocorn::app::{BodyStream, Exchange};
use ferrocorn::http1::response::ResponseHead;

use self::input::InputStream;
use self::start_response::{Sent, Spare, StartResponse};

/// What every app thread of a worker shares.
pub(crate) struct Shared {
    pub app: Py<PyAny>,
    pub multithread: bool,
    pub multiprocess: bool,
    /// `--root-path`: SCRIPT_NAME when no trusted proxy sends a prefix.
    pub root_path: String,
}

/// Per-thread state: the environ template and cached Python objects.
pub(crate) struct ThreadCtx {
    app: Py<PyAny>,
    template: Py<PyDict>,
    root_path: String,
    file_wrapper: Py<PyAny>,
    /// `wsgi.input` for every request without a body: an empty stream has no state to keep
    /// apart, and most requests (GETs) have none, which spares them an object.
    empty_input: Py<InputStream>,
    /// The `start_response` object (and its methods) the last request left, for the next.
    spare: Spare,
}

impl ThreadCtx {
    pub fn new(py: Python<'_>, shared: &Shared) -> PyResult<Self> {
        let file_wrapper = py.import("ferrocorn._wsgi")?.getattr("FileWrapper")?;
        let template = environ::template(py, shared, &file_wrapper)?;
        Ok(Self {
            app: shared.app.clone_ref(py),
            template: template.unbind(),
            root_path: shared.root_path.clone(),
            file_wrapper: file_wrapper.unbind(),
            empty_input: Py::new(py, InputStream::new(BodyStream::empty()))?,
            spare: Spare::new(),
        })
    }
}

thread_local! {
    /// This thread's memos of repeated environ values (a thread's own: the I/O thread's
    /// context is shared with the worker, and these change on every request).
    static MEMOS: environ::Memos = const { environ::Memos::new() };
}

/// Formats an exception with its traceback, as Python prints it.
pub(crate) fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.getattr("format_exception"))
        .and_then(|f| f.call1((err.get_type(py), err.value(py), err.traceback(py))));
    join_lines(formatted).unwrap_or_else(|| err.to_string())
}

fn join_lines(lines: PyResult<Bound<'_, PyAny>>) -> Option<String> {
    let lines = lines.ok()?;
    let mut out = String::new();
    for line in lines.try_iter().ok()? {
        out.push_str(&line.ok()?.extract::<String>().ok()?);
    }
    Some(out.trim_end().to_owned())
}

/// Bodies this large are sent straight from the Python `bytes` object (kept alive until the
/// write is done) instead of being copied; smaller ones are cheaper to copy.
const ZERO_COPY_MIN: usize = 32 * 1024;

/// A Python `bytes` object lent to the I/O thread. Its buffer is immutable and stays where it is
/// while the object lives, which the owned reference guarantees.
struct PyBytesOwner {
    ptr: *const u8,
    len: usize,
    _owner: Py<PyBytes>,
}

// SAFETY: the buffer is immutable and kept alive by `_owner`; pyo3 defers the reference
// drop to a thread holding the GIL.
unsafe impl Send for PyBytesOwner {}
// SAFETY: as above; shared access only reads the immutable buffer.
unsafe impl Sync for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the buffer of `_owner`, alive and unchanged.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for PyBytesOwner {
    fn drop(&mut self) {
        // Dropped on the I/O thread, where the reference cannot be released; pyo3 releases it
        // when some thread next attaches. `body_bytes` makes sure that happens often enough.
        AWAITING_RELEASE.fetch_add(self.len, Ordering::Relaxed);
    }
}

/// Bytes of lent bodies that are written and dropped but whose Python objects pyo3 has not
/// released yet (it does so when a thread next detaches from and re-attaches to Python).
static AWAITING_RELEASE: AtomicUsize = AtomicUsize::new(0);

/// Past this much, the app thread detaches once so that pyo3 releases the written bodies:
/// memory stays bounded while an app streams large pieces to a fast client.
const RELEASE_EVERY: usize = 4 * 1024 * 1024;

/// The body of a response piece: copied when small, lent (zero-copy) when large.
pub(crate) fn body_bytes(bytes: &Bound<'_, PyBytes>) -> Bytes {
    let data = bytes.as_bytes();
    if data.len() < ZERO_COPY_MIN {
        return Bytes::copy_from_slice(data);
    }
    if AWAITING_RELEASE.load(Ordering::Relaxed) >= RELEASE_EVERY {
        AWAITING_RELEASE.store(0, Ordering::Relaxed);
        bytes.py().detach(|| ());
    }
    Bytes::from_owner(PyBytesOwner {
        ptr: data.as_ptr(),
        len: data.len(),
        _owner: bytes.clone().unbind(),
    })
}

/// Why a response could not be completed.
pub(crate) enum Failure {
    /// The client went away; nothing to report to it.
    Disconnected,
    /// The app (or its result) raised.
    App(PyErr),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Self::App(e)
    }
}

/// Serves one exchange on this app thread. Never raises: every failure becomes a response, a
/// closed connection, or a log line.
pub(crate) fn handle(py: Python<'_>, ctx: &ThreadCtx, exchange: Exchange) {
    let Exchange {
        mut request,
        body,
        mut response,
    } = exchange;
    let socket = request.socket.take();
    let socket_offered = socket.is_some();
    response.start_clock();
    let callables = match ctx.spare.take(py, response, request.head.version) {
        Ok(made) => made,
        Err(e) => {
            log::error!("cannot serve a request:\n{}", format_exception(py, &e));
            return;
        }
    };
    let start = &callables.start;
    let outcome = (|| -> Result<(), Failure> {
        let input = if body.is_done() {
            ctx.empty_input.bind(py).clone()
        } else {
            Bound::new(py, InputStream::new(body))?
        };
        let environ = MEMOS.with(|memos| {
            environ::build(
                py,
                ctx.template.bind(py),
                memos,
                &request,
                &input,
                &callables.early_hints,
                &ctx.root_path,
            )
        })?;
        if let Some(socket) = socket {
            environ.set_item(intern!(py, "gunicorn.socket"), python_socket(py, socket)?)?;
        }
        let result = ctx.app.bind(py).call1((environ, &callables.start_response));
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(fail(py, start, &input, e, socket_offered)),
        };
        let sent = send_result(py, ctx, start, &result);
        let closed = close_result(&result);
        let finished = sent.and_then(|()| closed.map_err(Failure::App));
        match finished {
            Ok(()) => start.borrow().finish(py).map_err(|_| Failure::Disconnected),
            Err(Failure::App(e)) => Err(fail(py, start, &input, e, socket_offered)),
            Err(d) => Err(d),
        }
    })();
    match outcome {
        Ok(()) | Err(Failure::Disconnected) => {}
        Err(Failure::App(e)) => {
            log::error!(
                "Error handling request {}\n{}",
                request.head.target,
                format_exception(py, &e)
            );
        }
    }
    // After the exception and its traceback (which may refer to them) are gone.
    ctx.spare.give_back(callables);
}

/// The app's end of a connection it may take over, as a Python `socket.socket` (blocking, as
/// Gunicorn's is); it owns the descriptor from then on.
fn python_socket<'py>(
    py: Python<'py>,
    socket: ferrocorn::app::AppSocket,
) -> PyResult<Bound<'py, PyAny>> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let fd = socket.into_fd();
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "fileno"), fd.as_raw_fd())?;
    let made = py
        .import(intern!(py, "socket"))?
        .getattr(intern!(py, "socket"))?
        .call((), Some(&kwargs))?;
    // The Python object closes it now; on an error above, `fd` closed it when dropped.
    let _ = fd.into_raw_fd();
    Ok(made)
}

/// Turns an exception from the app into the right ending: a 400 when the client's body was
/// bad, a 500 when nothing was sent yet, a closed connection otherwise. Returns what is left to
/// log (nothing, for a client at fault or gone). `socket_offered`: the environ carried
/// `gunicorn.socket`, where `StopIteration` is Gunicorn's word for "the app used the socket:
/// close the connection" (flask-sock, python-engineio).
fn fail(
    py: Python<'_>,
    start: &Bound<'_, StartResponse>,
    input: &Bound<'_, InputStream>,
    err: PyErr,
    socket_offered: bool,
) -> Failure {
    let sr = start.borrow();
    if sr.disconnected() {
        return Failure::Disconnected;
    }
    if socket_offered && err.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
        sr.abort();
        return Failure::Disconnected;
    }
    if let Some(body_err) = input.borrow().client_error() {
        log::debug!("request body refused: {body_err}");
        if sr.sent() == Sent::Nothing {
            sr.send_error(py, body_err.status(), &body_err.to_string());
        } else {
            sr.abort();
        }
        return Failure::Disconnected;
    }
    if sr.sent() == Sent::Nothing {
        sr.send_error(py, 500, "the application raised an exception");
    } else {
        sr.abort();
    }
    Failure::App(err)
}

/// Sends the app's result: sendfile for a file wrapper over a real file, one message for a
/// single-item list, otherwise item by item.
fn send_result(
    py: Python<'_>,
    ctx: &ThreadCtx,
    start: &Bound<'_, StartResponse>,
    result: &Bound<'_, PyAny>,
) -> Result<(), Failure> {
    let sr = start.borrow();
    let list = result.cast_exact::<PyList>().ok();
    if list.is_none()
        && result.is_instance(ctx.file_wrapper.bind(py))?
        && sr.sent() == Sent::Nothing
    {
        if let Some(file) = start_response::real_file(result)? {
            return sr.send_file(py, file).map_err(|_| Failure::Disconnected);
        }
    }
    if let Some(list) = list {
        if list.len() == 1 && sr.sent() == Sent::Nothing {
            let item = list.get_item(0)?;
            let bytes = item
                .cast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err(item_type_error(&item)))?;
            return sr
                .send_last(py, body_bytes(bytes))
                .map_err(|e| e.into_failure());
        }
    }
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err(item_type_error(&item)))?;
        if bytes.as_bytes().is_empty() {
            continue;
        }
        sr.send_body(py, body_bytes(bytes))
            .map_err(|e| e.into_failure())?;
    }
    Ok(())
}

fn item_type_error(item: &Bound<'_, PyAny>) -> String {
    let name = item
        .get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string());
    format!("the application's iterable must yield bytes, not {name}")
}

/// PEP 3333: the server calls the result's `close()` if it has one, whatever happened.
fn close_result(result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.cast_exact::<PyList>().is_ok() {
        return Ok(());
    }
    match result.getattr(pyo3::intern!(result.py(), "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

/// Validates a WSGI status and header list into a response head.
pub(crate) fn response_head(status: &str, headers: &Bound<'_, PyAny>) -> PyResult<ResponseHead> {
    let list = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err("response headers must be a list of (name, value) tuples")
    })?;
    let invalid = |e: ferrocorn::http1::error::ResponseError| {
        pyo3::exceptions::PyValueError::new_err(e.to_string())
    };
    let mut head = ResponseHead::start(status).map_err(invalid)?;
    for item in list.iter() {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item
            .extract()
            .map_err(|_| PyTypeError::new_err("each response header must be a (str, str) tuple"))?;
        let name = name
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("each response header must be a (str, str) tuple"))?;
        // Borrowed: an ASCII str's UTF-8 is its own buffer, nothing is copied to read it.
        let name = name.to_str()?;
        let value = value.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("value of response header {name:?} must be a str"))
        })?;
        let value = value.to_str()?;
        let bytes = latin1(value).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "value of response header {name:?} is not latin-1 encodable"
            ))
        })?;
        head.add(name, &bytes).map_err(invalid)?;
    }
    Ok(head)
}

fn latin1(s: &str) -> Option<Cow<'_, [u8]>> {
    if s.is_ascii() {
        return Some(Cow::Borrowed(s.as_bytes()));
    }
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
}
