//! An exchange's access-log line and metrics sample in the making: what the request said,
//! then what the response did. Kept by [`super::run`] for every protocol alike.

use tokio::time::Instant;

use crate::addr::Peer;
use crate::http1::request::{Header, RequestHead, Text, Version};
use crate::http1::response::HeaderBlock;
use crate::observe::accesslog::{AccessLog, Entry};
use crate::proxy::Forwarded;

pub(crate) struct Record {
    pub(crate) started: Instant,
    started_unix: i64,
    remote: String,
    method: Text,
    target: Text,
    protocol: &'static str,
    scheme: &'static str,
    request_headers: Vec<Header>,
    pub(crate) status: Option<u16>,
    response_headers: HeaderBlock,
    pub(crate) bytes: u64,
    /// Moved out by [`Record::hand_over`]: what is left is neither logged nor counted.
    pub(crate) handed_over: bool,
}

impl Record {
    /// `tls`: the connection is encrypted (the scheme is `https` unless a trusted proxy says
    /// otherwise). `for_log`: keep what an access log line shows (metrics need only status,
    /// time, size).
    pub(crate) fn new(head: &RequestHead, peer: &Peer, tls: bool, for_log: bool) -> Self {
        let mut record = Self {
            started: Instant::now(),
            started_unix: 0,
            remote: String::new(),
            method: Text::default(),
            target: Text::default(),
            protocol: "",
            scheme: if tls { "https" } else { "http" },
            request_headers: Vec::new(),
            status: None,
            response_headers: HeaderBlock::default(),
            bytes: 0,
            handed_over: false,
        };
        if for_log {
            record.started_unix = crate::clock::unix_now();
            if let Peer::Tcp(a) = peer {
                record.remote = a.ip().to_string();
            }
            record.method = head.method.clone();
            record.target = head.target.clone();
            record.protocol = match head.version {
                Version::Http10 => "HTTP/1.0",
                Version::Http11 => "HTTP/1.1",
                Version::Http2 => "HTTP/2.0",
            };
            record.request_headers = head.headers.clone();
        }
        record
    }

    /// What a trusted proxy (or a uwsgi front end) said of the client and the scheme.
    pub(crate) fn forwarded(&mut self, forwarded: &Forwarded) {
        if let Some(client) = forwarded.client {
            self.remote = client.to_string();
        }
        if let Some(scheme) = forwarded.scheme {
            self.scheme = scheme;
        }
    }

    /// The response's status and fields, when its head goes out.
    pub(crate) fn response(&mut self, status: u16, headers: &HeaderBlock) {
        self.status = Some(status);
        self.response_headers.clone_from(headers);
    }

    /// The record, moved out to whoever finishes the exchange now (an open WebSocket that
    /// outlives the exchange's future: `super::Opened`); this one is left handed over.
    pub(crate) fn hand_over(&mut self) -> Record {
        let left = Record {
            started: self.started,
            started_unix: 0,
            remote: String::new(),
            method: Text::default(),
            target: Text::default(),
            protocol: "",
            scheme: "",
            request_headers: Vec::new(),
            status: None,
            response_headers: HeaderBlock::default(),
            bytes: 0,
            handed_over: true,
        };
        std::mem::replace(self, left)
    }

    /// Logs the exchange, if a response was started.
    pub(crate) fn finish(&self, log: &AccessLog) {
        let Some(status) = self.status else { return };
        let path = self.target.split('?').next().unwrap_or_default();
        let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        log.record(&Entry {
            remote_addr: &self.remote,
            method: &self.method,
            target: &self.target,
            path: &path,
            protocol: self.protocol,
            scheme: self.scheme,
            request_headers: &self.request_headers,
            status,
            response_headers: &self.response_headers,
            bytes: self.bytes,
            duration: self.started.elapsed(),
            started_unix: self.started_unix,
        });
    }
}
