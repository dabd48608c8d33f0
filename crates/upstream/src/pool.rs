//! The upstream connection pool: keep-alive HTTP/1.1 connections per origin (TCP_NODELAY,
//! connect timeout, rustls for https). A connection is checked out for one request and goes
//! back to the pool when its response body has been read to the end. Idle connections are
//! closed after `idle_timeout` and at most `max_idle_per_origin` are kept. A request that
//! fails on a reused connection before it was written (the server closed it meanwhile) is
//! sent once more on a fresh connection: that is the pool's business, not a failed attempt.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::target::Origin;
use crate::{RequestBody, Target};

type Sender = SendRequest<RequestBody>;

/// Why a request could not be sent (retryable on another deployment).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// TCP connect failed.
    #[error("connect to {origin}: {source}")]
    Connect {
        /// scheme://host:port.
        origin: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// TCP connect or the TLS handshake took longer than the connect timeout.
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
    /// The host is not a valid TLS server name.
    #[error("{0}: not a valid TLS server name")]
    ServerName(String),
    /// The HTTP exchange failed (reset, not HTTP, closed early...).
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Settings of a [`Pool`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// TCP connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// An idle connection older than this is closed.
    pub idle_timeout: Duration,
    /// Idle connections kept per origin; more are closed when returned.
    pub max_idle_per_origin: usize,
    /// CA certificates trusted for https besides the public webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_origin: 64,
            extra_roots: Vec::new(),
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Keep-alive connections by origin.
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    tls: TlsConnector,
    config: PoolConfig,
}

/// A connection in use, returned to its pool by [`Checkout::release`].
struct Checkout {
    pool: Weak<Pool>,
    origin: String,
    sender: Sender,
}

impl Checkout {
    fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let Some(pool) = self.pool.upgrade() else { return };
        if let Ok(mut idle) = pool.idle.lock() {
            let list = idle.entry(self.origin).or_default();
            if list.len() < pool.config.max_idle_per_origin {
                list.push(Idle { sender: self.sender, since: Instant::now() });
            }
        }
    }
}

/// An upstream response body; its connection goes back to the pool once the body has been
/// read to the end (a body dropped early closes the connection instead).
pub struct PooledBody {
    inner: Incoming,
    checkout: Option<Checkout>,
}

impl PooledBody {
    fn finish(&mut self) {
        if let Some(checkout) = self.checkout.take() {
            checkout.release();
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => self.checkout = None,
            // The consumer may stop polling once `is_end_stream` says so: finish here.
            Poll::Ready(None) | Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Pool {
    /// A pool; https is verified against the webpki roots plus `config.extra_roots`. Inside a
    /// Tokio runtime a background task closes expired idle connections.
    pub fn new(config: PoolConfig) -> Result<Arc<Self>, tokio_rustls::rustls::Error> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let (added, ignored) = roots.add_parsable_certificates(config.extra_roots.clone());
        if ignored > 0 {
            tracing::warn!(added, ignored, "some upstream CA certificates could not be used");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pool = Arc::new(Self { idle: Mutex::default(), tls: TlsConnector::from(Arc::new(tls)), config });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reap(Arc::downgrade(&pool)));
        }
        Ok(pool)
    }

    /// Sends `request` (origin form, `Host` set: see [`crate::shape`]) to `target` on a pooled
    /// or new connection.
    pub async fn send(
        self: &Arc<Self>,
        target: &Target,
        request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let origin = &target.origin;
        let mut request = request;
        if let Some(mut sender) = self.reuse(&origin.key).await {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.checked_out(response, origin, sender)),
                Err(mut failed) => match failed.take_message() {
                    // Never written: the server had closed the connection. Use a fresh one.
                    Some(unsent) => {
                        tracing::debug!(origin = %origin.key, error = %failed.error(), "stale pooled connection; retrying on a new one");
                        request = unsent;
                    }
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(origin).await?;
        let response = sender.send_request(request).await?;
        Ok(self.checked_out(response, origin, sender))
    }

    /// Idle connections currently held for `origin` (`scheme://host:port`).
    pub fn idle_count(&self, origin: &str) -> usize {
        self.idle.lock().map_or(0, |idle| idle.get(origin).map_or(0, Vec::len))
    }

    fn checked_out(
        self: &Arc<Self>,
        response: Response<Incoming>,
        origin: &Origin,
        sender: Sender,
    ) -> Response<PooledBody> {
        let checkout = Checkout { pool: Arc::downgrade(self), origin: origin.key.clone(), sender };
        response.map(|inner| PooledBody { inner, checkout: Some(checkout) })
    }

    /// The most recently returned live, unexpired connection of `origin`, if any.
    async fn reuse(&self, origin: &str) -> Option<Sender> {
        loop {
            let Idle { mut sender, since } = self.idle.lock().ok()?.get_mut(origin)?.pop()?;
            if since.elapsed() < self.config.idle_timeout && !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Drops idle connections older than the idle timeout.
    fn expire(&self) {
        let Ok(mut idle) = self.idle.lock() else { return };
        let timeout = self.config.idle_timeout;
        idle.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < timeout && !i.sender.is_closed());
            !list.is_empty()
        });
    }

    async fn connect(&self, origin: &Origin) -> Result<Sender, PoolError> {
        let timeout = self.config.connect_timeout;
        let connect = TcpStream::connect((origin.host.as_str(), origin.port));
        let tcp = match tokio::time::timeout(timeout, connect).await {
            Err(_) => return Err(PoolError::ConnectTimeout(origin.key.clone())),
            Ok(Err(source)) => return Err(PoolError::Connect { origin: origin.key.clone(), source }),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let mut builder = http1::Builder::new();
        builder.writev(false);
        if !origin.tls {
            let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            return Ok(sender);
        }
        let name = ServerName::try_from(origin.host.clone()).map_err(|_| PoolError::ServerName(origin.key.clone()))?;
        let stream = match tokio::time::timeout(timeout, self.tls.connect(name, tcp)).await {
            Err(_) => return Err(PoolError::ConnectTimeout(origin.key.clone())),
            Ok(Err(source)) => return Err(PoolError::Tls { origin: origin.key.clone(), source }),
            Ok(Ok(stream)) => stream,
        };
        let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// Expires idle connections every half idle timeout while the pool lives.
async fn reap(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.config.idle_timeout / 2).max(Duration::from_millis(50)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(p) => p.expire(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests;
