//! Command-line flags of `llmroute-operator` (DESIGN §6).

use std::path::PathBuf;

use clap::Parser;

/// The llmroute control plane.
#[derive(Parser, Debug, Clone)]
#[command(name = "llmroute-operator", version, about)]
pub struct Flags {
    /// Manifests mode: every ModelDeployment, TeamModel and Secret document in this directory
    /// (re-read on change).
    #[arg(long, env = "LLMROUTE_MANIFESTS")]
    pub manifests: PathBuf,
    /// Routing config file (`defaults`, `modelGroups`).
    #[arg(long, env = "LLMROUTE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Compile once, print one verdict line per object and the config's verdict, and exit:
    /// 0 when everything is accepted, 1 otherwise (for CI before `kubectl apply`).
    #[arg(long)]
    pub check: bool,
    /// Address of the gRPC snapshot stream.
    #[arg(long, default_value = "127.0.0.1:50051", env = "LLMROUTE_GRPC_LISTEN")]
    pub grpc_listen: std::net::SocketAddr,
    /// Address of /healthz, /readyz, /metrics, /status.
    #[arg(long, default_value = "127.0.0.1:9090", env = "LLMROUTE_ADMIN_LISTEN")]
    pub admin_listen: std::net::SocketAddr,
    /// How often the manifests directory is checked, milliseconds.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(5..=60_000))]
    pub poll_interval_ms: u64,
    /// A changed file is read once unchanged this long, milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub settle_ms: u64,
}
