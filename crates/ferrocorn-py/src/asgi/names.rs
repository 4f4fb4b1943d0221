//! One shared `bytes` object per common header name, for the scope's `headers`.
//!
//! A scope's header list is a `(name, value)` pair of new `bytes` per field; an open
//! WebSocket keeps its scope (and so those objects) for as long as it is open. The names are
//! mostly the same few lower-cased words on every request, and `bytes` cannot be changed,
//! so each of these is made once per worker and shared by every scope; a name not among
//! them, and every value, is made per request as before.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The shared names, lower-cased, the most frequent first (looked up in this order).
const COMMON: [&[u8]; 28] = [
    b"host",
    b"user-agent",
    b"accept",
    b"accept-encoding",
    b"accept-language",
    b"connection",
    b"content-type",
    b"content-length",
    b"cookie",
    b"origin",
    b"upgrade",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"referer",
    b"cache-control",
    b"pragma",
    b"authorization",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"x-request-id",
    b"if-none-match",
    b"if-modified-since",
    b"transfer-encoding",
    b"te",
];

/// A worker's shared header names (see the module's documentation).
pub(crate) struct HeaderNames(Vec<Py<PyBytes>>);

impl HeaderNames {
    pub(crate) fn new(py: Python<'_>) -> Self {
        Self(
            COMMON
                .iter()
                .map(|n| PyBytes::new(py, n).unbind())
                .collect(),
        )
    }

    /// `name` (lower-cased) as `bytes`: the shared object when it is a common one.
    pub(crate) fn get<'py>(&self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyBytes> {
        match COMMON.iter().position(|common| *common == name) {
            Some(i) => self.0[i].bind(py).clone(),
            None => PyBytes::new(py, name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::COMMON;

    #[test]
    fn the_shared_names_are_lower_case_and_each_listed_once() {
        for (i, name) in COMMON.iter().enumerate() {
            assert!(!name.iter().any(u8::is_ascii_uppercase), "{name:?}");
            assert!(!COMMON[..i].contains(name), "{name:?} twice");
        }
    }
}
