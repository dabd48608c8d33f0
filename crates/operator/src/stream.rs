//! The `RoutingDiscovery` service: one bidirectional stream per sidecar. Hello first; then the
//! team's view (unless the sidecar holds it), a new full view on every change, health tables
//! separately. ACK/NACK by version and nonce, xDS-style: a NACKed version is never resent;
//! the subscriber is parked until the view's content changes. Latest wins per subscriber:
//! a slow one is sent the newest view when it is ready again, with no queue behind it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use llmroute_proto::v1;
use llmroute_proto::v1::routing_discovery_server::RoutingDiscovery;
use llmroute_proto::v1::{control_message, sidecar_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Identity};
use crate::hub::{Built, TeamView};
use crate::state::Shared;

/// Time a sidecar has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest team name accepted (a DNS label).
const MAX_TEAM: usize = 63;
/// Longest NACK error kept for logs and /status, characters.
const MAX_NACK_TEXT: usize = 1024;

/// How streams are admitted and how long they live.
pub struct Admission {
    /// Who the caller is.
    pub auth: Arc<Authenticator>,
    /// New streams per second (and burst).
    pub new_streams_per_second: f64,
    /// A stream ends gracefully after this (jittered down by up to 10%); `None` = never.
    pub max_age: Option<Duration>,
    /// Streams held at most (beyond: `RESOURCE_EXHAUSTED`, the sidecar tries again later).
    pub max_streams: usize,
}

impl Admission {
    /// Anyone, unlimited, forever (tests, benchmarks).
    pub fn open() -> Self {
        Self {
            auth: Arc::new(Authenticator::Open),
            new_streams_per_second: 1e9,
            max_age: None,
            max_streams: usize::MAX,
        }
    }
}

/// The service.
pub struct Discovery {
    shared: Arc<Shared>,
    admission: Admission,
    bucket: Mutex<(f64, Instant)>,
}

impl Discovery {
    /// A service serving the views and health of `shared`.
    pub fn new(shared: Arc<Shared>, admission: Admission) -> Self {
        let burst = admission.new_streams_per_second.max(1.0);
        Self { shared, admission, bucket: Mutex::new((burst, Instant::now())) }
    }

    /// Takes a token from the new-stream bucket.
    fn admit(&self) -> Result<(), Status> {
        let rate = self.admission.new_streams_per_second;
        let Ok(mut bucket) = self.bucket.lock() else { return Ok(()) };
        let now = Instant::now();
        bucket.0 = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * rate).min(rate.max(1.0));
        bucket.1 = now;
        if bucket.0 < 1.0 {
            self.shared.metrics.streams_refused.inc();
            return Err(Status::resource_exhausted("too many new streams; retry after a backoff"));
        }
        bucket.0 -= 1.0;
        Ok(())
    }

    /// The team `identity` may subscribe to: its namespace's team in a cluster, else the hello's.
    fn team_for(&self, identity: &Identity, asked: &str) -> Result<String, Status> {
        let Some(namespace) = &identity.namespace else {
            return if valid_team(asked) {
                Ok(asked.to_owned())
            } else {
                Err(Status::invalid_argument("hello.team must be a DNS label"))
            };
        };
        let team = self.shared.team_of_namespace(namespace).ok_or_else(|| {
            Status::permission_denied(format!(
                "namespace {namespace:?} has no {} label: it belongs to no team",
                llmroute_snapshot::TEAM_LABEL
            ))
        })?;
        if !asked.is_empty() && asked != team {
            return Err(Status::permission_denied(format!(
                "this pod's namespace {namespace:?} belongs to team {team:?}, not {asked:?}"
            )));
        }
        Ok(team)
    }
}

fn valid_team(team: &str) -> bool {
    !team.is_empty()
        && team.len() <= MAX_TEAM
        && team.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !team.starts_with('-')
        && !team.ends_with('-')
}

/// A name from a hello, for logs and `/status`: at most a DNS subdomain's length, control
/// characters replaced.
fn clean_name(name: &str) -> String {
    name.chars().take(253).map(|c| if c.is_control() { '?' } else { c }).collect()
}

type Outbound = mpsc::Sender<Result<v1::ControlMessage, Status>>;

#[tonic::async_trait]
impl RoutingDiscovery for Discovery {
    type StreamRoutesStream = ReceiverStream<Result<v1::ControlMessage, Status>>;

    async fn stream_routes(
        &self,
        request: Request<Streaming<v1::SidecarMessage>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        // Who first (a digest compare, or a cached/rate-limited review): callers without a
        // valid token never spend the admission budget of real sidecars.
        let identity = self.admission.auth.authenticate(crate::auth::bearer(request.metadata())).await?;
        self.admit()?;
        if self.shared.registry.len() >= self.admission.max_streams {
            self.shared.metrics.streams_refused.inc();
            return Err(Status::resource_exhausted(
                "this operator holds its maximum of streams; retry another replica later",
            ));
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let Some(v1::SidecarMessage { kind: Some(sidecar_message::Kind::Hello(mut hello)) }) = first else {
            return Err(Status::invalid_argument("the first message must be a hello"));
        };
        hello.team = self.team_for(&identity, &hello.team)?;
        hello.pod = clean_name(&hello.pod);
        hello.namespace = clean_name(&hello.namespace);
        if let Some(namespace) = identity.namespace {
            hello.namespace = namespace;
            hello.pod = identity.pod.unwrap_or(hello.pod);
        }
        if hello.protocol < v1::Protocol::V1 as i32 {
            return Err(Status::failed_precondition("this operator speaks protocol v1 or later; upgrade the sidecar"));
        }
        let (tx, rx) = mpsc::channel(1);
        let mut subscriber = Subscription::new(hello, self.shared.clone());
        let now = SystemTime::now();
        let aged = self.admission.max_age.map(|age| now + age.mul_f64(rand::random_range(0.9..=1.0)));
        subscriber.ends = match (aged, identity.expires_at) {
            (Some(a), Some(e)) if e <= a => Some((e, End::TokenExpired)),
            (Some(a), _) => Some((a, End::Aged)),
            (None, Some(e)) => Some((e, End::TokenExpired)),
            (None, None) => None,
        };
        let channels = Channels {
            views: self.shared.views.subscribe(),
            health: self.shared.health.subscribe(),
            fleet: self.shared.fleet.subscribe(),
        };
        tokio::spawn(subscriber.run(inbound, tx, channels));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What a subscriber follows.
struct Channels {
    views: watch::Receiver<Option<Arc<Built>>>,
    health: watch::Receiver<Arc<Vec<v1::HealthEntry>>>,
    fleet: watch::Receiver<Arc<crate::fleet::FleetState>>,
}

/// Fleet reports taken per stream: one a second (what a sidecar sends), with a burst for the
/// unacknowledged reports a sidecar resends after a reconnect.
const REPORTS_PER_SECOND: f64 = 1.0;
const REPORT_BURST: f64 = 64.0;

/// A push not acknowledged yet.
#[derive(Clone, Debug)]
struct InFlight {
    nonce: String,
    version: String,
    watermark: u64,
    parts: [String; 2],
    /// When the change behind this view was detected.
    detected: std::time::Instant,
}

/// One subscriber's state.
struct Subscription {
    id: u64,
    team: String,
    shared: Arc<Shared>,
    /// Version and watermark applied by the sidecar.
    applied: (String, u64),
    /// Part digests the sidecar holds.
    held: HashSet<String>,
    /// A version the sidecar rejected: not sent again.
    parked: Option<String>,
    pending: Option<InFlight>,
    nonce: u64,
    health_sent: bool,
    connected_at: std::time::Instant,
    stopping: watch::Receiver<bool>,
    /// When and why the stream ends on its own.
    ends: Option<(SystemTime, End)>,
    /// Who reports fleet learning on this stream.
    reporter: crate::fleet::Reporter,
    /// Fleet reports that may be taken now, and when that was computed.
    report_tokens: (f64, Instant),
    /// Fleet state last sent.
    fleet_sent: crate::fleet::Sent,
}

/// Why a stream ends on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its maximum age: a graceful end, the sidecar reconnects (maybe to another replica).
    Aged,
    /// Its token expired: the sidecar reconnects with a fresh one.
    TokenExpired,
}

impl Subscription {
    fn new(hello: v1::Hello, shared: Arc<Shared>) -> Self {
        let pod = format!("{}/{}", hello.namespace, hello.pod);
        let id = shared.registry.register(&hello.team, pod, hello.protocol);
        // Reports are deduplicated by the sidecar's own id; one that gives none is known by
        // this stream (a reconnect then counts as a new sidecar).
        let uid = clean_name(&hello.sidecar_uid);
        let reporter = crate::fleet::Reporter {
            sidecar: if uid.is_empty() { format!("stream-{id}") } else { uid },
            team: hello.team.clone(),
            namespace: hello.namespace.clone(),
        };
        // A sidecar that already holds a version (an earlier stream, its cache) has it applied.
        if !hello.last_applied_version.is_empty() {
            shared.registry.ack(id, &hello.last_applied_version);
        }
        Self {
            stopping: shared.stopping.subscribe(),
            id,
            team: hello.team,
            shared: shared.clone(),
            applied: (hello.last_applied_version, hello.last_applied_watermark),
            held: hello.held_parts.into_iter().take(4).collect(),
            parked: None,
            pending: None,
            nonce: 0,
            health_sent: false,
            connected_at: std::time::Instant::now(),
            ends: None,
            reporter,
            report_tokens: (REPORT_BURST, Instant::now()),
            fleet_sent: crate::fleet::Sent::default(),
        }
    }

    async fn run(mut self, mut inbound: Streaming<v1::SidecarMessage>, tx: Outbound, channels: Channels) {
        let Channels { mut views, mut health, mut fleet } = channels;
        let mut last_health: Arc<Vec<v1::HealthEntry>> = Arc::new(Vec::new());
        let mut stopping = self.stopping.clone();
        let ends = self.ends;
        let end_at = ends.map(|(at, _)| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let ended = async move {
            match end_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(ended);
        loop {
            let built = views.borrow_and_update().clone();
            if let Some(push) = built.and_then(|b| self.next_push(&b))
                && tx.send(Ok(push)).await.is_err()
            {
                break;
            }
            let table = health.borrow_and_update().clone();
            if let Some(push) = self.health_push(&last_health, &table) {
                if tx.send(Ok(push)).await.is_err() {
                    break;
                }
                last_health = table;
            }
            let state = fleet.borrow_and_update().clone();
            if let Some(push) = self.fleet_push(&state, built_now(&views))
                && tx.send(Ok(push)).await.is_err()
            {
                break;
            }
            let mut reply = None;
            tokio::select! {
                changed = views.changed() => if changed.is_err() { break },
                changed = health.changed() => if changed.is_err() { break },
                changed = fleet.changed() => if changed.is_err() { break },
                message = inbound.message() => match message {
                    Ok(Some(message)) => reply = self.receive(message, built_now(&views)),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(team = %self.team, %status, "sidecar stream ended with an error");
                        break;
                    }
                },
                _ = stopping.wait_for(|stop| *stop) => break,
                () = &mut ended => {
                    if let Some((_, End::TokenExpired)) = ends {
                        let _ = tx.try_send(Err(Status::unauthenticated("the token expired; reconnect with a fresh one")));
                    }
                    tracing::debug!(team = %self.team, "stream reached its end of life; the sidecar reconnects");
                    break;
                }
            }
            if let Some(reply) = reply
                && tx.send(Ok(reply)).await.is_err()
            {
                break;
            }
        }
        if let Some(team) = self.shared.registry.remove(self.id) {
            // The team's last stream: its labelled series go, so made-up teams leave no trace.
            self.shared.metrics.forget_team(&team);
        }
    }

    /// The view to send now, if any: not what the sidecar applied, not a rejected version,
    /// not what is already on its way, never older than what it holds.
    fn next_push(&mut self, built: &Built) -> Option<v1::ControlMessage> {
        let view: TeamView = built.view(&self.team);
        // An older watermark is still sent: the sidecar refuses to move backwards and says so
        // in a NACK, visible in /status, instead of a silent freeze.
        let fresh = view.version != self.applied.0
            && self.parked.as_ref() != Some(&view.version)
            && self.pending.as_ref().is_none_or(|p| p.version != view.version);
        if !fresh {
            return None;
        }
        self.nonce += 1;
        let part = |p: &crate::hub::EncodedPart| v1::EncodedPart {
            digest: p.digest.clone(),
            gzip: if self.held.contains(&p.digest) { Default::default() } else { p.gzip.clone() },
        };
        let push = v1::ViewPush {
            nonce: self.nonce.to_string(),
            version: view.version.clone(),
            team: self.team.clone(),
            watermark: built.watermark,
            global: Some(part(&view.global)),
            overlay: Some(part(&view.overlay)),
        };
        self.pending = Some(InFlight {
            nonce: push.nonce.clone(),
            version: view.version,
            watermark: built.watermark,
            parts: [view.global.digest.clone(), view.overlay.digest.clone()],
            detected: built.detected,
        });
        Some(v1::ControlMessage { kind: Some(control_message::Kind::View(push)) })
    }

    /// This sidecar's part of the fleet state, when it changed.
    fn fleet_push(
        &mut self,
        state: &crate::fleet::FleetState,
        built: Option<Arc<Built>>,
    ) -> Option<v1::ControlMessage> {
        let built = built?;
        let team = self.team.clone();
        let holds = |id: &str| built.compiled.holds(&team, id);
        let push = state.push_for(&self.reporter.sidecar, holds, &mut self.fleet_sent, Instant::now())?;
        Some(v1::ControlMessage { kind: Some(control_message::Kind::Fleet(push)) })
    }

    /// Handles one message; what to answer, if anything.
    fn receive(&mut self, message: v1::SidecarMessage, built: Option<Arc<Built>>) -> Option<v1::ControlMessage> {
        match message.kind {
            Some(sidecar_message::Kind::Report(report)) => {
                let now = Instant::now();
                let (tokens, at) = self.report_tokens;
                let tokens = (tokens + now.duration_since(at).as_secs_f64() * REPORTS_PER_SECOND).min(REPORT_BURST);
                if tokens < 1.0 {
                    // Faster than a sidecar reports: not taken, not acknowledged (a real
                    // sidecar resends it).
                    self.report_tokens = (tokens, now);
                    self.shared.metrics.fleet_reports.with_label_values(&["refused"]).inc();
                    return None;
                }
                self.report_tokens = (tokens - 1.0, now);
                let merged = self.shared.fleet.report(&self.reporter, &report, built.as_deref(), now);
                let result = if merged == llmroute_fleet::learning::Merge::Duplicate { "duplicate" } else { "merged" };
                self.shared.metrics.fleet_reports.with_label_values(&[result]).inc();
                let ack = v1::ReportAck { seq: report.seq };
                return Some(v1::ControlMessage { kind: Some(control_message::Kind::ReportAck(ack)) });
            }
            Some(sidecar_message::Kind::Ack(ack)) => {
                let pending = self.pending.take_if(|p| p.nonce == ack.nonce && p.version == ack.version)?;
                self.applied = (pending.version.clone(), pending.watermark);
                self.held = pending.parts.into_iter().collect();
                self.parked = None;
                self.shared.registry.ack(self.id, &pending.version);
                self.shared.metrics.acks.with_label_values(&[self.team.as_str()]).inc();
                // Only views built after the stream connected: a late joiner is not a slow push.
                if pending.detected >= self.connected_at {
                    self.shared.metrics.propagation.observe(pending.detected.elapsed().as_secs_f64());
                }
            }
            Some(sidecar_message::Kind::Nack(nack)) => {
                let pending = self.pending.take_if(|p| p.nonce == nack.nonce)?;
                // Control characters replaced: a sidecar's text must not forge log lines.
                let error: String =
                    nack.error.chars().take(MAX_NACK_TEXT).map(|c| if c.is_control() { ' ' } else { c }).collect();
                tracing::warn!(team = %self.team, version = %pending.version, %error, "view rejected by a sidecar; parked until the view changes");
                self.shared.registry.nack(self.id, &pending.version, &error);
                self.shared.metrics.nacks.with_label_values(&[self.team.as_str()]).inc();
                self.parked = Some(pending.version);
            }
            Some(sidecar_message::Kind::Hello(_)) | None => {}
        }
        None
    }

    /// The health table to send: the whole table first, then only changed entries.
    fn health_push(
        &mut self,
        sent: &[v1::HealthEntry],
        table: &Arc<Vec<v1::HealthEntry>>,
    ) -> Option<v1::ControlMessage> {
        let full = !self.health_sent;
        let entries: Vec<v1::HealthEntry> =
            if full { table.to_vec() } else { table.iter().filter(|e| !sent.contains(e)).cloned().collect() };
        if !full && entries.is_empty() {
            return None;
        }
        self.health_sent = true;
        self.nonce += 1;
        let now = crate::clock::now_ms();
        let entries = entries
            .into_iter()
            .map(|mut e| {
                e.age_ms = now.saturating_sub(u64::try_from(e.observed_at_unix_ms).unwrap_or(0));
                e
            })
            .collect();
        let push = v1::HealthPush { nonce: self.nonce.to_string(), table: Some(v1::HealthTable { entries }), full };
        Some(v1::ControlMessage { kind: Some(control_message::Kind::Health(push)) })
    }
}

fn built_now(views: &watch::Receiver<Option<Arc<Built>>>) -> Option<Arc<Built>> {
    views.borrow().clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn teams_are_dns_labels_and_hello_names_are_cleaned() {
        for good in ["team-a", "a", "t1"] {
            assert!(super::valid_team(good), "{good}");
        }
        for bad in ["", "-", "---", "-a", "a-", "Team", "a_b", &"a".repeat(64)] {
            assert!(!super::valid_team(bad), "{bad}");
        }
        assert_eq!(super::clean_name("pod\n2026-01-01 ERROR forged"), "pod?2026-01-01 ERROR forged");
        assert_eq!(super::clean_name(&"p".repeat(10_000)).len(), 253);
    }
}
