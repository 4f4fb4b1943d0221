//! Opening one client WebSocket connection, bounded in time.

use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::error::Error;

pub type Ws = WebSocketStream<TcpStream>;

/// Where to connect: `ws://host:port/path`, split once for every connection.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| Error::Url(url.to_owned()))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || !authority.contains(':') {
            return Err(Error::Url(url.to_owned()));
        }
        Ok(Self {
            url: url.to_owned(),
            addr: authority.to_owned(),
        })
    }
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("TCP connect: {0}")]
    Tcp(std::io::Error),
    #[error("handshake: {0}")]
    Handshake(tokio_tungstenite::tungstenite::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// TCP connect (no Nagle: every message is a round trip) and the opening handshake.
pub async fn open(target: &Target, timeout: Duration) -> Result<Ws, ConnectError> {
    let attempt = async {
        let tcp = TcpStream::connect(&target.addr)
            .await
            .map_err(ConnectError::Tcp)?;
        tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let (ws, _response) = client_async_with_config(target.url.as_str(), tcp, Some(config()))
            .await
            .map_err(ConnectError::Handshake)?;
        Ok(ws)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

/// Buffers sized for 1 KiB messages rather than tungstenite's 128 KiB each way: the idle mode
/// holds tens of thousands of connections.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}
