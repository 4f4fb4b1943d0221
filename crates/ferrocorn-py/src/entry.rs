//! `ferrocorn` on the command line: parse the settings, load the app, bind, serve.

use pyo3::prelude::*;

use ferrocorn::bind::{self, BindAddr, BoundListener};
use ferrocorn::config::layers::Effective;
use ferrocorn::config::ops::WorkerClass;
use ferrocorn::config::Settings;
use ferrocorn::master::control::{ControlError, ControlSocket};
use ferrocorn::master::scrape::ScrapeEndpoint;
use ferrocorn::master::{Master, EXIT_APP_LOAD};
use ferrocorn::observe::metrics::Statsd;

use crate::fork::{Forker, PidFile};
use crate::hooks::Hooks;
use crate::process::{daemonize, Identity};
use crate::settings::{
    app_label, config_error, load_settings, master_config, master_facts, set_programmatic,
    tls_server, LoadError, Loaded, StartError, EXIT_CONFIG,
};

/// Runs the server with `argv` (program name first); returns the process exit code. With
/// `app`, that object is served instead of an `APP` spec (the programmatic API).
#[pyfunction]
#[pyo3(signature = (argv, app=None, settings=None))]
pub fn main(
    py: Python<'_>,
    argv: Vec<String>,
    app: Option<Py<PyAny>>,
    settings: Option<Bound<'_, PyAny>>,
) -> i32 {
    let args: Vec<String> = argv.iter().skip(1).cloned().collect();
    ferrocorn::config::layers::set_long_version(crate::build_info::long_version(py));
    if let Some(settings) = settings {
        if let Err(e) = set_programmatic(&settings) {
            eprintln!("Error: invalid settings: {e}");
            return EXIT_CONFIG;
        }
    }
    let loaded = match load_settings(py, &args) {
        Ok(l) => l,
        Err(LoadError::Cli(e)) => {
            let _ = e.print();
            return e.exit_code();
        }
        Err(LoadError::Start(StartError { code, message })) => {
            eprintln!("Error: {message}");
            return code;
        }
    };
    ferrocorn::error_log::init(loaded.settings.log_level);
    let observe = &loaded.settings.observe;
    if let Some(path) = observe.error_logfile.as_deref().filter(|p| *p != "-") {
        if let Err(e) = ferrocorn::error_log::open_error_log(path.as_ref(), observe.capture_output)
        {
            eprintln!("Error: cannot open error log {path}: {e}");
            return EXIT_CONFIG;
        }
    }
    if let Some(json) = &observe.logconfig_dict {
        if let Err(e) = crate::pylog::configure(py, json) {
            eprintln!("Error: --logconfig-dict: {e}");
            return EXIT_CONFIG;
        }
    }
    if let Some(path) = observe.access_logfile.as_deref().filter(|p| *p != "-") {
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Err(e) = opened {
            eprintln!("Error: cannot open access log {path}: {e}");
            return EXIT_CONFIG;
        }
    }
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    let result = if loaded.settings.print_config {
        print_config(&loaded.effective);
        Ok(0)
    } else if loaded.settings.check_config {
        check_config(py, &loaded.settings, app.is_some())
    } else {
        serve(py, loaded, app, args)
    };
    match result {
        Ok(code) => code,
        Err(StartError { code, message }) => {
            eprintln!("Error: {message}");
            code
        }
    }
}

/// `--print-config`: every setting as a config-file line.
fn print_config(effective: &[Effective]) {
    let quote = |v: &str| format!("{v:?}");
    for e in effective {
        let value = if e.many {
            format!(
                "[{}]",
                e.values
                    .iter()
                    .map(|v| quote(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if e.switch {
            if e.values.first().is_some_and(|v| v == "true") {
                "True".to_owned()
            } else {
                "False".to_owned()
            }
        } else {
            match e.values.first() {
                None => "None".to_owned(),
                Some(v) if v.parse::<i64>().is_ok() => v.clone(),
                Some(v) => quote(v),
            }
        };
        println!("{} = {value}", e.name);
    }
}

/// `--check-config`: the settings parsed already; the binds must parse and the app must load.
fn check_config(py: Python<'_>, settings: &Settings, has_app: bool) -> Result<i32, StartError> {
    settings
        .bind_addrs()
        .map_err(|e| config_error(e.to_string()))?;
    settings.interface().map_err(config_error)?;
    tls_server(settings)?;
    if !has_app {
        let spec = settings.app.as_deref().ok_or_else(no_app_error)?;
        prepare_python_path(py, settings)?;
        crate::loader::load(py, spec).map_err(|message| StartError {
            code: EXIT_APP_LOAD,
            message,
        })?;
    }
    ferrocorn::static_files::Statics::new(&settings.statics)
        .map_err(|e| config_error(e.to_string()))?;
    println!("Config OK");
    Ok(0)
}

fn no_app_error() -> StartError {
    config_error(
        "no APP given: name it on the command line (ferrocorn module:app) or as wsgi_app in \
         the config file",
    )
}

fn serve(
    py: Python<'_>,
    loaded: Loaded,
    app: Option<Py<PyAny>>,
    args: Vec<String>,
) -> Result<i32, StartError> {
    let settings = &loaded.settings;
    if app.is_none() && settings.app.is_none() {
        return Err(no_app_error());
    }
    settings.interface().map_err(config_error)?;
    let hooks = Hooks::current(py);
    hooks.fire(py, "on_starting", &master_facts(settings));
    let addrs = settings
        .bind_addrs()
        .map_err(|e| config_error(e.to_string()))?;
    let identity = Identity::resolve(settings.user.as_deref(), settings.group.as_deref())
        .map_err(config_error)?;
    if let Some(mask) = settings.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    prepare_python_path(py, settings)?;
    // TLS: every certificate and key file is read and checked before anything is bound or
    // forked, so a bad one is a one-line start-up error naming the file.
    let tls = tls_server(settings)?;
    // After --chdir: relative directories are the app's. Checked here so that a missing one
    // stops the start; each worker opens its own (see `ConnConfig::from_settings`).
    ferrocorn::static_files::Statics::new(&settings.statics)
        .map_err(|e| config_error(e.to_string()))?;
    if settings.daemon {
        // The error log file (already on stderr, and stdout with --capture-output) is kept.
        let observe = &settings.observe;
        let keep: &[i32] = match observe.error_logfile.as_deref() {
            Some(path) if path != "-" && observe.capture_output => &[1, 2],
            Some(path) if path != "-" => &[2],
            _ => &[],
        };
        daemonize(py, keep).map_err(|e| config_error(format!("cannot daemonize: {e}")))?;
    }
    let preloaded = match (app, &settings.app) {
        (Some(app), _) => Some(app),
        (None, Some(spec)) if settings.preload => {
            Some(crate::loader::load(py, spec).map_err(|message| StartError {
                code: EXIT_APP_LOAD,
                message,
            })?)
        }
        _ => None,
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
    ferrocorn::proctitle::set(&format!("ferrocorn: master [{}]", app_label(settings)));
    let pidfile = settings
        .pidfile
        .as_ref()
        .map(|path| PidFile::create(path, pid))
        .transpose()
        .map_err(|e| config_error(e.to_string()))?;
    // Before anything says the server is up: a control socket it cannot have stops the start.
    let control = control_socket(settings, &addrs)?;
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| match (&tls, l) {
            (Some(_), BoundListener::Tcp(_)) => l.url().replacen("http://", "https://", 1),
            _ => l.url(),
        })
        .collect();

    let forker = Forker {
        settings: settings.clone(),
        args,
        hooks: hooks.clone(),
        listeners,
        preloaded,
        master_pid: pid,
        pidfile,
        identity,
        tls,
        effective: loaded.effective.clone(),
    };
    let config = master_config(settings);
    // From here on the master owns SIGINT (a quick stop, exit 0, as Gunicorn). Python's own
    // handler would otherwise be chained by signal-hook and raise KeyboardInterrupt on return.
    let python_sigint = swap_sigint(py, None)?;
    // The master's signal handlers are in before anything says the server is up: a TERM
    // right after "Listening at" (from a supervisor, or a test) is a graceful stop, not the
    // default action that killed the master and left its pid file behind.
    let mut master = Master::new(forker, config)
        .map_err(|e| config_error(format!("cannot start the master: {e}")))?;
    if let Some(addr) = settings.observe.metrics_bind {
        let inherited = addrs.iter().any(|a| matches!(a, BindAddr::Fd(_)));
        master = master.with_scrape(metrics_endpoint(addr, inherited)?);
    }
    match control {
        Control::Bound(socket) => master = master.with_control(socket),
        Control::Later(path, mode) => master = master.with_control_retry(path, mode),
        Control::Off => {}
    }
    if let Some(host) = &settings.observe.statsd_host {
        let statsd = Statsd::connect(host, &settings.observe.statsd_prefix)
            .map_err(|e| config_error(format!("--statsd-host {host}: {e}")))?;
        master = master.with_statsd(statsd);
    }

    log::info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    for url in &urls {
        log::info!("Listening at: {url} ({pid})");
    }
    if settings.protocol == ferrocorn::config::Protocol::Uwsgi {
        log::info!(
            "Speaking the uwsgi protocol (nginx uwsgi_pass), to peers in --uwsgi-allow-from \
             and on unix sockets"
        );
    }
    match settings.interface() {
        Ok(ferrocorn::config::asgi::Interface::Asgi) => log::info!(
            "Using worker: asgi (one {} event loop per worker)",
            settings.asgi.event_loop.name()
        ),
        Ok(ferrocorn::config::asgi::Interface::Auto) => log::info!(
            "Using worker: threads ({} per worker) for a WSGI app, an event loop for an ASGI app",
            settings.threads
        ),
        _ => log::info!("Using worker: threads ({} per worker)", settings.threads),
    }
    log_worker_class(settings);
    for m in &settings.statics.static_map {
        let prefix = if m.prefix.is_empty() { "/" } else { &m.prefix };
        log::info!("Static files: {prefix} from {}", m.dir.display());
    }

    hooks.fire(py, "when_ready", &master_facts(settings));
    let outcome = py.detach(|| master.run());
    hooks.fire(py, "on_exit", &master_facts(settings));
    // For `ferrocorn.serve()` callers: Ctrl-C behaves as before once the server is done.
    if let Err(e) = swap_sigint(py, Some(python_sigint)) {
        log::warn!("{}", e.message);
    }
    if !outcome.handed_over {
        for addr in &addrs {
            if let BindAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(outcome.code)
}

/// The control socket, as far as it can be had at start-up.
enum Control {
    Bound(ControlSocket),
    /// Held by the master this one upgrades (USR2): bound once that one has gone.
    Later(std::path::PathBuf, u32),
    Off,
}

/// Binds the control socket. At a path given with `--control-socket`, failing stops the start;
/// at the default path, the server runs without one and says why.
fn control_socket(settings: &Settings, addrs: &[BindAddr]) -> Result<Control, StartError> {
    let Some((path, explicit)) = settings.ops.control_socket_path() else {
        return Ok(Control::Off);
    };
    let inherited = addrs.iter().any(|a| matches!(a, BindAddr::Fd(_)));
    let mode = settings.ops.control_socket_mode;
    let path = std::path::absolute(&path).unwrap_or(path);
    match ControlSocket::bind(&path, mode) {
        Ok(socket) => Ok(Control::Bound(socket)),
        Err(ControlError::InUse { .. }) if inherited => Ok(Control::Later(path, mode)),
        Err(e) if explicit => Err(config_error(e.to_string())),
        Err(e) => {
            log::warn!("{e}; running without a control socket");
            Ok(Control::Off)
        }
    }
}

/// One line saying how a Gunicorn worker class is served, when the class changes anything.
fn log_worker_class(settings: &Settings) {
    let class = settings.ops.worker_class;
    match class {
        WorkerClass::Gevent | WorkerClass::Eventlet if settings.ops.threads_from_class => {
            log::info!(
                "Worker class {}: served by threads, one per connection ({} per worker, from \
                 --worker-connections; set --threads to change it)",
                class.name(),
                settings.threads
            );
        }
        WorkerClass::Gevent | WorkerClass::Eventlet => log::info!(
            "Worker class {}: served by threads ({} per worker, from --threads)",
            class.name(),
            settings.threads
        ),
        WorkerClass::Tornado => {
            log::info!("Worker class tornado: served by threads; the app must be a WSGI app")
        }
        WorkerClass::Sync | WorkerClass::Gthread | WorkerClass::Asgi => {}
    }
}

/// The `--metrics-bind` listener. A master that inherited its sockets (USR2) shares the
/// address with the old one until that one stops, so it keeps retrying; any other master fails
/// at once.
fn metrics_endpoint(
    addr: std::net::SocketAddr,
    inherited: bool,
) -> Result<ScrapeEndpoint, StartError> {
    if inherited {
        return Ok(ScrapeEndpoint::new(addr));
    }
    ScrapeEndpoint::bind(addr)
        .map_err(|e| config_error(format!("cannot bind --metrics-bind {addr}: {e}")))
}

/// Sets SIGINT's handler to `handler` (SIG_DFL when `None`); returns the one it replaces.
/// Through `_signal`, the C module `signal` wraps: importing `signal` itself (and `enum`) cost
/// every process 0.8 MiB.
fn swap_sigint(py: Python<'_>, handler: Option<Py<PyAny>>) -> Result<Py<PyAny>, StartError> {
    py.import("_signal")
        .and_then(|signal| {
            let handler = match handler {
                Some(h) => h.into_bound(py),
                None => signal.getattr("SIG_DFL")?,
            };
            let previous = signal.call_method1("signal", (signal.getattr("SIGINT")?, handler))?;
            Ok(previous.unbind())
        })
        .map_err(|e| config_error(format!("cannot set the SIGINT handler: {e}")))
}

/// `--chdir` and `--pythonpath`, as Gunicorn applies them: the working directory and each path
/// go to the front of `sys.path`.
pub(crate) fn prepare_python_path(py: Python<'_>, settings: &Settings) -> Result<(), StartError> {
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
