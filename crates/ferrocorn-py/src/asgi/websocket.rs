//! ASGI's websocket scope (asgiref's HTTP and WebSocket spec 2.4): one WebSocket on the event
//! loop, driven by `ferrocorn._asgi` exactly as an HTTP request's `AsgiCall` is (`receive()`
//! and `send()` answer at once or say "wait for my token"). The core speaks the protocol
//! (`ferrocorn::ws_link`, the exchange's WebSocket relay); this side turns its messages into
//! events and checks the app's:
//!
//! - `websocket.connect` first; then the client's messages as `websocket.receive`, and its
//!   close (or its going away, or the server's stop) as `websocket.disconnect`;
//! - `websocket.accept` (subprotocol, headers) → the `101`; `websocket.send` (text or bytes)
//!   and `websocket.close` (code, reason) after it; a close before the accept is a 403;
//! - the denial extension `websocket.http.response.start`/`.body` before the accept: any
//!   status, headers and body;
//! - a message of the wrong type, order or field type raises into the app's `send()`.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use ferrocorn::app::{Exchange, Request, ResponseSink, WsOut};
use ferrocorn::http1::response::{server_response, ResponseHead};
use ferrocorn::remote::Flow;
use ferrocorn::websocket::{close, Received};
use ferrocorn::ws_link::{Inbox, Offer};

use super::messages::{self, MessageError};
use super::ClientDisconnected;

/// The connection went without a close frame (what the app hears when it just went).
const ABNORMAL: u16 = 1006;

/// What the app sent, checked.
enum Outgoing {
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(String, Bytes)>,
    },
    Send(WsOut),
    Close {
        code: u16,
        reason: String,
    },
    DenyStart(Box<ResponseHead>),
    DenyBody {
        body: Bytes,
        more: bool,
    },
}

impl Outgoing {
    fn name(&self) -> &'static str {
        match self {
            Self::Accept { .. } => "websocket.accept",
            Self::Send(_) => "websocket.send",
            Self::Close { .. } => "websocket.close",
            Self::DenyStart(_) => "websocket.http.response.start",
            Self::DenyBody { .. } => "websocket.http.response.body",
        }
    }
}

/// A bad message from the app, raised into its `send()`.
#[derive(Debug, thiserror::Error)]
enum WsMessageError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("unexpected ASGI message type {0:?} for a WebSocket")]
    UnknownType(String),
    #[error("ASGI message field {field:?} must be {expected}")]
    Field {
        field: &'static str,
        expected: &'static str,
    },
    #[error("websocket.send needs exactly one of 'bytes' and 'text'")]
    NotOneOf,
    #[error("close code {0} may not be sent (RFC 6455 §7.4: 1000-1003, 1007-1014, 3000-4999)")]
    CloseCode(i64),
}

impl From<WsMessageError> for PyErr {
    fn from(e: WsMessageError) -> Self {
        match e {
            WsMessageError::Message(m) => m.into(),
            WsMessageError::Field { .. } => PyTypeError::new_err(e.to_string()),
            WsMessageError::NotOneOf | WsMessageError::CloseCode(_) => {
                PyValueError::new_err(e.to_string())
            }
            WsMessageError::UnknownType(_) => PyRuntimeError::new_err(e.to_string()),
        }
    }
}

/// A message's field, looked up by its interned key (a `&str` key would make and hash a new
/// Python str for every message): `None` when absent or None.
fn field<'py>(dict: &Bound<'py, PyDict>, key: &Bound<'py, PyString>) -> Option<Bound<'py, PyAny>> {
    dict.get_item(key).ok().flatten().filter(|v| !v.is_none())
}

/// A str field's text: its UTF-8 copied as it is (a str with lone surrogates, which has no
/// UTF-8, gets them replaced).
fn optional_str<'py>(
    dict: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    name: &'static str,
) -> Result<Option<String>, WsMessageError> {
    field(dict, key)
        .map(|v| {
            v.cast_into::<PyString>()
                .map(|s| match s.to_str() {
                    Ok(text) => text.to_owned(),
                    Err(_) => s.to_string_lossy().into_owned(),
                })
                .map_err(|_| WsMessageError::Field {
                    field: name,
                    expected: "a str or None",
                })
        })
        .transpose()
}

fn optional_bytes<'py>(
    dict: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    name: &'static str,
) -> Result<Option<Bytes>, WsMessageError> {
    field(dict, key)
        .map(|v| {
            v.cast_into::<PyBytes>()
                .map(|b| crate::wsgi::body_bytes(&b))
                .map_err(|_| WsMessageError::Field {
                    field: name,
                    expected: "bytes or None",
                })
        })
        .transpose()
}

/// Fields the server writes in the `101` itself: an app's own are dropped.
fn server_field(name: &str) -> bool {
    [
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    ]
    .iter()
    .any(|f| name.eq_ignore_ascii_case(f))
}

fn parse(message: &Bound<'_, PyAny>) -> Result<Outgoing, WsMessageError> {
    let py = message.py();
    let (dict, kind) = messages::typed(message)?;
    let kind = kind.to_str().map_err(|_| MessageError::NoType)?;
    match kind {
        "websocket.accept" => {
            let subprotocol = optional_str(dict, intern!(py, "subprotocol"), "subprotocol")?;
            // Checked as a response head's fields are (no CR/LF, valid names).
            let mut check = ResponseHead::plain(101, "Switching Protocols");
            let mut headers = Vec::new();
            messages::for_each_header(dict, |name, value| {
                check
                    .add(name, value)
                    .map_err(|e| MessageError::Header(e.to_string()))?;
                if server_field(name) {
                    log::debug!(
                        "ASGI app's {name} header dropped from the 101: the server sets it"
                    );
                } else {
                    headers.push((name.to_owned(), Bytes::copy_from_slice(value)));
                }
                Ok(())
            })?;
            Ok(Outgoing::Accept {
                subprotocol,
                headers,
            })
        }
        "websocket.send" => {
            let text = optional_str(dict, intern!(py, "text"), "text")?;
            let bytes = optional_bytes(dict, intern!(py, "bytes"), "bytes")?;
            match (text, bytes) {
                (Some(t), None) => Ok(Outgoing::Send(WsOut::Text(t))),
                (None, Some(b)) => Ok(Outgoing::Send(WsOut::Binary(b))),
                _ => Err(WsMessageError::NotOneOf),
            }
        }
        "websocket.close" => {
            let code = match field(dict, intern!(py, "code")) {
                None => i64::from(close::NORMAL),
                Some(c) if c.is_instance_of::<pyo3::types::PyBool>() => {
                    return Err(WsMessageError::Field {
                        field: "code",
                        expected: "an int",
                    })
                }
                Some(c) => c.extract::<i64>().map_err(|_| WsMessageError::Field {
                    field: "code",
                    expected: "an int",
                })?,
            };
            let code = u16::try_from(code)
                .ok()
                .filter(|c| close::may_send(*c))
                .ok_or(WsMessageError::CloseCode(code))?;
            let reason = optional_str(dict, intern!(py, "reason"), "reason")?.unwrap_or_default();
            Ok(Outgoing::Close { code, reason })
        }
        "websocket.http.response.start" => {
            Ok(Outgoing::DenyStart(Box::new(messages::start(dict)?)))
        }
        "websocket.http.response.body" => Ok(Outgoing::DenyBody {
            body: optional_bytes(dict, intern!(py, "body"), "body")?.unwrap_or_default(),
            more: messages::flag(dict, "more_body")?,
        }),
        other => Err(WsMessageError::UnknownType(other.to_owned())),
    }
}

/// Where the WebSocket stands, as the app has driven it.
enum Phase {
    /// Waiting for the app's accept (or denial).
    Connecting,
    /// `websocket.http.response.start` received; the head waits for the first body bytes.
    DenyStarted(Box<ResponseHead>),
    /// The denial's head went out, more body to come.
    Denying,
    /// Accepted: messages both ways.
    Open,
    /// The app sent `websocket.close`; the disconnect is still to come.
    Closing,
    /// Denied, or the app's call is over.
    Done,
}

/// One WebSocket on the event loop (see the module's documentation).
#[pyclass(module = "ferrocorn._ferrocorn", name = "AsgiWebSocket")]
pub(crate) struct WsCall {
    /// The request, until `scope()` has made the app's scope of it: not kept for the session
    /// (its fields would be held by every open WebSocket).
    request: Option<Box<Request>>,
    /// The request target, for log lines.
    target: Box<str>,
    subprotocols: Vec<String>,
    inbox: Arc<Inbox>,
    response: Option<ResponseSink>,
    token: u64,
    phase: Phase,
    connect_given: bool,
    /// The disconnect the app was given: later `receive()`s get it again.
    ended: Option<(u16, String)>,
    /// The loop's side, whose coroutines wait for this call's token.
    waits: Option<Py<PyAny>>,
}

impl WsCall {
    /// The WebSocket of `exchange`, whose request carried `offer` (`Request::websocket`).
    pub(crate) fn new(exchange: Exchange, offer: Offer) -> Self {
        let Exchange {
            request, response, ..
        } = exchange;
        Self {
            token: response.token().unwrap_or_default(),
            target: Box::from(&*request.head.target),
            request: Some(Box::new(request)),
            subprotocols: offer.subprotocols,
            inbox: offer.inbox,
            response: Some(response),
            phase: Phase::Connecting,
            connect_given: false,
            ended: None,
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

    fn closed(&self) -> bool {
        self.response.as_ref().is_none_or(ResponseSink::is_closed)
    }

    fn label(&self) -> String {
        format!("WebSocket {}", self.target)
    }

    fn event<'py>(py: Python<'py>, kind: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyDict>> {
        let msg = PyDict::new(py);
        msg.set_item(intern!(py, "type"), kind)?;
        Ok(msg)
    }

    fn disconnect<'py>(
        &mut self,
        py: Python<'py>,
        code: u16,
        reason: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        let msg = Self::event(py, intern!(py, "websocket.disconnect"))?;
        msg.set_item(intern!(py, "code"), code)?;
        msg.set_item(intern!(py, "reason"), reason.as_str())?;
        self.ended = Some((code, reason));
        Ok(msg)
    }

    fn post(&mut self, msg: Outgoing) -> PyResult<Flow> {
        let Some(response) = self.response.as_ref() else {
            return Err(ClientDisconnected::new_err("the WebSocket is over"));
        };
        let gone = |_| ClientDisconnected::new_err("the client disconnected");
        let name = msg.name();
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let (phase, flow) = match (phase, msg) {
            (
                Phase::Connecting,
                Outgoing::Accept {
                    subprotocol,
                    headers,
                },
            ) => {
                if let Some(p) = &subprotocol {
                    if !self.subprotocols.contains(p) {
                        self.phase = Phase::Connecting;
                        return Err(PyValueError::new_err(format!(
                            "websocket.accept: subprotocol '{p}' was not offered by the client \
                             (offered: {})",
                            self.subprotocols.join(", ")
                        )));
                    }
                }
                let accept = WsOut::Accept {
                    subprotocol,
                    headers,
                };
                (Phase::Open, response.post_ws(accept).map_err(gone)?)
            }
            (Phase::Connecting, Outgoing::Close { .. }) => {
                // asgiref: a close before the accept is an HTTP 403.
                let (head, body) = server_response(403, "the application closed the WebSocket");
                response.post_head(head, body, true).map_err(gone)?;
                (Phase::Done, Flow::Ready)
            }
            (Phase::Connecting, Outgoing::DenyStart(head)) => {
                (Phase::DenyStarted(head), Flow::Ready)
            }
            (Phase::DenyStarted(head), Outgoing::DenyBody { body, more }) => {
                let flow = response.post_head(*head, body, !more).map_err(gone)?;
                (if more { Phase::Denying } else { Phase::Done }, flow)
            }
            (Phase::Denying, Outgoing::DenyBody { body, more }) => {
                let mut flow = Flow::Ready;
                if !body.is_empty() {
                    flow = response.post_data(body).map_err(gone)?;
                }
                if !more {
                    response.finish().map_err(gone)?;
                }
                (if more { Phase::Denying } else { Phase::Done }, flow)
            }
            (Phase::Open, Outgoing::Send(out)) => {
                (Phase::Open, response.post_ws(out).map_err(gone)?)
            }
            (Phase::Open, Outgoing::Close { code, reason }) => (
                Phase::Closing,
                response
                    .post_ws(WsOut::Close { code, reason })
                    .map_err(gone)?,
            ),
            (phase, _) => {
                let expected = match &phase {
                    Phase::Connecting => {
                        "'websocket.accept', 'websocket.close' or 'websocket.http.response.start'"
                    }
                    Phase::DenyStarted(_) | Phase::Denying => "'websocket.http.response.body'",
                    Phase::Open => "'websocket.send' or 'websocket.close'",
                    Phase::Closing => "nothing after 'websocket.close'",
                    Phase::Done => "nothing: the WebSocket is over",
                };
                self.phase = phase;
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{name}': expected {expected}"
                )));
            }
        };
        self.phase = phase;
        Ok(flow)
    }
}

impl WsCall {
    /// The next event for the app, or None: wait for this call's token.
    fn next_event<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        if !self.connect_given {
            self.connect_given = true;
            return Self::event(py, intern!(py, "websocket.connect")).map(Some);
        }
        if let Some((code, reason)) = self.ended.clone() {
            return self.disconnect(py, code, reason).map(Some);
        }
        match self.inbox.take() {
            Some(Received::Text(text)) => {
                let msg = Self::event(py, intern!(py, "websocket.receive"))?;
                msg.set_item(intern!(py, "text"), text)?;
                Ok(Some(msg))
            }
            Some(Received::Binary(data)) => {
                let msg = Self::event(py, intern!(py, "websocket.receive"))?;
                msg.set_item(intern!(py, "bytes"), PyBytes::new(py, &data))?;
                Ok(Some(msg))
            }
            Some(Received::Closed { code, reason }) => self.disconnect(py, code, reason).map(Some),
            None if self.closed() => self.disconnect(py, ABNORMAL, String::new()).map(Some),
            None => Ok(None),
        }
    }

    /// Sends one of the app's messages. True: go on; False: wait for this call's token until
    /// `has_room()`. Raises `ClientDisconnected` once the client is gone.
    fn send_now(&mut self, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        let msg = parse(message)?;
        if self.closed() {
            return Err(ClientDisconnected::new_err("the client disconnected"));
        }
        Ok(self.post(msg)? == Flow::Ready)
    }
}

#[pymethods]
impl WsCall {
    #[getter]
    fn token(&self) -> u64 {
        self.token
    }

    /// The websocket scope: the HTTP scope's keys less `method`, with `scheme` ws or wss,
    /// the client's `subprotocols`, and the denial extension. Made once: the request goes with it.
    #[pyo3(signature = (shared, state=None))]
    fn scope<'py>(
        &mut self,
        py: Python<'py>,
        shared: PyRef<'py, super::runtime::Runtime>,
        state: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let Some(request) = self.request.take() else {
            return Err(PyRuntimeError::new_err(
                "the websocket scope was made already",
            ));
        };
        let scope = super::scope::build(py, &shared.0.scope, &request, state.as_ref())?;
        scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
        scope.del_item(intern!(py, "method"))?;
        let scheme = scope
            .get_item(intern!(py, "scheme"))?
            .map(|s| s.extract::<String>())
            .transpose()?;
        let scheme = match scheme.as_deref() {
            Some("https" | "wss") => "wss",
            _ => "ws",
        };
        scope.set_item(intern!(py, "scheme"), scheme)?;
        scope.set_item(
            intern!(py, "subprotocols"),
            PyList::new(py, &self.subprotocols)?,
        )?;
        let extensions = PyDict::new(py);
        extensions.set_item(intern!(py, "websocket.http.response"), PyDict::new(py))?;
        if let Some(ext) = scope.get_item(intern!(py, "extensions"))? {
            if let Some(tls) = ext.cast::<PyDict>()?.get_item(intern!(py, "tls"))? {
                extensions.set_item(intern!(py, "tls"), tls)?;
            }
        }
        scope.set_item(intern!(py, "extensions"), extensions)?;
        Ok(scope)
    }

    /// The app's `receive()`: the next event, at once or (waiting for the token) from the
    /// loop's `receive_later(call)`.
    fn receive<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let (event, token) = {
            let mut call = slf.borrow_mut();
            (call.next_event(slf.py())?, call.token)
        };
        super::receive_answer(slf.as_any(), event, token, || Self::waits(slf))
    }

    /// The next event, or None (`receive_later` waits for the token and asks again).
    fn poll_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.next_event(py)
    }

    /// The app's `send(message)`: done at once, or (over the bytes-in-flight bound) the loop's
    /// `room_later(call)`. Raises `ClientDisconnected` once the client is gone.
    fn send<'py>(
        slf: &Bound<'py, Self>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ready = slf.borrow_mut().send_now(message)?;
        super::send_answer(slf.as_any(), ready, || Self::waits(slf))
    }

    /// True when a send may go on (or the client is gone, which the next send raises).
    fn has_room(&self) -> bool {
        super::room_in(self.response.as_ref())
    }

    /// True once the connection has ended.
    #[getter(closed)]
    fn is_closed(&self) -> bool {
        self.closed()
    }

    /// The app's coroutine ended (with `error`, the formatted exception, if it raised): an
    /// unanswered handshake gets a 500, an open WebSocket a close (1011 after an exception,
    /// else the server's 1000), a denial cut short is cut off.
    #[pyo3(signature = (error=None))]
    fn finish(&mut self, error: Option<&str>) {
        let closed = self.closed();
        let label = self.label();
        super::log_raised(error, closed, &label);
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let Some(response) = self.response.take() else {
            return;
        };
        if closed {
            return;
        }
        match phase {
            Phase::Connecting | Phase::DenyStarted(_) => {
                if error.is_none() {
                    log::error!("ASGI app returned without accepting or denying the {label}");
                }
                let (head, body) = server_response(
                    500,
                    "the application did not answer the WebSocket handshake",
                );
                let _ = response.send_head(head, body, true);
            }
            Phase::Denying => {
                if error.is_none() {
                    log::error!("ASGI app returned without completing its denial ({label})");
                }
                response.abort();
            }
            Phase::Open if error.is_some() => {
                let _ = response.post_ws(WsOut::Close {
                    code: close::INTERNAL_ERROR,
                    reason: String::new(),
                });
            }
            // The connection closes with 1000 once the app's side is let go.
            Phase::Open | Phase::Closing | Phase::Done => {}
        }
    }
}
