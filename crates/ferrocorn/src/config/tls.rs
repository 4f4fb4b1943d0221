//! Settings for TLS on the TCP listeners, with Gunicorn's names and meanings.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::transport::tls::ciphers::{parse_cipher_list, CipherList};

/// TLS flags, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct TlsSettings {
    /// Serve HTTPS on every TCP bind with this PEM certificate chain (the server's certificate
    /// first, then its intermediates). Needs --keyfile. Unix-socket binds stay cleartext.
    /// Read again on HUP (and by the new master on USR2): renewed files take effect in the new
    /// workers; a renewed file that fails to load keeps the old certificate serving.
    #[arg(long, value_name = "FILE")]
    pub certfile: Option<PathBuf>,

    /// The PEM private key of --certfile: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA
    /// PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`). Encrypted keys are refused.
    #[arg(long, value_name = "FILE")]
    pub keyfile: Option<PathBuf>,

    /// PEM file of the CA certificates that client certificates must chain to (for
    /// --cert-reqs 1 or 2).
    #[arg(long, value_name = "FILE")]
    pub ca_certs: Option<PathBuf>,

    /// PEM file of certificate revocation lists (`BEGIN X509 CRL`, several may follow each
    /// other) from the CAs of --ca-certs: a client certificate whose serial is listed is
    /// refused, as is one whose issuer has no CRL in the file (as nginx's `ssl_crl`). Only
    /// the client's own certificate is checked, not its intermediates. A CRL past its
    /// nextUpdate still applies (a warning says so); HUP reads the file again.
    #[arg(long, value_name = "FILE")]
    pub crlfile: Option<PathBuf>,

    /// Client certificates, as Python's ssl.CERT_* numbers: 0 not asked for, 1 optional
    /// (asked for; a client without one is served, one with a certificate that does not
    /// verify against --ca-certs is refused), 2 required.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub cert_reqs: u8,

    /// TLS cipher suites to offer, separated by `:` or `,`, by their OpenSSL names
    /// (ECDHE-ECDSA-AES128-GCM-SHA256) or IANA names (TLS_AES_128_GCM_SHA256); docs/tls.md has
    /// the table. A name that is not a supported suite is a startup error. Default: every
    /// suite of the crypto library (AES-GCM and ChaCha20-Poly1305 with ECDHE only).
    #[arg(long, value_name = "LIST", value_parser = parse_cipher_list)]
    pub ciphers: Option<CipherList>,

    /// Lowest TLS version accepted.
    #[arg(long, value_name = "VERSION", value_enum, default_value_t = TlsVersion::V1_2)]
    pub tls_min_version: TlsVersion,

    /// Accepted for Gunicorn compatibility, always on here: the handshake runs on the worker's
    /// I/O thread as soon as a connection is accepted, under --header-timeout, before any
    /// request is read.
    #[arg(long)]
    pub do_handshake_on_connect: bool,

    /// Accepted for Gunicorn compatibility, always on here: a client that closes its
    /// connection without TLS's close_notify alert is treated as a normal end of stream
    /// (the request framing still says whether a body was cut short).
    #[arg(long)]
    pub suppress_ragged_eofs: bool,
}

impl TlsSettings {
    /// True when the TCP listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.certfile.is_some() || self.keyfile.is_some()
    }
}

/// `--tls-min-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    V1_2,
    #[value(name = "1.3")]
    V1_3,
}
