//! The WebSocket load generator of `make bench` (bench/run.py's WebSocket rows).
//!
//! `ws_load echo`: N connections each send a message and wait for its echo, over and over
//! (one message in flight per connection); prints messages/s and round-trip percentiles.
//! `ws_load idle`: opens N connections and holds them, answering the server's pings, until
//! its standard input closes (or `--hold-max` passes); prints how many it opened.
//!
//! Each prints one JSON object per line on standard output, for bench/run.py to read.

mod connect;
mod echo;
mod error;
mod idle;
mod stats;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::Error;

#[derive(Parser)]
#[command(about = "WebSocket echo load and idle connections for bench/run.py")]
struct Cli {
    /// Runtime threads (1: one thread, as wrk -t1 is for the HTTP rows).
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Echo load: messages/s and round-trip latency percentiles.
    Echo(echo::EchoArgs),
    /// Open N connections and hold them until standard input closes.
    Idle(idle::IdleArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ws_load: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    }
    .enable_all()
    .build()
    .map_err(Error::Runtime)?;
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Echo(args) => echo::run(args).await,
            Mode::Idle(args) => idle::run(args).await,
        }
    });
    // Connections still open (idle mode) are dropped with the runtime: no close handshakes.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
