//! The upstream connection pool: keep-alive HTTP/1 connections per origin (TCP_NODELAY,
//! connect timeout, rustls for https). A connection is checked out for one request and
//! returned when its response body has been read to the end; a connection found dead on
//! checkout is dropped and another (or a new one) is used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

type Sender = SendRequest<Full<Bytes>>;

/// Why a request could not be sent (always retryable on another deployment).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The URL has no host, or an unknown scheme.
    #[error("invalid upstream url {0}")]
    Url(String),
    /// TCP connect failed.
    #[error("connect to {origin}: {source}")]
    Connect {
        /// scheme://host:port.
        origin: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// TCP connect took longer than the connect timeout.
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    /// TLS handshake failed.
    #[error("tls handshake with {origin}: {source}")]
    Tls {
        /// scheme://host:port.
        origin: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (reset, not HTTP, closed early...).
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Keep-alive connections by origin.
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Sender>>>,
    tls: TlsConnector,
    connect_timeout: Duration,
    max_idle_per_origin: usize,
}

/// A connection in use; give it back with [`Checkout::release`] once the body is read.
pub struct Checkout {
    pool: Arc<Pool>,
    origin: String,
    sender: Sender,
}

impl Checkout {
    /// Returns the connection to the pool (dropped instead if it is closed).
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.pool.idle.lock() {
            let list = idle.entry(self.origin).or_default();
            if list.len() < self.pool.max_idle_per_origin {
                list.push(self.sender);
            }
        }
    }
}

struct Origin {
    key: String,
    host: String,
    port: u16,
    tls: bool,
}

fn origin(uri: &Uri) -> Result<Origin, PoolError> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(PoolError::Url(uri.to_string())),
    };
    let host = uri.host().ok_or_else(|| PoolError::Url(uri.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let key = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
    Ok(Origin { key, host, port, tls })
}

impl Pool {
    /// A pool with the given connect timeout; https is verified against the webpki roots plus
    /// `extra_roots` (e.g. an internal CA of self-hosted model servers).
    pub fn new(
        connect_timeout: Duration,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Arc<Self>, tokio_rustls::rustls::Error> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let (added, ignored) = roots.add_parsable_certificates(extra_roots);
        if ignored > 0 {
            tracing::warn!(added, ignored, "some upstream CA certificates could not be used");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(Self {
            idle: Mutex::default(),
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout,
            max_idle_per_origin: 256,
        }))
    }

    /// Sends `request` on a pooled (or new) connection; returns the response head and the
    /// connection to release when the body is done.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Checkout), PoolError> {
        let origin = origin(request.uri())?;
        // On the wire: origin-form request line plus Host, as HTTP/1.1 requires.
        if let Some(authority) = request.uri().authority().map(|a| a.as_str().to_owned())
            && let Ok(host) = http::HeaderValue::from_str(&authority)
        {
            request.headers_mut().entry(http::header::HOST).or_insert(host);
        }
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = Uri::try_from(path).map_err(|_| PoolError::Url(origin.key.clone()))?;
        let mut sender = match self.reuse(&origin.key).await {
            Some(sender) => sender,
            None => self.connect(&origin).await?,
        };
        let response = sender.send_request(request).await?;
        Ok((response, Checkout { pool: self.clone(), origin: origin.key, sender }))
    }

    /// The most recently returned live connection of `origin`, if any.
    async fn reuse(&self, origin: &str) -> Option<Sender> {
        loop {
            let candidate = self.idle.lock().ok()?.get_mut(origin)?.pop()?;
            let mut candidate = candidate;
            if !candidate.is_closed() && candidate.ready().await.is_ok() {
                return Some(candidate);
            }
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Sender, PoolError> {
        let connect = TcpStream::connect((origin.host.as_str(), origin.port));
        let tcp = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => return Err(PoolError::ConnectTimeout(origin.key.clone())),
            Ok(Err(source)) => return Err(PoolError::Connect { origin: origin.key.clone(), source }),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let mut builder = http1::Builder::new();
        builder.writev(false);
        if origin.tls {
            let name = ServerName::try_from(origin.host.clone()).map_err(|_| PoolError::Url(origin.key.clone()))?;
            let handshake = self.tls.connect(name, tcp);
            let stream = match tokio::time::timeout(self.connect_timeout, handshake).await {
                Err(_) => return Err(PoolError::ConnectTimeout(origin.key.clone())),
                Ok(Err(source)) => return Err(PoolError::Tls { origin: origin.key.clone(), source }),
                Ok(Ok(stream)) => stream,
            };
            let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            Ok(sender)
        } else {
            let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            Ok(sender)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let o = origin(&"https://api.example.test/v1/chat".parse().unwrap()).unwrap();
        assert_eq!((o.key.as_str(), o.port, o.tls), ("https://api.example.test:443", 443, true));
        let o = origin(&"http://[::1]:8080/v1".parse().unwrap()).unwrap();
        assert_eq!((o.host.as_str(), o.port, o.tls), ("::1", 8080, false));
        assert!(origin(&"ftp://x/".parse().unwrap()).is_err());
    }
}
