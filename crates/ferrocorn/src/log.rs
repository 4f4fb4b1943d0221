//! The error log: Gunicorn's line format (`[time] [pid] [LEVEL] message`) on stderr.

use std::io::Write;

use crate::config::LogLevel;

struct ErrorLog;

static LOGGER: ErrorLog = ErrorLog;

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
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARNING",
            log::Level::Info => "INFO",
            log::Level::Debug | log::Level::Trace => "DEBUG",
        };
        write_line(level, &record.args().to_string());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Local time as `2026-11-24 05:49:03 +0000`.
fn timestamp() -> String {
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`, a local.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&now, &mut tm) };
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
