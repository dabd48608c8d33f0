//! Wiring of the serving operator: the manifests source polled and debounced into builds, the
//! health prober, the gRPC service and the admin server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use llmroute_manifests::{ManifestDir, RejectionLog};
use llmroute_snapshot::compile;
use llmroute_upstream::{Pool, PoolConfig, Prober};
use tokio::net::TcpListener;

use crate::flags::Flags;
use crate::hub::Built;
use crate::metrics::Metrics;
use crate::state::Shared;

/// Quiet time after the last change before a build.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(50);
/// Longest a build waits behind a stream of changes.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Longest the gRPC server waits for streams to end on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// A configuration error at start: the binary exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigurationError(pub String);

/// Runs the operator until SIGINT/SIGTERM.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let source = ManifestDir::open(&flags.manifests, flags.config.as_deref(), Duration::from_millis(flags.settle_ms))
        .map_err(|e| ConfigurationError(e.to_string()))?;
    let grpc = TcpListener::bind(flags.grpc_listen)
        .await
        .with_context(|| format!("binding --grpc-listen {}", flags.grpc_listen))?;
    let admin = TcpListener::bind(flags.admin_listen)
        .await
        .with_context(|| format!("binding --admin-listen {}", flags.admin_listen))?;
    let (grpc_addr, admin_addr): (SocketAddr, SocketAddr) = (grpc.local_addr()?, admin.local_addr()?);
    let shared = Arc::new(Shared::new(Metrics::new().context("registering metrics")?));
    let pool = Pool::new(PoolConfig::default()).context("building the upstream TLS configuration")?;
    let health = shared.clone();
    let prober = Prober::new(
        pool,
        Arc::new(move |entries| {
            health.health.send_replace(Arc::new(entries));
        }),
        crate::clock::now_ms,
    );
    // Reading, admitting and compiling run on a thread of their own, never on the runtime that
    // serves the streams.
    let (source_shared, interval, runtime) =
        (shared.clone(), Duration::from_millis(flags.poll_interval_ms), tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name("llmroute-manifests".into())
        .spawn(move || {
            let _entered = runtime.enter();
            watch_source(source, source_shared, prober, interval);
        })
        .context("starting the manifests thread")?;
    tokio::spawn(crate::admin::serve(admin, shared.clone()));
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, "llmroute-operator serving");
    let service = llmroute_proto::v1::routing_discovery_server::RoutingDiscoveryServer::new(
        crate::stream::Discovery::new(shared.clone()),
    )
    .max_decoding_message_size(64 * 1024);
    let stopping = shared.clone();
    let stop = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: ending every stream");
        stopping.stopping.send_replace(true);
    };
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(grpc), stop);
    // Streams end at once on shutdown; a peer that does not let go gets 5 s.
    let mut stopped = shared.stopping.subscribe();
    let deadline = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        served = server => served.context("serving gRPC")?,
        () = deadline => tracing::warn!("drain timeout reached; closing the remaining streams"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Polls the source, debounces changes (50 ms quiet, 1 s at most) and publishes builds.
fn watch_source(mut source: ManifestDir, shared: Arc<Shared>, prober: Prober, interval: Duration) {
    let mut watermark = 0u64;
    let mut rejections = RejectionLog::default();
    let mut publish = |source: &ManifestDir, detected: Instant, watermark: &mut u64| {
        let started = Instant::now();
        // Never below the previous build, and comparable across restarts: wall-clock based.
        *watermark = (*watermark + 1).max(crate::clock::now_ms());
        let previous = shared.built();
        let built = Built::new(compile(source.store()), *watermark, detected, previous.as_deref());
        rejections.report(built.compiled.diagnostics());
        shared.metrics.builds.inc();
        shared.metrics.build_seconds.observe(started.elapsed().as_secs_f64());
        let deployments: Vec<_> = built.compiled.view("").deployments;
        let mut all = deployments;
        for team in built.compiled.teams() {
            all.extend(built.compiled.team_part(team).1.deployments);
        }
        prober.reconcile(&all);
        tracing::info!(watermark = *watermark, teams = built.compiled.teams().count(), "views built");
        shared.views.send_replace(Some(Arc::new(built)));
    };
    let record_config = |source: &ManifestDir| {
        let problem = source.problems().config.map(|p| p.to_string());
        if let Ok(mut slot) = shared.config_problem.lock() {
            *slot = problem;
        }
    };
    if source.listed() {
        publish(&source, Instant::now(), &mut watermark);
    }
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        std::thread::sleep(interval);
        let now = Instant::now();
        let rejected = source.config_rejections();
        if source.poll(now) {
            pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
        }
        shared.metrics.config_rejected.inc_by(source.config_rejections() - rejected);
        record_config(&source);
        if let Some((first, last)) = pending
            && (now.duration_since(last) >= DEBOUNCE_QUIET || now.duration_since(first) >= DEBOUNCE_MAX)
        {
            pending = None;
            publish(&source, first, &mut watermark);
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = ctrl_c.await;
}
