//! ASGI 3.0 (HTTP): one asyncio event loop per worker, on a thread of its own, serving the same
//! `Exchange`s the core queues for WSGI app threads.
//!
//! - `runtime`: how exchanges reach the loop (in batches, a wake-up only when it sleeps) and
//!   how it hears about body pieces, room to send and disconnects (tokens in its inbox).
//! - `scope`: the HTTP scope of a request.
//! - `messages`: the checked messages an app sends.
//! - `websocket`: the websocket scope's events (`AsgiWebSocket`), over the WebSocket the
//!   core speaks.
//! - `done`: the awaitable `receive()` and `send()` answer with when they need not wait.
//! - this module: [`Call`], one exchange as the loop's coroutine (`ferrocorn._asgi`) drives it,
//!   without ever blocking the loop: its `receive` and `send` are the app's own callables,
//!   answered at once in Rust, or (to wait for the exchange's token) by the loop's coroutines.

pub(crate) mod done;
pub(crate) mod messages;
pub(crate) mod names;
pub(crate) mod receiving;
pub(crate) mod runtime;
pub(crate) mod scope;
pub(crate) mod websocket;

use std::fs::File;

use bytes::Bytes;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use ferrocorn::app::{BodyStream, Exchange, Request, ResponseSink};
use ferrocorn::http1::response::{server_response, ResponseHead, Trailers};
use ferrocorn::remote::Flow;

use self::done::Done;
use self::messages::Outgoing;
use self::receiving::Receiving;

pyo3::create_exception!(
    ferrocorn,
    ClientDisconnected,
    pyo3::exceptions::PyOSError,
    "The client went away: raised by an ASGI app's send() (HTTP spec 2.4)."
);

/// The most body bytes one `http.request` message carries.
const RECEIVE_MAX: usize = 64 * 1024;

/// Where the response stands.
enum Phase {
    /// Nothing sent yet.
    Idle,
    /// `http.response.start` received; the head waits for the first body bytes.
    Started(Box<ResponseHead>),
    /// Head sent, more body to come.
    Streaming,
    /// The body is complete; the `http.response.trailers` gathered so far.
    Trailers(Trailers),
    /// The response is complete (or was cut off).
    Done,
}

/// One exchange on the event loop.
#[pyclass(module = "ferrocorn._ferrocorn", name = "AsgiCall")]
pub(crate) struct Call {
    request: Request,
    body: Option<BodyStream>,
    response: Option<ResponseSink>,
    token: u64,
    phase: Phase,
    /// The last `http.request` (more_body False) was given to the app.
    request_done: bool,
    /// `http.response.start` said `trailers`: the body's last message leaves the response
    /// open for `http.response.trailers`.
    trailers: bool,
    /// The loop's side (`ferrocorn._asgi.LoopWorker`): its `receive_later(call)` and
    /// `room_later(call)` coroutines wait for this call's token.
    waits: Option<Py<PyAny>>,
}

impl Call {
    pub(crate) fn new(exchange: Exchange) -> Self {
        let Exchange {
            request,
            body,
            mut response,
        } = exchange;
        response.start_clock();
        Self {
            token: response.token().unwrap_or_default(),
            request,
            body: Some(body),
            response: Some(response),
            phase: Phase::Idle,
            request_done: false,
            trailers: false,
            waits: None,
        }
    }

    /// The call, waiting (when it must) through the loop's side `waits`.
    pub(crate) fn waiting_on(mut self, waits: Py<PyAny>) -> Self {
        self.waits = Some(waits);
        self
    }

    /// The loop's side, for a `receive()` or `send()` that must wait.
    fn waits(call: &Bound<'_, Self>) -> Option<Py<PyAny>> {
        call.borrow().waits.as_ref().map(|w| w.clone_ref(call.py()))
    }

    /// The next message for the app, or None: wait for this call's token.
    fn next_message<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        // After the response, whatever is left of the body: the request is over (as Uvicorn).
        if matches!(self.phase, Phase::Done) {
            return Self::disconnect(py).map(Some);
        }
        if self.request_done {
            if self.closed() {
                return Self::disconnect(py).map(Some);
            }
            return Ok(None);
        }
        let Some(body) = self.body.as_mut() else {
            return Self::disconnect(py).map(Some);
        };
        match body.poll_read(RECEIVE_MAX) {
            Ok(Some(bytes)) => {
                let more = !body.is_done();
                self.request_done = !more;
                let msg = PyDict::new(py);
                msg.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
                msg.set_item(intern!(py, "body"), PyBytes::new(py, &bytes))?;
                msg.set_item(intern!(py, "more_body"), more)?;
                Ok(Some(msg))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                log::debug!("{}: request body: {e}", self.label());
                self.request_done = true;
                Self::disconnect(py).map(Some)
            }
        }
    }

    /// Posts one of the app's messages: true when the app may go on, false when it waits for
    /// room. Raises `ClientDisconnected` once the client is gone.
    fn send_now(&mut self, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        let msg = messages::parse(message)?;
        if self.closed() {
            return Err(ClientDisconnected::new_err("the client disconnected"));
        }
        Ok(self.post(msg)? == Flow::Ready)
    }

    fn closed(&self) -> bool {
        self.response.as_ref().is_none_or(ResponseSink::is_closed)
    }

    fn label(&self) -> String {
        format!("{} {}", self.request.head.method, self.request.head.target)
    }

    fn disconnect<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let msg = PyDict::new(py);
        msg.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
        Ok(msg)
    }

    fn post(&mut self, msg: Outgoing) -> PyResult<Flow> {
        let Some(response) = self.response.as_ref() else {
            return Err(ClientDisconnected::new_err("the response is over"));
        };
        let gone = |_| ClientDisconnected::new_err("the client disconnected");
        // With `trailers` declared, the body's last message does not end the response: the
        // trailers do.
        let declared = self.trailers;
        let after_body = |more: bool| {
            if more {
                Phase::Streaming
            } else if declared {
                Phase::Trailers(Trailers::default())
            } else {
                Phase::Done
            }
        };
        let end = |more: bool| -> PyResult<()> {
            if !more && !declared {
                response.finish().map_err(gone)?;
            }
            Ok(())
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let (phase, flow) = match (phase, msg) {
            // Without `trailers` in the start, trailer messages are ignored.
            (phase, Outgoing::Trailers { .. }) if !declared => (phase, Flow::Ready),
            (Phase::Trailers(mut gathered), Outgoing::Trailers { fields, more }) => {
                for (name, value) in fields.fields.iter() {
                    gathered.fields.push(name, value);
                }
                if more {
                    (Phase::Trailers(gathered), Flow::Ready)
                } else {
                    (Phase::Done, self.end_with(gathered)?)
                }
            }
            (phase @ Phase::Trailers(_), _) => {
                self.phase = phase;
                return Err(PyRuntimeError::new_err(
                    "Expected ASGI message 'http.response.trailers' after the body",
                ));
            }
            (
                phase @ (Phase::Idle | Phase::Started(_) | Phase::Streaming),
                Outgoing::Trailers { .. },
            ) => {
                self.phase = phase;
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.trailers' before the body's last \
                     message",
                ));
            }
            // A 103 goes before the head, which is held back until the first body bytes:
            // accepted until then (asgiref: after the start, before the body), sent where
            // the protocol and the client allow interim responses (not HTTP/1.0, not uwsgi).
            (phase @ (Phase::Idle | Phase::Started(_)), Outgoing::EarlyHint(hints)) => {
                let flow = if hints.is_empty() {
                    Flow::Ready
                } else {
                    response.post_early_hints(hints).map_err(gone)?
                };
                (phase, flow)
            }
            (Phase::Streaming, Outgoing::EarlyHint(_)) => {
                self.phase = Phase::Streaming;
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.early_hint': the response's body \
                     has started (a 103 goes before it)",
                ));
            }
            (Phase::Idle, Outgoing::Start { head, trailers }) => {
                self.trailers = trailers;
                (Phase::Started(head), Flow::Ready)
            }
            (Phase::Idle, _) => {
                self.phase = Phase::Idle;
                return Err(PyRuntimeError::new_err(
                    "Expected ASGI message 'http.response.start' first",
                ));
            }
            // The head goes out with the first body bytes (or the end): an empty piece with
            // more to come sends nothing, so an app failing after it still gets its 500
            // (as PEP 3333 holds the head back until a non-empty piece).
            (Phase::Started(head), Outgoing::Body { body, more: true }) if body.is_empty() => {
                (Phase::Started(head), Flow::Ready)
            }
            (Phase::Started(head), Outgoing::Body { body, more }) => {
                let flow = response
                    .post_head(head, body, !more && !declared)
                    .map_err(gone)?;
                (after_body(more), flow)
            }
            (Phase::Started(head), Outgoing::PathSend(path)) => {
                let file = File::open(&path)?;
                let len = file.metadata()?.len();
                response
                    .post_head(head, Bytes::new(), len == 0 && !declared)
                    .map_err(gone)?;
                let mut flow = Flow::Ready;
                if len > 0 {
                    flow = response.post_file(file, 0, len).map_err(gone)?;
                    end(false)?;
                }
                (after_body(false), flow)
            }
            // Like a body message whose bytes come from the file: nothing yet (no bytes,
            // more to come) keeps the head back.
            (Phase::Started(head), Outgoing::ZeroCopy { len: 0, more, .. }) => {
                if more {
                    (Phase::Started(head), Flow::Ready)
                } else {
                    let flow = response
                        .post_head(head, Bytes::new(), !declared)
                        .map_err(gone)?;
                    (after_body(false), flow)
                }
            }
            (
                phase @ (Phase::Started(_) | Phase::Streaming),
                Outgoing::ZeroCopy {
                    file,
                    offset,
                    len,
                    more,
                },
            ) => {
                if let Phase::Started(head) = phase {
                    response
                        .post_head(head, Bytes::new(), false)
                        .map_err(gone)?;
                }
                let mut flow = Flow::Ready;
                if len > 0 {
                    flow = response.post_file(file, offset, len).map_err(gone)?;
                }
                end(more)?;
                (after_body(more), flow)
            }
            (Phase::Streaming, Outgoing::Body { body, more }) => {
                let mut flow = Flow::Ready;
                if !body.is_empty() {
                    flow = response.post_data(body).map_err(gone)?;
                }
                end(more)?;
                (after_body(more), flow)
            }
            (phase @ (Phase::Started(_) | Phase::Streaming), Outgoing::Start { .. }) => {
                self.phase = phase;
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.start': the response has started",
                ));
            }
            (Phase::Streaming, Outgoing::PathSend(_)) => {
                self.phase = Phase::Streaming;
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.pathsend' after body",
                ));
            }
            (Phase::Done, _) => {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message: the response is already complete",
                ));
            }
        };
        self.phase = phase;
        Ok(flow)
    }

    /// Ends the response with the `trailers` gathered (see [`end_with`]).
    fn end_with(&self, trailers: Trailers) -> PyResult<Flow> {
        let Some(response) = self.response.as_ref() else {
            return Err(ClientDisconnected::new_err("the response is over"));
        };
        end_with(response, &self.request, trailers)
            .map_err(|_| ClientDisconnected::new_err("the client disconnected"))
    }
}

#[pymethods]
impl Call {
    #[getter]
    fn token(&self) -> u64 {
        self.token
    }

    /// The request's HTTP scope, with a shallow copy of `state` (the lifespan's).
    #[pyo3(signature = (shared, state=None))]
    fn scope<'py>(
        &self,
        py: Python<'py>,
        shared: PyRef<'py, runtime::Runtime>,
        state: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        scope::build(py, &shared.0.scope, &self.request, state.as_ref())
    }

    /// The app's `receive()`: the next message, at once or (waiting for the token) from the
    /// loop's `receive_later(call)`.
    fn receive<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let (message, token) = {
            let mut call = slf.borrow_mut();
            (call.next_message(slf.py())?, call.token)
        };
        receive_answer(slf.as_any(), message, token, || Self::waits(slf))
    }

    /// The next message, or None (`receive_later` waits for the token and asks again).
    fn poll_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.next_message(py)
    }

    /// The app's `send(message)`: done at once, or (over the bytes-in-flight bound) the loop's
    /// `room_later(call)`, which waits until `has_room()`. Raises `ClientDisconnected` once the
    /// client is gone, and the message's error for a wrong one.
    fn send<'py>(
        slf: &Bound<'py, Self>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ready = slf.borrow_mut().send_now(message)?;
        send_answer(slf.as_any(), ready, || Self::waits(slf))
    }

    /// True when a send may go on (or the client is gone, which the next send raises).
    fn has_room(&self) -> bool {
        room_in(self.response.as_ref())
    }

    /// True once the connection has ended the exchange.
    #[getter(closed)]
    fn is_closed(&self) -> bool {
        self.closed()
    }

    /// The app's coroutine ended (with `error`, the formatted exception, if it raised): the
    /// response is completed as well as it can be, and the exchange let go.
    #[pyo3(signature = (error=None))]
    fn finish(&mut self, error: Option<&str>) {
        let closed = self.closed();
        if error.is_some() {
            log_raised(error, closed, &self.label());
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        if let Some(response) = self.response.take() {
            // The request's label, for the log lines below: made only when one is written
            // (not for every request that completed its response).
            let label = || self.label();
            match phase {
                Phase::Done => {}
                _ if closed => {}
                Phase::Idle | Phase::Started(_) => {
                    if error.is_none() {
                        log::error!("ASGI app returned without sending a response ({})", label());
                    }
                    let why = if error.is_some() {
                        "the application raised an exception"
                    } else {
                        "the application sent no response"
                    };
                    let (head, body) = server_response(500, why);
                    let _ = response.send_head(head, body, true);
                }
                Phase::Streaming => {
                    if error.is_none() {
                        log::error!(
                            "ASGI app returned without completing its response ({})",
                            label()
                        );
                    }
                    response.abort();
                }
                // The body is whole but its trailers (a checksum, a status) are not: cut on an
                // exception, ended with what was sent otherwise.
                Phase::Trailers(_) if error.is_some() => response.abort(),
                Phase::Trailers(gathered) => {
                    log::error!("ASGI app returned without its last trailers ({})", label());
                    let ended = end_with(&response, &self.request, gathered);
                    if ended.is_err() {
                        log::debug!("{}: the client left before the trailers", label());
                    }
                }
            }
        }
        self.body = None;
    }
}

/// Ends `response` with `trailers`: sent when the client said it takes them (`TE: trailers`,
/// as asgiref asks) and there are any; else the body just ends.
fn end_with(
    response: &ResponseSink,
    request: &Request,
    trailers: Trailers,
) -> Result<Flow, ferrocorn::app::Disconnected> {
    if trailers.fields.is_empty() || !request.head.takes_trailers() {
        return response.finish().map(|()| Flow::Ready);
    }
    response.post_trailers(trailers)
}

/// True when the app may send on (or the client is gone, which its next send raises).
fn room_in(response: Option<&ResponseSink>) -> bool {
    response.is_none_or(|r| r.has_room() || r.is_closed())
}

/// Logs what the app's coroutine raised (`error`, formatted): with its traceback as an error,
/// or at debug level once the connection had `closed` its side already.
fn log_raised(error: Option<&str>, closed: bool, label: &str) {
    match error {
        Some(tb) if closed => log::debug!("ASGI app raised after {label} ended: {tb}"),
        Some(tb) => log::error!("Exception in ASGI application ({label})\n{tb}"),
        None => {}
    }
}

/// Whether `app` is served as ASGI: `--interface`, `-k asgi`, or (auto) what
/// `ferrocorn._loader.is_asgi` sees in it.
pub(crate) fn interface_of(
    py: Python<'_>,
    settings: &ferrocorn::config::Settings,
    app: &Bound<'_, PyAny>,
) -> Result<bool, String> {
    use ferrocorn::config::asgi::Interface;
    match settings.interface()? {
        Interface::Asgi => Ok(true),
        Interface::Wsgi => Ok(false),
        Interface::Auto => py
            .import("ferrocorn._loader")
            .and_then(|m| m.call_method1("is_asgi", (app,)))
            .and_then(|r| r.extract::<bool>())
            .map_err(|e| format!("cannot tell the app's interface: {e}")),
    }
}

/// Why the event loop did not start.
pub(crate) enum StartFailure {
    /// The app's lifespan startup failed (or raised with `--lifespan on`).
    App(String),
    /// The loop itself could not start (`--loop uvloop` without uvloop, ...).
    Boot(String),
}

/// The loop's side (`ferrocorn._asgi.LoopWorker`) of a call that must wait for its token.
fn on_loop(waits: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
    waits.ok_or_else(|| PyRuntimeError::new_err("this ASGI call is not on an event loop"))
}

/// The coroutine of the loop's side `waits` named `method` (`room_later`), which waits for
/// `call`'s token.
fn wait_on_loop<'py>(
    waits: Option<Py<PyAny>>,
    call: &Bound<'py, PyAny>,
    method: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    on_loop(waits)?
        .bind(call.py())
        .call_method1(method, (call,))
}

/// What an HTTP or WebSocket call's `receive()` answers: `message` as an awaitable already
/// done, or (none yet) a [`Receiving`] that waits on the loop's side for the call's `token`;
/// `waits` is only asked for then.
pub(crate) fn receive_answer<'py>(
    call: &Bound<'py, PyAny>,
    message: Option<Bound<'py, PyDict>>,
    token: u64,
    waits: impl FnOnce() -> Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    match message {
        Some(message) => Done::with(message.into_any()),
        None => Receiving::awaitable(call, token, on_loop(waits())?),
    }
}

/// What an HTTP or WebSocket call's `send()` answers: done (`ready`), or the loop's
/// `room_later(call)`, which waits until `has_room()`.
pub(crate) fn send_answer<'py>(
    call: &Bound<'py, PyAny>,
    ready: bool,
    waits: impl FnOnce() -> Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if ready {
        Done::ready(call.py())
    } else {
        wait_on_loop(waits(), call, intern!(call.py(), "room_later"))
    }
}

/// Starts the worker's event loop thread (`ferrocorn._asgi.LoopWorker`) and runs the
/// lifespan's startup; returns the app for the core and the loop's handle.
pub(crate) fn start_loop(
    py: Python<'_>,
    app: Py<PyAny>,
    settings: &ferrocorn::config::Settings,
) -> Result<(std::sync::Arc<dyn ferrocorn::app::App>, Py<PyAny>), StartFailure> {
    let boot = |e: String| StartFailure::Boot(e);
    let scope =
        scope::ScopeShared::new(py, settings.root_path.clone()).map_err(|e| boot(e.to_string()))?;
    let shared = runtime::LoopShared::new(scope)
        .map_err(|e| boot(format!("cannot make the event loop's eventfd: {e}")))?;
    let rt = Py::new(py, runtime::Runtime(std::sync::Arc::clone(&shared)))
        .map_err(|e| boot(e.to_string()))?;
    // A loop blocked this long stops the heartbeat (see `Jobs::alive`): it ticks four times
    // as often.
    let tick = (settings.timeout as f64 / 4.0).clamp(0.05, 1.0);
    let worker = py
        .import("ferrocorn._asgi")
        .and_then(|m| m.getattr("LoopWorker"))
        .and_then(|cls| {
            cls.call1((
                app,
                rt,
                settings.asgi.event_loop.name(),
                settings.asgi.lifespan.name(),
                tick,
            ))
        })
        .map_err(|e| boot(format!("cannot start the event loop: {e}")))?;
    log::info!(
        "Serving an ASGI app on one event loop per worker (--loop {}, --lifespan {})",
        settings.asgi.event_loop.name(),
        settings.asgi.lifespan.name()
    );
    let failed = worker
        .call_method0("start")
        .map_err(|e| boot(format!("cannot start the event loop: {}", e.value(py))))?;
    if let Ok(message) = failed.extract::<String>() {
        return Err(StartFailure::App(message));
    }
    Ok((
        std::sync::Arc::new(runtime::AsgiApp(shared)),
        worker.unbind(),
    ))
}

/// The worker stopped accepting and its connections are done: the lifespan's shutdown runs
/// (within `--graceful-timeout`), then the loop stops.
pub(crate) fn stop_loop(
    py: Python<'_>,
    worker: &Py<PyAny>,
    settings: &ferrocorn::config::Settings,
) {
    let graceful = settings.graceful_timeout.max(1) as f64;
    if let Err(e) = worker.bind(py).call_method1("stop", (graceful,)) {
        log::error!("stopping the event loop: {e}");
    }
}
