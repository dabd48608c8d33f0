//! Transport security of the gRPC stream: the serving certificate (swappable at run time, so a
//! rotation needs no restart), the TLS acceptor with a handshake deadline, and the PKI used to
//! issue certificates from the operator's own CA.

pub mod files;
pub mod pki;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Certificates in a served chain, at most.
const MAX_CHAIN: usize = 10;
/// Bytes of a served chain, at most.
const MAX_CHAIN_BYTES: usize = 48 * 1024;
/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; beyond it a new connection is closed at once (a sidecar
/// retries with backoff). Accepting never waits for a handshake slot, so connections that
/// never speak cannot stall the accept loop.
const MAX_HANDSHAKES: usize = 4096;

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM holds no certificate.
    #[error("no certificate in the PEM")]
    NoCertificate,
    /// The key cannot be read or used.
    #[error("private key: {0}")]
    Key(String),
    /// A file cannot be read.
    #[error("{0}")]
    File(String),
    /// Issuing a certificate failed.
    #[error("issuing a certificate: {0}")]
    Issue(String),
}

/// The certificate served now; [`ServingCert::set`] swaps it for new handshakes.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Serves `cert_pem` (chain, leaf first) with `key_pem`.
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self { current: RwLock::new(Arc::new(certified_key(cert_pem, key_pem)?)) }))
    }

    /// Replaces the certificate; connections already open keep theirs.
    pub fn set(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(cert_pem, key_pem)?);
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// Parses a PEM chain and key into what rustls serves.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    // A chain no client could receive (a TLS handshake message is at most 64 KiB) would fail
    // every handshake: refused, so the served certificate stays.
    let size: usize = chain.iter().map(|c| c.len()).sum();
    if chain.len() > MAX_CHAIN || size > MAX_CHAIN_BYTES {
        return Err(TlsError::Key(format!(
            "a chain of {} certificates ({size} bytes) is more than a handshake carries (at most {MAX_CHAIN}, {MAX_CHAIN_BYTES} bytes)",
            chain.len()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Key(e.to_string()))
}

/// A TLS acceptor serving `cert` (HTTP/2 only: gRPC).
pub fn acceptor(cert: Arc<ServingCert>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Handshakes in progress from one address at once, once half the slots are taken.
const MAX_HANDSHAKES_PER_PEER: usize = 64;
/// After its handshake a client has this long to send its first bytes (the HTTP/2 preface).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection tonic can serve: the bytes read while waiting for the client's first
/// bytes come first.
pub struct Secured {
    tls: TlsStream<TcpStream>,
    first: bytes::Bytes,
}

impl tonic::transport::server::Connected for Secured {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.get_ref().0.connect_info()
    }
}

impl AsyncRead for Secured {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let head = self.first.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Secured {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

/// Accepts connections on `listener` and hands over those that completed a TLS handshake in
/// time; handshakes run concurrently (at most [`MAX_HANDSHAKES`]; more are closed at once), so a
/// stalled client delays no other.
pub fn incoming(listener: TcpListener, acceptor: TlsAcceptor) -> ReceiverStream<io::Result<Secured>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let per_peer: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            // Under pressure (half the slots taken), one address cannot take more than its
            // share: other addresses keep getting handshakes.
            let ip = peer.ip();
            let pressed = permits.available_permits() < MAX_HANDSHAKES / 2;
            let admitted = per_peer.lock().map(|mut m| {
                let n = m.entry(ip).or_default();
                *n += 1;
                !pressed || *n <= MAX_HANDSHAKES_PER_PEER
            });
            let release = {
                let per_peer = per_peer.clone();
                move || {
                    if let Ok(mut m) = per_peer.lock()
                        && let Some(n) = m.get_mut(&ip)
                    {
                        *n -= 1;
                        if *n == 0 {
                            m.remove(&ip);
                        }
                    }
                }
            };
            if !admitted.unwrap_or(false) {
                release();
                tracing::debug!(%peer, "too many TLS handshakes from this address; connection closed");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                let secured = match handshake {
                    Ok(Ok(mut tls)) => {
                        // A client that completes TLS and then says nothing would hold a
                        // connection (and a file descriptor) forever: it must speak first.
                        use tokio::io::AsyncReadExt as _;
                        let mut first = vec![0u8; 4096];
                        match tokio::time::timeout(FIRST_BYTES_TIMEOUT, tls.read(&mut first)).await {
                            Ok(Ok(n)) if n > 0 => {
                                first.truncate(n);
                                Some(Secured { tls, first: bytes::Bytes::from(first) })
                            }
                            _ => {
                                tracing::debug!(%peer, "no bytes after the TLS handshake; connection closed");
                                None
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        None
                    }
                };
                release();
                if let Some(secured) = secured {
                    let _ = tx.send(Ok(secured)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod chain_tests {
    use time::OffsetDateTime;

    use super::pki::{SERVING_VALIDITY, issue, new_ca};

    #[test]
    fn a_chain_no_handshake_can_carry_is_refused() {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca(now).unwrap();
        let (cert, key) = issue(&ca, &["localhost".to_owned()], now, SERVING_VALIDITY).unwrap();
        super::certified_key(cert.as_bytes(), key.as_bytes()).unwrap();
        let huge = cert.repeat(1_500);
        let err = super::certified_key(huge.as_bytes(), key.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("more than a handshake carries"), "{err}");
    }
}
