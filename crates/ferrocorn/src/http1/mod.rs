//! HTTP/1.1 on a byte stream: request parsing, body decoding, response encoding, and the
//! connection that reads requests and writes their responses ([`conn`], [`wire`]).

pub mod body;
pub(crate) mod buffers;
pub mod chunked;
pub(crate) mod conn;
pub mod error;
pub mod proxy_protocol;
pub mod request;
pub mod response;
pub(crate) mod wire;
pub(crate) mod writer;
