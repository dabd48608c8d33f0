//! Operator mode: one bidirectional stream to the operator. Each view arrives in two parts
//! (the shared global part and this team's overlay), is assembled and applied whole, then
//! acknowledged; a view that cannot be applied is NACKed and the old one keeps serving. The
//! stream reconnects with jittered exponential backoff and the last good view keeps serving
//! meanwhile; with `--snapshot-cache` the last applied view is kept on disk (mode 0600: it
//! holds credentials) and served at start before the operator answers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use llmroute_proto::v1;
use llmroute_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use llmroute_proto::v1::{control_message, sidecar_message};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::routes::RoutesHandle;

/// Longest wait for the operator's first message on a new stream.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token sent: what an HTTP/2 header of the operator accepts with room to spare.
const MAX_TOKEN_BYTES: u64 = 8 * 1024;

/// Reconnect backoff: first wait and cap.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Who this sidecar is.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub team: String,
    pub pod: String,
    pub namespace: String,
}

/// A part held, with the bytes it came in (for the cache).
#[derive(Clone, Debug)]
struct HeldPart {
    digest: String,
    gzip: Bytes,
    part: v1::Part,
}

/// What is applied.
#[derive(Debug, Default)]
struct Applied {
    version: String,
    watermark: u64,
    global: Option<HeldPart>,
    overlay: Option<HeldPart>,
}

impl Applied {
    fn held(&self, digest: &str) -> Option<&HeldPart> {
        [&self.global, &self.overlay].into_iter().flatten().find(|p| p.digest == digest)
    }
}

/// The operator source.
pub(crate) struct OperatorSource {
    pub url: String,
    pub identity: Identity,
    pub routes: Arc<RoutesHandle>,
    pub metrics: Metrics,
    pub cache: Option<PathBuf>,
    /// Largest view part accepted once decompressed, bytes (`--max-view-bytes`).
    pub max_part_bytes: u64,
    /// `--operator-ca-file`, read at every connection.
    pub ca_file: Option<PathBuf>,
    /// `--operator-token-file`, read at every connection.
    pub token_file: Option<PathBuf>,
    /// This sidecar process's id in fleet reports (random at start).
    pub uid: String,
    /// Reports made and not acknowledged yet (kept across streams).
    pub outbox: std::sync::Mutex<crate::fleet::report::Outbox>,
}

/// How often a fleet report is made.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection to the operator could not even start.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("reading --operator-ca-file {path}: {error}")]
    CaFile { path: String, error: std::io::Error },
    #[error("--operator-ca-file {0} is not a regular file of at most 4 MiB holding a PEM certificate")]
    NoCertificate(String),
    #[error("reading --operator-token-file {path}: {error}")]
    TokenFile { path: String, error: std::io::Error },
    #[error("--operator-token-file {0} is not a regular file of at most 8 KiB holding a token a header can carry")]
    BadToken(String),
}

/// The error and every cause, one line (a TLS refusal is in the causes).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl OperatorSource {
    /// Serves the cache (if any), then follows the operator forever.
    pub async fn run(self) {
        let mut applied = Applied::default();
        let mut health: HashMap<(String, String), v1::HealthEntry> = HashMap::new();
        if let Some(push) = self.read_cache() {
            match self.apply(&push, &mut applied) {
                Ok(()) => {
                    tracing::info!(version = %applied.version, "serving the cached view until the operator answers")
                }
                Err(e) => tracing::warn!(error = %e, "snapshot cache ignored"),
            }
        }
        let mut backoff = BACKOFF_START;
        loop {
            match self.session(&mut applied, &mut health, &mut backoff).await {
                Ok(()) => tracing::info!("operator stream ended; reconnecting"),
                Err(e) if e.downcast_ref::<ConnectError>().is_some() => {
                    tracing::error!(error = %e, "cannot connect to the operator; reconnecting");
                }
                Err(e) => {
                    let text = chain(e.as_ref());
                    if text.contains("certificate") || text.contains("Certificate") {
                        tracing::error!(operator = %self.url, error = %text, "the operator's TLS certificate is refused (check --operator-ca-file); reconnecting");
                    } else {
                        tracing::warn!(error = %text, "operator stream failed; reconnecting");
                    }
                }
            }
            let jitter = rand::random_range(0.5..1.0);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    async fn session(
        &self,
        applied: &mut Applied,
        health: &mut HashMap<(String, String), v1::HealthEntry>,
        backoff: &mut Duration,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.url.clone())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        if self.url.starts_with("https://") {
            endpoint = endpoint.tls_config(self.tls()?)?;
        }
        let token = self.token()?;
        let channel = endpoint.connect().await?;
        let limit = usize::try_from(self.max_part_bytes.saturating_mul(2)).unwrap_or(usize::MAX);
        let mut client = RoutingDiscoveryClient::new(channel).max_decoding_message_size(limit);
        let (tx, rx) = mpsc::channel(8);
        let held_parts = [&applied.global, &applied.overlay].into_iter().flatten().map(|p| p.digest.clone()).collect();
        let hello = v1::Hello {
            team: self.identity.team.clone(),
            pod: self.identity.pod.clone(),
            namespace: self.identity.namespace.clone(),
            last_applied_version: applied.version.clone(),
            last_applied_watermark: applied.watermark,
            protocol: v1::Protocol::V1 as i32,
            held_parts,
            sidecar_uid: self.uid.clone(),
        };
        tx.send(message(sidecar_message::Kind::Hello(hello))).await?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", token);
        }
        let mut inbound = client.stream_routes(request).await?.into_inner();
        tracing::info!(operator = %self.url, "connected to the operator");
        // An operator that accepts the stream but never answers is left after a while (to
        // another replica, perhaps); the backoff resets only once something arrives, so a
        // refusal in headers never turns into a fast retry loop.
        let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message())
            .await
            .map_err(|_| "the operator sent nothing within 30 s of the stream opening")??;
        *backoff = BACKOFF_START;
        // What the operator may have missed when the last stream broke, oldest first.
        let resend = self.outbox.lock().map(|o| o.unacked()).unwrap_or_default();
        for report in resend {
            tx.send(message(sidecar_message::Kind::Report(report))).await?;
        }
        let mut reports = tokio::time::interval(REPORT_INTERVAL);
        reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reports.tick().await;
        let mut next = first;
        while let Some(control) = next {
            match control.kind {
                Some(control_message::Kind::View(push)) => {
                    let reply = match self.apply(&push, applied) {
                        Ok(()) => {
                            self.write_cache(applied, &push);
                            sidecar_message::Kind::Ack(v1::Ack {
                                version: push.version.clone(),
                                nonce: push.nonce.clone(),
                            })
                        }
                        Err(error) => {
                            self.metrics.snapshot_rejected.inc();
                            tracing::error!(%error, version = %push.version, "view rejected; the previous one keeps serving");
                            sidecar_message::Kind::Nack(v1::Nack {
                                version: push.version.clone(),
                                nonce: push.nonce.clone(),
                                error,
                                applied_version: applied.version.clone(),
                            })
                        }
                    };
                    tx.send(message(reply)).await?;
                }
                Some(control_message::Kind::Health(push)) => self.apply_health(push, health),
                Some(control_message::Kind::Fleet(push)) => self.routes.apply_fleet(push),
                Some(control_message::Kind::ReportAck(ack)) => {
                    if let Ok(mut outbox) = self.outbox.lock() {
                        outbox.acked(ack.seq);
                    }
                }
                None => {}
            }
            next = loop {
                tokio::select! {
                    message = inbound.message() => break message?,
                    _ = reports.tick() => {
                        let interval = u64::try_from(REPORT_INTERVAL.as_millis()).unwrap_or(1_000);
                        let report = self.routes.load().and_then(|routes| {
                            self.outbox.lock().ok().and_then(|mut o| o.collect(&routes, interval, now_ms()))
                        });
                        if let Some(report) = report {
                            tx.send(message(sidecar_message::Kind::Report(report))).await?;
                        }
                    }
                }
            };
        }
        Ok(())
    }

    /// The TLS settings of this connection: the CA file as it is now, or the web roots.
    fn tls(&self) -> Result<tonic::transport::ClientTlsConfig, ConnectError> {
        let config = tonic::transport::ClientTlsConfig::new().assume_http2(true);
        let Some(path) = &self.ca_file else { return Ok(config.with_webpki_roots()) };
        let shown = path.display().to_string();
        // A regular file of bounded size: a FIFO or device could block or never end.
        let metadata = std::fs::metadata(path).map_err(|error| ConnectError::CaFile { path: shown.clone(), error })?;
        if !metadata.is_file() || metadata.len() > 4 * 1024 * 1024 {
            return Err(ConnectError::NoCertificate(shown));
        }
        let pem = std::fs::read(path).map_err(|error| ConnectError::CaFile { path: shown.clone(), error })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConnectError::NoCertificate(shown));
        }
        Ok(config.ca_certificate(tonic::transport::Certificate::from_pem(pem)))
    }

    /// The bearer token to present, read now (projected tokens rotate).
    fn token(&self) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, ConnectError> {
        let Some(path) = &self.token_file else { return Ok(None) };
        let shown = path.display().to_string();
        let metadata =
            std::fs::metadata(path).map_err(|error| ConnectError::TokenFile { path: shown.clone(), error })?;
        if !metadata.is_file() || metadata.len() > MAX_TOKEN_BYTES {
            return Err(ConnectError::BadToken(shown));
        }
        let text =
            std::fs::read_to_string(path).map_err(|error| ConnectError::TokenFile { path: shown.clone(), error })?;
        let value = format!("Bearer {}", text.trim());
        value.parse().map(Some).map_err(|_| ConnectError::BadToken(shown))
    }

    /// Assembles and applies a pushed view; the error says why not.
    fn apply(&self, push: &v1::ViewPush, applied: &mut Applied) -> Result<(), String> {
        // Without --team the operator decides (the pod's namespace's team).
        if !self.identity.team.is_empty() && push.team != self.identity.team {
            return Err(format!("view of team {:?}, this sidecar serves {:?}", push.team, self.identity.team));
        }
        if push.watermark < applied.watermark {
            return Err(format!("view watermark {} is older than the applied {}", push.watermark, applied.watermark));
        }
        let part = |encoded: &Option<v1::EncodedPart>| -> Result<HeldPart, String> {
            let encoded = encoded.as_ref().ok_or("a part is missing")?;
            if encoded.gzip.is_empty() {
                return applied
                    .held(&encoded.digest)
                    .cloned()
                    .ok_or_else(|| format!("part {} is not held", encoded.digest));
            }
            let part = llmroute_proto::part::decompress_checked(&encoded.gzip, self.max_part_bytes, &encoded.digest)
                .map_err(|e| e.to_string())?;
            Ok(HeldPart { digest: encoded.digest.clone(), gzip: encoded.gzip.clone(), part })
        };
        let (global, overlay) = (part(&push.global)?, part(&push.overlay)?);
        let view = llmroute_proto::view::assemble(push.version.clone(), &push.team, &global.part, &overlay.part);
        match self.routes.apply(view) {
            Ok(_) => {
                if let Some(routes) = self.routes.load() {
                    self.metrics.prune(&routes);
                }
                *applied = Applied {
                    version: push.version.clone(),
                    watermark: push.watermark,
                    global: Some(global),
                    overlay: Some(overlay),
                };
                tracing::info!(version = %push.version, watermark = push.watermark, "view applied");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn apply_health(&self, push: v1::HealthPush, table: &mut HashMap<(String, String), v1::HealthEntry>) {
        if push.full {
            table.clear();
        }
        let now = now_ms();
        for mut entry in push.table.map(|t| t.entries).unwrap_or_default() {
            // Dated by this sidecar's clock from the age it was sent with.
            entry.observed_at_unix_ms = i64::try_from(now.saturating_sub(entry.age_ms)).unwrap_or(0);
            table.insert((entry.deployment_id.clone(), entry.spec_hash.clone()), entry);
        }
        self.routes.apply_health(table.values().cloned().collect());
    }

    fn read_cache(&self) -> Option<v1::ViewPush> {
        let path = self.cache.as_ref()?;
        let metadata = std::fs::metadata(path).ok()?;
        // Two compressed parts can never be larger than the parts themselves, plus framing.
        let limit = self.max_part_bytes.saturating_mul(2).saturating_add(64 * 1024);
        if !metadata.is_file() || metadata.len() > limit {
            tracing::warn!(cache = %path.display(), "snapshot cache is not a regular file of at most {limit} bytes; ignored");
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        match v1::ViewPush::decode(bytes.as_slice()) {
            Ok(push) => Some(push),
            Err(e) => {
                tracing::warn!(cache = %path.display(), error = %e, "snapshot cache is corrupt; ignored");
                None
            }
        }
    }

    /// Writes the applied view (both parts, whole) atomically, mode 0600.
    fn write_cache(&self, applied: &Applied, push: &v1::ViewPush) {
        let Some(path) = &self.cache else { return };
        let encoded = |p: &Option<HeldPart>| {
            p.as_ref().map(|p| v1::EncodedPart { digest: p.digest.clone(), gzip: p.gzip.clone() })
        };
        let whole = v1::ViewPush {
            nonce: String::new(),
            version: push.version.clone(),
            team: push.team.clone(),
            watermark: push.watermark,
            global: encoded(&applied.global),
            overlay: encoded(&applied.overlay),
        };
        if let Err(e) = llmroute_manifests::write_private(path, &whole.encode_to_vec()) {
            tracing::warn!(cache = %path.display(), error = %e, "snapshot cache not written");
        }
    }
}

fn message(kind: sidecar_message::Kind) -> v1::SidecarMessage {
    v1::SidecarMessage { kind: Some(kind) }
}
