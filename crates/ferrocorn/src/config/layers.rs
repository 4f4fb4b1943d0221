//! Settings from several sources, merged by precedence: command line over environment
//! (`FERROCORN_CMD_ARGS`, `GUNICORN_CMD_ARGS`) over config file over variables such as
//! `WEB_CONCURRENCY` over defaults.
//!
//! Every source is turned into command-line arguments and parsed by the same clap definition,
//! so a value is validated the same way wherever it comes from. The merged result is rebuilt
//! as one argument list, taking each setting from the highest source that names it (a list
//! setting such as `bind` is taken whole from one source, never mixed).

use std::ffi::OsString;
use std::sync::OnceLock;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};
use thiserror::Error;

use super::file::{file_args, FileValue};
use super::Settings;

/// Variables holding extra command-line arguments, highest precedence first.
pub const CMD_ARGS_VARS: [&str; 2] = ["FERROCORN_CMD_ARGS", "GUNICORN_CMD_ARGS"];

/// Where a layer of settings came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    Env(&'static str),
    File(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CommandLine => f.write_str("the command line"),
            Self::Env(var) => write!(f, "${var}"),
            Self::File(path) => write!(f, "config file {path}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum LayerError {
    /// A clap error (including `--help` and `--version`) on the command line itself: printed
    /// by clap, with its exit code.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("{origin}: {message}")]
    Source { origin: Origin, message: String },
    #[error("${var} cannot be split into arguments (unbalanced quotes?)")]
    Split { var: &'static str },
}

/// One source of settings, as arguments (no program name).
#[derive(Debug, Clone)]
pub struct Layer {
    pub origin: Origin,
    pub args: Vec<OsString>,
}

impl Layer {
    pub fn command_line(args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            origin: Origin::CommandLine,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The first of [`CMD_ARGS_VARS`] that is set, split as a shell would.
    pub fn from_env() -> Result<Option<Self>, LayerError> {
        for var in CMD_ARGS_VARS {
            if let Ok(value) = std::env::var(var) {
                let args = shlex::split(&value).ok_or(LayerError::Split { var })?;
                return Ok(Some(Self {
                    origin: Origin::Env(var),
                    args: args.into_iter().map(OsString::from).collect(),
                }));
            }
        }
        Ok(None)
    }

    /// A config file's variables. Also returns warnings for names that are not settings.
    pub fn from_file(path: &str, values: Vec<(String, FileValue)>) -> (Self, Vec<String>) {
        let (args, warnings) = file_args(values);
        let layer = Self {
            origin: Origin::File(path.to_owned()),
            args: args.into_iter().map(OsString::from).collect(),
        };
        (layer, warnings)
    }
}

/// What `--version` prints after the name: the version and how this build was made.
static LONG_VERSION: OnceLock<String> = OnceLock::new();

/// Sets what `--version` prints after the name (the Python binding says how it was built:
/// profile-guided or not, TLS provider, wheel tag); the first call wins. Without it, `--version`
/// prints the version alone, as `-V` does.
pub fn set_long_version(text: String) {
    let _ = LONG_VERSION.set(text);
}

/// The clap command every layer is parsed with: no argument is required there (the app may
/// come from the config file), and a repeated single-value flag keeps its last value.
fn layer_command() -> Command {
    let command = Settings::command()
        .args_override_self(true)
        .mut_arg("app", |a| a.required(false));
    match LONG_VERSION.get() {
        Some(text) => command.long_version(text.as_str()),
        None => command,
    }
}

fn parse_layer(layer: &Layer) -> Result<ArgMatches, LayerError> {
    let argv = std::iter::once(OsString::from("ferrocorn")).chain(layer.args.iter().cloned());
    let result = layer_command().try_get_matches_from(argv);
    match (&layer.origin, result) {
        (_, Ok(m)) => Ok(m),
        (Origin::CommandLine, Err(e)) => Err(LayerError::Cli(e)),
        (origin, Err(e)) => Err(LayerError::Source {
            origin: origin.clone(),
            message: first_line(&e.to_string()),
        }),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A setting's effective value, for `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub name: String,
    pub values: Vec<String>,
    /// Whether the setting is a list (`bind`) rather than one value.
    pub many: bool,
    /// A flag without a value (`--preload`).
    pub switch: bool,
}

/// Merges `layers` (lowest precedence first) into settings.
pub fn merge(layers: &[Layer]) -> Result<Settings, LayerError> {
    merge_with_values(layers).map(|(s, _)| s)
}

/// [`merge`], also returning every setting's effective value.
pub fn merge_with_values(layers: &[Layer]) -> Result<(Settings, Vec<Effective>), LayerError> {
    let parsed: Vec<ArgMatches> = layers.iter().map(parse_layer).collect::<Result<_, _>>()?;
    let command = layer_command();
    let mut argv: Vec<OsString> = vec!["ferrocorn".into()];
    let mut app: Option<OsString> = None;
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(matches) = parsed
            .iter()
            .rev()
            .find(|m| m.value_source(id) == Some(ValueSource::CommandLine))
        else {
            continue;
        };
        let values: Vec<OsString> = matches
            .get_raw(id)
            .map(|v| v.map(OsString::from).collect())
            .unwrap_or_default();
        if arg.is_positional() {
            app = values.into_iter().last();
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        if !arg.get_action().takes_values() {
            argv.push(format!("--{long}").into());
            continue;
        }
        for value in values {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            argv.push(flag);
        }
    }
    if let Some(app) = app {
        argv.push("--".into());
        argv.push(app);
    }
    let matches = layer_command()
        .try_get_matches_from(argv)
        .map_err(LayerError::Cli)?;
    let mut settings = Settings::from_arg_matches(&matches)?;
    // `-k sync` means one thread and `-k gevent` a thread per connection, unless --threads
    // was given: only a value from some layer counts, not clap's default.
    if matches.value_source("threads") != Some(ValueSource::CommandLine) {
        if let Some(n) = settings
            .ops
            .worker_class
            .default_threads(settings.worker_connections)
        {
            settings.threads = n;
            settings.ops.threads_from_class = true;
        }
    }
    let effective = command
        .get_arguments()
        .filter(|a| {
            !matches!(
                a.get_id().as_str(),
                "help" | "version" | "check_config" | "print_config"
            )
        })
        .map(|a| {
            let id = a.get_id().as_str();
            let values = if id == "threads" {
                vec![settings.threads.to_string()]
            } else {
                matches
                    .get_raw(id)
                    .map(|v| v.map(|x| x.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default()
            };
            Effective {
                name: id.to_owned(),
                values,
                many: matches!(a.get_action(), clap::ArgAction::Append),
                switch: !a.get_action().takes_values(),
            }
        })
        .collect();
    Ok((settings, effective))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(origin: Origin, args: &[&str]) -> Layer {
        Layer {
            origin,
            args: args.iter().map(OsString::from).collect(),
        }
    }

    fn file(args: &[&str]) -> Layer {
        layer(Origin::File("f.py".into()), args)
    }

    #[test]
    fn command_line_over_env_over_file() {
        let s = merge(&[
            file(&[
                "--workers",
                "3",
                "--threads",
                "7",
                "--timeout",
                "9",
                "f:app",
            ]),
            layer(
                Origin::Env("FERROCORN_CMD_ARGS"),
                &["--threads", "5", "-t", "8"],
            ),
            Layer::command_line(["--timeout", "4"]),
        ])
        .unwrap();
        assert_eq!((s.workers, s.threads, s.timeout), (3, 5, 4));
        assert_eq!(s.app.as_deref(), Some("f:app"));
    }

    #[test]
    fn lists_come_whole_from_one_layer() {
        let s = merge(&[
            file(&["-b", "127.0.0.1:1", "-b", "127.0.0.1:2"]),
            Layer::command_line(["-b", "127.0.0.1:3", "x:app"]),
        ])
        .unwrap();
        assert_eq!(s.bind, vec!["127.0.0.1:3"]);
        let s = merge(&[
            file(&["-b", "127.0.0.1:1", "-b", "127.0.0.1:2"]),
            Layer::command_line(["x:app"]),
        ])
        .unwrap();
        assert_eq!(s.bind, vec!["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn flags_and_values_starting_with_a_dash_survive() {
        let s = merge(&[
            file(&["--preload", "--root-path", "/p"]),
            Layer::command_line(["--pythonpath=-x", "--", "-weird:app"]),
        ])
        .unwrap();
        assert!(s.preload);
        assert_eq!(s.root_path, "/p");
        assert_eq!(s.pythonpath.as_deref(), Some("-x"));
        assert_eq!(s.app.as_deref(), Some("-weird:app"));
    }

    #[test]
    fn worker_class_sets_threads_unless_given() {
        let s = merge(&[Layer::command_line(["-k", "sync", "x:app"])]).unwrap();
        assert_eq!((s.threads, s.ops.threads_from_class), (1, true));
        let s = merge(&[
            file(&["--threads", "3"]),
            Layer::command_line(["-k", "sync", "x:app"]),
        ])
        .unwrap();
        assert_eq!((s.threads, s.ops.threads_from_class), (3, false));
        let s = merge(&[Layer::command_line([
            "--worker-class=gunicorn.workers.ggevent.GeventWorker",
            "--worker-connections=200",
            "x:app",
        ])])
        .unwrap();
        assert_eq!(s.threads, 200);
        let s = merge(&[Layer::command_line(["-k", "gthread", "x:app"])]).unwrap();
        assert_eq!((s.threads, s.ops.threads_from_class), (4, false));
        let s = merge(&[file(&["--worker-class=uvicorn.workers.UvicornWorker"])]).unwrap();
        assert_eq!(s.ops.worker_class, crate::config::ops::WorkerClass::Asgi);
        assert_eq!(s.interface(), Ok(crate::config::asgi::Interface::Asgi));
        let err = merge(&[file(&["--worker-class=meinheld"])]).unwrap_err();
        assert!(err.to_string().contains("unknown worker class"), "{err}");
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = merge(&[file(&["--workers", "zero"])]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("config file f.py:"), "{text}");
        assert!(text.contains("zero"), "{text}");
    }
}
