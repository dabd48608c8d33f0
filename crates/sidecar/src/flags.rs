//! Command-line flags of `llmroute-sidecar` (DESIGN §5).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The OpenAI-compatible local proxy of one application pod.
#[derive(Parser, Debug, Clone)]
#[command(name = "llmroute-sidecar", version, about)]
pub struct Flags {
    /// Team this sidecar serves (its pod's team): it can reach only this team's view.
    #[arg(long, env = "LLMROUTE_TEAM")]
    pub team: String,
    /// Operator gRPC address, e.g. http://llmroute-operator.llmroute:50051.
    #[arg(long, env = "LLMROUTE_OPERATOR", conflicts_with = "manifests", required_unless_present = "manifests")]
    pub operator: Option<String>,
    /// Standalone mode: compile every ModelDeployment, TeamModel and Secret in this directory
    /// (re-read on change) and probe health here.
    #[arg(long, env = "LLMROUTE_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Routing config file (`defaults`, `modelGroups`), standalone mode.
    #[arg(long, env = "LLMROUTE_CONFIG", requires = "manifests")]
    pub config: Option<PathBuf>,
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
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How often the manifests directory is checked for changes, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// PEM bundle of extra CA certificates trusted for https upstreams (in addition to the
    /// public webpki roots), e.g. the internal CA of self-hosted model servers.
    #[arg(long, env = "LLMROUTE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Upstream connect timeout, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub connect_timeout_ms: u64,
    /// Per-attempt limit on waiting for the upstream's response headers, milliseconds
    /// (0 = the request's remaining deadline). Set it to fail over from hung upstreams.
    #[arg(long, default_value_t = 0)]
    pub attempt_timeout_ms: u64,
    /// Time a client has to send its request headers, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Runtime threads. 1 (default) runs everything on one thread with no cross-thread
    /// wakeups, the cheapest per request (a sidecar serves one pod); 0 = one per CPU.
    #[arg(long, default_value_t = 1, env = "LLMROUTE_WORKER_THREADS")]
    pub worker_threads: usize,
    /// On SIGTERM/SIGINT: stop accepting and let open requests finish for this long,
    /// milliseconds, before exiting.
    #[arg(long, default_value_t = 20_000)]
    pub drain_timeout_ms: u64,
    /// Time a client has to send its whole request body, milliseconds (408 after).
    #[arg(long, default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
}

impl Flags {
    /// `--poll-interval-ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }
}
