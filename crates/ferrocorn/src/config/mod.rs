//! The settings, declared once: command-line flags, environment variables, defaults and help
//! all come from this one definition.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::bind::{BindAddr, BindError};

use crate::proxy::{Apply, Trusted};
use std::sync::Arc;

pub mod asgi;
pub mod docs;
pub mod file;
pub mod http2;
pub mod layers;
pub mod observe;
pub mod ops;
pub mod statics;
pub mod tls;
pub use asgi::AsgiSettings;
pub mod websocket;
pub use observe::ObserveSettings;
pub use ops::OpsSettings;
pub use statics::StaticSettings;
pub use tls::TlsSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Self::Debug => log::LevelFilter::Debug,
            Self::Info => log::LevelFilter::Info,
            Self::Warning => log::LevelFilter::Warn,
            Self::Error | Self::Critical => log::LevelFilter::Error,
        }
    }
}

/// What the listeners speak (Gunicorn's `protocol` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http,
    /// The uwsgi wire protocol, for nginx's `uwsgi_pass` (docs/uwsgi.md).
    Uwsgi,
}

/// ferrocorn: a WSGI HTTP server with its HTTP core in Rust. Flags follow Gunicorn's.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferrocorn",
    version,
    about = "ferrocorn: a WSGI HTTP server with its HTTP core in Rust. Flags follow Gunicorn's.",
    max_term_width = 100
)]
pub struct Settings {
    /// The WSGI application: `module:callable`, `module:factory()`, `module:factory('arg',
    /// key=1)`, `module` (its `application`) or Twisted's `package.module.attribute`.
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// A Python config file (Gunicorn's format: settings as variables, server hooks as
    /// functions). Read from ./ferrocorn.conf.py or ./gunicorn.conf.py when not given.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration and that the app loads, then exit (0 when all is well).
    #[arg(long)]
    pub check_config: bool,

    /// Print every setting's effective value, then exit.
    #[arg(long)]
    pub print_config: bool,

    /// Socket to bind: HOST:PORT, [IPV6]:PORT or unix:PATH. Repeat to bind several.
    /// [default: 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set]
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,

    /// Number of worker processes.
    #[arg(short = 'w', long, value_name = "N", env = "WEB_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Workers whose app call runs longer than this many seconds are killed and replaced, with
    /// the Python traceback of every thread in the log first (0 disables).
    #[arg(short = 't', long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,

    /// Restart a worker gracefully after it has served about this many requests (0 disables).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests: u64,

    /// Add a random 0..=J to --max-requests per worker, so workers do not restart together.
    #[arg(long, value_name = "J", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Import the app in the master before forking the workers.
    #[arg(long = "preload", alias = "preload-app")]
    pub preload: bool,

    /// Write the master's pid to this file (removed on exit).
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Detach from the terminal and run in the background.
    #[arg(short = 'D', long)]
    pub daemon: bool,

    /// Switch worker processes to this user (name or uid).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Switch worker processes to this group (name or gid).
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,

    /// File mode creation mask, in octal (e.g. 0o22 or 022).
    #[arg(short = 'm', long, value_name = "MASK", value_parser = parse_umask)]
    pub umask: Option<u32>,

    /// Python threads serving requests concurrently (per worker), started as requests need them.
    /// WSGI apps only: an ASGI app runs on one event loop per worker.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,

    /// Change to this directory before loading the app.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Comma-separated directories to add to the Python path before loading the app.
    #[arg(long, value_name = "DIRS")]
    pub pythonpath: Option<String>,

    /// Restart the workers when a Python source file of the app (or a --reload-extra-file)
    /// changes; for development. Code that fails to import leaves the old workers serving.
    #[arg(long)]
    pub reload: bool,

    /// Another file whose change restarts the workers with --reload (repeatable).
    #[arg(long, value_name = "FILE")]
    pub reload_extra_file: Vec<PathBuf>,

    /// Error log verbosity.
    #[arg(long, value_name = "LEVEL", value_enum, default_value_t = LogLevel::Info, ignore_case = true)]
    pub log_level: LogLevel,

    /// Seconds to wait for the next request on a kept-alive connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub keep_alive: u64,

    /// Most simultaneous connections per worker; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_connections: u32,

    /// Requests allowed to wait for a free app thread, per worker, before the server answers
    /// 503 with Retry-After (0: they wait, reading of their bodies paused).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_pending: u32,

    /// Never call the app on a worker's I/O thread. By default a request with no body left to
    /// read whose route has answered fast (under 0.5 ms, 8 times) is served there, saving two
    /// thread hand-offs; slow responses send the route back to the app threads.
    #[arg(long = "no-inline")]
    pub no_inline: bool,

    /// Largest request body in bytes (413 beyond; 0: no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub limit_request_body: u64,

    /// Seconds a client gets to send a whole request head (slow clients are dropped).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,

    /// Seconds a request body may stall before the app's read fails.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,

    /// Seconds a response write may wait on a client that stopped reading.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,

    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub graceful_timeout: u64,

    /// Set SO_REUSEPORT: each worker also listens on a socket of its own for the same address,
    /// and the kernel spreads connections over them.
    #[arg(long)]
    pub reuse_port: bool,

    /// Peers trusted to send X-Forwarded-* and Forwarded headers: IPs and CIDR ranges,
    /// comma-separated, or * for any. Unix-socket peers are always trusted.
    #[arg(
        long,
        value_name = "ADDRS",
        env = "FORWARDED_ALLOW_IPS",
        default_value = "127.0.0.1,::1"
    )]
    pub forwarded_allow_ips: Trusted,

    /// Which forwarded headers a trusted proxy's word is taken from: for (X-Forwarded-For),
    /// proto (X-Forwarded-Proto and --secure-scheme-headers), host (X-Forwarded-Host), port
    /// (X-Forwarded-Port), prefix (X-Forwarded-Prefix, as SCRIPT_NAME) and forwarded (RFC 7239
    /// Forwarded), comma-separated, or all / none. Turn one on only when the proxy overwrites
    /// that header on every request: nginx passes a client's own copy through otherwise
    /// (docs/deploy-nginx.md shows the lines).
    #[arg(long, value_name = "LIST", default_value = "for,proto")]
    pub forwarded_headers: Apply,

    /// Header carrying the client address from a trusted proxy.
    #[arg(long, value_name = "NAME", default_value = "X-Forwarded-For")]
    pub forwarded_for_header: String,

    /// Header carrying the original scheme (http or https) from a trusted proxy.
    #[arg(long, value_name = "NAME", default_value = "X-Forwarded-Proto")]
    pub forwarded_proto_header: String,

    /// Header carrying the original Host from a trusted proxy.
    #[arg(long, value_name = "NAME", default_value = "X-Forwarded-Host")]
    pub forwarded_host_header: String,

    /// Header carrying the original port from a trusted proxy.
    #[arg(long, value_name = "NAME", default_value = "X-Forwarded-Port")]
    pub forwarded_port_header: String,

    /// Header carrying the path prefix the proxy mounts the app under (becomes SCRIPT_NAME).
    #[arg(long, value_name = "NAME", default_value = "X-Forwarded-Prefix")]
    pub forwarded_prefix_header: String,

    /// Headers (and the value) by which a trusted proxy says the request came over HTTPS,
    /// as HEADER=VALUE pairs, comma-separated.
    #[arg(long, value_name = "PAIRS", default_value = "X-Forwarded-Protocol=ssl,X-Forwarded-Ssl=on",
          value_parser = parse_scheme_headers)]
    pub secure_scheme_headers: SchemeHeaders,

    /// Path the app is mounted under when no proxy says so (SCRIPT_NAME).
    #[arg(long, value_name = "PATH", default_value = "", value_parser = parse_root_path)]
    pub root_path: String,

    /// Expect the HAProxy PROXY protocol (v1 or v2) preamble on every connection from a
    /// trusted peer; connections from other peers are closed.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// What the listeners speak: http, or uwsgi (the uwsgi wire protocol, for nginx's
    /// uwsgi_pass; one request per connection; see docs/uwsgi.md).
    #[arg(long, value_name = "PROTOCOL", value_enum, default_value_t = Protocol::Http, ignore_case = true)]
    pub protocol: Protocol,

    /// Peers allowed to send uwsgi packets with --protocol uwsgi (they are trusted to say who
    /// the client is): IPs and CIDR ranges, comma-separated, or * for any. Unix-socket peers
    /// are always allowed.
    #[arg(long, value_name = "ADDRS", default_value = "127.0.0.1,::1")]
    pub uwsgi_allow_from: Trusted,

    /// Maximum number of pending connections in the listen queue.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub backlog: i32,

    /// Maximum size of the request line in bytes (414 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 4094, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub limit_request_line: u32,

    /// Maximum number of header fields in a request (431 beyond).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=32_768))]
    pub limit_request_fields: u32,

    /// Maximum size of one request header field in bytes (431 beyond).
    #[arg(long = "limit-request-field_size", alias = "limit-request-field-size", value_name = "BYTES",
          default_value_t = 8190, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub limit_request_field_size: u32,

    #[command(flatten)]
    pub observe: ObserveSettings,

    #[command(flatten)]
    pub ops: OpsSettings,

    #[command(flatten)]
    pub asgi: AsgiSettings,

    #[command(flatten)]
    pub statics: StaticSettings,

    #[command(flatten)]
    pub http2: http2::Http2Settings,

    #[command(flatten)]
    pub websocket: websocket::WebSocketSettings,

    #[command(flatten)]
    pub tls: TlsSettings,
}

/// `--secure-scheme-headers` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeHeaders(pub Vec<(String, String)>);

fn parse_scheme_headers(s: &str) -> Result<SchemeHeaders, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((h, v)) if !h.trim().is_empty() => {
                Ok((h.trim().to_ascii_lowercase(), v.trim().to_owned()))
            }
            _ => Err(format!("{pair:?} is not HEADER=VALUE")),
        })
        .collect::<Result<_, _>>()
        .map(SchemeHeaders)
}

fn parse_root_path(s: &str) -> Result<String, String> {
    if s.is_empty() || (s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic())) {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err(format!("{s:?} must be empty or a path starting with /"))
    }
}

fn parse_umask(s: &str) -> Result<u32, String> {
    parse_octal_mode(s, "an octal file mode mask such as 0o22")
}

/// A file mode (or mask) in octal, `0o` prefix optional; the error says it is not `what`.
pub(crate) fn parse_octal_mode(s: &str, what: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix("0o")
        .or_else(|| s.strip_prefix("0O"))
        .unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not {what}"))
}

impl Settings {
    /// The access log to open in each worker, if any.
    pub fn access_log(&self) -> Option<(String, crate::observe::accesslog::Style)> {
        let path = self.observe.access_logfile.clone()?;
        Some((path, self.access_log_style()))
    }

    /// How access lines look: `--access-log-json` or `--access-logformat`.
    pub fn access_log_style(&self) -> crate::observe::accesslog::Style {
        if self.observe.access_log_json {
            crate::observe::accesslog::Style::Json
        } else {
            crate::observe::accesslog::Style::Format(Arc::new(
                self.observe.access_logformat.clone(),
            ))
        }
    }

    /// The app spec; an empty string when none was given (a programmatic server's app is an
    /// object, not a spec).
    pub fn app_spec(&self) -> &str {
        self.app.as_deref().unwrap_or("")
    }

    /// The addresses to bind: `--bind`, else `0.0.0.0:$PORT`, else `127.0.0.1:8000`.
    pub fn bind_addrs(&self) -> Result<Vec<BindAddr>, BindError> {
        // Sockets handed over by a previous master (USR2) or by systemd come first.
        if let Ok(fds) = std::env::var(crate::bind::INHERITED_FDS_VAR) {
            std::env::remove_var(crate::bind::INHERITED_FDS_VAR);
            return fds
                .split(',')
                .map(|fd| format!("fd://{fd}").parse())
                .collect();
        }
        let systemd = crate::bind::systemd_fds();
        if !systemd.is_empty() {
            return Ok(systemd);
        }
        if self.bind.is_empty() {
            let default = match std::env::var("PORT") {
                Ok(p) if !p.is_empty() => format!("0.0.0.0:{p}"),
                _ => "127.0.0.1:8000".to_owned(),
            };
            return Ok(vec![default.parse()?]);
        }
        self.bind.iter().map(|b| b.parse()).collect()
    }

    /// The static files to serve, checked (see [`crate::static_files::Statics::new`]); the
    /// master checks them before forking, so a failure here means a directory went away since.
    pub fn static_files(&self) -> Option<Arc<crate::static_files::Statics>> {
        crate::static_files::Statics::new(&self.statics).unwrap_or_else(|e| {
            log::error!("{e}; static files are not served");
            None
        })
    }
}
