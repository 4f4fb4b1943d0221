//! `--ciphers`: OpenSSL's and IANA's names for the cipher suites rustls implements.
//!
//! rustls offers only AEAD suites with forward secrecy (RFC 9325 §4.2's recommendations), so
//! the table is short; a name outside it (including OpenSSL's keyword syntax such as
//! `HIGH:!aNULL`) is refused at startup rather than silently ignored.

use rustls::CipherSuite;

/// Each suite: rustls's identifier, OpenSSL's name, IANA's name (RFC 8446 §B.4, RFC 8442,
/// RFC 7905). For TLS 1.3 suites OpenSSL uses the IANA name.
pub(crate) const SUITES: &[(CipherSuite, &str, &str)] = &[
    (
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
    ),
    (
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
    ),
    (
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The suites `--ciphers` named, in the order given (the server's order of preference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherList(pub Vec<CipherSuite>);

impl CipherList {
    /// True when the list names a TLS 1.3 suite. Like Python's `SSLContext.set_ciphers`
    /// (which Gunicorn calls), a list of TLS 1.2 suites only leaves TLS 1.3's suites as
    /// they are.
    pub(crate) fn has_tls13(&self) -> bool {
        self.0.iter().any(|s| is_tls13(*s))
    }
}

pub(crate) fn is_tls13(suite: CipherSuite) -> bool {
    SUITES[..3].iter().any(|(s, _, _)| *s == suite)
}

/// Parses `--ciphers`: names separated by `:` or `,`, matched without regard to case.
pub fn parse_cipher_list(s: &str) -> Result<CipherList, String> {
    let mut out = Vec::new();
    for name in s.split([':', ',']).map(str::trim).filter(|n| !n.is_empty()) {
        let Some((suite, _, _)) = SUITES.iter().find(|(_, openssl, iana)| {
            name.eq_ignore_ascii_case(openssl) || name.eq_ignore_ascii_case(iana)
        }) else {
            return Err(format!(
                "unknown or unsupported cipher suite {name:?} (supported: {})",
                SUITES
                    .iter()
                    .map(|(_, openssl, _)| *openssl)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if !out.contains(suite) {
            out.push(*suite);
        }
    }
    if out.is_empty() {
        return Err("no cipher suite named".into());
    }
    Ok(CipherList(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_and_iana_names_in_order() {
        let list = parse_cipher_list(
            "ecdhe-rsa-aes128-gcm-sha256:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,ECDHE-RSA-AES128-GCM-SHA256",
        )
        .unwrap();
        assert_eq!(
            list.0,
            [
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        assert!(!list.has_tls13());
        assert!(parse_cipher_list("TLS_AES_128_GCM_SHA256")
            .unwrap()
            .has_tls13());
    }

    #[test]
    fn unknown_names_are_named() {
        let e = parse_cipher_list("ECDHE-RSA-AES128-GCM-SHA256:RC4-SHA").unwrap_err();
        assert!(e.contains("\"RC4-SHA\""), "{e}");
        assert!(parse_cipher_list("HIGH:!aNULL")
            .unwrap_err()
            .contains("HIGH"));
        assert!(parse_cipher_list(" : ").is_err());
    }
}
