//! `ferrocorn` on the command line: parse the settings, load the app, bind, serve.

use std::time::Duration;

use pyo3::prelude::*;

use ferrocorn::bind::{self, BindAddr, BoundListener};
use ferrocorn::config::file::FileValue;
use ferrocorn::config::layers::{self, Effective, Layer, LayerError};
use ferrocorn::config::ops::WorkerClass;
use ferrocorn::config::Settings;
use ferrocorn::master::control::{ControlError, ControlSocket};
use ferrocorn::master::recycle::RecyclePolicy;
use ferrocorn::master::scrape::ScrapeEndpoint;
use ferrocorn::master::{Master, MasterConfig, EXIT_APP_LOAD};
use ferrocorn::observe::metrics::Statsd;

use crate::fork::{Forker, PidFile};
use crate::hooks::{Fact, Hooks};
use crate::process::{daemonize, Identity};

/// Exit code for a configuration or start-up error.
const EXIT_CONFIG: i32 = 1;

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
    layers::set_long_version(crate::build_info::long_version(py));
    let programmatic = match settings.map(|s| file_values(&s)).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: invalid settings: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Some(values) = &programmatic {
        PROGRAMMATIC.with(|p| *p.borrow_mut() = Some(values.clone()));
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
    ferrocorn::log::init(loaded.settings.log_level);
    let observe = &loaded.settings.observe;
    if let Some(path) = observe.error_logfile.as_deref().filter(|p| *p != "-") {
        if let Err(e) = ferrocorn::log::open_error_log(path.as_ref(), observe.capture_output) {
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

/// Settings from every source, ready to serve with.
pub(crate) struct Loaded {
    pub settings: Settings,
    pub effective: Vec<Effective>,
    warnings: Vec<String>,
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

/// The TLS configuration of the TCP listeners (`--certfile`...), `None` when TLS is off.
pub(crate) fn tls_server(
    settings: &Settings,
) -> Result<Option<ferrocorn::transport::tls::TlsServer>, StartError> {
    let alpn = settings.http2.http_protocols.alpn();
    let tls = ferrocorn::transport::tls::TlsServer::from_settings(&settings.tls, alpn)
        .map_err(|e| config_error(e.to_string()))?;
    Ok(tls)
}

fn no_app_error() -> StartError {
    config_error(
        "no APP given: name it on the command line (ferrocorn module:app) or as wsgi_app in \
         the config file",
    )
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
    // stops the start; each worker opens its own (see `Settings::conn_config`).
    ferrocorn::static_files::Statics::new(&settings.statics)
        .map_err(|e| config_error(e.to_string()))?;
    if settings.daemon {
        daemonize(py).map_err(|e| config_error(format!("cannot daemonize: {e}")))?;
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

    log::info!("Starting ferrocorn {}", env!("CARGO_PKG_VERSION"));
    for l in &listeners {
        let url = l.url();
        let url = match (&tls, l) {
            (Some(_), BoundListener::Tcp(_)) => url.replacen("http://", "https://", 1),
            _ => url,
        };
        log::info!("Listening at: {url} ({pid})");
    }
    if settings.protocol == ferrocorn::config::Protocol::Uwsgi {
        log::info!(
            "Speaking the uwsgi protocol (nginx uwsgi_pass), to peers in --uwsgi-allow-from \
             and on unix sockets"
        );
    }
    log::info!("Using worker: threads ({} per worker)", settings.threads);
    log_worker_class(settings);
    for m in &settings.statics.static_map {
        let prefix = if m.prefix.is_empty() { "/" } else { &m.prefix };
        log::info!("Static files: {prefix} from {}", m.dir.display());
    }

    hooks.fire(py, "when_ready", &master_facts(settings));
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
        WorkerClass::Sync | WorkerClass::Gthread => {}
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
