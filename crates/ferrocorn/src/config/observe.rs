//! Settings for what the server reports about itself: the access and error logs, metrics.

use clap::Args;

use crate::observe::accesslog::{Format, DEFAULT_FORMAT};

/// Logging flags, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct ObserveSettings {
    /// Write an access log line per request to this file (`-` for stdout). Off by default.
    #[arg(long, value_name = "FILE")]
    pub access_logfile: Option<String>,

    /// Access log line format, with Gunicorn's atoms: h l u t r m U q H s B b f a T M D L p,
    /// {header}i, {header}o, {VAR}e.
    #[arg(long, value_name = "FORMAT", default_value = DEFAULT_FORMAT, value_parser = parse_format)]
    pub access_logformat: Format,

    /// Write the access log as one JSON object a line instead of --access-logformat.
    #[arg(long)]
    pub access_log_json: bool,

    /// Write the error log to this file instead of stderr (`-` for stderr).
    #[arg(long, value_name = "FILE")]
    pub error_logfile: Option<String>,

    /// Send the app's stdout and stderr into the error log file too.
    #[arg(long)]
    pub capture_output: bool,

    /// Configure Python's logging with this dictionary (JSON; a dict in a config file), as
    /// `logging.config.dictConfig`. The error log then goes to the `ferrocorn.error` logger
    /// (or `gunicorn.error` when only that one is configured), and, without
    /// --access-logfile, access lines go to `ferrocorn.access` (or `gunicorn.access`) when the
    /// dictionary configures it.
    #[arg(long, value_name = "JSON")]
    pub logconfig_dict: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT), answered by the master on
    /// an address of its own, so no app route can shadow it. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_bind: Option<std::net::SocketAddr>,

    /// Send request metrics to a statsd server at HOST:PORT over UDP, one datagram a request.
    #[arg(long, value_name = "HOST:PORT")]
    pub statsd_host: Option<String>,

    /// Prefix for statsd metric names (a `.` is added when missing).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub statsd_prefix: String,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: crate::observe::accesslog::FormatError| e.to_string())
}
