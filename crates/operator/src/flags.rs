//! Command-line flags of `llmroute-operator` (DESIGN §6).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The llmroute control plane.
#[derive(Parser, Debug, Clone)]
#[command(name = "llmroute-operator", version, about)]
pub struct Flags {
    /// Manifests mode: every ModelDeployment, TeamModel and Secret document in this directory
    /// (re-read on change). Without it the source is the cluster.
    #[arg(long, env = "LLMROUTE_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Routing config file (`defaults`, `modelGroups`), manifests mode.
    #[arg(long, env = "LLMROUTE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Compile once, print one verdict line per object and the config's verdict, and exit:
    /// 0 when everything is accepted, 1 otherwise (for CI before `kubectl apply`).
    #[arg(long, requires = "manifests")]
    pub check: bool,
    /// Address of the gRPC snapshot stream.
    #[arg(long, default_value = "127.0.0.1:50051", env = "LLMROUTE_GRPC_LISTEN")]
    pub grpc_listen: std::net::SocketAddr,
    /// Address of /healthz, /readyz, /metrics (any peer) and /status (loopback peers only).
    #[arg(long, default_value = "127.0.0.1:9090", env = "LLMROUTE_ADMIN_LISTEN")]
    pub admin_listen: std::net::SocketAddr,
    /// How often the manifests directory is checked, milliseconds.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(5..=60_000))]
    pub poll_interval_ms: u64,
    /// A changed file is read once unchanged this long, milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub settle_ms: u64,
    /// Manifests mode: a shared token every sidecar must present (`--operator-token-file`).
    /// In a cluster, sidecars present their projected ServiceAccount tokens instead.
    #[arg(long, env = "LLMROUTE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Like `--token`, read from a file (a token on the command line shows in `ps`).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Streams this replica holds at most; more get `RESOURCE_EXHAUSTED` (they retry, perhaps
    /// on another replica).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_streams: u64,

    /// The operator's namespace (cluster mode): its RoutingConfig, Lease, CA Secret.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// This replica's name (cluster mode): its identity in the Lease and in reports.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Name of the RoutingConfig custom resource in the operator's namespace.
    #[arg(long, default_value = "llmroute")]
    pub routing_config: String,
    /// Namespaces trusted for global objects (no `spec.team`); default: the operator's own.
    #[arg(long, value_delimiter = ',')]
    pub global_namespaces: Vec<String>,
    /// Name of the coordination.k8s.io Lease for leader election.
    #[arg(long, default_value = "llmroute-operator")]
    pub lease_name: String,
    /// Fleet-wide budget of status writes per second (the leader's).
    #[arg(long, default_value_t = 5.0, value_parser = positive_rate)]
    pub status_writes_per_second: f64,
    /// Share of the connected sidecars that must acknowledge an object's view for `Ready=True`.
    #[arg(long, default_value_t = 0.99, value_parser = share)]
    pub ready_threshold: f64,
    /// How long an object keeps its last good state after a dependency (a Secret) disappears.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub grace_period_seconds: u64,
    /// Transport security of the gRPC stream (default: `self-signed` in a cluster, `off` in
    /// manifests mode, where `files` is also available).
    #[arg(long, value_enum)]
    pub tls_mode: Option<TlsMode>,
    /// `self-signed`: the Secret (in the operator's namespace) holding the operator's CA.
    #[arg(long, default_value = "llmroute-ca")]
    pub ca_secret: String,
    /// The ConfigMap (key `ca.crt`) published into every team namespace.
    #[arg(long, default_value = "llmroute-ca")]
    pub ca_configmap: String,
    /// The operator's Service: the serving certificate names `<svc>.<ns>.svc[.cluster.local]`.
    #[arg(long, default_value = "llmroute-operator")]
    pub service_name: String,
    /// `files` (e.g. cert-manager): serving certificate, PEM (re-read when it changes).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// `files`: the certificate's private key, PEM.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// `files`: the CA bundle published to team namespaces, PEM.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Audience a sidecar's projected ServiceAccount token must be issued for.
    #[arg(long, default_value = "llmroute")]
    pub token_audience: String,
    /// A stream ends (gracefully) after this long, jittered by up to 10%, so that load
    /// rebalances across replicas; 0 = never.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub max_stream_age_seconds: u64,
    /// New streams admitted per second (a burst of as many is allowed); beyond it a sidecar is
    /// told to come back later.
    #[arg(long, default_value_t = 100.0, value_parser = positive_rate)]
    pub new_streams_per_second: f64,

    /// Manifests mode: where the fleet's merged adaptive posteriors are kept (written
    /// atomically every epoch and at shutdown, loaded at start). Without it a restart starts
    /// from the priors.
    #[arg(long, env = "LLMROUTE_FLEET_STATE")]
    pub fleet_state: Option<PathBuf>,
    /// Length of a learning epoch: merged posteriors decay (and are saved) once per epoch.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub learning_epoch_seconds: u64,
    /// Decay factor of the merged posteriors at every epoch's end (old evidence fades, so a
    /// deployment that got better can win again).
    #[arg(long, default_value_t = 0.98, value_parser = share)]
    pub learning_decay: f64,
    /// How often fleet-wide quota (`limits.rpm` / `limits.tpm`) is reassigned from demand.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub quota_rebalance_seconds: u64,
    /// How long a sidecar's quota assignment holds; then it falls back to the reserve rate.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub quota_ttl_seconds: u64,
    /// Share sidecars' cooldowns with the whole fleet (Envoy outlier-detection rules).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub share_cooldowns: bool,
    /// Distinct namespaces that must report a cooldown before it is shared.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub cooldown_min_reporters: u64,
    /// Failure share (5xx, connection errors, timeouts) above which a reported cooldown is
    /// shared.
    #[arg(long, default_value_t = 0.5, value_parser = share)]
    pub cooldown_failure_share: f64,
    /// Requests the reports must add up to before a cooldown is shared.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cooldown_min_requests: u32,
    /// Most of a group's deployments sharing may cool at once, percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_ejection_percent: u32,
}

impl Flags {
    /// The fleet's configuration.
    pub fn fleet(&self) -> crate::fleet::Config {
        crate::fleet::Config {
            epoch: std::time::Duration::from_secs(self.learning_epoch_seconds),
            decay: self.learning_decay,
            rebalance: std::time::Duration::from_secs(self.quota_rebalance_seconds),
            assignment_ttl: std::time::Duration::from_secs(self.quota_ttl_seconds),
            share_cooldowns: self.share_cooldowns,
            rules: llmroute_fleet::outlier::Rules {
                min_reporters: usize::try_from(self.cooldown_min_reporters).unwrap_or(usize::MAX),
                failure_share: self.cooldown_failure_share,
                min_requests: self.cooldown_min_requests,
                max_ejection_percent: self.max_ejection_percent,
            },
            caps: llmroute_fleet::learning::Caps::default(),
            state_file: self.fleet_state.clone(),
        }
    }
}

/// How the gRPC stream is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// The operator's own CA (kept in a Secret), its serving certificate issued and rotated.
    SelfSigned,
    /// Certificate, key and CA from files (cert-manager), re-read when they change.
    Files,
    /// Plain TCP (manifests mode, or a mesh that already encrypts).
    Off,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=100_000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a rate from 0.01 to 100000 per second")),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a share in (0, 1]")),
    }
}
