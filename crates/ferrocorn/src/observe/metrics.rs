//! Request metrics. Each worker counts its requests in the page it shares with the master (see
//! [`crate::master::heartbeat`]): a few relaxed atomic adds per request, no lock, no syscall.
//! The master sums the pages of its live workers and of those that exited, and serves the sum
//! as Prometheus text on `--metrics-bind`. With `--statsd-host`, each worker also sends one
//! datagram per request, with the names Gunicorn uses under a `ferrocorn.` stem.

use std::fmt::Write as _;
use std::net::{ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in microseconds (Prometheus `le`).
pub const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// One worker's counters. Zeroed memory is a valid, empty set (it lives in an anonymous
/// shared mapping).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    by_class: [AtomicU64; 5],
    /// Requests per latency bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    duration_us: AtomicU64,
    bytes: AtomicU64,
    in_flight: AtomicI64,
    /// TLS handshakes completed, and those that failed (timed out, refused, not TLS).
    tls_handshakes: AtomicU64,
    tls_handshake_failures: AtomicU64,
    /// Idle connections closed to admit new ones at `--worker-connections`.
    reclaimed: AtomicU64,
    /// HTTP/2: streams opened, RST_STREAMs sent and received, GOAWAYs sent.
    h2: [AtomicU64; 4],
    /// WebSockets: see [`WsEvent`].
    ws: [AtomicU64; 6],
}

/// A WebSocket event counted in [`Counters`].
#[derive(Debug, Clone, Copy)]
pub enum WsEvent {
    /// A WebSocket the server speaks opened (`crate::websocket`).
    Opened = 0,
    /// A WSGI app took its connection over (`crate::tunnel`).
    Tunnel = 1,
    /// Closed with 1002 for bad framing from the client.
    ProtocolError = 2,
    /// Closed with 1007 for text that is not UTF-8.
    InvalidData = 3,
    /// Closed with 1009 for a message over `--ws-max-size`.
    TooBig = 4,
    /// Closed with 1011 for a ping left unanswered past `--ws-ping-timeout`.
    PingTimeout = 5,
}

/// An HTTP/2 event counted in [`Counters`].
#[derive(Debug, Clone, Copy)]
pub enum H2Event {
    Stream = 0,
    ResetSent = 1,
    ResetReceived = 2,
    GoAway = 3,
}

impl Counters {
    /// A request head was read and is being answered.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The exchange that [`Self::begin`] announced ended: `status` is `None` when no response
    /// was started (the client went away first).
    pub fn end(&self, status: Option<u16>, took: Duration, bytes: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(status) = status else { return };
        self.by_class[class_index(status)].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_us.fetch_add(us, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// An idle connection was closed to admit a new one (see [`crate::reclaim`]).
    pub fn reclaimed(&self) {
        self.reclaimed.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP/2 stream, reset or GOAWAY (see [`H2Event`]).
    pub fn h2(&self, event: H2Event) {
        self.h2[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket event (see [`WsEvent`]).
    pub fn ws(&self, event: WsEvent) {
        self.ws[event as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// What a worker's connections report each request to; off (both `None`) by default.
#[derive(Debug, Clone, Default)]
pub struct RequestMetrics {
    /// The worker's counters in the page the master reads (`--metrics-bind`).
    pub counters: Option<&'static Counters>,
    /// `--statsd-host`.
    pub statsd: Option<Arc<Statsd>>,
}

impl RequestMetrics {
    /// A TLS handshake ended: completed (`ok`) or failed.
    pub fn handshake(&self, ok: bool) {
        if let Some(c) = self.counters {
            let n = if ok {
                &c.tls_handshakes
            } else {
                &c.tls_handshake_failures
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn is_on(&self) -> bool {
        self.counters.is_some() || self.statsd.is_some()
    }

    pub fn begin(&self) {
        if let Some(c) = self.counters {
            c.begin();
        }
    }

    /// See [`Counters::end`].
    pub fn end(&self, status: Option<u16>, took: Duration, bytes: u64) {
        if let Some(c) = self.counters {
            c.end(status, took, bytes);
        }
        if let (Some(s), Some(status)) = (&self.statsd, status) {
            s.request(status, took);
        }
    }
}

impl RequestMetrics {
    /// Counts a WebSocket event, when metrics are on.
    pub fn ws(&self, event: WsEvent) {
        if let Some(c) = self.counters {
            c.ws(event);
        }
    }

    /// Counts an HTTP/2 event, when metrics are on.
    pub fn h2(&self, event: H2Event) {
        if let Some(c) = self.counters {
            c.h2(event);
        }
    }
}

fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Plain numbers read from one or more [`Counters`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub by_class: [u64; 5],
    pub buckets: [u64; BUCKETS_US.len() + 1],
    pub duration_us: u64,
    pub bytes: u64,
    pub in_flight: i64,
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
    pub reclaimed: u64,
    /// See [`H2Event`].
    pub h2: [u64; 4],
    /// See [`WsEvent`].
    pub ws: [u64; 6],
}

impl Snapshot {
    /// Adds a worker's counters; `live` adds its requests in flight too (an exited worker's
    /// count is stale).
    pub fn add(&mut self, c: &Counters, live: bool) {
        for (sum, n) in self.by_class.iter_mut().zip(&c.by_class) {
            *sum += n.load(Ordering::Relaxed);
        }
        for (sum, n) in self.buckets.iter_mut().zip(&c.buckets) {
            *sum += n.load(Ordering::Relaxed);
        }
        self.duration_us += c.duration_us.load(Ordering::Relaxed);
        self.bytes += c.bytes.load(Ordering::Relaxed);
        self.tls_handshakes += c.tls_handshakes.load(Ordering::Relaxed);
        self.tls_handshake_failures += c.tls_handshake_failures.load(Ordering::Relaxed);
        self.reclaimed += c.reclaimed.load(Ordering::Relaxed);
        for (sum, n) in self.h2.iter_mut().zip(&c.h2) {
            *sum += n.load(Ordering::Relaxed);
        }
        for (sum, n) in self.ws.iter_mut().zip(&c.ws) {
            *sum += n.load(Ordering::Relaxed);
        }
        if live {
            self.in_flight += c.in_flight.load(Ordering::Relaxed).max(0);
        }
    }

    /// Requests answered.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// The Prometheus text exposition (format 0.0.4), with the master's own figures.
    pub fn render(&self, workers: usize, restarts: u64) -> String {
        let mut out = String::with_capacity(2048);
        metric(
            &mut out,
            "ferrocorn_requests_total",
            "counter",
            "Requests answered, by status class.",
        );
        for (i, n) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "ferrocorn_requests_total{{status=\"{}xx\"}} {n}",
                i + 1
            );
        }
        metric(
            &mut out,
            "ferrocorn_request_duration_seconds",
            "histogram",
            "Time from a request's head to the end of its response.",
        );
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += n;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "ferrocorn_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.requests();
        let _ = writeln!(
            out,
            "ferrocorn_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "ferrocorn_request_duration_seconds_sum {}",
            self.duration_us as f64 / 1e6
        );
        let _ = writeln!(out, "ferrocorn_request_duration_seconds_count {count}");
        metric(
            &mut out,
            "ferrocorn_response_bytes_total",
            "counter",
            "Response body bytes sent.",
        );
        let _ = writeln!(out, "ferrocorn_response_bytes_total {}", self.bytes);
        metric(
            &mut out,
            "ferrocorn_requests_in_flight",
            "gauge",
            "Requests being answered now.",
        );
        let _ = writeln!(out, "ferrocorn_requests_in_flight {}", self.in_flight);
        metric(
            &mut out,
            "ferrocorn_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
        );
        let _ = writeln!(
            out,
            "ferrocorn_tls_handshakes_total {}",
            self.tls_handshakes
        );
        metric(
            &mut out,
            "ferrocorn_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed: timed out, refused, or not TLS at all.",
        );
        let _ = writeln!(
            out,
            "ferrocorn_tls_handshake_failures_total {}",
            self.tls_handshake_failures
        );
        metric(
            &mut out,
            "ferrocorn_connections_reclaimed_total",
            "counter",
            "Idle keep-alive (or slow) connections closed to admit new ones at --worker-connections.",
        );
        let _ = writeln!(
            out,
            "ferrocorn_connections_reclaimed_total {}",
            self.reclaimed
        );
        for (name, help, n) in [
            (
                "ferrocorn_http2_streams_total",
                "HTTP/2 streams (requests) opened by clients.",
                self.h2[H2Event::Stream as usize],
            ),
            (
                "ferrocorn_http2_resets_sent_total",
                "HTTP/2 streams the server reset (RST_STREAM sent).",
                self.h2[H2Event::ResetSent as usize],
            ),
            (
                "ferrocorn_http2_resets_received_total",
                "HTTP/2 streams clients reset (RST_STREAM received).",
                self.h2[H2Event::ResetReceived as usize],
            ),
            (
                "ferrocorn_http2_goaways_sent_total",
                "HTTP/2 connections the server ended with GOAWAY.",
                self.h2[H2Event::GoAway as usize],
            ),
            (
                "ferrocorn_websockets_total",
                "WebSocket connections the server spoke the protocol on.",
                self.ws[WsEvent::Opened as usize],
            ),
            (
                "ferrocorn_websocket_tunnels_total",
                "WebSocket upgrades a WSGI app took over through gunicorn.socket.",
                self.ws[WsEvent::Tunnel as usize],
            ),
            (
                "ferrocorn_websocket_protocol_errors_total",
                "WebSockets closed with 1002 for bad framing from the client.",
                self.ws[WsEvent::ProtocolError as usize],
            ),
            (
                "ferrocorn_websocket_invalid_utf8_total",
                "WebSockets closed with 1007 for text that is not UTF-8.",
                self.ws[WsEvent::InvalidData as usize],
            ),
            (
                "ferrocorn_websocket_too_big_total",
                "WebSockets closed with 1009 for a message over --ws-max-size.",
                self.ws[WsEvent::TooBig as usize],
            ),
            (
                "ferrocorn_websocket_ping_timeouts_total",
                "WebSockets closed with 1011 for a ping left unanswered.",
                self.ws[WsEvent::PingTimeout as usize],
            ),
        ] {
            metric(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {n}");
        }
        metric(
            &mut out,
            "ferrocorn_workers",
            "gauge",
            "Worker processes running.",
        );
        let _ = writeln!(out, "ferrocorn_workers {workers}");
        metric(
            &mut out,
            "ferrocorn_worker_exits_total",
            "counter",
            "Worker processes that ended (restarts, reloads, timeouts, crashes).",
        );
        let _ = writeln!(out, "ferrocorn_worker_exits_total {restarts}");
        out
    }
}

/// The master's recycling figures, appended to [`Snapshot::render`]'s text: workers recycled by
/// reason (`memory`, `lifetime`) and the workers' resident memory now.
pub fn render_recycling(out: &mut String, recycled: &[(&str, u64)], workers_rss: u64) {
    metric(
        out,
        "ferrocorn_worker_recycles_total",
        "counter",
        "Workers restarted by --max-worker-memory or --max-worker-lifetime, by reason.",
    );
    for (reason, n) in recycled {
        let _ = writeln!(
            out,
            "ferrocorn_worker_recycles_total{{reason=\"{reason}\"}} {n}"
        );
    }
    metric(
        out,
        "ferrocorn_workers_memory_bytes",
        "gauge",
        "Resident memory of the worker processes, summed.",
    );
    let _ = writeln!(out, "ferrocorn_workers_memory_bytes {workers_rss}");
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A statsd client: fire-and-forget UDP datagrams to `--statsd-host`.
#[derive(Debug)]
pub struct Statsd {
    socket: UdpSocket,
    prefix: String,
}

impl Statsd {
    /// Resolves `host_port` once and connects a non-blocking UDP socket to it. `prefix` is put
    /// before every name, with a `.` added when it lacks one.
    pub fn connect(host_port: &str, prefix: &str) -> std::io::Result<Self> {
        let addr = host_port.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host_port} resolves to no address"),
            )
        })?;
        let local = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            prefix: normalise_prefix(prefix),
        })
    }

    /// One request: the request counter, its duration (a timer, in ms) and a counter for its
    /// status, in one datagram.
    pub fn request(&self, status: u16, took: Duration) {
        let p = &self.prefix;
        let ms = took.as_secs_f64() * 1000.0;
        let line = format!(
            "{p}ferrocorn.requests:1|c\n{p}ferrocorn.request.duration:{ms:.3}|ms\n\
             {p}ferrocorn.request.status.{status}:1|c"
        );
        self.send(&line);
    }

    /// A gauge, such as the master's worker count.
    pub fn gauge(&self, name: &str, value: u64) {
        self.send(&format!("{}ferrocorn.{name}:{value}|g", self.prefix));
    }

    fn send(&self, datagram: &str) {
        // Metrics never hold up a request: a full buffer or an absent server loses the datagram.
        let _ = self.socket.send(datagram.as_bytes());
    }
}

fn normalise_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        prefix.to_owned()
    } else {
        format!("{prefix}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_bucket() {
        let c = Counters::default();
        c.begin();
        c.end(Some(200), Duration::from_micros(300), 13);
        c.begin();
        c.end(Some(404), Duration::from_millis(3), 9);
        c.begin();
        c.end(Some(503), Duration::from_secs(20), 0);
        c.begin();
        c.end(None, Duration::from_millis(1), 0);
        c.begin();
        let mut s = Snapshot::default();
        s.add(&c, true);
        assert_eq!(s.by_class, [0, 1, 0, 1, 1]);
        assert_eq!(s.requests(), 3);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[3], 1);
        assert_eq!(s.buckets[BUCKETS_US.len()], 1);
        assert_eq!(s.bytes, 22);
        assert_eq!(s.in_flight, 1);
        let mut retired = Snapshot::default();
        retired.add(&c, false);
        assert_eq!(retired.in_flight, 0);
    }

    #[test]
    fn renders_cumulative_histogram() {
        let c = Counters::default();
        for ms in [0, 2, 2, 30] {
            c.begin();
            c.end(Some(200), Duration::from_millis(ms), 1);
        }
        let mut s = Snapshot::default();
        s.add(&c, true);
        let text = s.render(2, 1);
        assert!(text.contains("ferrocorn_requests_total{status=\"2xx\"} 4\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"0.0025\"} 3\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"0.05\"} 4\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("ferrocorn_request_duration_seconds_count 4\n"));
        assert!(text.contains("ferrocorn_workers 2\n"));
        assert!(text.contains("# TYPE ferrocorn_request_duration_seconds histogram\n"));
    }

    #[test]
    fn statsd_datagram() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let client = Statsd::connect(&addr, "app").unwrap();
        client.request(201, Duration::from_micros(1500));
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "app.ferrocorn.requests:1|c\napp.ferrocorn.request.duration:1.500|ms\n\
             app.ferrocorn.request.status.201:1|c"
        );
    }
}
