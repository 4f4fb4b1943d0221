//! Who is on each end of a connection: the client (`Peer`) and where it was accepted
//! (`Local`). Every layer above uses these; they use nothing of the crate.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl fmt::Display for Peer {
    /// The client as log lines name it: `ip:port`, or `unix socket`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => a.fmt(f),
            Self::Unix => f.write_str("unix socket"),
        }
    }
}

/// Where a connection was accepted.
#[derive(Debug, Clone)]
pub enum Local {
    Tcp(SocketAddr),
    Unix(PathBuf),
}
