//! What the operator's parts share: the views in force, the health table, the fleet registry,
//! the metrics and the config's verdict.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use llmroute_proto::v1;
use tokio::sync::watch;

use crate::hub::Built;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Shared state.
pub struct Shared {
    /// The latest build (None before the first).
    pub views: watch::Sender<Option<Arc<Built>>>,
    /// The latest health table.
    pub health: watch::Sender<Arc<Vec<v1::HealthEntry>>>,
    /// Connected streams.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Metrics,
    /// Why the newest routing config is not in force, if it is not.
    pub config_problem: Mutex<Option<String>>,
    /// Set on shutdown: every stream ends.
    pub stopping: watch::Sender<bool>,
    /// Whether this replica leads (writes status and Events, runs the probes); always true
    /// in manifests mode.
    pub leader: watch::Sender<bool>,
    /// Share of connected sidecars that must acknowledge for `Ready`.
    pub ready_threshold: f64,
    /// Team of each labelled namespace (cluster mode).
    pub namespace_teams: watch::Sender<Arc<BTreeMap<String, String>>>,
    /// What the fleet learns and shares.
    pub fleet: Arc<crate::fleet::Fleet>,
}

impl Shared {
    /// Empty state.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            views: watch::Sender::new(None),
            health: watch::Sender::new(Arc::new(Vec::new())),
            registry: Registry::default(),
            metrics,
            config_problem: Mutex::new(None),
            stopping: watch::Sender::new(false),
            namespace_teams: watch::Sender::new(Arc::new(BTreeMap::new())),
            leader: watch::Sender::new(true),
            ready_threshold: 0.99,
            fleet: Arc::new(crate::fleet::Fleet::new(crate::fleet::Config::default())),
        }
    }

    /// The team a namespace belongs to (its `llmroute.dev/team` label).
    pub fn team_of_namespace(&self, namespace: &str) -> Option<String> {
        self.namespace_teams.borrow().get(namespace).cloned()
    }

    /// The latest build.
    pub fn built(&self) -> Option<Arc<Built>> {
        self.views.borrow().clone()
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let problem = self.config_problem.lock().ok().and_then(|p| p.clone());
        let health = self.health.borrow().clone();
        let mut status = crate::status::status(
            self.built().as_deref(),
            &self.registry.teams(),
            &health,
            problem,
            self.ready_threshold,
        );
        // Sums change with every request: here and in metrics, never in object status.
        let usage: Vec<serde_json::Value> = self
            .fleet
            .usage()
            .into_iter()
            .map(|((team, deployment), u)| {
                serde_json::json!({
                    "team": team, "deployment": deployment, "inputTokens": u.input,
                    "outputTokens": u.output, "cachedTokens": u.cached, "costUsd": u.cost_usd,
                })
            })
            .collect();
        if let Some(object) = status.as_object_mut() {
            object.insert("usage".into(), serde_json::Value::Array(usage));
        }
        status
    }
}
