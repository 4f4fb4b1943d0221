//! The messages an ASGI app sends for an HTTP request, checked and turned into typed values:
//! a wrong type or field is a [`MessageError`] raised into the app's `await send(...)`.

use std::fs::File;
use std::path::PathBuf;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use ferrocorn::http1::response::{reason, EarlyHints, ResponseHead, Trailers};

/// What `send()` was given, checked.
pub(crate) enum Outgoing {
    /// `http.response.start`; `trailers`: `http.response.trailers` will follow the body.
    Start {
        head: Box<ResponseHead>,
        trailers: bool,
    },
    Body {
        body: Bytes,
        more: bool,
    },
    PathSend(PathBuf),
    /// `http.response.zerocopysend`: `len` bytes of `file` (the app's descriptor, duplicated)
    /// from `offset`.
    ZeroCopy {
        file: File,
        offset: u64,
        len: u64,
        more: bool,
    },
    /// `http.response.early_hint`: the `Link` fields of a 103.
    EarlyHint(EarlyHints),
    /// `http.response.trailers`: fields, and whether more trailer messages follow.
    Trailers {
        fields: Trailers,
        more: bool,
    },
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
    #[error("http.response.zerocopysend: {0}")]
    File(String),
}

impl From<MessageError> for PyErr {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::NotADict(_) | MessageError::Field { .. } => {
                PyTypeError::new_err(e.to_string())
            }
            MessageError::Status(_) | MessageError::Header(_) | MessageError::File(_) => {
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
        "http.response.start" => Ok(Outgoing::Start {
            head: Box::new(start(dict)?),
            trailers: bool_field(
                dict.get_item(intern!(dict.py(), "trailers")).ok().flatten(),
                "trailers",
            )?,
        }),
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
        "http.response.zerocopysend" => zero_copy(dict),
        "http.response.early_hint" => early_hint(dict).map(Outgoing::EarlyHint),
        "http.response.trailers" => {
            let mut fields = Trailers::default();
            for_each_header(dict, |name, value| {
                fields
                    .add(name, value)
                    .map_err(|e| MessageError::Header(e.to_string()))
            })?;
            Ok(Outgoing::Trailers {
                fields,
                more: flag(dict, "more_trailers")?,
            })
        }
        other => Err(MessageError::UnknownType(other.to_owned())),
    }
}

/// `http.response.early_hint`'s `links`, an iterable of byte strings, as `Link` fields.
fn early_hint(dict: &Bound<'_, PyDict>) -> Result<EarlyHints, MessageError> {
    let bad = || MessageError::Field {
        field: "links",
        expected: "an iterable of byte strings",
    };
    let links = dict.get_item("links").ok().flatten().ok_or_else(bad)?;
    let mut hints = EarlyHints::default();
    for link in links.try_iter().map_err(|_| bad())? {
        let link = link.map_err(|_| bad())?;
        let link = link.cast_into::<PyBytes>().map_err(|_| bad())?;
        hints
            .add("Link", link.as_bytes())
            .map_err(|e| MessageError::Header(e.to_string()))?;
    }
    Ok(hints)
}

/// `http.response.zerocopysend`: the file's descriptor is duplicated here (the app may close
/// its file once `send()` returns, as asgiref says it should), and the part to send settled:
/// from `offset` (else the file's current position) for `count` bytes (else to its end), no
/// further than its end.
fn zero_copy(dict: &Bound<'_, PyDict>) -> Result<Outgoing, MessageError> {
    let py = dict.py();
    let bad_file = || MessageError::Field {
        field: "file",
        expected: "a file object with fileno()",
    };
    let obj = dict.get_item("file").ok().flatten().ok_or_else(bad_file)?;
    let fileno = obj.getattr(intern!(py, "fileno")).map_err(|_| bad_file())?;
    // A closed file's fileno() raises ValueError: its message says so.
    let fd = fileno
        .call0()
        .map_err(|e| MessageError::File(format!("fileno(): {}", e.value(py))))?
        .extract::<i32>()
        .map_err(|_| bad_file())?;
    let file =
        duplicate(fd).map_err(|e| MessageError::File(format!("file descriptor {fd}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| MessageError::File(e.to_string()))?;
    if !meta.is_file() {
        return Err(MessageError::File(
            "the file must be a regular file (sendfile's source)".into(),
        ));
    }
    let offset = match count_field(dict, "offset")? {
        Some(offset) => offset,
        None => position(&obj, &file)?,
    };
    let left = meta.len().saturating_sub(offset);
    let len = count_field(dict, "count")?.map_or(left, |count| count.min(left));
    Ok(Outgoing::ZeroCopy {
        file,
        offset,
        len,
        more: more_body(dict)?,
    })
}

/// A duplicate of the descriptor `fd`, the server's own to close.
fn duplicate(fd: i32) -> std::io::Result<File> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the descriptor is only duplicated (fcntl F_DUPFD_CLOEXEC), never closed or used
    // through the borrow; a number that is not open fails with EBADF. The app's file object,
    // which reported it, is alive (the message holds it) and the GIL is held.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().map(File::from)
}

/// Where the app's file stands: its `tell()` (a buffered reader's position, not its
/// descriptor's, which is ahead by what it has buffered), else the descriptor's.
fn position(obj: &Bound<'_, PyAny>, file: &File) -> Result<u64, MessageError> {
    if let Ok(at) = obj
        .call_method0(intern!(obj.py(), "tell"))
        .and_then(|t| t.extract::<u64>())
    {
        return Ok(at);
    }
    use std::io::Seek;
    let mut file = file;
    file.stream_position()
        .map_err(|e| MessageError::File(format!("the file's position: {e}")))
}

/// An optional count of bytes (`offset`, `count`): a non-negative int, or absent (or None).
fn count_field(dict: &Bound<'_, PyDict>, field: &'static str) -> Result<Option<u64>, MessageError> {
    match dict.get_item(field).ok().flatten() {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) if v.is_instance_of::<pyo3::types::PyBool>() => Err(MessageError::Field {
            field,
            expected: "an int",
        }),
        Some(v) => match v.extract::<i64>() {
            Ok(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| MessageError::File(format!("{field} must not be negative, not {n}"))),
            Err(_) => Err(MessageError::Field {
                field,
                expected: "an int",
            }),
        },
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
    let mut head = match ResponseHead::with_status(code) {
        Some(head) => head,
        // A 1xx: refused as the status line would be (with its text in the error).
        None => ResponseHead::start(&status_line(code))
            .map_err(|e| MessageError::Header(e.to_string()))?,
    };
    for_each_header(dict, |name, value| {
        if hop_by_hop(name) {
            log::debug!("ASGI app's {name} header dropped: the server frames responses");
            return Ok(());
        }
        let added = if name.eq_ignore_ascii_case("trailer") {
            head.add_trailer_names(value)
        } else {
            head.add(name, value)
        };
        added.map_err(|e| MessageError::Header(e.to_string()))
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
