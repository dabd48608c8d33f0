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
}
