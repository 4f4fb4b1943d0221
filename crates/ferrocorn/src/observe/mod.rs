//! What the server reports about its work: the access log.

pub mod accesslog;
