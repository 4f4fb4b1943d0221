//! What the server reports about its work: the access log and request metrics.

pub mod accesslog;
pub mod metrics;
