//! TLS on the TCP listeners, with rustls: the server configuration built from the settings
//! (in the master, before any worker forks, and again on HUP), the handshake on a worker's I/O
//! thread, and what the handshake tells the app about the client.

pub mod ciphers;
mod handshake;
mod info;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use thiserror::Error;

use crate::config::tls::{TlsSettings, TlsVersion};

pub(crate) use handshake::{accept, take_preamble};
pub use info::TlsInfo;

/// Why the TLS configuration could not be built. Each names the file or setting at fault.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--certfile needs --keyfile (the certificate's private key)")]
    NoKeyfile,
    #[error("--keyfile needs --certfile (the certificate it belongs to)")]
    NoCertfile,
    #[error("--cert-reqs {0} needs --ca-certs (the CAs client certificates must chain to)")]
    NoCaCerts(u8),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it (BEGIN CERTIFICATE)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error(
        "{}: the private key is encrypted and ferrocorn cannot ask for a passphrase; \
         decrypt it first (openssl pkey -in KEY -out PLAIN_KEY)",
        .0.display()
    )]
    EncryptedKey(PathBuf),
    #[error(
        "{}: no private key in it (PEM PKCS#8, PKCS#1 RSA or SEC1 EC key expected)",
        .0.display()
    )]
    NoKey(PathBuf),
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{}: the private key does not match the certificate in {}", key.display(), cert.display())]
    Mismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: unusable CA certificate: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("--crlfile needs --cert-reqs 1 or 2 (it applies to client certificates)")]
    CrlWithoutClientAuth,
    #[error("{}: no PEM certificate revocation list in it (BEGIN X509 CRL)", .0.display())]
    NoCrl(PathBuf),
    #[error("{}: unusable certificate revocation list: {reason}", path.display())]
    BadCrl { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The TLS side of the TCP listeners, built once and shared by every connection (workers
/// inherit it through the fork).
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The PEM of the certificate presented (the first of --certfile), for the app.
    server_cert: Arc<str>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// Builds the server configuration from the settings; `Ok(None)` when TLS is off.
    /// Every file is read and checked here, so a bad one stops the start with its name.
    /// `alpn`: the protocols offered (RFC 7301), in order of preference (`--http-protocols`).
    pub fn from_settings(
        settings: &TlsSettings,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Option<Self>, TlsError> {
        let (cert_path, key_path) = match (&settings.certfile, &settings.keyfile) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(TlsError::NoKeyfile),
            (None, Some(_)) => return Err(TlsError::NoCertfile),
            (Some(c), Some(k)) => (c, k),
        };
        let provider = Arc::new(provider(settings));
        let certs = load_certs(cert_path)?;
        warn_if_expired(cert_path, &certs[0]);
        let server_cert: Arc<str> = info::to_pem(&certs[0]).into();
        let key = load_key(key_path)?;
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::BadKey {
                    path: key_path.clone(),
                    reason: e.to_string(),
                })?;
        let certified = rustls::sign::CertifiedKey::new(certs, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::Mismatch {
                    key: key_path.clone(),
                    cert: cert_path.clone(),
                })
            }
            Err(e) => {
                return Err(TlsError::BadPem {
                    path: cert_path.clone(),
                    reason: e.to_string(),
                })
            }
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.tls_min_version
        {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match settings.cert_reqs {
            0 if settings.crlfile.is_some() => return Err(TlsError::CrlWithoutClientAuth),
            0 => builder.with_no_client_auth(),
            reqs => {
                let ca_path = settings
                    .ca_certs
                    .as_ref()
                    .ok_or(TlsError::NoCaCerts(reqs))?;
                let roots = load_roots(ca_path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if reqs == 1 {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = match &settings.crlfile {
                    // The client's own certificate only, and unknown status refused: what
                    // OpenSSL's X509_V_FLAG_CRL_CHECK (nginx's `ssl_crl`) does.
                    Some(crl_path) => verifier
                        .with_crls(load_crls(crl_path)?)
                        .only_check_end_entity_revocation(),
                    None => verifier,
                };
                let verifier = verifier.build().map_err(|e| match (&settings.crlfile, e) {
                    (Some(path), rustls::server::VerifierBuilderError::InvalidCrl(e)) => {
                        TlsError::BadCrl {
                            path: path.clone(),
                            reason: format!("{e:?}"),
                        }
                    }
                    (_, e) => TlsError::BadCa {
                        path: ca_path.clone(),
                        reason: e.to_string(),
                    },
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        config.alpn_protocols = alpn;
        // --ciphers is the server's order of preference, as OpenSSL's SSL_OP_CIPHER_SERVER_PREFERENCE.
        config.ignore_client_order = settings.ciphers.is_some();
        // Session tickets (RFC 8446 §4.6.1): made here, before the fork, so every worker can
        // resume a session another worker started.
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| TlsError::Config(format!("session tickets: {e}")))?;
        Ok(Some(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            server_cert,
        }))
    }
}

/// The crypto provider (ring; see docs/design.md for why), with --ciphers applied.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(list) = &settings.ciphers {
        let keep13 = !list.has_tls13();
        let all = std::mem::take(&mut provider.cipher_suites);
        // The named suites in the named order, then (unless some were named) TLS 1.3's.
        provider.cipher_suites = list
            .0
            .iter()
            .filter_map(|want| all.iter().find(|s| s.suite() == *want).copied())
            .chain(
                all.iter()
                    .filter(|s| keep13 && ciphers::is_tls13(s.suite()))
                    .copied(),
            )
            .collect();
    }
    provider
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every PEM item of type `T` in the file at `path` (certificates, CRLs).
fn pem_items<T: PemObject>(path: &Path) -> Result<Vec<T>, TlsError> {
    T::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = pem_items::<CertificateDer<'static>>(path)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    // PKCS#8's encrypted form, and OpenSSL's legacy encrypted PKCS#1/SEC1 (RFC 1421 headers).
    let text = String::from_utf8_lossy(&pem);
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey(path.to_owned()));
    }
    // Takes the first key of any of the three forms (PKCS#8, PKCS#1, SEC1).
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey(path.to_owned()),
        e => TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The CRLs of a `--crlfile`, each checked for a nextUpdate in the past (still used, but
/// its CA has likely published a newer one: say so at startup and on every reload).
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    use x509_cert::der::Decode;
    let crls = pem_items::<CertificateRevocationListDer<'static>>(path)?;
    if crls.is_empty() {
        return Err(TlsError::NoCrl(path.to_owned()));
    }
    let now = std::time::SystemTime::now();
    for crl in &crls {
        let parsed =
            x509_cert::crl::CertificateList::from_der(crl).map_err(|e| TlsError::BadCrl {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(next) = parsed.tbs_cert_list.next_update {
            if next.to_system_time() < now {
                log::warn!(
                    "{}: the CRL of {} was due to be replaced on {}; it still applies",
                    path.display(),
                    parsed.tbs_cert_list.issuer,
                    next
                );
            }
        }
    }
    Ok(crls)
}

/// A server certificate past its notAfter still loads (a renewal may be on its way), but
/// clients will refuse it: say so at startup and on every reload.
fn warn_if_expired(path: &Path, cert: &CertificateDer<'_>) {
    use x509_cert::der::Decode;
    let Ok(parsed) = x509_cert::Certificate::from_der(cert) else {
        return;
    };
    let validity = &parsed.tbs_certificate.validity;
    let now = std::time::SystemTime::now();
    if validity.not_after.to_system_time() < now {
        log::warn!(
            "{}: the certificate expired on {}; clients will refuse it",
            path.display(),
            validity.not_after
        );
    } else if validity.not_before.to_system_time() > now {
        log::warn!(
            "{}: the certificate is not valid before {}; clients will refuse it",
            path.display(),
            validity.not_before
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(args: &[&str]) -> TlsSettings {
        let mut argv = vec!["ferrocorn"];
        argv.extend_from_slice(args);
        crate::config::Settings::parse_from(argv).tls
    }

    fn scratch(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrocorn-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error(args: &[&str]) -> String {
        match TlsServer::from_settings(&settings(args), Vec::new()) {
            Ok(_) => panic!("{args:?} loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn off_without_files() {
        assert!(TlsServer::from_settings(&settings(&[]), Vec::new())
            .unwrap()
            .is_none());
    }

    #[test]
    fn errors_name_the_setting_or_file() {
        assert!(error(&["--certfile", "c.pem"]).contains("--keyfile"));
        assert!(error(&["--keyfile", "k.pem"]).contains("--certfile"));
        let missing = "/nonexistent/ferrocorn/cert.pem";
        let e = error(&["--certfile", missing, "--keyfile", missing]);
        assert!(e.starts_with(&format!("cannot read {missing}:")), "{e}");
        let junk = scratch("junk.pem", "hello\n");
        let junk = junk.to_str().unwrap();
        let e = error(&["--certfile", junk, "--keyfile", junk]);
        assert_eq!(
            e,
            format!("{junk}: no PEM certificate in it (BEGIN CERTIFICATE)")
        );
    }

    #[test]
    fn encrypted_and_missing_keys_are_named() {
        let encrypted = scratch(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(matches!(load_key(&encrypted), Err(TlsError::EncryptedKey(p)) if p == encrypted));
        let legacy = scratch(
            "legacy.key",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        assert!(matches!(load_key(&legacy), Err(TlsError::EncryptedKey(_))));
        let none = scratch(
            "none.key",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(load_key(&none), Err(TlsError::NoKey(_))));
    }

    #[test]
    fn ciphers_narrow_the_provider() {
        let p = provider(&settings(&["--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"]));
        let names: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            names[0],
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        // Only TLS 1.2 suites named: TLS 1.3's stay (as Python's set_ciphers).
        assert_eq!(names.len(), 4, "{names:?}");
        let p = provider(&settings(&["--ciphers", "TLS_AES_128_GCM_SHA256"]));
        assert_eq!(p.cipher_suites.len(), 1);
    }
}
