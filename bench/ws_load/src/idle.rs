//! Idle connections: open N, report, hold them until standard input closes (each line read
//! from it meanwhile is answered with how many are still open).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::connect::{open, Target, Ws};
use crate::error::Error;

#[derive(Args)]
pub struct IdleArgs {
    /// ws://127.0.0.1:PORT/PATH
    url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Longest time spent opening them, in seconds: those not open by then are not opened.
    #[arg(long, default_value_t = 120.0)]
    open_max: f64,
    /// Longest hold, in seconds, if standard input stays open.
    #[arg(long, default_value_t = 300.0)]
    hold_max: f64,
    /// Longest wait for one handshake, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

pub async fn run(args: IdleArgs) -> Result<(), Error> {
    let target = Target::parse(&args.url)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let started = Instant::now();
    let open_until = started + Duration::from_secs_f64(args.open_max);
    let live = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));

    let attempts = futures_util::stream::iter(0..args.conns)
        .take_while(|_| std::future::ready(Instant::now() < open_until))
        .map(|_| open(&target, timeout))
        .buffer_unordered(args.concurrency.max(1));
    tokio::pin!(attempts);
    let (mut opened, mut errors, mut first_error) = (0usize, 0usize, None);
    while let Some(attempt) = attempts.next().await {
        match attempt {
            Ok(ws) => {
                opened += 1;
                live.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(hold(ws, Arc::clone(&live), Arc::clone(&lost)));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if opened == 0 {
        return Err(Error::NoConnection {
            url: target.url.clone(),
            errors,
            first: first_error.unwrap_or_default(),
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    report(format!(
        "{{\"opened\": {opened}, \"errors\": {errors}, \"open_seconds\": {seconds:.3}, \
         \"first_error\": {:?}}}",
        first_error.unwrap_or_default()
    ))?;

    // Held until bench/run.py closes our standard input (it reads the server's memory
    // meanwhile); each line it writes asks how many are still open.
    let status = || {
        format!(
            "{{\"still_open\": {}, \"closed_by_server\": {}}}",
            live.load(Ordering::Relaxed),
            lost.load(Ordering::Relaxed)
        )
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let hold_until = Instant::now() + Duration::from_secs_f64(args.hold_max);
    while let Ok(Ok(Some(_))) = tokio::time::timeout_at(hold_until, lines.next_line()).await {
        report(status())?;
    }
    report(status())
}

fn report(line: String) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Error::Report)
}

/// Reads until the server closes (answering its pings on the way); nothing is sent.
async fn hold(mut ws: Ws, live: Arc<AtomicUsize>, lost: Arc<AtomicUsize>) {
    while let Some(Ok(_)) = ws.next().await {}
    live.fetch_sub(1, Ordering::Relaxed);
    lost.fetch_add(1, Ordering::Relaxed);
}
