//! `ferrocorn._ferrocorn`: the Python side of ferrocorn. The core crate does the I/O; this crate
//! loads the app, runs it on Python threads and speaks WSGI (PEP 3333) to it.

mod asgi;
mod build_info;
mod entry;
mod fork;
mod hooks;
mod loader;
mod pool;
mod process;
mod pylog;
mod settings;
mod wsgi;

use pyo3::prelude::*;

#[pymodule]
fn _ferrocorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(entry::main, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::log_message, m)?)?;
    m.add_class::<wsgi::input::InputStream>()?;
    m.add_class::<wsgi::errors::ErrorStream>()?;
    m.add_class::<wsgi::start_response::StartResponse>()?;
    m.add_class::<asgi::Call>()?;
    m.add_class::<asgi::websocket::WsCall>()?;
    m.add_class::<asgi::runtime::Runtime>()?;
    m.add(
        "ClientDisconnected",
        m.py().get_type::<asgi::ClientDisconnected>(),
    )?;
    Ok(())
}
