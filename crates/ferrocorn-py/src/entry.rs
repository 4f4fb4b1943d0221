//! `ferrocorn` on the command line: parse the settings, load the app, bind, serve.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pyo3::prelude::*;

use ferrocorn::bind::{self, BindAddr, BoundListener};
use ferrocorn::config::Settings;
use ferrocorn::worker::{self, Exit, WorkerConfig};

use crate::pool::WsgiApp;
use crate::wsgi::Shared;

/// Exit code when the app cannot be imported (Gunicorn's APP_LOAD_ERROR).
const EXIT_APP_LOAD: i32 = 4;
/// Exit code for a configuration or start-up error.
const EXIT_CONFIG: i32 = 1;

/// Runs the server with `argv` (program name first); returns the process exit code.
#[pyfunction]
pub fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let settings = match Settings::try_parse_from(&argv) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    ferrocorn::log::init(settings.log_level);
    match serve(py, &settings) {
        Ok(code) => code,
        Err(StartError { code, message }) => {
            eprintln!("Error: {message}");
            code
        }
    }
}

struct StartError {
    code: i32,
    message: String,
}

fn config_error(message: impl Into<String>) -> StartError {
    StartError {
        code: EXIT_CONFIG,
        message: message.into(),
    }
}

fn serve(py: Python<'_>, settings: &Settings) -> Result<i32, StartError> {
    let addrs = settings
        .bind_addrs()
        .map_err(|e| config_error(e.to_string()))?;
    prepare_python_path(py, settings)?;
    let app = crate::loader::load(py, &settings.app).map_err(|message| StartError {
        code: EXIT_APP_LOAD,
        message,
    })?;

    let mut listeners: Vec<BoundListener> = Vec::new();
    for addr in &addrs {
        listeners
            .extend(bind::bind(addr, settings.backlog).map_err(|e| config_error(e.to_string()))?);
    }
    let urls: Vec<String> = listeners.iter().map(BoundListener::url).collect();
    let unix_paths: Vec<std::path::PathBuf> = addrs
        .iter()
        .filter_map(|a| match a {
            BindAddr::Unix(p) => Some(p.clone()),
            BindAddr::Tcp { .. } => None,
        })
        .collect();

    log::info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    let threads = usize::from(settings.threads);
    let app = Arc::new(WsgiApp {
        shared: Shared {
            app,
            multithread: threads > 1,
            multiprocess: false,
        },
    });
    let config = WorkerConfig {
        threads,
        conn: settings.conn_config(),
        graceful_timeout: Duration::from_secs(settings.graceful_timeout),
    };
    let pid = std::process::id();
    let result = py.detach(|| {
        worker::run(listeners, app, config, || {
            for url in &urls {
                log::info!("Listening at: {url} ({pid})");
            }
            log::info!("Using {threads} app thread(s)");
        })
    });
    for path in unix_paths {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(Exit::Clean) => {
            log::info!("Shutdown complete");
            Ok(0)
        }
        Ok(Exit::ThreadsBusy) => {
            // App threads still inside the app cannot be joined; the interpreter must not be
            // finalised under them, so leave without it.
            log::warn!("Exiting with app threads still busy");
            std::process::exit(0);
        }
        Err(e) => Err(config_error(format!("worker failed: {e}"))),
    }
}

/// `--chdir` and `--pythonpath`, as Gunicorn applies them: the working directory and each path
/// go to the front of `sys.path`.
fn prepare_python_path(py: Python<'_>, settings: &Settings) -> Result<(), StartError> {
    if let Some(dir) = &settings.chdir {
        std::env::set_current_dir(dir).map_err(|e| {
            config_error(format!("cannot change directory to {}: {e}", dir.display()))
        })?;
    }
    let sys_path = py
        .import("sys")
        .and_then(|sys| sys.getattr("path"))
        .map_err(|e| config_error(format!("cannot reach sys.path: {e}")))?;
    let mut paths: Vec<String> = Vec::new();
    if let Some(extra) = &settings.pythonpath {
        paths.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    std::fs::canonicalize(p)
                        .map_or_else(|_| p.to_owned(), |c| c.display().to_string())
                }),
        );
    }
    let cwd = std::env::current_dir()
        .map_err(|e| config_error(format!("cannot read the working directory: {e}")))?;
    paths.push(cwd.display().to_string());
    for p in paths.iter().rev() {
        sys_path
            .call_method1("insert", (0, p))
            .map_err(|e| config_error(format!("cannot extend sys.path: {e}")))?;
    }
    Ok(())
}
