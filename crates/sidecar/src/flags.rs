//! Command-line flags of `llmroute-sidecar` (DESIGN §5).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The OpenAI-compatible local proxy of one application pod.
#[derive(Parser, Debug, Clone)]
#[command(name = "llmroute-sidecar", version, about)]
pub struct Flags {
    /// Team this sidecar serves: it can reach only this team's view. Required standalone; in a
    /// cluster the operator takes it from the pod's namespace (label `llmroute.dev/team`), and
    /// a value given here must match.
    #[arg(long, env = "LLMROUTE_TEAM", default_value = "")]
    pub team: String,
    /// Operator gRPC address: http://HOST:PORT, or https://HOST:PORT (verified against
    /// --operator-ca-file, else the public web roots).
    #[arg(long, env = "LLMROUTE_OPERATOR", conflicts_with = "manifests", required_unless_present = "manifests")]
    pub operator: Option<String>,
    /// PEM bundle the operator's certificate must chain to (re-read at every connection, so a
    /// rotated bundle is picked up).
    #[arg(long, env = "LLMROUTE_OPERATOR_CA_FILE", requires = "operator")]
    pub operator_ca_file: Option<PathBuf>,
    /// File holding the bearer token presented to the operator: the projected ServiceAccount
    /// token in a cluster, or the operator's `--token` (re-read at every connection).
    #[arg(long, env = "LLMROUTE_OPERATOR_TOKEN_FILE", requires = "operator")]
    pub operator_token_file: Option<PathBuf>,
    /// Standalone mode: compile every ModelDeployment, TeamModel and Secret in this directory
    /// (re-read on change) and probe health here.
    #[arg(long, env = "LLMROUTE_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Routing config file (`defaults`, `modelGroups`), standalone mode.
    #[arg(long, env = "LLMROUTE_CONFIG", requires = "manifests")]
    pub config: Option<PathBuf>,
    /// Operator mode: the last applied view is kept in this file (mode 0600, it holds
    /// credentials) and served at start before the operator answers.
    #[arg(long, env = "LLMROUTE_SNAPSHOT_CACHE", requires = "operator")]
    pub snapshot_cache: Option<PathBuf>,
    /// Operator mode: largest part of a view (global part or team overlay) accepted once
    /// decompressed, bytes; a larger view is rejected (NACKed) and the old one keeps serving.
    #[arg(long, default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1 << 32))]
    pub max_view_bytes: u64,
    /// Address of the OpenAI-compatible API.
    #[arg(long, default_value = "127.0.0.1:4000", env = "LLMROUTE_LISTEN")]
    pub listen: SocketAddr,
    /// Address of /healthz, /readyz, /metrics, /debug/snapshot.
    #[arg(long, default_value = "127.0.0.1:4001", env = "LLMROUTE_ADMIN_LISTEN")]
    pub admin_listen: SocketAddr,
    /// Pod name, sent to the operator.
    #[arg(long, default_value = "", env = "POD_NAME")]
    pub pod_name: String,
    /// Pod namespace, sent to the operator.
    #[arg(long, default_value = "", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Largest request body accepted, bytes (larger: 413).
    #[arg(long, default_value_t = 32 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_body_bytes: u32,
    /// Request bodies all requests together may hold in memory, bytes; past it a request
    /// gets 503 with `Retry-After` (must be >= --max-body-bytes).
    #[arg(long, default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    pub max_buffered_body_bytes: u64,
    /// How often the manifests directory is checked for changes, milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub poll_interval_ms: u64,
    /// A changed manifest file is read once it has stayed the same this long, milliseconds
    /// (an editor's in-place save is never read half-written).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub settle_ms: u64,
    /// PEM bundle of extra CA certificates trusted for https upstreams (in addition to the
    /// public webpki roots), e.g. the internal CA of self-hosted model servers.
    #[arg(long, env = "LLMROUTE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Upstream connect (and TLS handshake) timeout, milliseconds.
    #[arg(long, default_value_t = 2_000, value_parser = millis())]
    pub connect_timeout_ms: u64,
    /// Per-attempt limit on the upstream's response headers and first body bytes,
    /// milliseconds (0 = the request's remaining deadline). Set it to fail over from hung
    /// upstreams before the deadline.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub attempt_timeout_ms: u64,
    /// Longest pause between two chunks of an answer being relayed, milliseconds; a stalled
    /// stream then gets an SSE error event and is closed.
    #[arg(long, default_value_t = 300_000, value_parser = millis())]
    pub stream_idle_timeout_ms: u64,
    /// Idle upstream connections are closed after this long, milliseconds.
    #[arg(long, default_value_t = 90_000, value_parser = millis())]
    pub pool_idle_timeout_ms: u64,
    /// Idle connections kept per upstream origin.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub pool_max_idle_per_upstream: u64,
    /// Time a client has to send its request headers, milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = millis())]
    pub header_read_timeout_ms: u64,
    /// Runtime threads. 1 (default) runs everything on one thread with no cross-thread
    /// wakeups, the cheapest per request (a sidecar serves one pod); 0 = one per CPU.
    #[arg(long, default_value_t = 1, env = "LLMROUTE_WORKER_THREADS", value_parser = clap::value_parser!(u64).range(0..=256))]
    pub worker_threads: u64,
    /// Write an access log: one JSON line per request on standard output (time, request id,
    /// model, group, deployment, attempts, status, duration, time to first token, tokens).
    /// Never a credential or a prompt.
    #[arg(long, env = "LLMROUTE_ACCESS_LOG")]
    pub access_log: bool,
    /// Export OpenTelemetry traces over OTLP/gRPC to this collector (e.g.
    /// `http://otel-collector:4317`). Off by default; `OTEL_EXPORTER_OTLP_ENDPOINT` also turns
    /// it on. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER` are
    /// honoured.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled (parent-based: a client's sampled or unsampled parent
    /// decides). Default 1.0 when tracing is on, unless `OTEL_TRACES_SAMPLER` is set.
    #[arg(long, value_parser = ratio)]
    pub trace_sample_ratio: Option<f64>,
    /// On SIGTERM/SIGINT: stop accepting and let open requests finish for this long,
    /// milliseconds, before exiting.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub drain_timeout_ms: u64,
    /// Time a client has to send its whole request body, milliseconds (408 after).
    #[arg(long, default_value_t = 30_000, value_parser = millis())]
    pub body_read_timeout_ms: u64,
}

/// A duration flag in milliseconds: 1 ms to 1 day.
fn millis() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(1..=86_400_000)
}

impl Flags {
    /// `--poll-interval-ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// Checks what one flag alone cannot: combinations.
    pub fn check(&self) -> Result<(), String> {
        let label = |t: &str| {
            !t.is_empty()
                && t.len() <= 63
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !t.starts_with('-')
                && !t.ends_with('-')
        };
        if (self.operator.is_none() || !self.team.is_empty()) && !label(&self.team) {
            return Err(format!(
                "--team {:?}: a team is a DNS label (lowercase letters, digits, '-', at most 63)",
                self.team
            ));
        }
        if let Some(url) = &self.operator
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("--operator {url:?}: an http:// or https:// address"));
        }
        if self.operator_ca_file.is_some() && !self.operator.as_deref().is_some_and(|u| u.starts_with("https://")) {
            return Err("--operator-ca-file needs an https:// --operator".into());
        }
        if let Some(cache) = &self.snapshot_cache
            && std::fs::symlink_metadata(cache).is_ok_and(|m| !m.is_file())
        {
            return Err(format!(
                "--snapshot-cache {}: exists and is not a regular file (it would be read and replaced)",
                cache.display()
            ));
        }
        if u64::from(self.max_body_bytes) > self.max_buffered_body_bytes {
            return Err(format!(
                "--max-body-bytes {} is larger than --max-buffered-body-bytes {}: no body that large could ever be held",
                self.max_body_bytes, self.max_buffered_body_bytes
            ));
        }
        Ok(())
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio from 0 to 1")),
    }
}
