//! `--tls-mode files` (cert-manager): the certificate and key are read from files and read
//! again when they change, so a renewal reaches new connections without a restart. A pair that
//! cannot be used is logged and the served one stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{ServingCert, TlsError};

/// How often the files are checked.
pub const POLL: Duration = Duration::from_secs(5);

/// The certificate and key files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// The files' stamps taken before a read: a change made during or after it is seen.
fn stamps(files: &CertFiles) -> (Stamp, Stamp) {
    (stamp(&files.cert), stamp(&files.key))
}

type Stamp = Option<(SystemTime, u64)>;

/// Largest certificate chain or key file read, bytes.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Reads a PEM file: a regular file (never a FIFO or device, whose read could block forever) of
/// at most [`MAX_PEM_BYTES`].
pub fn read_pem(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| TlsError::File(format!("reading {shown}: {e}")))?;
    if !metadata.is_file() || metadata.len() > MAX_PEM_BYTES {
        return Err(TlsError::File(format!("{shown} is not a regular file of at most {MAX_PEM_BYTES} bytes")));
    }
    std::fs::read(path).map_err(|e| TlsError::File(format!("reading {shown}: {e}")))
}

fn stamp(path: &PathBuf) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

impl CertFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read_pem(&self.cert)?, read_pem(&self.key)?))
    }

    /// The serving certificate the files hold now, and a future that re-reads the files into
    /// it whenever they change (compared with their state before this read), forever.
    pub fn load(self, every: Duration) -> Result<(Arc<ServingCert>, impl std::future::Future<Output = ()>), TlsError> {
        let seen = stamps(&self);
        let (cert, key) = self.read()?;
        let serving = ServingCert::new(&cert, &key)?;
        Ok((serving.clone(), self.follow(serving, seen, every)))
    }

    async fn follow(self, serving: Arc<ServingCert>, mut seen: (Stamp, Stamp), every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let now = stamps(&self);
            if now == seen {
                continue;
            }
            seen = now;
            match self.read().and_then(|(cert, key)| serving.set(&cert, &key)) {
                Ok(()) => tracing::info!(cert = %self.cert.display(), "serving certificate reloaded"),
                Err(e) => tracing::warn!(error = %e, "new certificate files unusable; the served certificate stays"),
            }
        }
    }
}
