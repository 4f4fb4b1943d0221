//! What can stop a run (failures of single connections are counted, not raised).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("bad URL {0:?}: expected ws://HOST:PORT/PATH")]
    Url(String),
    #[error("no connection could be opened to {url} ({errors} failed; first: {first})")]
    NoConnection {
        url: String,
        errors: usize,
        first: String,
    },
    #[error("writing the report: {0}")]
    Report(std::io::Error),
}
