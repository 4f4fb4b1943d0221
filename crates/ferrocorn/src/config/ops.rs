//! Settings for running the server in production: Gunicorn's worker classes, the control
//! socket, and recycling workers by memory and age.

use std::path::PathBuf;

use clap::Args;

/// Gunicorn's worker classes that ferrocorn serves, all with its own threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerClass {
    /// One app thread per worker unless `--threads` says otherwise (Gunicorn's `sync`).
    Sync,
    /// `--threads` app threads per worker (Gunicorn's `gthread`, and ferrocorn's default).
    Gthread,
    /// A thread per in-flight request: `--threads` defaults to `--worker-connections`.
    Gevent,
    /// As `gevent` (the class older Gunicorns had).
    Eventlet,
    /// Served as `gthread`: Gunicorn's tornado worker also serves plain WSGI apps.
    Tornado,
    /// An ASGI app on one event loop per worker (Gunicorn's `asgi`, Uvicorn's worker classes):
    /// means `--interface asgi`.
    Asgi,
}

/// The names `-k` accepts, for the error that lists them.
pub const ACCEPTED: &str = "sync, gthread, gevent, gevent_wsgi, gevent_pywsgi, eventlet, \
     tornado, asgi (or Gunicorn's dotted names for them, such as \
     gunicorn.workers.ggevent.GeventWorker, and Uvicorn's uvicorn.workers.UvicornWorker)";

/// Gunicorn's full class paths for the classes it ships, mapped to their short names.
const DOTTED: &[(&str, &str)] = &[
    ("gunicorn.workers.sync.SyncWorker", "sync"),
    ("gunicorn.workers.gthread.ThreadWorker", "gthread"),
    ("gunicorn.workers.ggevent.GeventWorker", "gevent"),
    ("gunicorn.workers.ggevent.GeventPyWSGIWorker", "gevent"),
    ("gunicorn.workers.geventlet.EventletWorker", "eventlet"),
    ("gunicorn.workers.gtornado.TornadoWorker", "tornado"),
    ("gunicorn.workers.gasgi.ASGIWorker", "asgi"),
    ("uvicorn.workers.UvicornWorker", "asgi"),
    ("uvicorn.workers.UvicornH11Worker", "asgi"),
    ("uvicorn_worker.UvicornWorker", "asgi"),
    ("uvicorn_worker.UvicornH11Worker", "asgi"),
];

impl WorkerClass {
    /// The `--threads` this class implies when `--threads` was not given; `None` keeps
    /// ferrocorn's default.
    pub fn default_threads(self, worker_connections: u32) -> Option<u16> {
        match self {
            Self::Sync => Some(1),
            Self::Gthread | Self::Tornado | Self::Asgi => None,
            // --threads is capped at 1024, as everywhere else.
            Self::Gevent | Self::Eventlet => Some(worker_connections.clamp(1, 1024) as u16),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Gthread => "gthread",
            Self::Gevent => "gevent",
            Self::Eventlet => "eventlet",
            Self::Tornado => "tornado",
            Self::Asgi => "asgi",
        }
    }
}

/// `-k NAME`: a short name, `egg:gunicorn#NAME`, or Gunicorn's dotted class path.
pub fn parse_worker_class(raw: &str) -> Result<WorkerClass, String> {
    let name = raw.trim();
    let name = name.strip_prefix("egg:gunicorn#").unwrap_or(name);
    let short = DOTTED
        .iter()
        .find(|(dotted, _)| *dotted == name)
        .map_or(name, |(_, short)| short);
    match short.to_ascii_lowercase().as_str() {
        "sync" => return Ok(WorkerClass::Sync),
        "gthread" => return Ok(WorkerClass::Gthread),
        "gevent" | "gevent_wsgi" | "gevent_pywsgi" => return Ok(WorkerClass::Gevent),
        "eventlet" => return Ok(WorkerClass::Eventlet),
        "tornado" => return Ok(WorkerClass::Tornado),
        "asgi" | "uvicorn" => return Ok(WorkerClass::Asgi),
        _ => {}
    }
    Err(format!(
        "unknown worker class {name:?}; accepted: {ACCEPTED}"
    ))
}

/// Production settings, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct OpsSettings {
    /// Gunicorn's worker class, for command lines and config files written for Gunicorn. All are
    /// served by ferrocorn's threads: sync is one thread per worker unless --threads says
    /// otherwise, gthread and tornado use --threads, gevent and eventlet a thread per
    /// connection (--threads defaults to --worker-connections). asgi and Uvicorn's classes
    /// (uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker) serve an ASGI app on one
    /// event loop per worker (as --interface asgi).
    #[arg(short = 'k', long, value_name = "CLASS", default_value = "gthread",
          value_parser = parse_worker_class)]
    pub worker_class: WorkerClass,

    /// The control socket `ferrocorn ctl` talks to (a unix socket owned by the master).
    /// [default: $XDG_RUNTIME_DIR/ferrocorn.ctl, else ./ferrocorn.ctl]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// File mode of the control socket, in octal. Whatever the mode, only peers running as the
    /// server's own user are served.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub control_socket_mode: u32,

    /// Do not open a control socket.
    #[arg(long)]
    pub no_control_socket: bool,

    /// Restart a worker whose resident memory (RSS, sampled by the master twice a second) is
    /// above this many MiB, gracefully and with its replacement booted first (0 disables).
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub max_worker_memory: u64,

    /// Restart a worker after it has run about this many seconds, gracefully and with its
    /// replacement booted first (0 disables).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub max_worker_lifetime: u64,

    /// Add a random 0..=J seconds to --max-worker-lifetime per worker, so workers do not
    /// restart together. [default: a tenth of --max-worker-lifetime]
    #[arg(long, value_name = "J")]
    pub max_worker_lifetime_jitter: Option<u64>,

    /// --threads was not given and the worker class chose it (set when settings are merged).
    #[arg(skip)]
    pub threads_from_class: bool,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    super::parse_octal_mode(s, "an octal file mode such as 0600")
}

impl OpsSettings {
    /// Where the control socket goes, unless `--no-control-socket`; the flag is whether the
    /// path was chosen (an explicit path that cannot be bound stops the start).
    pub fn control_socket_path(&self) -> Option<(PathBuf, bool)> {
        if self.no_control_socket {
            return None;
        }
        if let Some(p) = &self.control_socket {
            return Some((p.clone(), true));
        }
        Some((default_control_socket(), false))
    }

    /// `--max-worker-lifetime`'s jitter: the setting, or a tenth of the lifetime.
    pub fn lifetime_jitter(&self) -> u64 {
        self.max_worker_lifetime_jitter
            .unwrap_or(self.max_worker_lifetime / 10)
    }
}

/// `$XDG_RUNTIME_DIR/ferrocorn.ctl` when that directory exists, else `./ferrocorn.ctl`.
pub fn default_control_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_dir() => dir.join("ferrocorn.ctl"),
        _ => PathBuf::from("ferrocorn.ctl"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_class_names() {
        for (name, class) in [
            ("sync", WorkerClass::Sync),
            ("gthread", WorkerClass::Gthread),
            ("GEVENT", WorkerClass::Gevent),
            ("gevent_pywsgi", WorkerClass::Gevent),
            ("eventlet", WorkerClass::Eventlet),
            ("tornado", WorkerClass::Tornado),
            ("egg:gunicorn#sync", WorkerClass::Sync),
            ("gunicorn.workers.ggevent.GeventWorker", WorkerClass::Gevent),
            (
                "gunicorn.workers.gthread.ThreadWorker",
                WorkerClass::Gthread,
            ),
            ("gunicorn.workers.sync.SyncWorker", WorkerClass::Sync),
        ] {
            assert_eq!(parse_worker_class(name), Ok(class), "{name}");
        }
        for name in [
            "asgi",
            "uvicorn.workers.UvicornWorker",
            "uvicorn_worker.UvicornWorker",
            "egg:gunicorn#asgi",
        ] {
            assert_eq!(parse_worker_class(name), Ok(WorkerClass::Asgi), "{name}");
        }
        let unknown = parse_worker_class("meinheld").unwrap_err();
        assert!(unknown.contains("\"meinheld\"") && unknown.contains("gthread"));
    }

    #[test]
    fn class_threads() {
        assert_eq!(WorkerClass::Sync.default_threads(1000), Some(1));
        assert_eq!(WorkerClass::Gevent.default_threads(1000), Some(1000));
        assert_eq!(WorkerClass::Gevent.default_threads(5000), Some(1024));
        assert_eq!(WorkerClass::Gthread.default_threads(1000), None);
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("0o660"), Ok(0o660));
        assert!(parse_mode("999").is_err());
    }
}
