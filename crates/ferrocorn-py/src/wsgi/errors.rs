//! `wsgi.errors`: a text stream into the error log (stderr).

use std::io::Write;

use pyo3::prelude::*;

#[pyclass(frozen, module = "ferrocorn")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &str) -> usize {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        text.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut err = std::io::stderr().lock();
        for line in lines.try_iter()? {
            let line: String = line?.extract()?;
            let _ = err.write_all(line.as_bytes());
        }
        Ok(())
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
