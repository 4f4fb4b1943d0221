//! What a connection runs over before HTTP sees it: today TLS (`tls`); plain TCP and unix
//! sockets are in `net`.

pub mod tls;
