//! Wiring: listeners, the routing source, the API and admin servers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use crate::flags::Flags;
use crate::health::HealthProber;
use crate::manifests::{self, ManifestSource};
use crate::metrics::Metrics;
use crate::proxy::{self, upstream::UpstreamClient};
use crate::routing::RoutingHandle;

/// Everything a request handler needs.
pub struct Proxy {
    /// The routing in force.
    pub routing: Arc<RoutingHandle>,
    /// Pooled upstream client.
    pub client: UpstreamClient,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Team served.
    pub team: String,
    /// Request body limit, bytes.
    pub max_body_bytes: usize,
    /// Per-attempt response-header limit (None: the remaining deadline).
    pub attempt_timeout: Option<Duration>,
    /// Time allowed to read a request body.
    pub body_read_timeout: Duration,
}

/// Wall-clock milliseconds since the Unix epoch (the router's clock).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the sidecar until SIGINT/SIGTERM.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let api = TcpListener::bind(flags.listen).await.with_context(|| format!("binding --listen {}", flags.listen))?;
    let admin = TcpListener::bind(flags.admin_listen)
        .await
        .with_context(|| format!("binding --admin-listen {}", flags.admin_listen))?;
    let routing = Arc::new(RoutingHandle::default());
    let extra_roots = match &flags.upstream_ca_file {
        Some(path) => load_ca(path)?,
        None => Vec::new(),
    };
    let client = proxy::pool::Pool::new(Duration::from_millis(flags.connect_timeout_ms), extra_roots)
        .context("building the upstream TLS configuration")?;
    let proxy = Arc::new(Proxy {
        routing: routing.clone(),
        client: client.clone(),
        metrics: Metrics::new().context("registering metrics")?,
        team: flags.team.clone(),
        max_body_bytes: flags.max_body_bytes,
        attempt_timeout: (flags.attempt_timeout_ms > 0).then(|| Duration::from_millis(flags.attempt_timeout_ms)),
        body_read_timeout: Duration::from_millis(flags.body_read_timeout_ms),
    });
    match (&flags.manifests, &flags.operator) {
        (Some(dir), _) => {
            let source = ManifestSource { dir: dir.clone(), config: flags.config.clone(), team: flags.team.clone() };
            let prober = Arc::new(HealthProber::new(client, routing.clone()));
            tokio::spawn(manifests::watch(source, routing, prober, flags.poll_interval()));
        }
        (None, Some(operator)) => {
            anyhow::bail!("--operator {operator}: the operator-fed mode is not built yet; use --manifests DIR")
        }
        (None, None) => anyhow::bail!("either --manifests DIR or --operator URL is required"),
    }
    let (listen, admin_listen) = (api.local_addr()?, admin.local_addr()?);
    tracing::info!(%listen, admin = %admin_listen, team = %flags.team, "llmroute-sidecar serving");
    let header_timeout = Duration::from_millis(flags.header_read_timeout_ms);
    let drain = Duration::from_millis(flags.drain_timeout_ms);
    let admin_proxy = proxy.clone();
    let admin_handler = move |req| crate::admin::handle(admin_proxy.clone(), req);
    tokio::spawn(proxy::server::serve(admin, header_timeout, admin_handler, std::future::pending(), drain));
    let stop = async {
        shutdown_signal().await;
        tracing::info!(drain_ms = flags.drain_timeout_ms, "shutting down: draining open requests");
    };
    let api_handler = move |req| proxy::server::handle(proxy.clone(), req);
    proxy::server::serve(api, header_timeout, api_handler, stop, drain).await;
    tracing::info!("stopped");
    Ok(())
}

/// The certificates of a PEM bundle, for `--upstream-ca-file`.
fn load_ca(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading --upstream-ca-file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--upstream-ca-file {}: not a PEM certificate bundle", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "--upstream-ca-file {}: no certificate found", path.display());
    Ok(certs)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
