//! `--metrics-bind`: the master answers Prometheus scrapes itself, on an address of its own,
//! so no app route can shadow the endpoint and a hung worker cannot hide it. The master has no
//! threads: its loop polls this listener with its signal pipe and answers each scrape in turn,
//! with short timeouts so a stalled scraper cannot hold the loop for long.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// How long one scrape may take to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(250);
/// Largest request head read from a scraper.
const MAX_HEAD: usize = 8 * 1024;
/// Scrapes answered per turn of the master's loop.
const PER_TURN: usize = 16;

#[derive(Debug)]
pub struct ScrapeEndpoint {
    addr: SocketAddr,
    listener: Option<TcpListener>,
    /// When binding failed (an old master still holds the port during an upgrade), the next
    /// attempt.
    retry_at: Option<Instant>,
}

impl ScrapeEndpoint {
    /// Binds `addr`; a failure is logged and retried every few seconds.
    pub fn new(addr: SocketAddr) -> Self {
        let mut endpoint = Self {
            addr,
            listener: None,
            retry_at: None,
        };
        endpoint.ensure_bound();
        endpoint
    }

    /// Binds now, for a caller that must fail at once when the address is taken.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = listen(addr)?;
        Ok(Self {
            addr,
            listener: Some(listener),
            retry_at: None,
        })
    }

    fn ensure_bound(&mut self) {
        if self.listener.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match listen(self.addr) {
            Ok(l) => {
                log::info!("Metrics at: http://{}/metrics", self.addr);
                self.listener = Some(l);
                self.retry_at = None;
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    log::warn!(
                        "cannot bind the metrics address {}: {e}; retrying",
                        self.addr
                    );
                }
                self.retry_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    /// The listener, for the master's poll.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(|l| l.as_fd())
    }

    /// Answers the scrapes waiting to be accepted; `body` renders the metrics text.
    pub fn serve_ready(&mut self, body: impl Fn() -> String) {
        self.ensure_bound();
        let Some(listener) = &self.listener else {
            return;
        };
        for _ in 0..PER_TURN {
            match listener.accept() {
                Ok((stream, _)) => answer(stream, &body),
                Err(_) => return,
            }
        }
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn answer(mut stream: TcpStream, body: &impl Fn() -> String) {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > MAX_HEAD || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (status, text, head_only) = route(&head, body);
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status.starts_with("200") {
            "text/plain; version=0.0.4; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        },
        text.len()
    );
    if !head_only {
        response.push_str(&text);
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .is_ok()
    {
        let _ = stream.write_all(response.as_bytes());
    }
}

/// The status line, body and whether only the head goes out, for one request head.
fn route(head: &[u8], body: &impl Fn() -> String) -> (&'static str, String, bool) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "malformed request line\n".into(), false);
    };
    if !version.starts_with(b"HTTP/1.") {
        return ("400 Bad Request", "malformed request line\n".into(), false);
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path != b"/metrics" && path != b"/" {
        return ("404 Not Found", "metrics are at /metrics\n".into(), false);
    }
    match method {
        b"GET" => ("200 OK", body(), false),
        b"HEAD" => ("200 OK", body(), true),
        _ => ("405 Method Not Allowed", "use GET\n".into(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> String {
        "ferrocorn_workers 1\n".into()
    }

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n", &text).0, "200 OK");
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &text).1, text());
        assert!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n", &text).2);
        assert_eq!(
            route(b"GET /app HTTP/1.1\r\n\r\n", &text).0,
            "404 Not Found"
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &text).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"garbage\r\n\r\n", &text).0, "400 Bad Request");
        assert_eq!(route(b"GET / SMTP\r\n\r\n", &text).0, "400 Bad Request");
    }

    #[test]
    fn answers_a_scrape() {
        let mut endpoint = ScrapeEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.listener.as_ref().unwrap().local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // The connection is queued on the listener before serve_ready accepts it.
        endpoint.serve_ready(text);
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nferrocorn_workers 1\n"), "{reply}");
    }
}
