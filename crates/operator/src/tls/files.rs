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

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

impl CertFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| TlsError::Key(format!("reading {}: {e}", p.display())));
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// The serving certificate the files hold now.
    pub fn load(&self) -> Result<Arc<ServingCert>, TlsError> {
        let (cert, key) = self.read()?;
        ServingCert::new(&cert, &key)
    }

    /// Re-reads the files into `serving` whenever they change, forever.
    pub async fn follow(self, serving: Arc<ServingCert>, every: Duration) {
        let mut seen = (stamp(&self.cert), stamp(&self.key));
        loop {
            tokio::time::sleep(every).await;
            let now = (stamp(&self.cert), stamp(&self.key));
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
