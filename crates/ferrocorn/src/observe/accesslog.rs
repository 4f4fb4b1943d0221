//! The access log: Gunicorn's format atoms (`%(h)s %(l)s %(u)s %(t)s "%(r)s" ...`), or one JSON
//! object a line, rendered in Rust straight onto a shared buffer and written by a thread of its
//! own in batches, so a request never waits on the disk, no Python runs per line, and the
//! writer wakes at most once per batch window rather than once per line.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use thiserror::Error;

/// Gunicorn's default access log format.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unknown access log atom %({0})s")]
    UnknownAtom(String),
    #[error("unterminated atom at {0:?}: atoms look like %(h)s or %({{header}}i)s")]
    Unterminated(String),
}

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Atom(Atom),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    Bytes,
    BytesClf,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    RequestHeader(String),
    ResponseHeader(String),
    Environ(String),
}

impl Atom {
    fn parse(name: &str) -> Result<Self, FormatError> {
        if let Some(inner) = name.strip_prefix('{') {
            let (key, kind) = inner
                .rsplit_once('}')
                .ok_or_else(|| FormatError::UnknownAtom(name.to_owned()))?;
            return match kind {
                "i" => Ok(Self::RequestHeader(key.to_ascii_lowercase())),
                "o" => Ok(Self::ResponseHeader(key.to_ascii_lowercase())),
                "e" => Ok(Self::Environ(key.to_owned())),
                _ => Err(FormatError::UnknownAtom(name.to_owned())),
            };
        }
        Ok(match name {
            "h" => Self::RemoteAddr,
            "l" => Self::Dash,
            "u" => Self::User,
            "t" => Self::Time,
            "r" => Self::RequestLine,
            "m" => Self::Method,
            "U" => Self::Path,
            "q" => Self::Query,
            "H" => Self::Protocol,
            "s" => Self::Status,
            "B" => Self::Bytes,
            "b" => Self::BytesClf,
            "f" => Self::Referer,
            "a" => Self::UserAgent,
            "T" => Self::Seconds,
            "M" => Self::Millis,
            "D" => Self::Micros,
            "L" => Self::DecimalSeconds,
            "p" => Self::Pid,
            _ => return Err(FormatError::UnknownAtom(name.to_owned())),
        })
    }
}

/// A parsed `--access-logformat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl std::str::FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, FormatError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("%(") {
            text.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            // `{...}` may hold `)`; find the closing `)s` after it.
            let search_from = if after.starts_with('{') {
                after.find('}').unwrap_or(0)
            } else {
                0
            };
            let end = after[search_from..]
                .find(")s")
                .map(|e| e + search_from)
                .ok_or_else(|| FormatError::Unterminated(rest[at..].to_owned()))?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Atom(Atom::parse(&after[..end])?));
            rest = &after[end + 2..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self(pieces))
    }
}

/// What is known about one finished exchange.
#[derive(Debug)]
pub struct Entry<'a> {
    /// `REMOTE_ADDR` (after trusted-proxy resolution).
    pub remote_addr: &'a str,
    pub method: &'a str,
    /// The request target as sent (`RAW_URI`).
    pub target: &'a str,
    /// `PATH_INFO` as the app saw it (decoded).
    pub path: &'a str,
    pub protocol: &'a str,
    /// `wsgi.url_scheme`: `https` on a TLS connection (or as a trusted proxy said), else `http`.
    pub scheme: &'a str,
    pub request_headers: &'a [crate::http1::request::Header],
    pub status: u16,
    pub response_headers: &'a crate::http1::response::HeaderBlock,
    /// Body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    /// Wall-clock time the request arrived, as Unix seconds.
    pub started_unix: i64,
}

impl Entry<'_> {
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.request_headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &*h.value)
    }

    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.response_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// The user name of Basic authentication, if any.
    fn user(&self) -> Option<String> {
        let auth = self.request_header("authorization")?;
        let auth = std::str::from_utf8(auth).ok()?;
        let (scheme, token) = auth.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        Some(
            text.split_once(':')
                .map_or(text.as_str(), |(u, _)| u)
                .to_owned(),
        )
    }

    fn environ(&self, key: &str) -> Option<String> {
        let text = |v: &[u8]| v.iter().map(|&b| b as char).collect::<String>();
        Some(match key {
            "REMOTE_ADDR" => self.remote_addr.to_owned(),
            "REQUEST_METHOD" => self.method.to_owned(),
            "PATH_INFO" => self.path.to_owned(),
            "QUERY_STRING" => self.query().to_owned(),
            "RAW_URI" | "REQUEST_URI" => self.target.to_owned(),
            "SERVER_PROTOCOL" => self.protocol.to_owned(),
            "wsgi.url_scheme" => self.scheme.to_owned(),
            "HTTPS" if self.scheme == "https" => "on".to_owned(),
            "CONTENT_TYPE" => text(self.request_header("content-type")?),
            "CONTENT_LENGTH" => text(self.request_header("content-length")?),
            other => {
                let name = other.strip_prefix("HTTP_")?.replace('_', "-");
                text(self.request_header(&name)?)
            }
        })
    }
}

/// `[10/Oct/2000:13:55:36 +0200]`-style local time.
fn clf_time(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let tm = crate::clock::local_time(unix);
    let off = tm.tm_gmtoff / 60;
    format!(
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} {}{:02}{:02}]",
        tm.tm_mday,
        MONTHS[usize::try_from(tm.tm_mon).unwrap_or(0).min(11)],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        if off < 0 { '-' } else { '+' },
        off.abs() / 60,
        off.abs() % 60
    )
}

fn push_bytes(out: &mut String, v: Option<&[u8]>) {
    match v {
        Some(v) if !v.is_empty() => out.extend(v.iter().map(|&b| b as char)),
        _ => out.push('-'),
    }
}

impl Format {
    /// Renders `entry` as one line (with the newline).
    pub fn render(&self, entry: &Entry<'_>, out: &mut String) {
        for piece in &self.0 {
            let atom = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Atom(a) => a,
            };
            let d = entry.duration;
            let _ = match atom {
                Atom::RemoteAddr => write!(out, "{}", entry.remote_addr),
                Atom::Dash => write!(out, "-"),
                Atom::User => write!(out, "{}", entry.user().as_deref().unwrap_or("-")),
                Atom::Time => write!(out, "{}", clf_time(entry.started_unix)),
                Atom::RequestLine => {
                    write!(out, "{} {} {}", entry.method, entry.target, entry.protocol)
                }
                Atom::Method => write!(out, "{}", entry.method),
                Atom::Path => write!(out, "{}", entry.path),
                Atom::Query => write!(out, "{}", entry.query()),
                Atom::Protocol => write!(out, "{}", entry.protocol),
                Atom::Status => write!(out, "{}", entry.status),
                Atom::Bytes => write!(out, "{}", entry.bytes),
                Atom::BytesClf if entry.bytes == 0 => write!(out, "-"),
                Atom::BytesClf => write!(out, "{}", entry.bytes),
                Atom::Referer => {
                    push_bytes(out, entry.request_header("referer"));
                    Ok(())
                }
                Atom::UserAgent => {
                    push_bytes(out, entry.request_header("user-agent"));
                    Ok(())
                }
                Atom::Seconds => write!(out, "{}", d.as_secs()),
                Atom::Millis => write!(out, "{}", d.as_millis()),
                Atom::Micros => write!(out, "{}", d.as_micros()),
                Atom::DecimalSeconds => write!(out, "{:.6}", d.as_secs_f64()),
                Atom::Pid => write!(out, "<{}>", std::process::id()),
                Atom::RequestHeader(h) => {
                    push_bytes(out, entry.request_header(h));
                    Ok(())
                }
                Atom::ResponseHeader(h) => {
                    push_bytes(out, entry.response_header(h));
                    Ok(())
                }
                Atom::Environ(k) => write!(out, "{}", entry.environ(k).as_deref().unwrap_or("-")),
            };
        }
        out.push('\n');
    }
}

/// One JSON object a line (`--access-log-json`).
pub fn render_json(entry: &Entry<'_>, out: &mut String) {
    let text = |v: Option<&[u8]>| v.map(|v| v.iter().map(|&b| b as char).collect::<String>());
    let value = serde_json::json!({
        "time": clf_time(entry.started_unix).trim_matches(|c| c == '[' || c == ']'),
        "remote_addr": entry.remote_addr,
        "user": entry.user(),
        "method": entry.method,
        "uri": entry.target,
        "path": entry.path,
        "query": entry.query(),
        "protocol": entry.protocol,
        "scheme": entry.scheme,
        "status": entry.status,
        "bytes": entry.bytes,
        "referer": text(entry.request_header("referer")),
        "user_agent": text(entry.request_header("user-agent")),
        "duration_us": u64::try_from(entry.duration.as_micros()).unwrap_or(u64::MAX),
        "pid": std::process::id(),
    });
    out.push_str(&value.to_string());
    out.push('\n');
}

/// Where lines go, and how they are rendered.
#[derive(Debug, Clone)]
pub enum Style {
    Format(Arc<Format>),
    Json,
}

/// Rendered lines waiting for the writer thread; beyond this many bytes new lines are dropped
/// (and counted) rather than making requests wait for the disk.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// How long the writer lets lines gather after the first one arrives: one `write` (and at most
/// one wake-up of the writer) per window, however many requests.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The access log of one process: a buffer that requests append their lines to, emptied by a
/// writer thread. Cloning shares it; the last clone dropped writes what is left and stops the
/// thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    style: Style,
    handle: Arc<Handle>,
}

/// What requests and the writer thread share.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<String>,
    /// The writer is waiting for a first line (or for the end).
    wake: Condvar,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, String> {
        // Only text is behind the lock; a panic while holding it leaves usable text.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

/// Asks the writer threads to reopen their files (SIGUSR1).
pub(crate) static REOPEN: AtomicBool = AtomicBool::new(false);

/// SIGUSR1: the writer opens its file anew before its next line (after `logrotate` moved it).
pub fn reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// Receives a batch of whole access log lines (`--logconfig-dict`: Python's `logging`).
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

enum Sink {
    Stdout,
    File(PathBuf, File),
    Lines(LineSink),
}

impl Sink {
    fn open(path: &str) -> std::io::Result<Self> {
        if path == "-" {
            return Ok(Self::Stdout);
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::File(PathBuf::from(path), file))
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }
            Self::File(_, f) => f.write_all(text.as_bytes()),
            Self::Lines(sink) => {
                sink(text);
                Ok(())
            }
        }
    }

    fn reopen(&mut self) {
        if let Self::File(path, file) = self {
            match OpenOptions::new().create(true).append(true).open(&*path) {
                Ok(f) => *file = f,
                Err(e) => log::error!("cannot reopen access log {}: {e}", path.display()),
            }
        }
    }
}

impl AccessLog {
    /// Opens `path` (`-` for stdout) and starts the writer thread.
    pub fn open(path: &str, style: Style) -> std::io::Result<Self> {
        Self::start(Sink::open(path)?, style)
    }

    /// Hands the lines, in batches, to `sink` instead of a file.
    pub fn to_sink(sink: LineSink, style: Style) -> std::io::Result<Self> {
        Self::start(Sink::Lines(sink), style)
    }

    fn start(sink: Sink, style: Style) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("ferrocorn-access".into())
            .spawn(move || writer(sink, &for_writer))?;
        Ok(Self {
            style,
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Renders one line onto the pending text; never waits for the disk.
    pub fn record(&self, entry: &Entry<'_>) {
        let shared = &self.handle.shared;
        let mut pending = shared.lock();
        if pending.len() >= MAX_PENDING {
            drop(pending);
            if shared.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!("access log cannot keep up: dropping lines");
            }
            return;
        }
        let first = pending.is_empty();
        match &self.style {
            Style::Format(f) => f.render(entry, &mut pending),
            Style::Json => render_json(entry, &mut pending),
        }
        drop(pending);
        if first {
            shared.wake.notify_one();
        }
    }
}

/// Waits for a first line, lets more gather for [`BATCH_WINDOW`], then writes them all at once.
fn writer(mut sink: Sink, shared: &Shared) {
    let mut batch = String::with_capacity(64 * 1024);
    loop {
        {
            let mut pending = shared.lock();
            while pending.is_empty()
                && !shared.closed.load(Ordering::Acquire)
                && !REOPEN.load(Ordering::Acquire)
            {
                // The timeout only bounds how late a SIGUSR1 reopen is noticed.
                pending = shared
                    .wake
                    .wait_timeout(pending, Duration::from_secs(1))
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        }
        let closed = shared.closed.load(Ordering::Acquire);
        if !closed {
            std::thread::sleep(BATCH_WINDOW);
        }
        std::mem::swap(&mut *shared.lock(), &mut batch);
        if REOPEN.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
        if !batch.is_empty() {
            if let Err(e) = sink.write(&batch) {
                log::error!("cannot write the access log: {e}");
            }
            batch.clear();
        }
        if closed && shared.lock().is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http1::request::Header;
    use crate::http1::response::HeaderBlock;

    fn h(name: &str, value: &[u8]) -> Header {
        Header {
            name: name.into(),
            value: bytes::Bytes::copy_from_slice(value),
        }
    }

    fn entry<'a>(headers: &'a [Header], out: &'a HeaderBlock) -> Entry<'a> {
        Entry {
            remote_addr: "192.0.2.1",
            method: "GET",
            target: "/a%20b?x=1",
            path: "/a b",
            protocol: "HTTP/1.1",
            scheme: "http",
            request_headers: headers,
            status: 200,
            response_headers: out,
            bytes: 13,
            duration: Duration::from_micros(1500),
            started_unix: 0,
        }
    }

    #[test]
    fn default_format_renders_like_gunicorn() {
        let headers = vec![
            h("User-Agent", b"curl/8"),
            h("Authorization", b"Basic YWxpY2U6c2VjcmV0"),
        ];
        let f: Format = DEFAULT_FORMAT.parse().unwrap();
        let mut out = String::new();
        f.render(&entry(&headers, &HeaderBlock::default()), &mut out);
        let tail = out.split_once(']').unwrap().1;
        assert!(out.starts_with("192.0.2.1 - alice ["), "{out}");
        assert_eq!(
            tail,
            " \"GET /a%20b?x=1 HTTP/1.1\" 200 13 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn every_atom() {
        let headers = vec![h("X-Id", b"7")];
        let mut out_h = HeaderBlock::default();
        out_h.push("Content-Type", b"text/plain");
        let f: Format = "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(T)s|%(M)s|%(D)s|%(L)s|%({x-id}i)s|%({content-type}o)s|%({REMOTE_ADDR}e)s|%({HTTP_X_ID}e)s|%({nope}i)s"
            .parse()
            .unwrap();
        let mut out = String::new();
        f.render(&entry(&headers, &out_h), &mut out);
        assert_eq!(
            out,
            "GET|/a b|x=1|HTTP/1.1|200|13|0|1|1500|0.001500|7|text/plain|192.0.2.1|7|-\n"
        );
    }

    #[test]
    fn bad_formats_are_refused() {
        assert_eq!(
            "%(zz)s".parse::<Format>(),
            Err(FormatError::UnknownAtom("zz".into()))
        );
        assert!(matches!(
            "%(h".parse::<Format>(),
            Err(FormatError::Unterminated(_))
        ));
    }

    #[test]
    fn json_lines() {
        let mut out = String::new();
        render_json(&entry(&[], &HeaderBlock::default()), &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/a b");
        assert_eq!(v["duration_us"], 1500);
        assert!(out.ends_with("}\n"));
    }
}
