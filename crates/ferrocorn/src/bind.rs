//! Bind addresses (`HOST:PORT`, `[::1]:PORT`, `unix:PATH`, `fd://N`) and the listening sockets
//! for them, including those inherited from systemd (`LISTEN_FDS`) or a previous master (USR2).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::str::FromStr;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Environment variable through which a master passes its listening sockets to the new master
/// it starts on USR2 (comma-separated descriptor numbers).
pub const INHERITED_FDS_VAR: &str = "FERROCORN_FDS";

#[derive(Debug, Error)]
pub enum BindError {
    #[error("invalid bind address {0:?}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")]
    Syntax(String),
    #[error("cannot resolve {0:?}: {1}")]
    Resolve(String, std::io::Error),
    #[error("cannot bind to {0}: {1}")]
    Bind(String, std::io::Error),
}

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    /// An already listening socket inherited as file descriptor N.
    Fd(i32),
}

impl FromStr for BindAddr {
    type Err = BindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BindError::Syntax(s.to_owned());
        if let Some(fd) = s.strip_prefix("fd://") {
            return fd
                .parse::<i32>()
                .ok()
                .filter(|&n| n >= 0)
                .map(Self::Fd)
                .ok_or_else(bad);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(bad)?;
            let port = match rest {
                "" => "8000",
                p => p.strip_prefix(':').ok_or_else(bad)?,
            };
            (host.to_owned(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => return Err(bad()),
                Some((h, p)) => (h.to_owned(), p),
                None => (s.to_owned(), "8000"),
            }
        };
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = if host.is_empty() {
            "0.0.0.0".to_owned()
        } else {
            host
        };
        Ok(Self::Tcp { host, port })
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

/// A listening socket, bound before any worker starts.
#[derive(Debug)]
pub enum BoundListener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener, PathBuf),
}

impl std::os::fd::AsRawFd for BoundListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Self::Tcp(l) => l.as_raw_fd(),
            Self::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

impl BoundListener {
    /// A second handle on the same socket (for a worker).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Tcp(l) => Self::Tcp(l.try_clone()?),
            Self::Unix(l, p) => Self::Unix(l.try_clone()?, p.clone()),
        })
    }

    /// What the `Listening at:` line shows: the real address (port 0 resolved).
    pub fn url(&self) -> String {
        match self {
            Self::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "http://?".into(),
            },
            Self::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

/// Binds every address of `addr` with `backlog`.
pub fn bind(addr: &BindAddr, backlog: i32) -> Result<Vec<BoundListener>, BindError> {
    bind_with(addr, backlog, false)
}

/// A worker's own SO_REUSEPORT socket on the same address as `listener` (TCP only).
pub fn reuse_port_twin(
    listener: &BoundListener,
    backlog: i32,
) -> std::io::Result<Option<BoundListener>> {
    match listener {
        BoundListener::Tcp(l) => Ok(Some(BoundListener::Tcp(bind_tcp(
            l.local_addr()?,
            backlog,
            true,
        )?))),
        BoundListener::Unix(..) => Ok(None),
    }
}

/// Binds `addr`, with SO_REUSEPORT on TCP sockets when `reuse_port`.
pub fn bind_with(
    addr: &BindAddr,
    backlog: i32,
    reuse_port: bool,
) -> Result<Vec<BoundListener>, BindError> {
    match addr {
        BindAddr::Fd(fd) => Ok(vec![
            from_fd(*fd).map_err(|e| BindError::Bind(addr.to_string(), e))?
        ]),
        BindAddr::Unix(path) => {
            // A stale socket file from a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None)
                .map_err(|e| BindError::Bind(addr.to_string(), e))?;
            let sa =
                socket2::SockAddr::unix(path).map_err(|e| BindError::Bind(addr.to_string(), e))?;
            sock.bind(&sa)
                .map_err(|e| BindError::Bind(addr.to_string(), e))?;
            sock.listen(backlog)
                .map_err(|e| BindError::Bind(addr.to_string(), e))?;
            Ok(vec![BoundListener::Unix(
                UnixListener::from(std::os::fd::OwnedFd::from(sock)),
                path.clone(),
            )])
        }
        BindAddr::Tcp { host, port } => {
            // Like Gunicorn: a name such as "localhost" binds its first address only.
            let sa: SocketAddr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| BindError::Resolve(addr.to_string(), e))?
                .next()
                .ok_or_else(|| {
                    BindError::Resolve(addr.to_string(), std::io::ErrorKind::NotFound.into())
                })?;
            let listener = bind_tcp(sa, backlog, reuse_port)
                .map_err(|e| BindError::Bind(sa.to_string(), e))?;
            Ok(vec![BoundListener::Tcp(listener)])
        }
    }
}

/// Takes over an inherited listening socket, whatever its family.
fn from_fd(fd: i32) -> std::io::Result<BoundListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // The descriptor must be an open socket: check before taking ownership of it.
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and was handed to this process to own (fd://N,
    // LISTEN_FDS or an upgrade); nothing else in the process uses it.
    let sock = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let local = sock.local_addr()?;
    sock.set_cloexec(true)?;
    if let Some(path) = local.as_pathname() {
        let path = path.to_owned();
        return Ok(BoundListener::Unix(
            UnixListener::from(OwnedFd::from(sock)),
            path,
        ));
    }
    if local.as_socket().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a TCP or unix socket",
        ));
    }
    Ok(BoundListener::Tcp(sock.into()))
}

/// Listening sockets passed by systemd socket activation (`LISTEN_PID`, `LISTEN_FDS`), as
/// `fd://N` addresses; the variables are removed so workers and children do not reuse them.
pub fn systemd_fds() -> Vec<BindAddr> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !ours || count <= 0 {
        return Vec::new();
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    // SD_LISTEN_FDS_START is 3.
    (3..3 + count).map(BindAddr::Fd).collect()
}

fn bind_tcp(
    sa: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if sa.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&sa.into())?;
    sock.listen(backlog)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_forms() {
        let tcp = |h: &str, p| BindAddr::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            "127.0.0.1:4000".parse::<BindAddr>().unwrap(),
            tcp("127.0.0.1", 4000)
        );
        assert_eq!("[::1]:4000".parse::<BindAddr>().unwrap(), tcp("::1", 4000));
        assert_eq!(
            "localhost".parse::<BindAddr>().unwrap(),
            tcp("localhost", 8000)
        );
        assert_eq!(":5000".parse::<BindAddr>().unwrap(), tcp("0.0.0.0", 5000));
        assert_eq!(
            "unix:/tmp/a.sock".parse::<BindAddr>().unwrap(),
            BindAddr::Unix("/tmp/a.sock".into())
        );
        for bad in [
            "127.0.0.1:http",
            "::1:80",
            "[::1",
            "unix:",
            "h:70000",
            "fd://x",
            "fd://-1",
        ] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn takes_over_an_inherited_socket() {
        use std::os::fd::IntoRawFd;
        let l = bind(&"127.0.0.1:0".parse().unwrap(), 16).unwrap().remove(0);
        let url = l.url();
        let BoundListener::Tcp(tcp) = l else {
            panic!("tcp")
        };
        let fd = tcp.into_raw_fd();
        let again = bind(&BindAddr::Fd(fd), 16).unwrap().remove(0);
        assert_eq!(again.url(), url);
        assert!(bind(&BindAddr::Fd(9999), 16).is_err());
    }

    #[test]
    fn binds_port_zero() {
        let l = bind(&"127.0.0.1:0".parse().unwrap(), 16).unwrap();
        assert!(l[0].url().starts_with("http://127.0.0.1:"));
        assert!(!l[0].url().ends_with(":0"));
    }
}
