//! Forking worker processes from the Python master, the way `os.fork()` does it (so
//! `os.register_at_fork` hooks run), and the life of a worker process after the fork.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use pyo3::prelude::*;

use ferrocorn::bind::{BoundListener, INHERITED_FDS_VAR};
use ferrocorn::clock::monotonic_ms;
use ferrocorn::config::asgi::{EventLoop, Interface};
use ferrocorn::config::Settings;
use ferrocorn::master::heartbeat::{BeatHandle, Heartbeat};
use ferrocorn::master::signals::SignalQueue;
use ferrocorn::master::{MasterConfig, Spawn, EXIT_APP_LOAD, EXIT_WORKER_BOOT};
use ferrocorn::worker::{self, WorkerConfig};

use crate::hooks::{Fact, Hooks};
use crate::pool::WsgiApp;
use crate::process::Identity;
use crate::settings::{
    app_label, load_settings, master_config, master_facts, tls_server, LoadError,
};
use crate::wsgi::Shared;

/// Everything a worker needs, held by the master and inherited through the fork.
pub(crate) struct Forker {
    pub settings: Settings,
    /// The command line (no program name), re-read with the config file on SIGHUP.
    pub args: Vec<String>,
    pub hooks: Hooks,
    pub listeners: Vec<BoundListener>,
    /// The app, when `--preload` imported it in the master.
    pub preloaded: Option<Py<PyAny>>,
    pub master_pid: u32,
    pub pidfile: Option<PidFile>,
    pub identity: Identity,
    /// TLS for the TCP listeners, built before the first fork and again on SIGHUP.
    pub tls: Option<ferrocorn::transport::tls::TlsServer>,
    /// Every setting's effective value (`ferrocorn ctl show config`).
    pub effective: Vec<ferrocorn::config::layers::Effective>,
}

/// `--pid FILE`: written atomically (a temporary file renamed into place), removed on exit;
/// renamed to `FILE.oldbin` when a USR2 upgrade hands the name to the new master.
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path, pid: u32) -> std::io::Result<Self> {
        let tmp = path.with_extension(format!("tmp{pid}"));
        std::fs::write(&tmp, format!("{pid}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot write pid file {}: {e}", path.display()),
                )
            })?;
        Ok(Self(path.to_owned()))
    }

    fn retire(&mut self) {
        let mut old = self.0.clone().into_os_string();
        old.push(".oldbin");
        let old = PathBuf::from(old);
        if std::fs::rename(&self.0, &old).is_ok() {
            self.0 = old;
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Spawn for Forker {
    fn upgrade(&mut self) -> std::io::Result<Pid> {
        if self.hooks.has("pre_exec") {
            let facts = master_facts(&self.settings);
            self.hooks.fire_detached("pre_exec", &facts);
        }
        self.exec_successor()
    }

    /// SIGHUP: the config file and environment are read again; what changed applies to the
    /// new workers (binds stay as they are). A broken config keeps the running one.
    fn reload(&mut self) -> Option<MasterConfig> {
        Python::attach(|py| match load_settings(py, &self.args) {
            Ok(loaded) => {
                if let Err(e) = ferrocorn::static_files::Statics::new(&loaded.settings.statics) {
                    log::error!("reload: keeping the running configuration: {e}");
                    return None;
                }
                let mut settings = loaded.settings;
                if settings.bind != self.settings.bind {
                    log::warn!("bind changes need a restart; keeping the current sockets");
                    settings.bind.clone_from(&self.settings.bind);
                }
                self.reload_tls(&settings);
                self.settings = settings;
                self.effective = loaded.effective;
                self.hooks = Hooks::current(py);
                self.hooks
                    .fire(py, "on_reload", &master_facts(&self.settings));
                Some(master_config(&self.settings))
            }
            Err(LoadError::Cli(e)) => {
                log::error!("reload: keeping the running configuration: {e}");
                None
            }
            Err(LoadError::Start(e)) => {
                log::error!("reload: keeping the running configuration: {}", e.message);
                None
            }
        })
    }

    fn settings_json(&self) -> serde_json::Value {
        let settings = self
            .effective
            .iter()
            .map(|e| {
                let value = if e.many {
                    serde_json::json!(e.values)
                } else if e.switch {
                    serde_json::json!(e.values.first().is_some_and(|v| v == "true"))
                } else {
                    serde_json::json!(e.values.first())
                };
                (e.name.clone(), value)
            })
            .collect::<serde_json::Map<_, _>>();
        serde_json::Value::Object(settings)
    }

    fn child_exited(&mut self, pid: Pid, worker_id: u64) {
        if self.hooks.has("child_exit") {
            let facts = worker_facts(worker_id, pid.as_raw());
            self.hooks.fire_detached("child_exit", &facts);
        }
    }

    fn workers_changed(&mut self, new: usize, old: usize) {
        if self.hooks.has("nworkers_changed") {
            let facts = [
                ("new", Fact::Int(new as i64)),
                ("old", Fact::Int(old as i64)),
            ];
            self.hooks.fire_detached("nworkers_changed", &facts);
        }
    }

    fn spawn(
        &mut self,
        heartbeat: &Heartbeat,
        signals: &SignalQueue,
        worker_id: u64,
    ) -> std::io::Result<Pid> {
        Python::attach(|py| {
            self.hooks.fire(py, "pre_fork", &worker_facts(worker_id, 0));
            // The stop signals wait (blocked) across the fork: in the child, one arriving
            // before the worker's early-stop flag is registered would otherwise reach the
            // master's handlers, copied into the child, and be lost (a TERM sent to a worker
            // that had just been forked was ignored until --graceful-timeout killed it).
            let held = held_stop_signals()?;
            // SAFETY: called with the GIL held, bracketing fork() exactly as os.fork() does.
            unsafe { pyo3::ffi::PyOS_BeforeFork() };
            // SAFETY: the master is single-threaded (no runtime, no app threads), so the child
            // starts from a consistent state; it runs only what `worker_process` does.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    // SAFETY: paired with PyOS_BeforeFork above, GIL held.
                    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
                    release_signals(&held);
                    Ok(child)
                }
                Ok(ForkResult::Child) => {
                    // SAFETY: first thing in the child, GIL held.
                    unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
                    signals.forget_in_child();
                    let early_stop = worker::early_stop_flag().ok();
                    // A stop sent meanwhile is delivered now, to the early-stop flag.
                    release_signals(&held);
                    let me = worker_facts(worker_id, std::process::id() as i32);
                    self.hooks.fire(py, "post_fork", &me);
                    let code = self.worker_process(py, heartbeat.handle(), worker_id, early_stop);
                    self.hooks.fire(py, "worker_exit", &me);
                    exit_process(py, code)
                }
                Err(e) => {
                    // SAFETY: paired with PyOS_BeforeFork above, GIL held.
                    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
                    release_signals(&held);
                    Err(e.into())
                }
            }
        })
    }
}

/// Blocks TERM, INT and QUIT in this thread; returns the mask to restore.
fn held_stop_signals() -> std::io::Result<SigSet> {
    let mut stops = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
        stops.add(sig);
    }
    let mut before = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stops), Some(&mut before))?;
    Ok(before)
}

/// Restores the mask [`held_stop_signals`] returned: what arrived meanwhile is delivered.
fn release_signals(before: &SigSet) {
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(before), None) {
        log::error!("cannot unblock the stop signals: {e}");
    }
}

impl Forker {
    /// SIGHUP: renewed certificate and key files (or changed TLS settings) are read again for
    /// the workers about to be forked. Files that fail to load keep the current TLS serving.
    fn reload_tls(&mut self, settings: &Settings) {
        match tls_server(settings) {
            Ok(tls) => {
                if tls.is_some() != self.tls.is_some() {
                    log::warn!("turning TLS on or off needs a restart; keeping it as it is");
                } else if tls.is_some() {
                    log::info!("TLS certificate and key loaded again");
                    self.tls = tls;
                }
            }
            Err(e) => log::error!("reload: keeping the current TLS certificate: {}", e.message),
        }
    }

    /// Starts a new master: the same Python running the same command line, with our listening
    /// sockets inherited (see `INHERITED_FDS_VAR`).
    fn exec_successor(&mut self) -> std::io::Result<Pid> {
        let (exe, argv) = Python::attach(|py| -> PyResult<(String, Vec<String>)> {
            let sys = py.import("sys")?;
            let exe: String = sys.getattr("executable")?.extract()?;
            // sys.orig_argv is 3.10+; before, the interpreter plus sys.argv is the same thing
            // for the console script and `python -m ferrocorn` alike.
            let argv: Vec<String> = match sys.getattr("orig_argv") {
                Ok(a) => a.extract()?,
                Err(_) => {
                    let mut argv = vec![exe.clone()];
                    argv.extend(sys.getattr("argv")?.extract::<Vec<String>>()?);
                    argv
                }
            };
            Ok((exe, argv))
        })
        .map_err(|e| std::io::Error::other(format!("cannot read the command line: {e}")))?;
        let fds: Vec<i32> = self.listeners.iter().map(AsRawFd::as_raw_fd).collect();
        let list = fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let cstr =
            |s: &str| CString::new(s).map_err(|_| std::io::Error::other("NUL in the command line"));
        let exe = cstr(&exe)?;
        let argv: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != INHERITED_FDS_VAR)
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                CString::new(kv).ok()
            })
            .collect();
        env.push(cstr(&format!("{INHERITED_FDS_VAR}={list}"))?);
        for &fd in &fds {
            set_inheritable(fd, true)?;
        }
        // SAFETY: the child only calls execve (async-signal-safe) on buffers prepared above,
        // then _exit if that fails.
        let forked = unsafe { fork() };
        match forked {
            Ok(ForkResult::Child) => {
                let _ = nix::unistd::execve(&exe, &argv, &env);
                // SAFETY: leaving the failed child without running anything of the master's.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { child }) => {
                for &fd in &fds {
                    let _ = set_inheritable(fd, false);
                }
                if let Some(p) = self.pidfile.as_mut() {
                    p.retire();
                }
                Ok(child)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The `worker_abort` hook, for a worker the master aborts (SIGABRT) after `--timeout`.
    /// Registered before faulthandler: its SIGABRT handler prints every thread's traceback,
    /// then hands the signal back to ours (registered first) instead of dying, and this
    /// thread runs the hook and ends the process. If the hung code holds the GIL, the hook
    /// cannot run and the master's SIGKILL ends the worker a few seconds later.
    fn watch_abort(&self, worker_id: u64) {
        let registered = std::os::unix::net::UnixStream::pair().and_then(|(mut rx, tx)| {
            signal_hook::low_level::pipe::register(libc::SIGABRT, tx)?;
            Ok(move || {
                use std::io::Read;
                let mut byte = [0u8; 1];
                rx.read(&mut byte).is_ok_and(|n| n > 0)
            })
        });
        let mut aborted = match registered {
            Ok(wait) => wait,
            Err(e) => {
                log::warn!("worker_abort hook unavailable: {e}");
                return;
            }
        };
        let hooks = self.hooks.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrocorn-abort".into())
            .spawn(move || {
                if aborted() {
                    let me = worker_facts(worker_id, std::process::id() as i32);
                    Python::attach(|py| {
                        hooks.fire(py, "worker_abort", &me);
                        flush_python_streams(py);
                    });
                    // SAFETY: ending the aborted worker now, as the SIGABRT would have.
                    unsafe { libc::_exit(1) }
                }
            });
        if let Err(e) = spawned {
            log::warn!("worker_abort hook unavailable: {e}");
        }
    }

    /// `--reload`: watches every loaded module's source and the extra files; a change sends
    /// SIGHUP to the master, which starts new workers and retires this one once they are up.
    fn start_reloader(&self, py: Python<'_>) -> Option<ferrocorn::reload::WatchHandle> {
        let files = py
            .import("ferrocorn._reload")
            .and_then(|m| m.call_method0("module_files"))
            .and_then(|f| f.extract::<Vec<PathBuf>>());
        let mut files = match files {
            Ok(f) => f,
            Err(e) => {
                log::error!("--reload: cannot list the app's modules: {e}");
                return None;
            }
        };
        files.extend(self.settings.reload_extra_file.iter().cloned());
        let master = Pid::from_raw(self.master_pid as i32);
        let watched = ferrocorn::reload::watch(files, move |path| {
            log::info!("Reloading: {} changed", path.display());
            let _ = nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGHUP);
        });
        match watched {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!("--reload: {e}");
                None
            }
        }
    }

    /// The shared listening sockets, plus with `--reuse-port` a socket of the worker's own for
    /// each TCP address (the kernel balances between them; the shared ones are still accepted
    /// on, so no connection waits on a socket nobody serves).
    fn worker_listeners(&self) -> std::io::Result<Vec<BoundListener>> {
        let mut out = Vec::new();
        for l in &self.listeners {
            out.push(l.try_clone()?);
            if self.settings.reuse_port {
                out.extend(ferrocorn::bind::reuse_port_twin(l, self.settings.backlog)?);
            }
        }
        Ok(out)
    }

    /// With `--user`/`--group`, imports the modules the worker will need from the standard
    /// library and ferrocorn's package while it can: after the switch the interpreter's own
    /// files may be out of the user's reach (pyenv's interpreters under /root, in an image built
    /// as root), and an import would then fail with "No module named ...". The app's own imports
    /// come after the switch, as with Gunicorn (with `--preload`, before it).
    fn import_before_switch(&self, py: Python<'_>) {
        let mut modules = vec![
            "importlib",
            "ferrocorn._loader",
            "ferrocorn._wsgi",
            "traceback",
        ];
        if self.settings.reload {
            modules.push("ferrocorn._reload");
        }
        let mut uvloop = false;
        match self.settings.interface() {
            // Telling the interface of the app (`_loader.is_asgi`) takes inspect, which the
            // worker imports anyway once the app is loaded: nothing more is resident.
            Ok(Interface::Auto) => modules.push("inspect"),
            // An ASGI app's event loop: asyncio (and uvloop, where --loop may pick it). With
            // auto, an ASGI app's loop still imports them after the switch (docs/asgi.md).
            Ok(Interface::Asgi) => {
                modules.push("ferrocorn._asgi");
                uvloop = self.settings.asgi.event_loop != EventLoop::Asyncio;
            }
            Ok(Interface::Wsgi) | Err(_) => {}
        }
        for name in modules {
            if let Err(e) = py.import(name) {
                log::warn!("cannot import {name} before switching the user: {e}");
            }
        }
        // Not installed is the loop's to report (--loop uvloop) or to pass over (auto).
        if uvloop && py.import("uvloop").is_err() {
            log::debug!("uvloop not imported before switching the user");
        }
        if self.preloaded.is_none() {
            // What the APP spec's parsing needs (ast, for a factory call).
            let prepared = py
                .import("ferrocorn._loader")
                .and_then(|m| m.call_method1("prepare", (self.settings.app_spec(),)));
            if let Err(e) = prepared {
                log::warn!("cannot prepare the app's loading before switching the user: {e}");
            }
        }
    }

    /// The worker: load the app (unless preloaded), serve, return the exit code.
    fn worker_process(
        &self,
        py: Python<'_>,
        heartbeat: BeatHandle,
        worker_id: u64,
        early_stop: Option<Arc<AtomicUsize>>,
    ) -> i32 {
        ferrocorn::proctitle::set(&format!(
            "ferrocorn: worker [{}]",
            app_label(&self.settings)
        ));
        if self.identity.switches() {
            self.import_before_switch(py);
        }
        if let Err(e) = self.identity.apply() {
            eprintln!("Error: cannot switch the worker to the configured user/group: {e}");
            return EXIT_WORKER_BOOT;
        }
        if self.hooks.has("worker_abort") {
            self.watch_abort(worker_id);
        }
        enable_faulthandler(py);
        if self.settings.observe.capture_output {
            // The app's print() reaches the error log line by line, not when a buffer fills.
            let _ = py.import("sys").and_then(|sys| {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("line_buffering", true)?;
                sys.getattr("stdout")?
                    .call_method("reconfigure", (), Some(&kwargs))
                    .map(drop)
            });
        }
        let app = match &self.preloaded {
            Some(app) => app.clone_ref(py),
            None => {
                match crate::loader::load_with(py, self.settings.app_spec(), self.settings.reload) {
                    Ok(app) => app,
                    Err(message) => {
                        eprintln!("Error: {message}");
                        return EXIT_APP_LOAD;
                    }
                }
            }
        };
        let asgi = match crate::asgi::interface_of(py, &self.settings, app.bind(py)) {
            Ok(asgi) => asgi,
            Err(message) => {
                eprintln!("Error: {message}");
                return EXIT_APP_LOAD;
            }
        };
        let request_hooks = self.hooks.has("pre_request") || self.hooks.has("post_request");
        let app = if request_hooks {
            // Around each request, as Gunicorn's sync and ASGI workers run them.
            let wrapper = if asgi { "wrap_asgi_app" } else { "wrap_app" };
            match py
                .import("ferrocorn._hooks")
                .and_then(|m| m.call_method1(wrapper, (app.bind(py), worker_id)))
            {
                Ok(wrapped) => wrapped.unbind(),
                Err(e) => {
                    log::error!("cannot set up the request hooks: {e}");
                    app
                }
            }
        } else {
            app
        };
        let _reloader = if self.settings.reload {
            self.start_reloader(py)
        } else {
            None
        };
        let listeners = match self.worker_listeners() {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot use the listening sockets: {e}");
                return EXIT_WORKER_BOOT;
            }
        };
        self.hooks.fire(
            py,
            "post_worker_init",
            &worker_facts(worker_id, std::process::id() as i32),
        );
        let settings = &self.settings;
        let (app, threads, event_loop): (Arc<dyn ferrocorn::app::App>, usize, _) = if asgi {
            // The event loop starts (and the lifespan's startup completes) before the worker
            // accepts: a failed startup stops the server as a failed import does.
            match crate::asgi::start_loop(py, app, settings) {
                Ok((app, event_loop)) => (app, 1, Some(event_loop)),
                Err(crate::asgi::StartFailure::App(message)) => {
                    eprintln!("Error: {message}");
                    return EXIT_APP_LOAD;
                }
                Err(crate::asgi::StartFailure::Boot(message)) => {
                    eprintln!("Error: {message}");
                    return EXIT_WORKER_BOOT;
                }
            }
        } else {
            let threads = usize::from(settings.threads);
            let app = Arc::new(WsgiApp {
                shared: Shared {
                    app,
                    multithread: threads > 1,
                    multiprocess: settings.workers > 1,
                    root_path: settings.root_path.clone(),
                },
                inline_ctx: std::sync::OnceLock::new(),
            });
            (app, threads, None)
        };
        let mut conn = ferrocorn::connection::ctx::ConnConfig::from_settings(settings);
        conn.tls.clone_from(&self.tls);
        let config = WorkerConfig {
            threads,
            inline: !settings.no_inline,
            conn,
            access_log: settings.access_log(),
            access_sink: crate::pylog::access_sink()
                .map(|sink| worker::AccessSink(sink, settings.access_log_style())),
            graceful_timeout: Duration::from_secs(settings.graceful_timeout),
            timeout: Duration::from_secs(settings.timeout),
            max_requests: max_requests(settings, worker_id),
            max_connections: settings.worker_connections as usize,
            max_pending: settings.max_pending as usize,
            heartbeat: Some(heartbeat),
            metrics: settings.observe.metrics_bind.is_some(),
            statsd: settings
                .observe
                .statsd_host
                .clone()
                .map(|host| (host, settings.observe.statsd_prefix.clone())),
            // With one worker the board says so, and it never yields: TTIN may add others.
            share_accepts: !settings.reuse_port,
            master_pid: Some(self.master_pid),
            early_stop,
        };
        let ran = py.detach(|| worker::run(listeners, app, config, || {}));
        if let Some(event_loop) = event_loop {
            // The lifespan's shutdown, then the loop stops.
            crate::asgi::stop_loop(py, &event_loop, settings);
        }
        match ran {
            Ok(exit) => {
                if exit.quick {
                    let me = worker_facts(worker_id, std::process::id() as i32);
                    self.hooks.fire(py, "worker_int", &me);
                }
                0
            }
            Err(e) => {
                log::error!("worker failed: {e}");
                EXIT_WORKER_BOOT
            }
        }
    }
}

/// What hooks learn about a worker (pid 0: not forked yet).
fn worker_facts(worker_id: u64, pid: i32) -> [(&'static str, Fact<'static>); 3] {
    [
        ("worker_id", Fact::Int(worker_id as i64)),
        ("worker_pid", Fact::Int(i64::from(pid))),
        (
            "master_pid",
            Fact::Int(i64::from(nix::unistd::getppid().as_raw())),
        ),
    ]
}

fn set_inheritable(fd: i32, inheritable: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: `fd` is one of our listening sockets, open for the life of the master.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if inheritable {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// `--max-requests` plus a per-worker share of `--max-requests-jitter`.
fn max_requests(settings: &Settings, worker_id: u64) -> u64 {
    if settings.max_requests == 0 {
        return 0;
    }
    let spread = settings.max_requests_jitter + 1;
    let seed = u64::from(std::process::id())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(monotonic_ms())
        .wrapping_add(worker_id);
    settings.max_requests + seed % spread
}

/// faulthandler prints every thread's Python traceback on SIGABRT, which the master sends to a
/// hung worker before killing it.
fn enable_faulthandler(py: Python<'_>) {
    let enabled = py
        .import("faulthandler")
        .and_then(|fh| fh.call_method1("enable", (py.import("sys")?.getattr("stderr")?, true)));
    if let Err(e) = enabled {
        log::warn!("faulthandler unavailable: {e}");
    }
}

fn flush_python_streams(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for stream in ["stdout", "stderr"] {
            let _ = sys.getattr(stream).and_then(|s| s.call_method0("flush"));
        }
    }
}

/// Leaves the worker process: Python's atexit hooks run and output is flushed, but the
/// interpreter is not finalised and nothing returns into the master's code.
fn exit_process(py: Python<'_>, code: i32) -> ! {
    if let Ok(atexit) = py.import("atexit") {
        let _ = atexit.call_method0("_run_exitfuncs");
    }
    flush_python_streams(py);
    std::process::exit(code)
}
