//! What every connection of a worker shares: its settings ([`ConnConfig`], from the command
//! line and config file) and the worker's parts it reaches ([`ConnCtx`]: the app, the app
//! threads' queue, the stop, the reclaim registry).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::app::{App, Exchange};
use crate::app_threads::AppThreads;
use crate::batch::Batch;
use crate::config::{Protocol, Settings};
use crate::http1::request::Limits;
use crate::inline::InlinePolicy;
use crate::observe::accesslog::AccessLog;
use crate::observe::metrics::RequestMetrics;
use crate::proxy::{ProxyConfig, Trusted};
use crate::reclaim::Reclaimer;
use crate::stopping::Stopping;

/// Settings every connection of a worker shares.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub limits: Limits,
    /// Idle time allowed between requests on a kept-alive connection (`--keep-alive`).
    pub keep_alive: Duration,
    /// Time allowed to receive a whole request head once it has started (and the first one
    /// after connecting).
    pub head_timeout: Duration,
    /// Time a request body may stall before the app's read fails.
    pub body_timeout: Duration,
    /// Time a response write may block (a client that stopped reading) before the connection
    /// is dropped.
    pub write_timeout: Duration,
    /// Largest request body accepted (`--limit-request-body`; zero: no limit).
    pub max_body: u64,
    /// Unread request body the server will discard to keep a connection alive; past it the
    /// connection is closed instead (Gunicorn's bound), so an ignored 10 GB upload does not
    /// tie the connection up.
    pub max_drain: u64,
    /// Which peers' forwarded headers count, and under which names.
    pub proxy: Arc<ProxyConfig>,
    /// Read a PROXY protocol preamble first on every connection.
    pub proxy_protocol: bool,
    /// Where finished requests are logged (`--access-logfile`), opened in the worker.
    pub access_log: Option<AccessLog>,
    /// Where finished requests are counted (`--metrics-bind`, `--statsd-host`).
    pub metrics: RequestMetrics,
    /// What the listeners speak (`--protocol`): HTTP/1.x, or uwsgi packets from a front end.
    pub protocol: Protocol,
    /// Peers allowed to send uwsgi packets (`--uwsgi-allow-from`); unix-socket peers always are.
    pub uwsgi_allow: Trusted,
    /// Static files answered before the app's route (`--static-map`).
    pub statics: Option<Arc<crate::static_files::Statics>>,
    /// HTTP/2 limits, and whether trusted peers may start it in cleartext.
    pub http2: crate::http2::Http2Config,
    /// TLS on TCP connections (`--certfile`); unix-socket connections stay cleartext.
    pub tls: Option<crate::transport::tls::TlsServer>,
    /// The WebSocket protocol's limits (`--ws-*`, `crate::websocket`).
    pub websocket: crate::websocket::WsConfig,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            keep_alive: Duration::from_secs(2),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_body: 0,
            max_drain: 64 * 1024,
            proxy: Arc::default(),
            proxy_protocol: false,
            access_log: None,
            metrics: RequestMetrics::default(),
            protocol: Protocol::Http,
            uwsgi_allow: Trusted::loopback(),
            statics: None,
            http2: crate::http2::Http2Config::default(),
            tls: None,
            websocket: crate::websocket::WsConfig::default(),
        }
    }
}

impl ConnConfig {
    /// The settings of a worker's connections, from the command line and config file.
    /// Each worker calls it after the fork (it opens the static files' directories).
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            limits: Limits {
                request_line: s.limit_request_line as usize,
                fields: s.limit_request_fields as usize,
                field_size: s.limit_request_field_size as usize,
            },
            keep_alive: Duration::from_secs(s.keep_alive),
            head_timeout: Duration::from_secs(s.header_timeout),
            body_timeout: Duration::from_secs(s.body_timeout),
            write_timeout: Duration::from_secs(s.write_timeout),
            max_body: s.limit_request_body,
            proxy: Arc::new(ProxyConfig {
                trusted: s.forwarded_allow_ips.clone(),
                apply: s.forwarded_headers,
                for_header: s.forwarded_for_header.to_ascii_lowercase(),
                proto_header: s.forwarded_proto_header.to_ascii_lowercase(),
                host_header: s.forwarded_host_header.to_ascii_lowercase(),
                port_header: s.forwarded_port_header.to_ascii_lowercase(),
                prefix_header: s.forwarded_prefix_header.to_ascii_lowercase(),
                secure_scheme_headers: s.secure_scheme_headers.0.clone(),
            }),
            proxy_protocol: s.proxy_protocol,
            protocol: s.protocol,
            uwsgi_allow: s.uwsgi_allow_from.clone(),
            statics: s.static_files(),
            http2: s.http2.config(),
            websocket: s.websocket.config(),
            ..Self::default()
        }
    }
}

/// What a connection needs from its worker.
pub(crate) struct ConnCtx {
    pub config: ConnConfig,
    /// The app, for requests run on the I/O thread.
    pub app: Arc<dyn App>,
    /// Which requests run on the I/O thread.
    pub inline: InlinePolicy,
    pub jobs: crate::jobs::Sender<Exchange>,
    /// Started as queued requests need them.
    pub threads: Arc<AppThreads>,
    /// Set when the worker starts to stop.
    pub stopping: Stopping,
    /// Requests handed to the app so far.
    pub served: AtomicU64,
    /// Retire the worker after this many requests (zero: never).
    pub max_requests: u64,
    /// Notified once `max_requests` is reached.
    pub retire: Arc<Notify>,
    /// Requests allowed to wait for an app thread before the server answers 503 (zero: wait).
    pub max_pending: usize,
    /// Inline responses made in the I/O thread's current run of ready work.
    pub batch: Arc<Batch>,
    /// Every connection of the worker, for closing idle ones at the connection cap.
    pub reclaim: Reclaimer,
    /// An app side on a thread of its own (an event loop), reached through mailboxes rather
    /// than the app threads' channels (see `crate::remote`).
    pub remote: Option<crate::remote::RemoteApp>,
}

impl ConnCtx {
    /// Queues `exchange` for the app threads, starting one if none is free to take it.
    pub(crate) async fn to_app_threads(&self, exchange: Exchange) -> Result<(), ()> {
        self.app.release_inline();
        self.jobs.send(exchange).await.map_err(|_| ())?;
        match &self.remote {
            // Rung at the end of this round of ready work, once for all it queued.
            Some(remote) => remote.courier.app_pending(),
            None => self.threads.grow(),
        }
        Ok(())
    }
}
