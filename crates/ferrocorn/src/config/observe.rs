//! Settings for what the server reports about itself: the access log and the error log.

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
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: crate::observe::accesslog::FormatError| e.to_string())
}
