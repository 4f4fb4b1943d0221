//! `ferrocorn` on the command line: parse the settings, load the app, bind, serve.

use std::time::Duration;

use clap::Parser;
use pyo3::prelude::*;

use ferrocorn::bind::{self, BindAddr, BoundListener};
use ferrocorn::config::Settings;
use ferrocorn::master::{Master, MasterConfig, EXIT_APP_LOAD};

use crate::fork::{Forker, PidFile};
use crate::process::{daemonize, set_title, Identity};

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
    let identity = Identity::resolve(settings.user.as_deref(), settings.group.as_deref())
        .map_err(config_error)?;
    if let Some(mask) = settings.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    prepare_python_path(py, settings)?;
    if settings.daemon {
        daemonize(py).map_err(|e| config_error(format!("cannot daemonize: {e}")))?;
    }
    let preloaded = if settings.preload {
        let app = crate::loader::load(py, &settings.app).map_err(|message| StartError {
            code: EXIT_APP_LOAD,
            message,
        })?;
        Some(app)
    } else {
        None
    };

    let mut listeners: Vec<BoundListener> = Vec::new();
    for addr in &addrs {
        listeners.extend(
            bind::bind_with(addr, settings.backlog, settings.reuse_port)
                .map_err(|e| config_error(e.to_string()))?,
        );
    }
    for addr in &addrs {
        if let BindAddr::Unix(path) = addr {
            identity.chown(path);
        }
    }
    let pid = std::process::id();
    set_title(py, &format!("ferrocorn: master [{}]", settings.app));
    let pidfile = settings
        .pidfile
        .as_ref()
        .map(|path| PidFile::create(path, pid))
        .transpose()
        .map_err(|e| config_error(e.to_string()))?;

    log::info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    for l in &listeners {
        log::info!("Listening at: {} ({pid})", l.url());
    }
    log::info!("Using worker: threads ({} per worker)", settings.threads);

    let forker = Forker {
        settings: settings.clone(),
        listeners,
        preloaded,
        master_pid: pid,
        pidfile,
        identity,
    };
    let config = MasterConfig {
        workers: usize::from(settings.workers),
        timeout: Duration::from_secs(settings.timeout),
        graceful_timeout: Duration::from_secs(settings.graceful_timeout),
    };
    // From here on the master owns SIGINT (a quick stop, exit 0, as Gunicorn). Python's own
    // handler would otherwise be chained by signal-hook and raise KeyboardInterrupt on return.
    restore_default_sigint(py)?;
    let master = Master::new(forker, config)
        .map_err(|e| config_error(format!("cannot start the master: {e}")))?;
    let outcome = py.detach(|| master.run());
    if !outcome.handed_over {
        for addr in &addrs {
            if let BindAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(outcome.code)
}

fn restore_default_sigint(py: Python<'_>) -> Result<(), StartError> {
    py.import("signal")
        .and_then(|signal| {
            let dfl = signal.getattr("SIG_DFL")?;
            signal.call_method1("signal", (signal.getattr("SIGINT")?, dfl))
        })
        .map(|_| ())
        .map_err(|e| config_error(format!("cannot reset the SIGINT handler: {e}")))
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
