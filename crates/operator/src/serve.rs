//! Wiring of the serving operator: a source (the manifests directory, or the cluster) feeding
//! builds into the shared state, the health prober, the gRPC service and the admin server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use llmroute_manifests::ManifestDir;
use llmroute_upstream::{Pool, PoolConfig, Prober};
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::flags::{Flags, TlsMode};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::state::Shared;
use crate::stream::Admission;
use crate::tls::files::CertFiles;

/// Quiet time after the last change before a build.
pub const DEBOUNCE_QUIET: Duration = Duration::from_millis(50);
/// Longest a build waits behind a stream of changes.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Longest the gRPC server waits for streams to end on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// A configuration error at start: the binary exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigurationError(pub String);

/// Runs the operator until SIGINT/SIGTERM.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    match flags.manifests.clone() {
        Some(dir) => run_manifests(flags, &dir).await,
        None => crate::cluster::run(flags).await,
    }
}

async fn run_manifests(flags: Flags, dir: &Path) -> anyhow::Result<()> {
    let source = ManifestDir::open(dir, flags.config.as_deref(), Duration::from_millis(flags.settle_ms))
        .map_err(|e| ConfigurationError(e.to_string()))?;
    // Certificate files given without a mode mean TLS; given with `off`, a contradiction.
    let certs_given = flags.tls_cert_file.is_some() || flags.tls_key_file.is_some();
    let mode = match (flags.tls_mode, certs_given) {
        (None, true) => TlsMode::Files,
        (Some(TlsMode::Off), true) => {
            return Err(ConfigurationError("--tls-cert-file/--tls-key-file given with --tls-mode off".into()).into());
        }
        (mode, _) => mode.unwrap_or(TlsMode::Off),
    };
    let tls = match mode {
        TlsMode::Off => None,
        TlsMode::Files => Some(cert_files(&flags)?),
        TlsMode::SelfSigned => {
            return Err(ConfigurationError(
                "--tls-mode self-signed keeps its CA in a cluster Secret; in manifests mode use --tls-mode files"
                    .into(),
            )
            .into());
        }
    };
    let listeners = Listeners::bind(&flags).await?;
    let mut shared = Shared::new(Metrics::new().context("registering metrics")?);
    shared.ready_threshold = flags.ready_threshold;
    shared.fleet = Arc::new(crate::fleet::Fleet::new(flags.fleet()));
    let shared = Arc::new(shared);
    let prober = new_prober(&shared)?;
    // Reading, admitting and compiling run on a thread of their own, never on the runtime that
    // serves the streams.
    let (source_shared, interval, runtime) =
        (shared.clone(), Duration::from_millis(flags.poll_interval_ms), tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name("llmroute-manifests".into())
        .spawn(move || {
            let _entered = runtime.enter();
            watch_source(source, Publisher::new(source_shared.clone(), Some(prober)), &source_shared, interval);
        })
        .context("starting the manifests thread")?;
    let auth = match shared_token(&flags)? {
        Some(token) => Authenticator::Shared(token),
        None => Authenticator::Open,
    };
    if !flags.grpc_listen.ip().is_loopback() && (tls.is_none() || matches!(auth, Authenticator::Open)) {
        tracing::warn!(
            grpc = %flags.grpc_listen,
            tls = tls.is_some(),
            token = !matches!(auth, Authenticator::Open),
            "the stream listens beyond loopback without TLS and a token: views (and their credentials) reach anyone who connects"
        );
    }
    let serving = match tls {
        Some(files) => {
            let (cert, follow) = files
                .load(crate::tls::files::POLL)
                .map_err(|e| ConfigurationError(format!("--tls-cert-file/--tls-key-file: {e}")))?;
            tokio::spawn(follow);
            Some(cert)
        }
        None => None,
    };
    serve(listeners, shared, admission(&flags, auth), serving).await
}

/// The shared token of `--token` or `--token-file`: never empty (an empty one would mean no
/// authentication, silently).
pub fn shared_token(flags: &Flags) -> Result<Option<String>, ConfigurationError> {
    let token = match (&flags.token, &flags.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => {
            let pem =
                crate::tls::files::read_pem(path).map_err(|e| ConfigurationError(format!("--token-file: {e}")))?;
            Some(String::from_utf8_lossy(&pem).trim().to_owned())
        }
        (None, None) => None,
    };
    match token {
        Some(t) if t.trim().is_empty() => Err(ConfigurationError("--token / --token-file: the token is empty".into())),
        Some(t) if t.len() > 4096 || !t.bytes().all(|b| (0x21..0x7f).contains(&b)) => Err(ConfigurationError(
            "--token / --token-file: a token is at most 4096 visible ASCII characters (it travels in a header)".into(),
        )),
        other => Ok(other),
    }
}

/// `--tls-mode files`: both files must be given.
pub fn cert_files(flags: &Flags) -> Result<CertFiles, ConfigurationError> {
    match (&flags.tls_cert_file, &flags.tls_key_file) {
        (Some(cert), Some(key)) => Ok(CertFiles { cert: cert.clone(), key: key.clone() }),
        _ => Err(ConfigurationError("--tls-mode files needs --tls-cert-file and --tls-key-file".into())),
    }
}

/// The stream admission of `flags`.
pub fn admission(flags: &Flags, auth: Authenticator) -> Admission {
    Admission {
        auth: Arc::new(auth),
        new_streams_per_second: flags.new_streams_per_second,
        max_age: (flags.max_stream_age_seconds > 0).then(|| Duration::from_secs(flags.max_stream_age_seconds)),
        max_streams: usize::try_from(flags.max_streams).unwrap_or(usize::MAX),
    }
}

/// The health prober, publishing into `shared`.
pub fn new_prober(shared: &Arc<Shared>) -> anyhow::Result<Prober> {
    let pool = Pool::new(PoolConfig::default()).context("building the upstream TLS configuration")?;
    let health = shared.clone();
    Ok(Prober::new(
        pool,
        Arc::new(move |entries| {
            health.health.send_replace(Arc::new(entries));
        }),
        crate::clock::now_ms,
    ))
}

/// The plaintext gRPC connections, with TCP_NODELAY (DESIGN §7): tonic ignores its own
/// `tcp_nodelay` for connections handed to it, and with Nagle a snapshot pushed while the
/// previous one is unacknowledged waits out the sidecar's delayed ACK (40 ms).
fn plaintext(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The bound gRPC and admin listeners.
pub struct Listeners {
    grpc: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds `--grpc-listen` and `--admin-listen`.
    pub async fn bind(flags: &Flags) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(flags.grpc_listen)
            .await
            .with_context(|| format!("binding --grpc-listen {}", flags.grpc_listen))?;
        let admin = TcpListener::bind(flags.admin_listen)
            .await
            .with_context(|| format!("binding --admin-listen {}", flags.admin_listen))?;
        Ok(Self { grpc, admin })
    }
}

/// Serves the admin endpoints and the gRPC stream (over TLS when `tls` is given) until
/// SIGINT/SIGTERM, then ends every stream and drains for at most 5 s.
pub async fn serve(
    listeners: Listeners,
    shared: Arc<Shared>,
    admission: Admission,
    tls: Option<Arc<crate::tls::ServingCert>>,
) -> anyhow::Result<()> {
    let (grpc_addr, admin_addr): (SocketAddr, SocketAddr) =
        (listeners.grpc.local_addr()?, listeners.admin.local_addr()?);
    tokio::spawn(crate::admin::serve(listeners.admin, shared.clone()));
    let fleet = tokio::spawn(shared.fleet.clone().run(shared.clone()));
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, tls = tls.is_some(), "llmroute-operator serving");
    // Streams end on their own (jittered) at their maximum age; a connection that outlives it
    // anyway gets an HTTP/2 GOAWAY, with a minute to finish.
    let connection_age = admission.max_age.map(|age| age + age / 10 + Duration::from_secs(30));
    let service = llmroute_proto::v1::routing_discovery_server::RoutingDiscoveryServer::new(
        crate::stream::Discovery::new(shared.clone(), admission),
    )
    .max_decoding_message_size(64 * 1024);
    let stopping = shared.clone();
    let stop = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: ending every stream");
        stopping.stopping.send_replace(true);
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(age) = connection_age {
        builder = builder.max_connection_age(age).max_connection_age_grace(Duration::from_secs(60));
    }
    let builder = builder
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(service);
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match tls {
            Some(cert) => {
                let acceptor = crate::tls::acceptor(cert).context("building the TLS configuration")?;
                Box::pin(builder.serve_with_incoming_shutdown(crate::tls::incoming(listeners.grpc, acceptor), stop))
            }
            None => Box::pin(builder.serve_with_incoming_shutdown(plaintext(listeners.grpc), stop)),
        };
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
    // The fleet saves what it learned once the streams have ended.
    let _ = tokio::time::timeout(DRAIN, fleet).await;
    tracing::info!("stopped");
    Ok(())
}

/// Polls the source, debounces changes (50 ms quiet, 1 s at most) and publishes builds.
fn watch_source(mut source: ManifestDir, mut publisher: Publisher, shared: &Shared, interval: Duration) {
    let record_config = |source: &ManifestDir| {
        let problem = source.problems().config.map(|p| p.to_string());
        if let Ok(mut slot) = shared.config_problem.lock() {
            *slot = problem;
        }
    };
    if source.listed() {
        publisher.publish(source.store(), Instant::now());
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
            publisher.publish(source.store(), first);
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

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn plaintext_grpc_connections_have_tcp_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::plaintext(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "Nagle left on for the snapshot stream");
    }
}
