//! The master process: binds nothing itself (the caller hands it the listeners), forks workers,
//! and runs one loop: wait for a signal or a second, handle queued signals, reap children, kill
//! hung workers, keep the worker count. No threads, no runtime.

pub mod heartbeat;
pub mod scrape;
pub mod shared;
pub mod signals;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::signal::*;

use self::heartbeat::{AcceptBoard, Heartbeat};
use self::scrape::ScrapeEndpoint;
use self::signals::SignalQueue;
use crate::observe::metrics::{Snapshot, Statsd};

/// Exit code of a worker that could not import the app (Gunicorn's APP_LOAD_ERROR).
pub const EXIT_APP_LOAD: i32 = 4;
/// Exit code of a worker that failed to boot for another reason (Gunicorn's WORKER_BOOT_ERROR).
pub const EXIT_WORKER_BOOT: i32 = 3;

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

    /// SIGHUP: re-read what can change before the new workers are forked; returns the new
    /// worker count when the configuration was read again.
    fn reload(&mut self) -> Option<usize> {
        None
    }

    /// A worker process ended (after it was reaped).
    fn child_exited(&mut self, _pid: Pid, _worker_id: u64) {}

    /// The target worker count changed (TTIN, TTOU, reload).
    fn workers_changed(&mut self, _new: usize, _old: usize) {}

    /// SIGUSR2: start a new master from the installed program, handing it the listening
    /// sockets; returns its pid.
    fn upgrade(&mut self) -> std::io::Result<Pid>;
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
        })
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
        sum.render(self.workers.len(), self.exits)
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
            let scrape_fd = self.scrape.as_ref().and_then(ScrapeEndpoint::fd);
            let mut pending = self.signals.wait(Duration::from_millis(500), scrape_fd);
            // Several HUPs at once (every worker's --reload watcher saw the same save) are one.
            let mut hup_seen = false;
            pending.retain(|&s| s != SIGHUP || !std::mem::replace(&mut hup_seen, true));
            for sig in pending {
                self.on_signal(sig);
            }
            self.reap();
            self.check_timeouts();
            self.retire_old_generation();
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
            SIGHUP => {
                if let Some(n) = self.spawner.reload() {
                    self.set_workers(n);
                }
                self.generation += 1;
                log::info!("Reloading: starting {} new worker(s)", self.config.workers);
            }
            SIGTTIN => {
                self.set_workers(self.config.workers + 1);
                log::info!("Increasing workers to {}", self.config.workers);
            }
            SIGTTOU => {
                self.set_workers(self.config.workers.saturating_sub(1).max(1));
                log::info!("Decreasing workers to {}", self.config.workers);
            }
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
                crate::log::reopen();
                for w in &self.workers {
                    let _ = kill(w.pid, Signal::SIGUSR1);
                }
            }
            _ => {}
        }
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
        let current: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                self.workers[i].generation == self.generation && self.workers[i].stopping.is_none()
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
                    });
                }
                Err(e) => {
                    log::error!("cannot fork a worker: {e}");
                    return;
                }
            }
        }
    }

    /// After a reload, stop the previous generation once every new worker is ready (or gone).
    fn retire_old_generation(&mut self) {
        // Every worker of the current generation must be up, and as many as configured (the
        // generation may not even be forked yet when a HUP has just arrived).
        let current = self
            .workers
            .iter()
            .filter(|w| w.generation == self.generation && w.stopping.is_none());
        let (count, ready) =
            current.fold((0, true), |(n, r), w| (n + 1, r && w.heartbeat.is_ready()));
        if !ready || count < self.config.workers {
            return;
        }
        for w in &mut self.workers {
            if w.generation < self.generation && w.stopping.is_none() {
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

    /// Gives up on the workers of `failed` and makes `previous` the current generation again.
    fn abandon_generation(&mut self, failed: u64, previous: u64) {
        for w in &mut self.workers {
            if w.generation >= failed && w.stopping.is_none() {
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
