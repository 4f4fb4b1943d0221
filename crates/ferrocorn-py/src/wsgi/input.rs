//! `wsgi.input`: the request body as a file-like object, streamed from the connection as the
//! app reads it (at most what one read asks for buffered, never past the body's end).

use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use ferrocorn::app::BodyStream;
use ferrocorn::http1::error::BodyError;

/// How much is asked of the connection at once for line reads and iteration.
const CHUNK: usize = 64 * 1024;
/// The most asked at once for `read(n)` and `read()`.
const MAX_READ: usize = 1024 * 1024;

#[pyclass(module = "ferrocorn")]
pub struct InputStream {
    body: BodyStream,
    buf: BytesMut,
    eof: bool,
}

impl InputStream {
    pub(crate) fn new(body: BodyStream) -> Self {
        let eof = body.is_done();
        Self {
            body,
            buf: BytesMut::new(),
            eof,
        }
    }

    /// The body error the client caused, if reading failed because of it.
    pub(crate) fn client_error(&self) -> Option<BodyError> {
        self.body.error().filter(|e| e.is_client_error()).cloned()
    }

    /// Reads one more chunk into the buffer; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.fill_up_to(py, CHUNK)
    }

    /// Reads up to `want` more bytes (at least one chunk's worth may be asked) into the buffer.
    fn fill_up_to(&mut self, py: Python<'_>, want: usize) -> PyResult<bool> {
        let chunk = self.next_piece(py, want)?;
        if chunk.is_empty() {
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk);
        Ok(true)
    }

    /// The next piece of the body, at most `want` bytes (empty at its end): what the client
    /// sent with the head is at hand, the rest is asked of the connection.
    fn next_piece(&mut self, py: Python<'_>, want: usize) -> PyResult<Bytes> {
        if self.eof {
            return Ok(Bytes::new());
        }
        let want = want.clamp(1, MAX_READ);
        let body = &mut self.body;
        let piece = if body.has_pending() {
            body.read(want)
        } else {
            py.detach(|| body.read(want))
        };
        let piece = piece
            .map_err(|e| PyOSError::new_err(format!("error reading the request body: {e}")))?;
        if piece.is_empty() {
            self.eof = true;
        }
        Ok(piece)
    }

    /// `read(n)` or `read()` of a body whose next piece answers it whole: the piece is copied
    /// once, straight into the `bytes` object, instead of through the line buffer (a form post
    /// or a JSON body read in one call is one copy, not two). `None` when the buffer holds
    /// bytes already or the piece is short of `n` before the body's end; the piece is then in
    /// the buffer.
    fn read_direct<'py>(
        &mut self,
        py: Python<'py>,
        n: Option<usize>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if !self.buf.is_empty() || self.eof || n == Some(0) {
            return Ok(None);
        }
        let piece = self.next_piece(py, n.unwrap_or(MAX_READ))?;
        let whole = n.is_some_and(|n| piece.len() >= n) || self.body.is_done() || self.eof;
        if whole {
            if self.body.is_done() {
                self.eof = true;
            }
            return Ok(Some(PyBytes::new(py, &piece)));
        }
        self.buf.extend_from_slice(&piece);
        Ok(None)
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf[..n]);
        self.buf.advance(n);
        out
    }

    fn line<'py>(
        &mut self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            // memchr looks at 16-32 bytes a step: a byte-by-byte search was a third of the
            // instructions of a body read line by line.
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scanned..]) {
                let end = scanned + i + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            scanned = self.buf.len();
            if limit.is_some_and(|l| scanned >= l) || !self.fill(py)? {
                let n = limit.map_or(self.buf.len(), |l| l.min(self.buf.len()));
                return Ok(self.take(py, n));
            }
        }
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl InputStream {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(whole) = self.read_direct(py, size_arg(size))? {
            return Ok(whole);
        }
        match size_arg(size) {
            Some(n) => {
                while self.buf.len() < n && self.fill_up_to(py, n - self.buf.len())? {}
                Ok(self.take(py, n))
            }
            None => {
                while self.fill_up_to(py, MAX_READ)? {}
                Ok(self.take(py, self.buf.len()))
            }
        }
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.line(py, size_arg(size))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.line(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
