//! The settings: the command line, `*_CMD_ARGS` and the config file (with its server hooks)
//! merged into one `Settings`, and what the master and the workers derive from it (read again
//! on SIGHUP). Start-up errors are `StartError`s with the exit code they end the process with.

use std::time::Duration;

use pyo3::prelude::*;

use ferrocorn::config::file::FileValue;
use ferrocorn::config::layers::{self, Effective, Layer, LayerError};
use ferrocorn::config::Settings;
use ferrocorn::master::recycle::RecyclePolicy;
use ferrocorn::master::MasterConfig;

use crate::hooks::Fact;

/// Settings from every source, ready to serve with.
pub(crate) struct Loaded {
    pub settings: Settings,
    pub effective: Vec<Effective>,
    pub warnings: Vec<String>,
}

pub(crate) enum LoadError {
    /// On the command line: clap prints it (also `--help` and `--version`).
    Cli(clap::Error),
    Start(StartError),
}

impl From<StartError> for LoadError {
    fn from(e: StartError) -> Self {
        Self::Start(e)
    }
}

thread_local! {
    /// Settings given to `ferrocorn.serve()`: they take the config file's place (and are kept
    /// for SIGHUP, which reads the settings again).
    static PROGRAMMATIC: std::cell::RefCell<Option<Vec<(String, FileValue)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Config files looked for in the working directory when `-c` is not given.
/// The settings given to `ferrocorn.serve()`, kept for this process's loads.
pub(crate) fn set_programmatic(settings: &Bound<'_, PyAny>) -> PyResult<()> {
    let values = file_values(settings)?;
    PROGRAMMATIC.with(|p| *p.borrow_mut() = Some(values));
    Ok(())
}

const DEFAULT_CONFIG_FILES: [&str; 2] = ["ferrocorn.conf.py", "gunicorn.conf.py"];

/// Reads the command line `args` (no program name), the `*_CMD_ARGS` variable and the config
/// file, and merges them; installs the config file's hooks.
pub(crate) fn load_settings(py: Python<'_>, args: &[String]) -> Result<Loaded, LoadError> {
    let cli = Layer::command_line(args);
    let env = Layer::from_env().map_err(|e| config_error(e.to_string()))?;
    let upper: Vec<Layer> = env.into_iter().chain([cli]).collect();
    let named = match layers::merge(&upper) {
        Ok(s) => s.config,
        Err(LayerError::Cli(e)) => return Err(LoadError::Cli(e)),
        Err(e) => return Err(config_error(e.to_string()).into()),
    };
    let programmatic = PROGRAMMATIC.with(|p| p.borrow().clone());
    let path = named.or_else(|| {
        DEFAULT_CONFIG_FILES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file() && programmatic.is_none())
    });
    let mut all = Vec::new();
    let mut warnings = Vec::new();
    if let Some(values) = programmatic {
        let (layer, api_warnings) = Layer::from_file("serve()", values);
        all.push(layer);
        warnings.extend(api_warnings.into_iter().map(|w| format!("serve(): {w}")));
    }
    let hooks = match &path {
        Some(path) => {
            let (values, hooks) = read_config_file(py, &path.display().to_string())?;
            let (layer, file_warnings) = Layer::from_file(&path.display().to_string(), values);
            all.push(layer);
            warnings.extend(
                file_warnings
                    .into_iter()
                    .map(|w| format!("{}: {w}", path.display())),
            );
            Some(hooks)
        }
        None => None,
    };
    all.extend(upper);
    let (settings, effective) = match layers::merge_with_values(&all) {
        Ok(v) => v,
        Err(LayerError::Cli(e)) => return Err(config_error(first_line(&e.to_string())).into()),
        Err(e) => return Err(config_error(e.to_string()).into()),
    };
    install_hooks(py, hooks, &effective)?;
    Ok(Loaded {
        settings,
        effective,
        warnings,
    })
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A config file's settings, in its order.
type FileValues = Vec<(String, FileValue)>;

/// Runs the config file through `ferrocorn._config`; returns its settings and hooks.
fn read_config_file(py: Python<'_>, path: &str) -> Result<(FileValues, Py<PyAny>), StartError> {
    let result = py
        .import("ferrocorn._config")
        .and_then(|m| m.call_method1("load_config_file", (path,)));
    let result = match result {
        Ok(r) => r,
        Err(e) => return Err(config_error(e.value(py).to_string())),
    };
    let parsed = (|| -> PyResult<(FileValues, Py<PyAny>)> {
        let values = file_values(&result.get_item(0)?)?;
        Ok((values, result.get_item(1)?.unbind()))
    })();
    parsed.map_err(|e| config_error(format!("config file {path}: {e}")))
}

/// `[(name, value)]` pairs, each value a bool, a str or a list of str (see `_config.normalise`).
fn file_values(pairs: &Bound<'_, PyAny>) -> PyResult<Vec<(String, FileValue)>> {
    let mut values = Vec::new();
    for item in pairs.try_iter()? {
        let (name, value): (String, Bound<'_, PyAny>) = item?.extract()?;
        let value = if let Ok(b) = value.cast::<pyo3::types::PyBool>() {
            FileValue::Bool(b.is_true())
        } else if let Ok(s) = value.extract::<String>() {
            FileValue::Str(s)
        } else {
            FileValue::List(value.extract::<Vec<String>>()?)
        };
        values.push((name, value));
    }
    Ok(values)
}

/// Hands the hooks (none: keep none) and the effective settings (`server.cfg`) to Python.
fn install_hooks(
    py: Python<'_>,
    hooks: Option<Py<PyAny>>,
    effective: &[Effective],
) -> Result<(), StartError> {
    let installed = (|| -> PyResult<()> {
        let cfg = pyo3::types::PyDict::new(py);
        for e in effective {
            if e.many {
                cfg.set_item(&e.name, &e.values)?;
            } else if e.switch {
                cfg.set_item(&e.name, e.values.first().is_some_and(|v| v == "true"))?;
            } else {
                cfg.set_item(&e.name, e.values.first())?;
            }
        }
        let hooks = match hooks {
            Some(h) => h.into_bound(py),
            None => pyo3::types::PyDict::new(py).into_any(),
        };
        py.import("ferrocorn._hooks")?
            .call_method1("install", (hooks, cfg))?;
        Ok(())
    })();
    installed.map_err(|e| config_error(format!("cannot install the server hooks: {e}")))
}

/// The TLS configuration of the TCP listeners (`--certfile`...), `None` when TLS is off.
pub(crate) fn tls_server(
    settings: &Settings,
) -> Result<Option<ferrocorn::transport::tls::TlsServer>, StartError> {
    let alpn = settings.http2.http_protocols.alpn();
    let tls = ferrocorn::transport::tls::TlsServer::from_settings(&settings.tls, alpn)
        .map_err(|e| config_error(e.to_string()))?;
    Ok(tls)
}

pub(crate) struct StartError {
    pub code: i32,
    pub message: String,
}

pub(crate) fn config_error(message: impl Into<String>) -> StartError {
    StartError {
        code: EXIT_CONFIG,
        message: message.into(),
    }
}

/// `--max-worker-memory` and `--max-worker-lifetime`, for the master.
/// What the master needs of the settings (read again on SIGHUP).
pub(crate) fn master_config(settings: &Settings) -> MasterConfig {
    MasterConfig {
        workers: usize::from(settings.workers),
        timeout: Duration::from_secs(settings.timeout),
        graceful_timeout: Duration::from_secs(settings.graceful_timeout),
        threads: usize::from(settings.threads),
        recycle: recycle_policy(settings),
    }
}

fn recycle_policy(settings: &Settings) -> RecyclePolicy {
    let ops = &settings.ops;
    RecyclePolicy {
        max_rss: (ops.max_worker_memory > 0).then(|| ops.max_worker_memory * 1024 * 1024),
        lifetime: (ops.max_worker_lifetime > 0)
            .then(|| Duration::from_secs(ops.max_worker_lifetime)),
        jitter: Duration::from_secs(ops.lifetime_jitter()),
    }
}

/// How the app is named in process titles and hooks.
pub(crate) fn app_label(settings: &Settings) -> &str {
    settings.app.as_deref().unwrap_or("<app object>")
}

/// What hooks learn about the master.
pub(crate) fn master_facts(settings: &Settings) -> Vec<(&'static str, Fact<'_>)> {
    vec![
        ("master_pid", Fact::Int(i64::from(std::process::id()))),
        ("app", Fact::Str(app_label(settings))),
        ("num_workers", Fact::Int(i64::from(settings.workers))),
    ]
}

/// Exit code for a configuration or start-up error.
pub(crate) const EXIT_CONFIG: i32 = 1;
