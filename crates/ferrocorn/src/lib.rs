//! ferrocorn's core: settings, listeners, the HTTP/1.1 server and the worker that runs it.
//! Nothing here depends on Python; the WSGI side plugs in through [`app::App`].

pub mod addr;
pub mod app;
mod app_threads;
pub mod batch;
pub mod bind;
pub mod clock;
pub mod config;
pub mod connection;
pub mod error_log;
mod exchange;
pub mod http1;
pub mod http2;
pub mod inline;
pub mod jobs;
mod local;
pub mod master;
mod messages;
pub mod net;
pub mod observe;
pub mod proctitle;
pub mod proxy;
mod reclaim;
pub mod reload;
pub mod remote;
pub mod static_files;
pub mod stopping;
pub mod transport;
mod tunnel;
pub mod uwsgi;
pub mod websocket;
pub mod worker;
pub mod ws_link;
