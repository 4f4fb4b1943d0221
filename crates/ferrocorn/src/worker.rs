//! A worker: one tokio runtime doing all socket I/O, and a pool of app threads fed through a
//! bounded queue. Stops gracefully on SIGTERM/SIGINT: no new connections, in-flight requests
//! finish, bounded by the graceful timeout.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::app::{App, Jobs};
use crate::bind::BoundListener;
use crate::http::conn::{serve, ConnCtx};
use crate::http::ConnConfig;
use crate::net::Listener;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub threads: usize,
    pub conn: ConnConfig,
    pub graceful_timeout: Duration,
}

/// How the worker ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every app thread finished.
    Clean,
    /// Some app threads were still busy when the graceful timeout ran out.
    ThreadsBusy,
}

/// Serves `listeners` until a stop signal, then returns.
/// `on_ready` runs once the worker accepts connections and handles stop signals.
pub fn run(
    listeners: Vec<BoundListener>,
    app: Arc<dyn App>,
    config: WorkerConfig,
    on_ready: impl FnOnce(),
) -> std::io::Result<Exit> {
    let (jobs_tx, jobs_rx) = async_channel::bounded(config.threads.max(1));
    let threads: Vec<JoinHandle<()>> = (0..config.threads.max(1))
        .map(|i| {
            let app = Arc::clone(&app);
            let jobs = Jobs(jobs_rx.clone());
            std::thread::Builder::new()
                .name(format!("ferrocorn-app-{i}"))
                .spawn(move || app.run_thread(jobs))
        })
        .collect::<Result<_, _>>()?;
    drop(jobs_rx);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let graceful = config.graceful_timeout;
    runtime.block_on(async move {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ctx = Arc::new(ConnCtx {
            config: config.conn.clone(),
            jobs: jobs_tx,
            shutdown: shutdown_rx.clone(),
        });
        // Every connection task holds a clone of `alive`; when all are dropped, `idle` ends.
        let (alive, mut idle) = mpsc::channel::<()>(1);
        for listener in listeners {
            let listener = into_tokio(listener)?;
            tokio::spawn(accept_loop(
                listener,
                Arc::clone(&ctx),
                alive.clone(),
                shutdown_rx.clone(),
            ));
        }
        drop(alive);
        let stop = StopSignals::new()?;
        on_ready();
        stop.wait().await;
        log::info!("Shutting down: stopping new connections, finishing in-flight requests");
        let _ = shutdown_tx.send(true);
        drop(ctx);
        if tokio::time::timeout(graceful, idle.recv()).await.is_err() {
            log::warn!(
                "Graceful timeout ({}s) reached: closing the remaining connections",
                graceful.as_secs()
            );
        }
        Ok::<(), std::io::Error>(())
    })?;
    drop(runtime);
    // The job queue's sender is gone with the connections: app threads see the end of it.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut exit = Exit::Clean;
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            exit = Exit::ThreadsBusy;
        }
    }
    Ok(exit)
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

async fn accept_loop(
    listener: Listener,
    ctx: Arc<ConnCtx>,
    alive: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer, local)) => {
                let ctx = Arc::clone(&ctx);
                let guard = alive.clone();
                tokio::spawn(async move {
                    serve(stream, peer, local, ctx).await;
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The signals that stop a worker, registered before it reports ready.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.quit.recv() => {}
        }
    }
}
