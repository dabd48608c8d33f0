//! Wiring: listeners, the routing source, the API and admin servers. Nothing else imports it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use llmroute_manifests::ManifestDir;
use llmroute_upstream::{Pool, PoolConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use crate::context::{Context, RequestLimits};
use crate::flags::Flags;
use crate::inbound::ConnectionLimits;
use crate::metrics::Metrics;
use crate::routes::RoutesHandle;
use crate::standalone::Standalone;

/// A start-up failure caused by configuration (flags, config file, files named by flags):
/// the binary exits with status 2 for these, 1 for anything else.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigurationError(pub String);

/// Runs the sidecar until SIGINT/SIGTERM.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    flags.check().map_err(ConfigurationError)?;
    let extra_roots = match &flags.upstream_ca_file {
        Some(path) => load_ca(path).map_err(|e| ConfigurationError(format!("{e:#}")))?,
        None => Vec::new(),
    };
    let source = match (&flags.manifests, &flags.operator) {
        (Some(dir), _) => Some(
            ManifestDir::open(dir, flags.config.as_deref(), Duration::from_millis(flags.settle_ms))
                .map_err(|e| ConfigurationError(e.to_string()))?,
        ),
        (None, Some(operator)) => {
            tonic::transport::Endpoint::from_shared(operator.clone())
                .map_err(|e| ConfigurationError(format!("--operator {operator}: {e}")))?;
            None
        }
        (None, None) => {
            return Err(ConfigurationError("either --manifests DIR or --operator URL is required".into()).into());
        }
    };
    let api = TcpListener::bind(flags.listen).await.with_context(|| format!("binding --listen {}", flags.listen))?;
    let admin = TcpListener::bind(flags.admin_listen)
        .await
        .with_context(|| format!("binding --admin-listen {}", flags.admin_listen))?;
    let pool = Pool::new(PoolConfig {
        connect_timeout: Duration::from_millis(flags.connect_timeout_ms),
        idle_timeout: Duration::from_millis(flags.pool_idle_timeout_ms),
        max_idle_per_origin: usize::try_from(flags.pool_max_idle_per_upstream).unwrap_or(usize::MAX),
        extra_roots,
    })
    .context("building the upstream TLS configuration")?;
    let routes = Arc::new(RoutesHandle::default());
    let metrics = Metrics::new().context("registering metrics")?;
    let ctx = Arc::new(Context {
        routes: routes.clone(),
        upstream: pool.clone(),
        metrics: metrics.clone(),
        team: flags.team.clone(),
        limits: RequestLimits {
            max_body_bytes: flags.max_body_bytes as usize,
            body_read_timeout: Duration::from_millis(flags.body_read_timeout_ms),
            attempt_timeout: (flags.attempt_timeout_ms > 0).then(|| Duration::from_millis(flags.attempt_timeout_ms)),
            stream_idle_timeout: Duration::from_millis(flags.stream_idle_timeout_ms),
        },
        body_memory: Arc::new(Semaphore::new(usize::try_from(flags.max_buffered_body_bytes).unwrap_or(usize::MAX))),
        memory: crate::fleet::Memory::default().with_metric(metrics.memory_evictions.clone()),
        access: if flags.access_log {
            Some(Arc::new(
                crate::access::AccessLog::stdout(metrics.access_log_dropped.clone())
                    .context("starting the access log writer")?,
            ))
        } else {
            None
        },
        tracing: crate::trace::Tracing::start(
            &crate::trace::TraceConfig {
                endpoint: flags.otlp_endpoint.clone(),
                sample_ratio: flags.trace_sample_ratio,
                pod: flags.pod_name.clone(),
            },
            metrics.trace_spans_dropped.clone(),
        )
        .map_err(|e| ConfigurationError(format!("traces: {e:#}")))?,
    });
    match source {
        Some(source) => {
            let prober = crate::health::prober(pool, routes.clone());
            let standalone = Standalone::new(source, flags.team.clone(), routes, prober, metrics);
            standalone
                .spawn(flags.poll_interval(), tokio::runtime::Handle::current())
                .context("starting the manifests thread")?;
        }
        None => {
            let identity = crate::operator::Identity {
                team: flags.team.clone(),
                pod: flags.pod_name.clone(),
                namespace: flags.namespace.clone(),
            };
            let url = flags.operator.clone().unwrap_or_default();
            let cache = flags.snapshot_cache.clone();
            let max_part_bytes = flags.max_view_bytes;
            let (ca_file, token_file) = (flags.operator_ca_file.clone(), flags.operator_token_file.clone());
            routes.enable_fleet_limits();
            let source = crate::operator::OperatorSource {
                url,
                identity,
                routes,
                metrics,
                cache,
                max_part_bytes,
                ca_file,
                token_file,
                uid: format!("{:016x}", rand::random::<u64>()),
                outbox: std::sync::Mutex::default(),
            };
            tokio::spawn(source.run());
        }
    }
    // Adaptive sessions that ended right after a failed turn are one more failure.
    let sweeper = ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let abandoned = sweeper.memory.abandoned(crate::clock::now_ms());
            if let Some(routes) = sweeper.routes.load() {
                for credit in &abandoned {
                    crate::fleet::charge(&routes, credit, 0.0);
                }
            }
        }
    });
    let (listen, admin_listen) = (api.local_addr()?, admin.local_addr()?);
    tracing::info!(%listen, admin = %admin_listen, team = %flags.team, "llmroute-sidecar serving");
    let header_timeout = Duration::from_millis(flags.header_read_timeout_ms);
    let drain = Duration::from_millis(flags.drain_timeout_ms);
    let admin_ctx = ctx.clone();
    let admin_max = admin_max_connections();
    let admin_handler = move |req| crate::admin::handle(admin_ctx.clone(), req);
    serve_admin(admin, move |admin| {
        let limits = ConnectionLimits { max_open: admin_max, max_lifetime: Some(ADMIN_CONNECTION_LIFETIME) };
        crate::inbound::serve(admin, header_timeout, admin_handler, std::future::pending(), drain, limits)
    })?;
    let stop = async {
        shutdown_signal().await;
        tracing::info!(drain_ms = flags.drain_timeout_ms, "shutting down: draining open requests");
    };
    let tracer = ctx.tracing.clone();
    let api_handler = move |req| crate::inbound::handle(ctx.clone(), req);
    crate::inbound::serve(api, header_timeout, api_handler, stop, drain, ConnectionLimits::NONE).await;
    if let Some(tracer) = tracer {
        // The last requests' spans: sent, or counted as dropped, within 2 s.
        let _ = tokio::task::spawn_blocking(move || tracer.flush(Duration::from_secs(2))).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// An admin connection is closed after this long: a probe or a scrape takes milliseconds, and
/// a client that pipelines requests and never reads cannot hold a slot for good.
const ADMIN_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Admin connections open at once, at most: a quarter of the process's file descriptors, and
/// never fewer than 256. Probes, a scraper and a person need a few; a flood of idle ones must
/// not take the descriptors requests need, nor, where descriptors are plenty (a container's
/// usual 1,048,576), shut out the kubelet's probes with a few hundred idle connections.
fn admin_max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    open_files_limit(&limits).map_or(256, |n| (n / 4).max(256))
}

/// The soft `Max open files` of a `/proc/PID/limits` text.
fn open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Serves the admin port on a thread and runtime of its own (as Linkerd's proxy does): a
/// client flooding `/metrics` or `/debug/*` (each answer is rendered on the CPU) then competes
/// with requests as one thread among others, instead of queueing its work ahead of every
/// request on the request thread.
fn serve_admin<F, Fut>(listener: TcpListener, serve: F) -> anyhow::Result<()>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = listener.into_std().context("moving the admin listener to its thread")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("the admin runtime")?;
    std::thread::Builder::new()
        .name("llmroute-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener).await,
                    Err(e) => tracing::error!(error = %e, "the admin port could not be served"),
                }
            });
        })
        .context("starting the admin thread")?;
    Ok(())
}

/// The certificates of a PEM bundle, for `--upstream-ca-file`.
fn load_ca(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    /// Largest CA bundle read (the public webpki roots are about 250 KiB as PEM).
    const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;
    let metadata = std::fs::metadata(path).with_context(|| format!("reading --upstream-ca-file {}", path.display()))?;
    anyhow::ensure!(metadata.is_file(), "--upstream-ca-file {}: not a regular file", path.display());
    anyhow::ensure!(
        metadata.len() <= MAX_CA_BYTES,
        "--upstream-ca-file {}: larger than {MAX_CA_BYTES} bytes",
        path.display()
    );
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

#[cfg(test)]
mod tests {
    use super::open_files_limit;

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127                  127                  processes \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(open_files_limit("Max open files            unlimited            unlimited   files"), None);
        assert_eq!(open_files_limit(""), None);
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert!(open_files_limit(&own).is_some_and(|n| n > 0), "{own}");
    }
}
