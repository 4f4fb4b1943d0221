//! The echo load: every connection sends a message, waits for the same message back, and
//! sends the next; the round trips completed in the measured window give messages/s, their
//! durations the percentiles.

use std::time::Duration;

use clap::Args;
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use crate::connect::{open, Target, Ws};
use crate::error::Error;
use crate::stats::percentile_ms;

#[derive(Args)]
pub struct EchoArgs {
    /// ws://127.0.0.1:PORT/PATH
    url: String,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Binary messages (default: text, as JSON-speaking apps send).
    #[arg(long)]
    binary: bool,
    /// Seconds of load before the measured window (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Longest wait for a handshake or an echo, in seconds: past it the connection counts as
    /// an error and stops.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// What one connection did in the window.
#[derive(Default)]
struct ConnReport {
    messages: u64,
    rtts_us: Vec<u32>,
    error: Option<String>,
}

pub async fn run(args: EchoArgs) -> Result<(), Error> {
    let target = Target::parse(&args.url)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let opened = join_all((0..args.conns).map(|_| open(&target, timeout))).await;
    let mut conns = Vec::with_capacity(args.conns);
    let mut connect_errors = 0;
    let mut first_error = None;
    for attempt in opened {
        match attempt {
            Ok(ws) => conns.push(ws),
            Err(e) => {
                connect_errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if conns.is_empty() {
        return Err(Error::NoConnection {
            url: target.url,
            errors: connect_errors,
            first: first_error.unwrap_or_default(),
        });
    }

    let payload = Payload::new(args.size, args.binary);
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let reports = join_all(
        conns
            .into_iter()
            .map(|ws| echo(ws, &payload, start, end, timeout)),
    )
    .await;

    let messages: u64 = reports.iter().map(|r| r.messages).sum();
    let errors = connect_errors + reports.iter().filter(|r| r.error.is_some()).count();
    let first_error = first_error.or_else(|| reports.iter().find_map(|r| r.error.clone()));
    let mut rtts: Vec<u32> = reports.into_iter().flat_map(|r| r.rtts_us).collect();
    rtts.sort_unstable();
    let rate = messages as f64 / args.duration;
    println!(
        "{{\"messages_per_s\": {rate:.1}, \"messages\": {messages}, \"p50_ms\": {:.3}, \
         \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"errors\": {errors}, \
         \"first_error\": {:?}}}",
        percentile_ms(&rtts, 0.5),
        percentile_ms(&rtts, 0.9),
        percentile_ms(&rtts, 0.99),
        percentile_ms(&rtts, 1.0),
        first_error.unwrap_or_default(),
    );
    Ok(())
}

/// The message every connection sends: cheap to clone (reference-counted bytes).
enum Payload {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Payload {
    fn new(size: usize, binary: bool) -> Self {
        let bytes: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        if binary {
            Payload::Binary(Bytes::from(bytes.into_bytes()))
        } else {
            Payload::Text(Utf8Bytes::from(bytes))
        }
    }

    fn message(&self) -> Message {
        match self {
            Payload::Text(t) => Message::Text(t.clone()),
            Payload::Binary(b) => Message::Binary(b.clone()),
        }
    }

    fn is_echo(&self, reply: &Message) -> bool {
        match (self, reply) {
            (Payload::Text(sent), Message::Text(got)) => sent == got,
            (Payload::Binary(sent), Message::Binary(got)) => sent == got,
            _ => false,
        }
    }
}

/// One connection's loop until `end`; round trips that finish in `start..end` are counted.
async fn echo(
    mut ws: Ws,
    payload: &Payload,
    start: Instant,
    end: Instant,
    timeout: Duration,
) -> ConnReport {
    let mut report = ConnReport::default();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        if let Err(e) = ws.send(payload.message()).await {
            report.error = Some(format!("send: {e}"));
            return report;
        }
        let reply = loop {
            match tokio::time::timeout(timeout, ws.next()).await {
                Err(_) => break Err(format!("no echo within {timeout:?}")),
                Ok(None) => break Err("connection closed by the server".to_owned()),
                Ok(Some(Err(e))) => break Err(format!("receive: {e}")),
                // Pings are answered by the read itself; wait on for the echo.
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(m))) => break Ok(m),
            }
        };
        match reply {
            Ok(m) if payload.is_echo(&m) => {}
            Ok(m) => {
                report.error = Some(format!("not the message sent: {} bytes", m.len()));
                return report;
            }
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        }
        let done = Instant::now();
        if done >= start && done < end {
            report.messages += 1;
            let us = done.duration_since(sent).as_micros();
            report.rtts_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
    // A clean close, bounded: the server's answer is not waited for long.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    report
}
