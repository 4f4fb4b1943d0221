//! `hyper_hello PORT [--tls CERT KEY] APP`: the benchmark's yardstick, a plain hyper server
//! with no Python, on 127.0.0.1 from a two-thread tokio runtime. APP names the workload's app
//! and picks the body: `hello:app` 13 bytes of text, `big:app` 1 MiB (as `bench/apps`). With
//! `--tls` it terminates TLS with rustls on ring, as ferrocorn does. It shows what HTTP (and
//! TLS) cost alone, and so where the client's own ceiling lies.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Options {
    port: u16,
    tls: Option<(String, String)>,
    body: Bytes,
    content_type: &'static str,
}

fn options() -> io::Result<Options> {
    let usage = || io::Error::other("usage: hyper_hello PORT [--tls CERT KEY] [hello:app|big:app]");
    let mut args = std::env::args().skip(1);
    let port = args.next().and_then(|p| p.parse().ok()).ok_or_else(usage)?;
    let mut tls = None;
    let mut app = String::from("hello:app");
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            tls = Some((
                args.next().ok_or_else(usage)?,
                args.next().ok_or_else(usage)?,
            ));
        } else {
            app = arg;
        }
    }
    let (body, content_type) = match app.as_str() {
        "hello:app" => (Bytes::from_static(b"Hello, World!"), "text/plain"),
        "big:app" => (Bytes::from(vec![b'x'; 1 << 20]), "application/octet-stream"),
        _ => return Err(usage()),
    };
    Ok(Options {
        port,
        tls,
        body,
        content_type,
    })
}

fn acceptor(cert: &str, key: &str) -> io::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io::Error::other(format!("{cert}: {e}")))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| io::Error::other(format!("{key}: {e}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() -> io::Result<()> {
    let options = options()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?
        .block_on(serve(options))
}

async fn serve(options: Options) -> io::Result<()> {
    let tls = match &options.tls {
        Some((cert, key)) => Some(acceptor(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(("127.0.0.1", options.port)).await?;
    let body = options.body;
    let content_type = HeaderValue::from_static(options.content_type);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, content_type, tls) = (body.clone(), content_type.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
                async move { Ok::<_, Infallible>(resp) }
            });
            let http = http1::Builder::new();
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}
