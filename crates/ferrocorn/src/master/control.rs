//! The control socket that `ferrocorn ctl` talks to: a unix socket served by the master's own
//! loop. A request is one line of words (`worker add 2`); the answer is one line of JSON, then
//! the connection closes. Only a peer running as the server's own user is served
//! (`SO_PEERCRED`, whatever the file's mode). The master has no threads, so clients are served
//! without blocking: each turn of the loop reads and writes what is ready, and a client that
//! has not finished within [`CLIENT_DEADLINE`] is dropped. A slow or stuck client never holds
//! the master up.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thiserror::Error;

/// Largest request accepted, in bytes (the newline included).
pub const MAX_REQUEST: usize = 4096;
/// Time a client gets to send its request and read the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Clients served at once; more are turned away with an error.
const MAX_CLIENTS: usize = 8;
/// Connections accepted per turn of the master's loop.
const ACCEPTS_PER_TURN: usize = 16;

/// What the socket answers to `help` and to a command it does not know.
pub const USAGE: &str = "show workers | show stats | show config | worker add [N] | \
     worker remove [N] | worker kill PID | reload | shutdown [--graceful] | help";

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowWorkers,
    ShowStats,
    ShowConfig,
    WorkerAdd(usize),
    WorkerRemove(usize),
    WorkerKill(i32),
    Reload,
    Shutdown { graceful: bool },
    Help,
}

/// Parses one request line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let count = |w: Option<&&str>| -> Result<usize, String> {
        match w {
            None => Ok(1),
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| format!("{n:?} is not a worker count (1 to 1024)")),
        }
    };
    match words.as_slice() {
        ["show", "workers"] => Ok(Command::ShowWorkers),
        ["show", "stats"] => Ok(Command::ShowStats),
        ["show", "config"] => Ok(Command::ShowConfig),
        ["worker", "add", rest @ ..] if rest.len() <= 1 => {
            count(rest.first()).map(Command::WorkerAdd)
        }
        ["worker", "remove", rest @ ..] if rest.len() <= 1 => {
            count(rest.first()).map(Command::WorkerRemove)
        }
        ["worker", "kill", pid] => pid
            .parse::<i32>()
            .ok()
            .filter(|&p| p > 0)
            .map(Command::WorkerKill)
            .ok_or_else(|| format!("{pid:?} is not a process id")),
        ["reload"] => Ok(Command::Reload),
        ["shutdown"] | ["shutdown", "quick"] => Ok(Command::Shutdown { graceful: false }),
        ["shutdown", "--graceful" | "graceful"] => Ok(Command::Shutdown { graceful: true }),
        ["help"] => Ok(Command::Help),
        [] => Err(format!("empty request; commands: {USAGE}")),
        _ => Err(format!(
            "unknown command {:?}; commands: {USAGE}",
            words.join(" ")
        )),
    }
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {path}: another server is listening there (use --control-socket to choose another path, or --no-control-socket)")]
    InUse { path: String },
    #[error("control socket {path}: the path exists and is not a socket")]
    NotSocket { path: String },
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct Client {
    stream: UnixStream,
    request: Vec<u8>,
    /// The answer, once there is one, and how much of it went out.
    answer: Option<(Vec<u8>, usize)>,
    deadline: Instant,
    /// The peer went away (or its socket failed) before a request: dropped without a word.
    gone: bool,
}

/// The master's control socket.
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
    /// The socket file's device and inode: it is removed on exit only while it is still ours
    /// (a new master started by USR2 may have replaced it).
    file_id: (u64, u64),
    uid: u32,
    clients: Vec<Client>,
}

impl std::fmt::Debug for ControlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSocket")
            .field("path", &self.path)
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl ControlSocket {
    /// Binds `path` with file mode `mode`. A stale socket file (nobody listening) is replaced;
    /// a live one is an error.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, ControlError> {
        let shown = path.display().to_string();
        let io = |source| ControlError::Io {
            path: shown.clone(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotSocket { path: shown });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse { path: shown });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        // The file is created with the umask's mode: keep it private until chmod sets `mode`
        // (the master is single-threaded, so the process-wide umask is ours for the moment).
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let meta = std::fs::metadata(path).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            listener,
            file_id: (meta.dev(), meta.ino()),
            uid: nix::unistd::geteuid().as_raw(),
            clients: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptors the master's poll waits on, and for what.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut fds = vec![(self.listener.as_fd(), false)];
        fds.extend(
            self.clients
                .iter()
                .map(|c| (c.stream.as_fd(), c.answer.is_some())),
        );
        fds
    }

    /// Every descriptor of the socket, for a forked worker to close.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener.as_raw_fd())
            .chain(self.clients.iter().map(|c| c.stream.as_raw_fd()))
            .collect()
    }

    /// Accepts, reads, answers and writes whatever is ready, without blocking. `execute` runs
    /// each complete request.
    pub fn serve(&mut self, mut execute: impl FnMut(Command) -> Result<Value, String>) {
        self.accept();
        let now = Instant::now();
        for client in &mut self.clients {
            if client.answer.is_none() {
                if let Some(request) = client.read() {
                    let reply = match request.and_then(|line| parse(&line)) {
                        Ok(cmd) => match execute(cmd) {
                            Ok(data) => json!({"ok": true, "data": data}),
                            Err(error) => json!({"ok": false, "error": error}),
                        },
                        Err(error) => json!({"ok": false, "error": error}),
                    };
                    client.answer = Some((encode(&reply), 0));
                }
            }
        }
        self.clients.retain_mut(|c| {
            if c.gone {
                return false;
            }
            if c.answer.is_some() {
                return c.write() && now < c.deadline;
            }
            if now >= c.deadline {
                log::warn!("control socket: a client sent no complete request in time; dropped");
                return false;
            }
            true
        });
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            match peer_credentials(&stream) {
                Ok((uid, _)) if uid == self.uid => {}
                Ok((uid, pid)) => {
                    log::warn!(
                        "control socket: refused a peer running as uid {uid} (pid {pid}): only \
                         uid {} may control this server",
                        self.uid
                    );
                    refuse(
                        stream,
                        &format!("permission denied: uid {uid} is not the server's uid"),
                    );
                    continue;
                }
                Err(e) => {
                    log::warn!("control socket: cannot read the peer's credentials: {e}");
                    continue;
                }
            }
            if self.clients.len() >= MAX_CLIENTS {
                refuse(stream, "busy: too many control clients at once; try again");
                continue;
            }
            self.clients.push(Client {
                stream,
                request: Vec::with_capacity(64),
                answer: None,
                deadline: Instant::now() + CLIENT_DEADLINE,
                gone: false,
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Client {
    /// Reads what is ready. `Some` once the request is complete (a newline, or the end of the
    /// stream after some bytes) or refused.
    fn read(&mut self) -> Option<Result<String, String>> {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return if self.request.is_empty() {
                        // Connected and left (a probe of the socket, say).
                        self.gone = true;
                        None
                    } else {
                        Some(self.line(self.request.len()))
                    };
                }
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.request.iter().position(|&b| b == b'\n') {
                        return Some(self.line(end));
                    }
                    if self.request.len() > MAX_REQUEST {
                        return Some(Err(format!(
                            "request too large: the limit is {MAX_REQUEST} bytes"
                        )));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.gone = true;
                    return None;
                }
            }
        }
    }

    fn line(&self, end: usize) -> Result<String, String> {
        if end + 1 > MAX_REQUEST {
            return Err(format!(
                "request too large: the limit is {MAX_REQUEST} bytes"
            ));
        }
        std::str::from_utf8(&self.request[..end])
            .map(|s| s.trim_end_matches('\r').to_owned())
            .map_err(|_| "the request is not UTF-8 text".to_owned())
    }

    /// Writes what the socket takes; false once the answer is out (or cannot go out).
    fn write(&mut self) -> bool {
        let Some((answer, sent)) = &mut self.answer else {
            return true;
        };
        while *sent < answer.len() {
            match self.stream.write(&answer[*sent..]) {
                Ok(0) => return false,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }
}

fn encode(reply: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(reply).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Sends a refusal if the socket takes it at once, then closes.
fn refuse(mut stream: UnixStream, error: &str) {
    let _ = stream.write(&encode(&json!({"ok": false, "error": error})));
}

/// The peer's uid and pid, from the kernel (`SO_PEERCRED`, taken at connect time).
fn peer_credentials(stream: &UnixStream) -> std::io::Result<(u32, i32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` its size, as SO_PEERCRED expects.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.uid, cred.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("show workers"), Ok(Command::ShowWorkers));
        assert_eq!(parse("  worker   add "), Ok(Command::WorkerAdd(1)));
        assert_eq!(parse("worker add 3"), Ok(Command::WorkerAdd(3)));
        assert_eq!(parse("worker remove 2"), Ok(Command::WorkerRemove(2)));
        assert_eq!(parse("worker kill 42"), Ok(Command::WorkerKill(42)));
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown { graceful: false }));
        assert_eq!(
            parse("shutdown --graceful"),
            Ok(Command::Shutdown { graceful: true })
        );
        assert!(parse("worker add 0").unwrap_err().contains("worker count"));
        assert!(parse("worker kill -1").unwrap_err().contains("process id"));
        assert!(parse("rm -rf /")
            .unwrap_err()
            .starts_with("unknown command"));
        assert!(parse("").is_err());
    }

    fn ask(socket: &mut ControlSocket, client: &mut UnixStream, request: &[u8]) -> Value {
        client.write_all(request).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answer = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while Instant::now() < deadline {
            socket.serve(|cmd| match cmd {
                Command::ShowStats => Ok(json!({"workers": 2})),
                other => Err(format!("not here: {other:?}")),
            });
            let mut buf = [0u8; 256];
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        serde_json::from_slice(&answer).unwrap()
    }

    #[test]
    fn serves_and_refuses() {
        let dir = std::env::temp_dir().join(format!("ferrocorn-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.ctl");
        let mut socket = ControlSocket::bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            ControlSocket::bind(&path, 0o600),
            Err(ControlError::InUse { .. })
        ));

        let mut c = UnixStream::connect(&path).unwrap();
        let v = ask(&mut socket, &mut c, b"show stats\n");
        assert_eq!(v["ok"], true);
        assert_eq!(v["data"]["workers"], 2);

        let mut c = UnixStream::connect(&path).unwrap();
        let v = ask(&mut socket, &mut c, b"frobnicate\n");
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains("unknown command"));

        let mut c = UnixStream::connect(&path).unwrap();
        let v = ask(&mut socket, &mut c, &[b'x'; MAX_REQUEST + 100]);
        assert!(v["error"].as_str().unwrap().contains("too large"));

        drop(socket);
        assert!(!path.exists(), "the socket file goes with the server");
        let _ = std::fs::remove_dir(&dir);
    }
}
