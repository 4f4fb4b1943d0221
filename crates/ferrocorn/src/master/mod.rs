//! The master process: binds nothing itself (the caller hands it the listeners), forks workers,
//! and runs one loop: wait for a signal, a control client or half a second, handle queued
//! signals, reap children, kill hung workers, recycle workers, answer the control socket, keep
//! the worker count. No threads, no runtime.

pub mod control;
pub mod heartbeat;
pub mod recycle;
pub mod scrape;
pub mod shared;
pub mod signals;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::signal::*;

use self::control::{Command, ControlError, ControlSocket};
use self::heartbeat::{AcceptBoard, Heartbeat};
use self::recycle::{Reason, RecyclePolicy};
use self::scrape::ScrapeEndpoint;
use self::signals::SignalQueue;
use crate::observe::metrics::{Snapshot, Statsd};

/// Exit code of a worker that could not import the app (Gunicorn's APP_LOAD_ERROR).
pub const EXIT_APP_LOAD: i32 = 4;
/// Exit code of a worker that failed to boot for another reason (Gunicorn's WORKER_BOOT_ERROR).
pub const EXIT_WORKER_BOOT: i32 = 3;
/// How often worker memory is sampled for `--max-worker-memory` (a read of
/// `/proc/PID/statm` per worker): a leaking worker overshoots by at most this much leak.
const RSS_SAMPLE: Duration = Duration::from_millis(500);
/// Most workers a master runs (`--workers`' own limit).
const MAX_WORKERS: usize = 1024;

/// What the master needs from the embedding: a way to start one worker process.
pub trait Spawn {
    /// Forks a worker. In the parent, returns the child's pid; the child never returns (it
    /// serves, then exits the process). `signals` must be released in the child.
    fn spawn(
        &mut self,
        heartbeat: &Heartbeat,
        signals: &SignalQueue,
        worker_id: u64,
    ) -> std::io::Result<Pid>;

    /// SIGHUP: re-read what can change before the new workers are forked; returns the
    /// master's new settings (worker count, timeouts, recycling) when the configuration was
    /// read again.
    fn reload(&mut self) -> Option<MasterConfig> {
        None
    }

    /// A worker process ended (after it was reaped).
    fn child_exited(&mut self, _pid: Pid, _worker_id: u64) {}

    /// The target worker count changed (TTIN, TTOU, reload).
    fn workers_changed(&mut self, _new: usize, _old: usize) {}

    /// SIGUSR2: start a new master from the installed program, handing it the listening
    /// sockets; returns its pid.
    fn upgrade(&mut self) -> std::io::Result<Pid>;

    /// Every setting's effective value, for `ferrocorn ctl show config`.
    fn settings_json(&self) -> Value {
        Value::Null
    }
}

/// How the master ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The exit code for the process.
    pub code: i32,
    /// A new master (USR2) owns the sockets now: leave unix socket files in place.
    pub handed_over: bool,
}

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub workers: usize,
    /// A worker whose heartbeat is older than this is killed (`--timeout`); zero disables.
    pub timeout: Duration,
    pub graceful_timeout: Duration,
    /// App threads per worker (`--threads`), for `ferrocorn ctl show workers`.
    pub threads: usize,
    /// `--max-worker-memory` and `--max-worker-lifetime`.
    pub recycle: RecyclePolicy,
}

struct Worker {
    pid: Pid,
    id: u64,
    generation: u64,
    heartbeat: Heartbeat,
    born: Instant,
    /// Set once asked to stop, with the time of asking.
    stopping: Option<Instant>,
    /// Set once killed for a timeout.
    aborted: Option<Instant>,
    /// Set once due for recycling: why, and since when its replacement boots.
    recycle: Option<(Reason, Instant)>,
    /// This worker's `--max-worker-lifetime`, jitter included.
    lifetime: Option<Duration>,
    /// Resident memory in bytes at the last sample.
    rss: u64,
}

enum Mode {
    Running,
    /// Stop: workers were sent SIGTERM (graceful) or SIGQUIT (quick) at this time.
    Stopping {
        since: Instant,
        graceful: bool,
    },
}

pub struct Master<S: Spawn> {
    spawner: S,
    config: MasterConfig,
    workers: Vec<Worker>,
    signals: SignalQueue,
    generation: u64,
    next_id: u64,
    mode: Mode,
    exit_code: i32,
    /// The new master started by USR2, while it runs.
    successor: Option<Pid>,
    /// `--metrics-bind`, answered from this loop.
    scrape: Option<ScrapeEndpoint>,
    /// The scrape listener's descriptor is closed in every worker forked from now on.
    scrape_fd_hidden: bool,
    /// The metrics of workers that have exited, and how many did.
    retired: Snapshot,
    exits: u64,
    /// `--statsd-host`: the worker count is sent as a gauge, at most once a second.
    statsd: Option<(Statsd, Instant)>,
    /// The connections every worker holds, shared with them all.
    board: AcceptBoard,
    /// `ferrocorn ctl`'s socket, served from this loop.
    control: Option<ControlSocket>,
    /// A control socket still held by the master this one upgrades (USR2): bound once it goes.
    control_retry: Option<(PathBuf, u32, Instant)>,
    started: Instant,
    /// Workers recycled, by [`Reason::index`].
    recycled: [u64; 2],
    /// Requests answered by workers that have exited.
    retired_served: u64,
    /// When worker memory was last sampled.
    sampled: Option<Instant>,
}

impl<S: Spawn> Master<S> {
    pub fn new(spawner: S, config: MasterConfig) -> std::io::Result<Self> {
        Ok(Self {
            spawner,
            config,
            workers: Vec::new(),
            signals: SignalQueue::install()?,
            generation: 0,
            next_id: 1,
            mode: Mode::Running,
            exit_code: 0,
            successor: None,
            scrape: None,
            scrape_fd_hidden: false,
            retired: Snapshot::default(),
            exits: 0,
            statsd: None,
            board: AcceptBoard::new()?,
            control: None,
            control_retry: None,
            started: Instant::now(),
            recycled: [0; 2],
            retired_served: 0,
            sampled: None,
        })
    }

    /// Serves `ferrocorn ctl` on `socket` from the master's loop.
    pub fn with_control(mut self, socket: ControlSocket) -> Self {
        log::info!("Control socket at: {}", socket.path().display());
        self.control = Some(socket);
        self
    }

    /// Binds the control socket at `path` once the master now holding it (the one this master
    /// upgrades) has gone.
    pub fn with_control_retry(mut self, path: PathBuf, mode: u32) -> Self {
        self.control_retry = Some((path, mode, Instant::now()));
        self
    }

    /// Serves Prometheus metrics (`--metrics-bind`) from the master's loop.
    pub fn with_scrape(mut self, endpoint: ScrapeEndpoint) -> Self {
        self.scrape = Some(endpoint);
        self
    }

    /// Sends the worker count to statsd (`--statsd-host`).
    pub fn with_statsd(mut self, statsd: Statsd) -> Self {
        self.statsd = Some((statsd, Instant::now()));
        self
    }

    /// Every worker's metrics, the exited ones' included, as Prometheus text.
    fn metrics_text(&self) -> String {
        let mut sum = self.retired.clone();
        for w in &self.workers {
            sum.add(w.heartbeat.counters(), true);
        }
        let mut text = sum.render(self.workers.len(), self.exits);
        let recycled: Vec<(&str, u64)> = Reason::ALL
            .iter()
            .map(|r| (r.label(), self.recycled[r.index()]))
            .collect();
        let rss: u64 = self
            .workers
            .iter()
            .filter_map(|w| recycle::rss_bytes(w.pid.as_raw()))
            .sum();
        crate::observe::metrics::render_recycling(&mut text, &recycled, rss);
        text
    }

    /// Answers waiting scrapes and sends the statsd gauge when due.
    fn report(&mut self) {
        if let Some(mut scrape) = self.scrape.take() {
            scrape.serve_ready(|| self.metrics_text());
            if !self.scrape_fd_hidden {
                if let Some(fd) = scrape.fd() {
                    use std::os::fd::AsRawFd;
                    self.signals.close_in_child(fd.as_raw_fd());
                    self.scrape_fd_hidden = true;
                }
            }
            self.scrape = Some(scrape);
        }
        if let Some((statsd, last)) = &mut self.statsd {
            if last.elapsed() >= Duration::from_secs(1) {
                statsd.gauge("workers", self.workers.len() as u64);
                *last = Instant::now();
            }
        }
    }

    /// Runs until every worker has stopped.
    pub fn run(mut self) -> Outcome {
        loop {
            self.report();
            if let Mode::Running = self.mode {
                self.maintain();
            }
            let mut pending = {
                let mut fds: Vec<_> = self
                    .scrape
                    .as_ref()
                    .and_then(ScrapeEndpoint::fd)
                    .map(|fd| (fd, false))
                    .into_iter()
                    .collect();
                if let Some(control) = &self.control {
                    fds.extend(control.poll_fds());
                }
                self.signals.wait(Duration::from_millis(500), &fds)
            };
            // Several HUPs at once (every worker's --reload watcher saw the same save) are one.
            let mut hup_seen = false;
            pending.retain(|&s| s != SIGHUP || !std::mem::replace(&mut hup_seen, true));
            for sig in pending {
                self.on_signal(sig);
            }
            self.reap();
            self.check_timeouts();
            self.retire_old_generation();
            if let Mode::Running = self.mode {
                self.check_recycling();
            }
            self.serve_control();
            if let Mode::Stopping { since, graceful } = self.mode {
                if self.workers.is_empty() {
                    break;
                }
                let limit = if graceful {
                    self.config.graceful_timeout
                } else {
                    Duration::from_secs(1)
                };
                if since.elapsed() > limit + Duration::from_secs(1) {
                    for w in &self.workers {
                        let _ = kill(w.pid, Signal::SIGKILL);
                    }
                }
            }
        }
        log::info!("Shutting down: Master");
        Outcome {
            code: self.exit_code,
            handed_over: self.successor.is_some(),
        }
    }

    fn on_signal(&mut self, sig: i32) {
        if sig != SIGCHLD {
            log::info!("Handling signal: {}", signals::name(sig));
        }
        match sig {
            SIGTERM => self.stop(true),
            SIGINT | SIGQUIT => self.stop(false),
            SIGHUP => self.reload(),
            SIGTTIN => self.add_workers(1),
            SIGTTOU => self.remove_workers(1),
            SIGUSR2 => match self.successor {
                Some(pid) => log::warn!("USR2 ignored: an upgrade (pid {pid}) is already running"),
                None => match self.spawner.upgrade() {
                    Ok(pid) => {
                        log::info!("Upgrading: new master started with pid {pid}");
                        self.successor = Some(pid);
                    }
                    Err(e) => log::error!("upgrade failed: {e}"),
                },
            },
            SIGWINCH => {
                // After an upgrade: the old master's workers stop; the master waits for TERM.
                self.config.workers = 0;
                log::info!("Stopping all workers (WINCH)");
            }
            SIGUSR1 => {
                crate::error_log::reopen();
                crate::observe::accesslog::reopen();
                for w in &self.workers {
                    let _ = kill(w.pid, Signal::SIGUSR1);
                }
            }
            _ => {}
        }
    }

    fn reload(&mut self) {
        if let Some(config) = self.spawner.reload() {
            // The new generation lives by the new timeouts and recycling limits (the old one
            // is stopped by this reload anyway).
            self.config.timeout = config.timeout;
            self.config.graceful_timeout = config.graceful_timeout;
            self.config.threads = config.threads;
            self.config.recycle = config.recycle;
            self.set_workers(config.workers);
        }
        self.generation += 1;
        log::info!("Reloading: starting {} new worker(s)", self.config.workers);
    }

    fn add_workers(&mut self, n: usize) {
        self.set_workers((self.config.workers + n).min(MAX_WORKERS));
        log::info!("Increasing workers to {}", self.config.workers);
    }

    fn remove_workers(&mut self, n: usize) {
        self.set_workers(self.config.workers.saturating_sub(n).max(1));
        log::info!("Decreasing workers to {}", self.config.workers);
    }

    fn set_workers(&mut self, n: usize) {
        let old = self.config.workers;
        if n != old {
            self.config.workers = n;
            self.spawner.workers_changed(n, old);
        }
    }

    fn stop(&mut self, graceful: bool) {
        // A quick stop may follow a graceful one, not the other way round.
        if let Mode::Stopping { graceful: was, .. } = self.mode {
            if graceful || !was {
                return;
            }
        }
        let sig = if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGQUIT
        };
        for w in &mut self.workers {
            let _ = kill(w.pid, sig);
            w.stopping.get_or_insert_with(Instant::now);
        }
        self.mode = Mode::Stopping {
            since: Instant::now(),
            graceful,
        };
    }

    /// Forks workers until the current generation has the configured count; stops extras.
    fn maintain(&mut self) {
        // A worker being recycled does not count: its replacement is forked beside it.
        let current: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.generation == self.generation && w.stopping.is_none() && w.recycle.is_none()
            })
            .collect();
        if current.len() > self.config.workers {
            // Stop the oldest extras, as Gunicorn does on TTOU.
            let mut extra: Vec<usize> = current.clone();
            extra.sort_by_key(|&i| self.workers[i].born);
            for &i in extra.iter().take(current.len() - self.config.workers) {
                let w = &mut self.workers[i];
                let _ = kill(w.pid, Signal::SIGTERM);
                w.stopping = Some(Instant::now());
            }
        }
        if current.len() < self.config.workers {
            let open = self.control.as_ref().map(ControlSocket::raw_fds);
            self.signals.close_in_child_now(open.unwrap_or_default());
        }
        for _ in current.len()..self.config.workers {
            let heartbeat = match Heartbeat::new(&self.board) {
                Ok(h) => h,
                Err(e) => {
                    log::error!("cannot create a worker heartbeat: {e}");
                    return;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            match self.spawner.spawn(&heartbeat, &self.signals, id) {
                Ok(pid) => {
                    log::info!("Booting worker with pid: {pid}");
                    self.workers.push(Worker {
                        pid,
                        id,
                        generation: self.generation,
                        heartbeat,
                        born: Instant::now(),
                        stopping: None,
                        aborted: None,
                        recycle: None,
                        lifetime: self
                            .config
                            .recycle
                            .lifetime_for(pid.as_raw() as u64 ^ crate::clock::monotonic_ms()),
                        rss: 0,
                    });
                }
                Err(e) => {
                    log::error!("cannot fork a worker: {e}");
                    return;
                }
            }
        }
    }

    /// After a reload, stop the older generations once a newer one is all up: every worker of
    /// it ready, and as many as configured (a generation may not even be forked yet when a HUP
    /// has just arrived). The newest such generation counts, even while a later reload is
    /// still booting: waiting for the latest kept the code of every earlier save serving.
    fn retire_old_generation(&mut self) {
        let live = || self.workers.iter().filter(|w| w.stopping.is_none());
        let all_up = |g: u64| {
            let (count, ready) = live()
                .filter(|w| w.generation == g)
                .fold((0, true), |(n, r), w| (n + 1, r && w.heartbeat.is_ready()));
            ready && count >= self.config.workers
        };
        let Some(newest_up) = live()
            .map(|w| w.generation)
            .filter(|&g| g <= self.generation)
            .filter(|&g| all_up(g))
            .max()
        else {
            return;
        };
        for w in &mut self.workers {
            if w.generation < newest_up && w.stopping.is_none() {
                let _ = kill(w.pid, Signal::SIGTERM);
                w.stopping = Some(Instant::now());
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.on_exit(pid, None, Some(sig)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, code: Option<i32>, sig: Option<Signal>) {
        if self.successor == Some(pid) {
            log::warn!("The new master (pid {pid}) exited; this master goes on serving");
            self.successor = None;
            return;
        }
        let Some(pos) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let w = self.workers.remove(pos);
        self.retired.add(w.heartbeat.counters(), false);
        self.retired_served += w.heartbeat.served();
        w.heartbeat.release_connections();
        self.exits += 1;
        let expected = w.stopping.is_some() || w.aborted.is_some();
        match (code, sig) {
            (Some(0), _) if expected => log::info!("Worker exiting (pid: {pid})"),
            (Some(0), _) => log::info!("Worker exited (pid: {pid})"),
            (Some(c), _) if c == EXIT_APP_LOAD || c == EXIT_WORKER_BOOT => {
                if let Some(previous) = self.serving_generation_before(w.generation) {
                    // A reload whose new code cannot boot: the running workers go on serving.
                    log::error!(
                        "Worker (pid:{pid}) failed to boot; the previous workers go on serving"
                    );
                    self.abandon_generation(w.generation, previous);
                } else {
                    log::error!("Worker (pid:{pid}) failed to boot; stopping");
                    if matches!(self.mode, Mode::Running) {
                        self.exit_code = c;
                        self.stop(false);
                    }
                }
            }
            (Some(c), _) => log::error!("Worker (pid:{pid}) exited with code {c}"),
            (None, Some(s)) if expected => log::info!("Worker (pid:{pid}) stopped by {s}"),
            (None, Some(s)) => log::error!("Worker (pid:{pid}) was sent {s}!"),
            (None, None) => {}
        }
        self.spawner.child_exited(pid, w.id);
    }

    /// The newest generation older than `generation` that still has serving workers.
    fn serving_generation_before(&self, generation: u64) -> Option<u64> {
        self.workers
            .iter()
            .filter(|w| w.generation < generation && w.stopping.is_none())
            .map(|w| w.generation)
            .max()
    }

    /// Gives up on the workers of `failed`; when it was the newest, `previous` is the current
    /// generation again (and the ones before it are retired once it is all ready). A newer
    /// generation (a later save, whose code may load) goes on booting: stopping it too while
    /// it stayed current left the workers of every older reload serving side by side, old
    /// code among them.
    fn abandon_generation(&mut self, failed: u64, previous: u64) {
        for w in &mut self.workers {
            if w.generation == failed && w.stopping.is_none() {
                let _ = kill(w.pid, Signal::SIGTERM);
                w.stopping = Some(Instant::now());
            }
        }
        if self.generation == failed {
            self.generation = previous;
        }
    }

    /// A worker whose heartbeat stopped is hung: SIGABRT first (its faulthandler prints every
    /// thread's traceback into the error log), SIGKILL if it is still there a few seconds later.
    fn check_timeouts(&mut self) {
        if self.config.timeout.is_zero() {
            return;
        }
        for w in &mut self.workers {
            if let Some(at) = w.aborted {
                if at.elapsed() > Duration::from_secs(5) {
                    let _ = kill(w.pid, Signal::SIGKILL);
                }
                continue;
            }
            if w.heartbeat.age() > self.config.timeout
                && (w.heartbeat.is_ready() || w.born.elapsed() > self.config.timeout)
            {
                log::error!("WORKER TIMEOUT (pid:{})", w.pid);
                let _ = kill(w.pid, Signal::SIGABRT);
                w.aborted = Some(Instant::now());
            }
        }
    }
}

/// Recycling (`--max-worker-memory`, `--max-worker-lifetime`).
impl<S: Spawn> Master<S> {
    /// Marks workers due for recycling (their replacements are then forked by `maintain`), and
    /// stops the marked ones once the replacements are ready.
    fn check_recycling(&mut self) {
        let policy = self.config.recycle.clone();
        if policy.max_rss.is_none() && policy.lifetime.is_none() {
            return;
        }
        let fresh = self.sampled.is_some_and(|t| t.elapsed() < RSS_SAMPLE);
        if policy.watches_memory() && !fresh {
            for w in &mut self.workers {
                w.rss = recycle::rss_bytes(w.pid.as_raw()).unwrap_or(0);
            }
            self.sampled = Some(Instant::now());
        }
        let mut recycling = self
            .workers
            .iter()
            .filter(|w| w.recycle.is_some() && w.stopping.is_none())
            .count();
        let limit = recycle::concurrent_limit(self.config.workers);
        for w in &mut self.workers {
            if recycling >= limit {
                break; // the others' turn comes when these are done
            }
            if w.generation != self.generation
                || w.stopping.is_some()
                || w.aborted.is_some()
                || w.recycle.is_some()
                || !w.heartbeat.is_ready()
            {
                continue;
            }
            let mib = |b: u64| b / (1024 * 1024);
            let reason = match (policy.max_rss, w.lifetime) {
                (Some(max), _) if w.rss > max => {
                    log::info!(
                        "Worker (pid:{}) uses {} MiB, above --max-worker-memory ({} MiB): \
                         recycling it, its replacement boots first",
                        w.pid,
                        mib(w.rss),
                        mib(max)
                    );
                    Reason::Memory
                }
                (_, Some(life)) if w.born.elapsed() > life => {
                    log::info!(
                        "Worker (pid:{}) has run {}s, past --max-worker-lifetime: recycling \
                         it, its replacement boots first",
                        w.pid,
                        w.born.elapsed().as_secs()
                    );
                    Reason::Lifetime
                }
                _ => continue,
            };
            w.recycle = Some((reason, Instant::now()));
            self.recycled[reason.index()] += 1;
            recycling += 1;
        }
        if recycling == 0 {
            return;
        }
        let fresh_ready = self
            .workers
            .iter()
            .filter(|w| {
                w.generation == self.generation
                    && w.stopping.is_none()
                    && w.recycle.is_none()
                    && w.heartbeat.is_ready()
            })
            .count();
        let replaced = fresh_ready >= self.config.workers;
        // A replacement that cannot get ready does not keep the old worker forever.
        let patience = self.config.timeout.max(Duration::from_secs(30));
        for w in &mut self.workers {
            let Some((_, since)) = w.recycle else {
                continue;
            };
            if w.stopping.is_some() {
                continue;
            }
            if !replaced && since.elapsed() < patience {
                continue;
            }
            if !replaced {
                log::warn!(
                    "Worker (pid:{}): no replacement ready after {}s; stopping it anyway",
                    w.pid,
                    patience.as_secs()
                );
            }
            let _ = kill(w.pid, Signal::SIGTERM);
            w.stopping = Some(Instant::now());
        }
    }
}

/// The control socket (`ferrocorn ctl`).
impl<S: Spawn> Master<S> {
    fn serve_control(&mut self) {
        if let Some((path, mode, at)) = self.control_retry.take() {
            if at.elapsed() < Duration::from_secs(1) {
                self.control_retry = Some((path, mode, at));
            } else {
                match ControlSocket::bind(&path, mode) {
                    Ok(socket) => {
                        log::info!("Control socket at: {}", path.display());
                        self.control = Some(socket);
                    }
                    Err(ControlError::InUse { .. }) => {
                        self.control_retry = Some((path, mode, Instant::now()));
                    }
                    Err(e) => log::error!("{e}; running without one"),
                }
            }
        }
        let Some(mut control) = self.control.take() else {
            return;
        };
        control.serve(|cmd| self.control_command(cmd));
        self.control = Some(control);
    }

    fn control_command(&mut self, cmd: Command) -> Result<Value, String> {
        log::debug!("control socket: {cmd:?}");
        match cmd {
            Command::ShowWorkers => Ok(self.show_workers()),
            Command::ShowStats => Ok(self.show_stats()),
            Command::ShowConfig => Ok(self.spawner.settings_json()),
            Command::WorkerAdd(n) => {
                let previous = self.config.workers;
                self.add_workers(n);
                Ok(json!({"previous": previous, "workers": self.config.workers}))
            }
            Command::WorkerRemove(n) => {
                let previous = self.config.workers;
                self.remove_workers(n);
                Ok(json!({"previous": previous, "workers": self.config.workers}))
            }
            Command::WorkerKill(pid) => {
                let Some(w) = self.workers.iter_mut().find(|w| w.pid.as_raw() == pid) else {
                    return Err(format!("no worker with pid {pid}"));
                };
                if w.stopping.is_some() {
                    return Err(format!("worker {pid} is already stopping"));
                }
                log::info!("Stopping worker (pid:{pid}) as asked on the control socket");
                kill(w.pid, Signal::SIGTERM).map_err(|e| format!("cannot signal {pid}: {e}"))?;
                w.stopping = Some(Instant::now());
                Ok(json!({"killed": pid}))
            }
            Command::Reload => {
                if matches!(self.mode, Mode::Stopping { .. }) {
                    return Err("the server is shutting down".into());
                }
                log::info!("Reload asked on the control socket");
                self.reload();
                Ok(json!({"status": "reloading"}))
            }
            Command::Shutdown { graceful } => {
                log::info!(
                    "Shutdown ({}) asked on the control socket",
                    if graceful { "graceful" } else { "quick" }
                );
                self.stop(graceful);
                Ok(json!({"status": "shutting down", "graceful": graceful}))
            }
            Command::Help => Ok(json!({"commands": control::USAGE})),
        }
    }

    fn worker_state(&self, w: &Worker) -> String {
        if w.aborted.is_some() {
            "timed out".into()
        } else if w.stopping.is_some() {
            "stopping".into()
        } else if let Some((reason, _)) = w.recycle {
            format!("recycling ({})", reason.label())
        } else if !w.heartbeat.is_ready() {
            "booting".into()
        } else if w.generation != self.generation {
            "old generation".into()
        } else {
            "ready".into()
        }
    }

    fn show_workers(&self) -> Value {
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|w| {
                json!({
                    "pid": w.pid.as_raw(),
                    "id": w.id,
                    "age": w.born.elapsed().as_secs_f64(),
                    "requests": w.heartbeat.served(),
                    "connections": w.heartbeat.open_connections(),
                    "busy_threads": w.heartbeat.busy_threads(),
                    "threads": self.config.threads,
                    "rss": recycle::rss_bytes(w.pid.as_raw()).unwrap_or(0),
                    "state": self.worker_state(w),
                })
            })
            .collect();
        json!({"workers": workers, "target": self.config.workers})
    }

    fn show_stats(&self) -> Value {
        let live: u64 = self.workers.iter().map(|w| w.heartbeat.served()).sum();
        let rss: u64 = self
            .workers
            .iter()
            .filter_map(|w| recycle::rss_bytes(w.pid.as_raw()))
            .sum();
        let recycled: serde_json::Map<String, Value> = Reason::ALL
            .iter()
            .map(|r| (r.label().to_owned(), json!(self.recycled[r.index()])))
            .collect();
        json!({
            "master_pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "state": match self.mode {
                Mode::Running => "running",
                Mode::Stopping { graceful: true, .. } => "stopping (graceful)",
                Mode::Stopping { graceful: false, .. } => "stopping",
            },
            "workers": self.workers.len(),
            "target_workers": self.config.workers,
            "threads_per_worker": self.config.threads,
            "requests": live + self.retired_served,
            "connections": self.workers.iter().map(|w| w.heartbeat.open_connections()).sum::<u64>(),
            "busy_threads": self.workers.iter().map(|w| w.heartbeat.busy_threads()).sum::<u64>(),
            "worker_exits": self.exits,
            "recycled": recycled,
            "workers_rss": rss,
            "master_rss": recycle::rss_bytes(std::process::id() as i32).unwrap_or(0),
            "generation": self.generation,
        })
    }
}
