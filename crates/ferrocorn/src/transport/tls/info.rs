//! What a finished handshake tells the app: protocol, cipher, and the client's certificate
//! in the forms nginx and Apache put in their CGI variables (`SSL_CLIENT_*`).

use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

/// The TLS facts of one connection, shared by all its requests.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3` (OpenSSL's spelling, as in nginx's `$ssl_protocol`).
    pub protocol: &'static str,
    /// The negotiated suite's IANA name.
    pub cipher: String,
    /// The client's certificate, when it sent one (it was verified against --ca-certs).
    pub client: Option<ClientCert>,
    /// The protocol ALPN chose (RFC 7301), if the client offered any: `h2` or `http/1.1`.
    pub alpn: Option<Vec<u8>>,
    /// The version's number (0x0303 for TLS 1.2, 0x0304 for 1.3) and the suite's IANA number,
    /// as ASGI's `tls` extension gives them.
    pub version: u16,
    pub suite: u16,
    /// The certificate this server presented, in PEM (ASGI's `server_cert`): made once per
    /// configuration and shared by every connection.
    pub server_cert: Option<Arc<str>>,
}

/// A verified client certificate.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// Subject and issuer distinguished names in RFC 4514 form (`CN=alice,O=Example`), as
    /// nginx's `$ssl_client_s_dn` and `$ssl_client_i_dn`.
    pub subject: String,
    pub issuer: String,
    /// The certificate in PEM.
    pub pem: String,
    /// The intermediates the client sent after it, each in PEM, in the order sent (each
    /// signing the one before): ASGI's `client_cert_chain` after the first.
    pub chain: Vec<String>,
}

impl TlsInfo {
    /// The facts of `conn`'s finished handshake; `server_cert` is the PEM of the certificate
    /// the server presented.
    pub(crate) fn new(conn: &rustls::ServerConnection, server_cert: Option<Arc<str>>) -> Self {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or_default()
            .to_owned();
        let client = conn.peer_certificates().and_then(ClientCert::new);
        Self {
            protocol,
            cipher,
            client,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version().map_or(0, u16::from),
            suite: conn
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            server_cert,
        }
    }

    /// True when ALPN chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.alpn.as_deref() == Some(b"h2")
    }

    /// `SSL_CLIENT_VERIFY`: `SUCCESS` with a (verified) certificate, `NONE` without. rustls
    /// refuses a certificate that does not verify during the handshake, so nginx's
    /// `FAILED:reason` never reaches an app.
    pub fn client_verify(&self) -> &'static str {
        if self.client.is_some() {
            "SUCCESS"
        } else {
            "NONE"
        }
    }
}

impl ClientCert {
    /// The client's certificate (the first of `chain`) with the intermediates after it;
    /// None for an empty chain.
    fn new(chain: &[CertificateDer<'_>]) -> Option<Self> {
        use x509_cert::der::Decode;
        let (der, intermediates) = chain.split_first()?;
        let (subject, issuer) = match x509_cert::Certificate::from_der(der) {
            Ok(c) => (
                c.tbs_certificate.subject.to_string(),
                c.tbs_certificate.issuer.to_string(),
            ),
            // Verified by webpki, so this cannot really happen; leave the names empty.
            Err(_) => (String::new(), String::new()),
        };
        Some(Self {
            subject,
            issuer,
            pem: to_pem(der),
            chain: intermediates.iter().map(|c| to_pem(c)).collect(),
        })
    }
}

/// PEM with 64-column lines (RFC 7468 §2).
pub(crate) fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_columns() {
        let pem = to_pem(&[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(TlsInfo::default().client_verify(), "NONE");
    }
}
