//! The error log: Gunicorn's line format (`[time] [pid] [LEVEL] message`) on stderr.

use std::io::Write;

use crate::config::LogLevel;

struct ErrorLog;

/// `--error-logfile`, kept for reopening on SIGUSR1.
static ERROR_LOG: std::sync::Mutex<Option<(std::path::PathBuf, bool)>> =
    std::sync::Mutex::new(None);

/// Points stderr (and, with `capture_output`, stdout) at `path`, appending. Everything that
/// writes to them afterwards, Python tracebacks included, lands in the file.
pub fn open_error_log(path: &std::path::Path, capture_output: bool) -> std::io::Result<()> {
    redirect(path, capture_output)?;
    if let Ok(mut slot) = ERROR_LOG.lock() {
        *slot = Some((path.to_owned(), capture_output));
    }
    Ok(())
}

fn redirect(path: &std::path::Path, capture_output: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let targets: &[i32] = if capture_output { &[1, 2] } else { &[2] };
    for &fd in targets {
        // SAFETY: dup2 onto the standard descriptors; `file` stays open for the call.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGUSR1: opens the error log file again (after logrotate moved it).
pub fn reopen() {
    let current = ERROR_LOG.lock().ok().and_then(|s| s.clone());
    if let Some((path, capture)) = current {
        if let Err(e) = redirect(&path, capture) {
            log::error!("cannot reopen the error log {}: {e}", path.display());
        }
    }
}

static LOGGER: ErrorLog = ErrorLog;

/// Where error log records go instead of stderr: `--logconfig-dict` hands them to Python's
/// `logging`. Returns false when it could not take the record (the line then goes to stderr).
pub type Sink = Box<dyn Fn(log::Level, &str) -> bool + Send + Sync>;

static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// Sends every later error log record to `sink`; only the first call counts.
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Installs the error log at `level`. Calling it again only changes the level.
pub fn init(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level.filter());
}

/// Writes one formatted line (or several, for a multi-line message) to stderr.
pub fn write_line(level: &str, message: &str) {
    let line = format!(
        "[{}] [{}] [{}] {}\n",
        timestamp(),
        std::process::id(),
        level,
        message
    );
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
}

impl log::Log for ErrorLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if SINK
            .get()
            .is_some_and(|sink| sink(record.level(), &message))
        {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARNING",
            log::Level::Info => "INFO",
            log::Level::Debug | log::Level::Trace => "DEBUG",
        };
        write_line(level, &message);
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Local time as `2026-11-24 05:49:03 +0000`.
fn timestamp() -> String {
    let tm = crate::clock::local_time(crate::clock::unix_now());
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        off.abs() / 60,
        off.abs() % 60
    )
}
