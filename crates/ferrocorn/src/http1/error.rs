//! Typed errors of the HTTP layer, and the one place that maps them to a status code.

use thiserror::Error;

/// A request the server refuses to serve. Each variant names the problem for the log and for the
/// response body; [`RequestError::status`] chooses the status (RFC 9112 §2.2, §3, §6, §7).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("invalid request line")]
    RequestLine,
    #[error("invalid method")]
    Method,
    #[error("invalid request target")]
    Target,
    #[error("unsupported HTTP version")]
    Version,
    #[error("invalid HTTP version")]
    VersionSyntax,
    #[error("invalid header name")]
    HeaderName,
    #[error("invalid header value")]
    HeaderValue,
    #[error("obsolete line folding is not accepted")]
    LineFolding,
    #[error("invalid line ending")]
    NewLine,
    #[error("bare LF in the request head (lines must end with CRLF)")]
    BareLf,
    #[error("more than one empty line before the request line")]
    LeadingEmptyLines,
    #[error("request line too long (limit {0} bytes)")]
    LineTooLong(usize),
    #[error("too many header fields (limit {0})")]
    TooManyHeaders(usize),
    #[error("header field too large (limit {0} bytes)")]
    HeaderTooLarge(usize),
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("more than one Content-Type header")]
    DuplicateContentType,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    EncodingInHttp10,
    #[error("chunked is not the final transfer coding")]
    ChunkedNotLast,
    #[error("unsupported transfer coding")]
    UnsupportedEncoding,
    #[error("request body too large (limit {0} bytes)")]
    BodyTooLarge(u64),
}

impl RequestError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::LineTooLong(_) => 414,
            Self::TooManyHeaders(_) | Self::HeaderTooLarge(_) => 431,
            Self::Version => 505,
            // RFC 9112 §6.1: a transfer coding the server does not understand gets 501.
            Self::UnsupportedEncoding => 501,
            Self::BodyTooLarge(_) => 413,
            _ => 400,
        }
    }
}

/// A request body that cannot be read to its end.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BodyError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("chunk size too large")]
    ChunkSizeOverflow,
    #[error("missing CRLF after chunk data")]
    ChunkDataEnd,
    #[error("invalid trailer field")]
    Trailer,
    #[error("forbidden trailer field {0:?}")]
    ForbiddenTrailer(String),
    #[error("trailer section too large")]
    TrailerTooLarge,
    #[error("client closed the connection before the whole body was sent")]
    Incomplete,
    #[error("timed out waiting for the request body")]
    Timeout,
    #[error("request body too large (limit {0} bytes)")]
    TooLarge(u64),
    #[error("connection error while reading the body: {0}")]
    Io(String),
    #[error("the request body already failed to read")]
    Failed,
}

impl BodyError {
    /// The status to answer with when the app has not started its response yet.
    pub fn status(&self) -> u16 {
        match self {
            Self::Timeout => 408,
            Self::TooLarge(_) => 413,
            _ => 400,
        }
    }

    /// True when the client, not the network, is at fault (the error is worth a 4xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// A response the app asked for that cannot be sent as asked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResponseError {
    #[error("invalid status line {0:?}: expected a 3-digit code, a space and a reason phrase")]
    Status(String),
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid value for header {0:?}: it contains CR, LF or another control character")]
    HeaderValue(String),
    #[error("hop-by-hop header {0:?} is not allowed in a WSGI response (PEP 3333)")]
    HopByHop(String),
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
    #[error("header {0:?} is not allowed in a 103 Early Hints response")]
    HintField(String),
    #[error(
        "header {0:?} is not allowed in trailers (it frames, routes or describes the content)"
    )]
    TrailerField(String),
}
