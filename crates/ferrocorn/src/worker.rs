//! A worker: one tokio runtime doing all socket I/O, and a pool of app threads fed through a
//! bounded queue. Stops gracefully on SIGTERM (no new connections, in-flight requests finish,
//! bounded by the graceful timeout), quickly on SIGINT/SIGQUIT, and by itself after
//! `--max-requests` or when its master is gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use crate::addr::{Local, Peer};
use crate::app::{App, Jobs, ThreadSlot};
use crate::app_threads::AppThreads;
use crate::batch::Batch;
use crate::bind::BoundListener;
use crate::clock::monotonic_ms;
use crate::connection::ctx::ConnConfig;
use crate::connection::ctx::ConnCtx;
use crate::connection::serve;
use crate::inline::InlinePolicy;
use crate::master::heartbeat::BeatHandle;
use crate::net::Listener;
use crate::net::Stream;
use crate::reclaim::{Phase, Reclaimer};
use crate::stopping::Stopping;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub threads: usize,
    /// Fast routes may run on the I/O thread (see [`crate::inline`]).
    pub inline: bool,
    pub conn: ConnConfig,
    /// `--access-logfile` (`-` for stdout) and how lines look; opened by the worker itself.
    pub access_log: Option<(String, crate::observe::accesslog::Style)>,
    /// Without an access log file: where access lines go instead (Python's `logging`).
    pub access_sink: Option<AccessSink>,
    pub graceful_timeout: Duration,
    /// An app call running longer than this stops the heartbeat (`--timeout`; zero: never).
    pub timeout: Duration,
    /// Retire after this many requests (zero: never).
    pub max_requests: u64,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Requests that may wait for an app thread before 503 (zero: they wait).
    pub max_pending: usize,
    /// The heartbeat shared with the master, when there is one.
    pub heartbeat: Option<BeatHandle>,
    /// Count requests in the heartbeat page for the master's `--metrics-bind`.
    pub metrics: bool,
    /// `--statsd-host` and `--statsd-prefix`.
    pub statsd: Option<(String, String)>,
    /// Other workers accept from the same listening sockets: one holding more than its share of
    /// the connections leaves new ones to them first (see [`AcceptPacing`]).
    pub share_accepts: bool,
    /// The master's pid: the worker stops when its parent is no longer that process.
    pub master_pid: Option<u32>,
    /// Set by a stop signal that arrived while the worker was still booting (see
    /// [`early_stop_flag`]).
    pub early_stop: Option<Arc<AtomicUsize>>,
}

/// An access line sink and the line style, for [`WorkerConfig::access_sink`].
#[derive(Clone)]
pub struct AccessSink(
    pub crate::observe::accesslog::LineSink,
    pub crate::observe::accesslog::Style,
);

impl std::fmt::Debug for AccessSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessSink")
    }
}

/// The depth of an event loop's queue of new exchanges (see [`run`]).
const REMOTE_QUEUE: usize = 1024;

/// [`early_stop_flag`]'s value after a TERM.
const EARLY_GRACEFUL: usize = 1;
/// [`early_stop_flag`]'s value after an INT or QUIT.
const EARLY_QUICK: usize = 2;

/// Records TERM (graceful) and INT/QUIT (quick) from the moment it is called (right after the
/// fork) until the worker installs its own handlers, so a stop sent while the app is still
/// importing is not lost, nor its kind.
pub fn early_stop_flag() -> std::io::Result<Arc<AtomicUsize>> {
    let flag = Arc::new(AtomicUsize::new(0));
    signal_hook::flag::register_usize(libc::SIGTERM, Arc::clone(&flag), EARLY_GRACEFUL)?;
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        signal_hook::flag::register_usize(sig, Arc::clone(&flag), EARLY_QUICK)?;
    }
    Ok(flag)
}

/// How the worker ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    /// Some app threads were still busy when the worker gave up waiting for them.
    pub threads_busy: bool,
    /// Stopped by SIGINT or SIGQUIT rather than gracefully.
    pub quick: bool,
}

/// Why the worker stops.
enum Stop {
    Graceful,
    Quick,
}

/// Serves `listeners` until told to stop, then returns. `on_ready` runs once the worker accepts
/// connections and handles its stop signals.
pub fn run(
    listeners: Vec<BoundListener>,
    app: Arc<dyn App>,
    config: WorkerConfig,
    on_ready: impl FnOnce(),
) -> std::io::Result<Exit> {
    let nthreads = config.threads.max(1);
    raise_fd_limit();
    let mut config = config;
    if let Some((path, style)) = config.access_log.clone() {
        let log = crate::observe::accesslog::AccessLog::open(&path, style).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot open access log {path}: {e}"))
        })?;
        config.conn.access_log = Some(log);
    } else if let Some(AccessSink(sink, style)) = config.access_sink.clone() {
        config.conn.access_log = Some(crate::observe::accesslog::AccessLog::to_sink(sink, style)?);
    }
    if config.metrics {
        config.conn.metrics.counters = config.heartbeat.map(|hb| hb.counters());
    }
    if let Some((host, prefix)) = &config.statsd {
        let statsd = crate::observe::metrics::Statsd::connect(host, prefix).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot reach statsd at {host}: {e}"))
        })?;
        config.conn.metrics.statsd = Some(Arc::new(statsd));
    }
    // Room for a few requests per app thread: the I/O thread rarely waits for space (a wait costs
    // a wake-up), while the queue stays bounded (backpressure: bodies are not read ahead).
    // An event loop (`App::remote`) takes whole batches at a time and holds its exchanges
    // itself: its queue only has to cover the moments between two of its looks.
    let remote = app.remote();
    let depth = if remote.is_some() {
        REMOTE_QUEUE
    } else {
        nthreads.saturating_mul(4)
    };
    let (jobs_tx, jobs_rx) = crate::jobs::queue(depth.max(config.max_pending));
    let slots: Vec<Arc<ThreadSlot>> = (0..nthreads).map(|_| Arc::default()).collect();
    let thread_slots = match (&remote, slots.first()) {
        (Some(_), Some(slot)) => {
            // The loop's slot is watched like an app thread's (see `Jobs::alive`).
            let starting = Arc::new(AtomicUsize::new(1));
            app.take_queue(Jobs::new(jobs_rx.clone(), Arc::clone(slot), starting));
            Vec::new()
        }
        _ => slots.clone(),
    };
    let threads = Arc::new(AppThreads::new(Arc::clone(&app), jobs_rx, thread_slots));

    // Inline calls keep the GIL from one to the next while requests keep coming; it is let go
    // before the thread waits for events (and so whenever it would otherwise idle holding it).
    let parking = Arc::clone(&app);
    let stopped = Arc::clone(&app);
    let batch = Arc::new(Batch::default());
    let run_over = Arc::clone(&batch);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(move || {
            run_over.parked();
            parking.release_inline();
            // Out of ready work: let whatever else wants this CPU (often the very clients
            // about to send the next requests) run first, then look for events. Under load
            // that finds them ready and the worker does not sleep and get woken again
            // (hello, two workers: 0.28 -> 0.03 context switches per request, +10-13% req/s).
            // Idle, it costs one syscall before the worker sleeps anyway.
            std::thread::yield_now();
        })
        .build()?;
    let graceful = config.graceful_timeout;
    let pool = Arc::clone(&threads);
    let stop = runtime.block_on(async move {
        let retire = Arc::new(Notify::new());
        let max_connections = config.max_connections.max(1);
        let ctx = Arc::new(ConnCtx {
            reclaim: Reclaimer::new(max_connections, config.conn.head_timeout),
            config: config.conn.clone(),
            app: Arc::clone(&app),
            inline: InlinePolicy::new(config.inline && remote.is_none()),
            jobs: jobs_tx,
            threads: pool,
            stopping: Stopping::default(),
            served: Default::default(),
            max_requests: config.max_requests,
            retire: Arc::clone(&retire),
            max_pending: config.max_pending,
            batch,
            remote: remote.clone(),
        });
        if let Some(remote) = &remote {
            tokio::spawn(Arc::clone(&remote.courier).run(Arc::clone(&remote.notify)));
        }
        let permits = Arc::new(Semaphore::new(max_connections));
        // With a heartbeat there is always a pacing, if only to count connections for the
        // master (`ferrocorn ctl show workers`); it paces only when workers share accepts.
        let pacing = config.heartbeat.map(|hb| AcceptPacing {
            paces: config.share_accepts,
            max_connections,
            // An event loop is not busy at one connection a thread, as app threads are: only
            // the even-shares rule applies to it.
            busy_at: if remote.is_some() {
                max_connections
            } else {
                nthreads
            },
            heartbeat: hb,
        });
        // Every connection task holds a clone of `alive`; when all are dropped, `idle` ends.
        let (alive, mut idle) = mpsc::channel::<()>(1);
        for listener in listeners {
            let listener = into_tokio(listener)?;
            tokio::spawn(accept_loop(
                listener,
                Arc::clone(&ctx),
                Arc::clone(&permits),
                pacing,
                alive.clone(),
            ));
        }
        drop(alive);
        let mut signals = StopSignals::new()?;
        let master_gone = Arc::new(Notify::new());
        tokio::spawn(heartbeat_loop(
            config.clone(),
            slots,
            Arc::clone(&master_gone),
            Arc::downgrade(&ctx),
        ));
        on_ready();
        if let Some(hb) = config.heartbeat {
            hb.set_ready();
            hb.set_accepting(config.share_accepts);
        }
        let early = config
            .early_stop
            .as_ref()
            .map_or(0, |f| f.load(Ordering::SeqCst));
        let stop = tokio::select! {
            _ = std::future::ready(()), if early == EARLY_GRACEFUL => Stop::Graceful,
            _ = std::future::ready(()), if early == EARLY_QUICK => Stop::Quick,
            s = signals.wait() => s,
            _ = retire.notified() => {
                log::info!("Autorestarting worker after {} requests", config.max_requests);
                Stop::Graceful
            }
            _ = master_gone.notified() => {
                log::warn!("Master is gone: stopping this worker");
                Stop::Graceful
            }
        };
        ctx.stopping.begin();
        if let Some(hb) = config.heartbeat {
            hb.set_accepting(false);
        }
        drop(ctx);
        let limit = match stop {
            Stop::Graceful => graceful,
            Stop::Quick => Duration::ZERO,
        };
        let finished = tokio::select! {
            r = tokio::time::timeout(limit, idle.recv()) => r.is_ok(),
            // A quick stop (INT/QUIT) during a graceful one ends it now. Another TERM does not:
            // systemd and `kill -- -PGID` send it to the master and the worker alike.
            _ = signals.wait_quick() => false,
        };
        if !finished && !limit.is_zero() {
            log::warn!(
                "Graceful timeout ({}s) reached: closing the remaining connections",
                limit.as_secs()
            );
        }
        Ok::<Stop, std::io::Error>(stop)
    })?;
    drop(runtime);
    stopped.release_inline();
    // The job queue's sender went with the connections: idle app threads see its end.
    let wait = match stop {
        Stop::Graceful => Duration::from_secs(1),
        Stop::Quick => Duration::from_millis(100),
    };
    Ok(Exit {
        threads_busy: threads.join(wait),
        quick: matches!(stop, Stop::Quick),
    })
}

/// Beats while no app call has run past the timeout; reports the hung request once; notices
/// when the master is gone.
async fn heartbeat_loop(
    config: WorkerConfig,
    slots: Vec<Arc<ThreadSlot>>,
    master_gone: Arc<Notify>,
    ctx: std::sync::Weak<ConnCtx>,
) {
    let timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
    let period = if config.timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        (config.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    };
    let mut reported = false;
    loop {
        tokio::time::sleep(period).await;
        if let Some(pid) = config.master_pid {
            if std::os::unix::process::parent_id() != pid {
                master_gone.notify_one();
            }
        }
        let now = monotonic_ms();
        if let (Some(hb), Some(ctx)) = (config.heartbeat, ctx.upgrade()) {
            // Weak: the connection context (and with it the app threads' job queue) must go
            // when the worker stops, whatever this loop holds.
            let busy = slots
                .iter()
                .filter(|s| s.busy_since.load(Ordering::Relaxed) != 0)
                .count();
            hb.report(ctx.served.load(Ordering::Relaxed), busy as u64);
        }
        let hung = (timeout_ms > 0)
            .then(|| {
                slots.iter().find(|s| {
                    let since = s.busy_since.load(Ordering::Relaxed);
                    since != 0 && now.saturating_sub(since) > timeout_ms && !s.holds_connection()
                })
            })
            .flatten();
        match hung {
            Some(slot) => {
                if !reported {
                    reported = true;
                    let request = slot
                        .request
                        .lock()
                        .map(|r| r.text.clone())
                        .unwrap_or_default();
                    log::error!(
                        "Request \"{request}\" has run for more than {}s (--timeout): the worker will be stopped",
                        config.timeout.as_secs()
                    );
                }
            }
            None => {
                if let Some(hb) = config.heartbeat {
                    hb.beat();
                }
            }
        }
    }
}

fn into_tokio(l: BoundListener) -> std::io::Result<Listener> {
    Ok(match l {
        BoundListener::Tcp(l) => {
            l.set_nonblocking(true)?;
            Listener::Tcp(tokio::net::TcpListener::from_std(l)?)
        }
        BoundListener::Unix(l, path) => {
            l.set_nonblocking(true)?;
            Listener::Unix(tokio::net::UnixListener::from_std(l)?, path)
        }
    })
}

/// Spreads connections over workers that share a listening socket. Every worker's accept is
/// woken by the same new connections, and the one that wins the race takes them: a burst of
/// 100 connections was seen split 76 / 30 between two workers of 64 threads, leaving 12
/// requests of a blocking app waiting a whole extra request time, and 64 connections of a
/// Flask app all went to one worker in half the runs (half the requests per second). Each
/// worker counts its connections on a board in the memory shared with the master; one holding
/// more than its share (see [`AcceptPacing::should_yield`]) stops waiting in accept and looks
/// every [`ACCEPT_PAUSE`], so a less loaded worker takes the new connections first, and takes
/// one itself only when a connection has waited [`MAX_PAUSES`] looks (the others may be unable
/// to). Workers holding near-even shares never pause.
#[derive(Debug, Clone, Copy)]
struct AcceptPacing {
    /// Other workers accept from the same sockets (without, this only counts connections).
    paces: bool,
    max_connections: usize,
    busy_at: usize,
    /// Where this worker counts its connections on the board.
    heartbeat: BeatHandle,
}

impl AcceptPacing {
    /// The slacks keep workers holding near-even shares of many idle connections from taking
    /// turns at pausing (each turn could delay a new connection by up to a pause).
    fn should_yield(&self, open: usize) -> bool {
        if !self.paces {
            return false;
        }
        // Past one connection per app thread, a blocking app's requests would wait for a
        // thread here while another worker has threads free: yield early.
        let board = self.heartbeat.board();
        (open >= self.busy_at && board.above_share(open, self.busy_at / 16))
            // Otherwise keep shares roughly even: a fast app runs on each worker's I/O thread,
            // and all connections on one worker left the other's CPU idle (half the speed).
            || board.above_share(open, even_slack(board.average()))
    }
}

/// How far above the `average` a worker's connection count may go before it yields: an
/// eighth of it, at least one. (A fixed 8 let one worker take all 16 connections of a
/// 16-connection load while the other sat idle: a fast app's requests run on the I/O thread,
/// so that halved the speed in some runs and not others.)
fn even_slack(average: usize) -> usize {
    (average / 8).max(1)
}

const ACCEPT_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSES: u32 = 20;

async fn accept_loop(
    listener: Listener,
    ctx: Arc<ConnCtx>,
    permits: Arc<Semaphore>,
    pacing: Option<AcceptPacing>,
    alive: mpsc::Sender<()>,
) {
    let mut pauses = 0u32;
    loop {
        if let Some(p) = pacing {
            let open = p.max_connections - permits.available_permits();
            if p.should_yield(open) {
                // Not waiting in accept: the others get the new connections while this one
                // looks every millisecond, taking one only when it has waited too long.
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_PAUSE) => {}
                    _ = ctx.stopping.wait() => return,
                }
                if !listener.has_pending() {
                    pauses = 0;
                    continue;
                }
                pauses += 1;
                if pauses < MAX_PAUSES {
                    continue;
                }
                log::debug!("accept: taking a connection the other workers left waiting");
            }
        }
        pauses = 0;
        let spawn = |(stream, peer, local), permit| {
            spawn_conn(stream, peer, local, permit, &ctx, pacing, &alive);
        };
        // `--worker-connections`: at the cap, a client that connects makes room for itself by
        // closing an idle connection (`crate::reclaim`); until one ends it waits here, and the
        // clients after it wait in the kernel's listen backlog.
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let event = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => match p {
                        Ok(p) => AtCap::Freed(p),
                        Err(_) => return,
                    },
                    r = listener.accept() => AtCap::Waiting(r),
                    _ = ctx.stopping.wait() => return,
                };
                match event {
                    AtCap::Freed(permit) => permit,
                    AtCap::Waiting(Ok(conn)) => {
                        let Some(permit) = make_room(&ctx, &permits).await else {
                            return;
                        };
                        spawn(conn, permit);
                        continue;
                    }
                    AtCap::Waiting(Err(e)) => {
                        accept_failed(e).await;
                        continue;
                    }
                }
            }
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = ctx.stopping.wait() => return,
        };
        match accepted {
            Ok(conn) => spawn(conn, permit),
            Err(e) => accept_failed(e).await,
        }
    }
}

/// What ended an accept loop's wait at the connection cap.
enum AtCap {
    /// A connection ended: its slot is free.
    Freed(OwnedSemaphorePermit),
    /// A new client connected while every slot was held.
    Waiting(std::io::Result<(Stream, Peer, Local)>),
}

/// How often a client waiting at the cap looks again for a connection to reclaim, when the
/// last look found every connection busy with a request.
const RECLAIM_RETRY: Duration = Duration::from_millis(20);

/// Frees a slot for a client that connected at the cap: closes idle (or slow) connections
/// until one ends. `None` when the worker stops first.
async fn make_room(ctx: &ConnCtx, permits: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Some(phase) = ctx.reclaim.reclaim_one() {
            log::debug!(
                "--worker-connections reached: closed {} to admit a new client",
                match phase {
                    Phase::Idle => "the longest-idle keep-alive connection",
                    _ => "a slow client's unfinished request head",
                }
            );
            if let Some(c) = ctx.config.metrics.counters {
                c.reclaimed();
            }
        }
        tokio::select! {
            p = Arc::clone(permits).acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(RECLAIM_RETRY) => {}
            _ = ctx.stopping.wait() => return None,
        }
    }
}

fn spawn_conn(
    stream: Stream,
    peer: Peer,
    local: Local,
    permit: OwnedSemaphorePermit,
    ctx: &Arc<ConnCtx>,
    pacing: Option<AcceptPacing>,
    alive: &mpsc::Sender<()>,
) {
    let ctx = Arc::clone(ctx);
    let guard = alive.clone();
    let counted = pacing.map(|p| p.heartbeat);
    if let Some(hb) = counted {
        hb.connections(1);
    }
    tokio::spawn(async move {
        // The connection's future is boxed, so that a WebSocket it opened can run on without
        // it: an HTTP exchange's states make most of its size, which an open WebSocket would
        // otherwise hold for its whole session (`Conn::into_websocket`).
        let mut conn = Box::pin(serve(stream, peer, local, ctx));
        let parked = conn.as_mut().await;
        drop(conn);
        if let Some(websocket) = parked {
            websocket.await;
        }
        if let Some(hb) = counted {
            hb.connections(-1);
        }
        drop(permit);
        drop(guard);
    });
}

/// EMFILE and friends: back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    log::error!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Lifts the soft limit on open files to the hard limit: each connection is a descriptor.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The signals a worker acts on, registered before it reports ready. USR1 and HUP are taken
/// so that their default action (terminate) never applies; log reopening has no files yet.
struct StopSignals {
    term: Signal,
    int: Signal,
    quit: Signal,
    usr1: Signal,
    hup: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for a quick-stop signal, ignoring further TERMs.
    async fn wait_quick(&mut self) {
        while let Stop::Graceful = self.wait().await {}
    }

    async fn wait(&mut self) -> Stop {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Stop::Graceful,
                _ = self.int.recv() => return Stop::Quick,
                _ = self.quit.recv() => return Stop::Quick,
                _ = self.usr1.recv() => {
                    crate::error_log::reopen();
                    crate::observe::accesslog::reopen();
                }
                _ = self.hup.recv() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_slack_keeps_small_loads_split() {
        // 16 connections over two workers: one holding 10 while the other holds 6 yields.
        let average = 8;
        assert_eq!(even_slack(average), 1);
        assert!(10 > average + even_slack(average));
        assert_eq!(even_slack(0), 1, "the first connections are spread too");
        // Thousands of idle connections: shares need only be roughly even.
        assert_eq!(even_slack(1000), 125);
    }
}
