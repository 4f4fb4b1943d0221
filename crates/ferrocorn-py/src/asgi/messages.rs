//! The messages an ASGI app sends for an HTTP request, checked and turned into typed values:
//! a wrong type or field is a [`MessageError`] raised into the app's `await send(...)`.

use std::path::PathBuf;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use ferrocorn::http1::response::{reason, ResponseHead};

/// What `send()` was given, checked.
pub(crate) enum Outgoing {
    Start(Box<ResponseHead>),
    Body {
        body: Bytes,
        more: bool,
    },
    PathSend(PathBuf),
    /// `http.response.trailers`: not advertised, so ignored (asgiref: a server without the
    /// extension ignores them).
    Trailers,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MessageError {
    #[error("ASGI messages must be dicts, not {0}")]
    NotADict(String),
    #[error("ASGI message has no 'type' str")]
    NoType,
    #[error("unexpected ASGI message type {0:?} for an HTTP request")]
    UnknownType(String),
    #[error("ASGI message field {field:?} must be {expected}")]
    Field {
        field: &'static str,
        expected: &'static str,
    },
    #[error("ASGI response status must be an int from 100 to 599, not {0}")]
    Status(String),
    #[error("invalid response header: {0}")]
    Header(String),
}

impl From<MessageError> for PyErr {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::NotADict(_) | MessageError::Field { .. } => {
                PyTypeError::new_err(e.to_string())
            }
            MessageError::Status(_) | MessageError::Header(_) => {
                PyValueError::new_err(e.to_string())
            }
            MessageError::NoType | MessageError::UnknownType(_) => {
                PyRuntimeError::new_err(e.to_string())
            }
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// A message's dict and its `type`.
pub(crate) fn typed<'a, 'py>(
    message: &'a Bound<'py, PyAny>,
) -> Result<(&'a Bound<'py, PyDict>, Bound<'py, PyString>), MessageError> {
    let dict = message
        .cast::<PyDict>()
        .map_err(|_| MessageError::NotADict(type_name(message)))?;
    let kind = dict
        .get_item(intern!(dict.py(), "type"))
        .ok()
        .flatten()
        .and_then(|t| t.cast_into::<PyString>().ok())
        .ok_or(MessageError::NoType)?;
    Ok((dict, kind))
}

/// Reads one message.
pub(crate) fn parse(message: &Bound<'_, PyAny>) -> Result<Outgoing, MessageError> {
    let (dict, kind) = typed(message)?;
    let kind = kind.to_str().map_err(|_| MessageError::NoType)?;
    match kind {
        "http.response.start" => start(dict).map(|h| Outgoing::Start(Box::new(h))),
        "http.response.body" => {
            let body = match dict.get_item(intern!(dict.py(), "body")).ok().flatten() {
                None => Bytes::new(),
                Some(b) => {
                    let b = b.cast_into::<PyBytes>().map_err(|_| MessageError::Field {
                        field: "body",
                        expected: "bytes",
                    })?;
                    crate::wsgi::body_bytes(&b)
                }
            };
            let more = more_body(dict)?;
            Ok(Outgoing::Body { body, more })
        }
        "http.response.pathsend" => {
            let path = dict
                .get_item(intern!(dict.py(), "path"))
                .ok()
                .flatten()
                .and_then(|p| p.extract::<PathBuf>().ok())
                .ok_or(MessageError::Field {
                    field: "path",
                    expected: "a str (an absolute path)",
                })?;
            Ok(Outgoing::PathSend(path))
        }
        "http.response.trailers" => Ok(Outgoing::Trailers),
        other => Err(MessageError::UnknownType(other.to_owned())),
    }
}

/// An optional bool field (False when absent).
pub(crate) fn flag(dict: &Bound<'_, PyDict>, field: &'static str) -> Result<bool, MessageError> {
    bool_field(dict.get_item(field).ok().flatten(), field)
}

/// The optional bool `more_body` (False when absent), looked up by its interned name.
fn more_body(dict: &Bound<'_, PyDict>) -> Result<bool, MessageError> {
    let value = dict
        .get_item(intern!(dict.py(), "more_body"))
        .ok()
        .flatten();
    bool_field(value, "more_body")
}

fn bool_field(value: Option<Bound<'_, PyAny>>, field: &'static str) -> Result<bool, MessageError> {
    match value {
        None => Ok(false),
        Some(v) => v.extract::<bool>().map_err(|_| MessageError::Field {
            field,
            expected: "a bool",
        }),
    }
}

/// Hop-by-hop fields belong to the server (the framing is its own): dropped from ASGI heads.
fn hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "transfer-encoding", "upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// `"200 OK"` for 200: the three digits of a code from 100 to 599 and its reason, written
/// without the formatting machinery (one per response).
fn status_line(code: u16) -> String {
    let reason = reason(code);
    let mut line = String::with_capacity(4 + reason.len());
    for digit in [code / 100, code / 10 % 10, code % 10] {
        line.push(char::from(b'0' + (digit % 10) as u8));
    }
    line.push(' ');
    line.push_str(reason);
    line
}

/// The status and headers of `http.response.start` (and of the WebSocket denial's
/// `websocket.http.response.start`).
pub(crate) fn start(dict: &Bound<'_, PyDict>) -> Result<ResponseHead, MessageError> {
    let status = dict
        .get_item(intern!(dict.py(), "status"))
        .ok()
        .flatten()
        .ok_or_else(|| MessageError::Status("nothing".into()))?;
    let code = status
        .extract::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c) && !status.is_instance_of::<pyo3::types::PyBool>())
        .ok_or_else(|| {
            MessageError::Status(status.repr().map_or_else(|_| "?".into(), |r| r.to_string()))
        })?;
    let mut head =
        ResponseHead::start(&status_line(code)).map_err(|e| MessageError::Header(e.to_string()))?;
    for_each_header(dict, |name, value| {
        if hop_by_hop(name) {
            log::debug!("ASGI app's {name} header dropped: the server frames responses");
            return Ok(());
        }
        head.add(name, value)
            .map_err(|e| MessageError::Header(e.to_string()))
    })?;
    Ok(head)
}

/// Calls `each` with every pair of the message's optional `headers` (an iterable of
/// `[name, value]` byte strings, the name ASCII).
pub(crate) fn for_each_header(
    dict: &Bound<'_, PyDict>,
    mut each: impl FnMut(&str, &[u8]) -> Result<(), MessageError>,
) -> Result<(), MessageError> {
    let Some(headers) = dict.get_item(intern!(dict.py(), "headers")).ok().flatten() else {
        return Ok(());
    };
    let bad = || MessageError::Field {
        field: "headers",
        expected: "an iterable of [name, value] byte-string pairs",
    };
    for pair in headers.try_iter().map_err(|_| bad())? {
        let pair = pair.map_err(|_| bad())?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            pair.extract().map_err(|_| bad())?;
        let name = name.cast_into::<PyBytes>().map_err(|_| bad())?;
        let value = value.cast_into::<PyBytes>().map_err(|_| bad())?;
        let name = std::str::from_utf8(name.as_bytes())
            .map_err(|_| MessageError::Header("a header name is not ASCII".into()))?;
        each(name, value.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::status_line;
    use ferrocorn::http1::response::reason;

    #[test]
    fn status_lines_read_as_formatted() {
        for code in [100, 200, 204, 301, 404, 418, 500, 599] {
            assert_eq!(status_line(code), format!("{code} {}", reason(code)));
        }
    }
}
