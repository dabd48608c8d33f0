//! The routing "watch" value: the last good table and its live state, swapped whole on every
//! applied snapshot. Requests load it lock-free; a rejected snapshot leaves it untouched.

use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use llmroute_proto::v1;
use llmroute_router::{InvalidSnapshot, LiveState, RouteTable};

use crate::metrics::{DeploymentMetrics, Metrics};

/// One applied snapshot.
#[derive(Debug)]
pub struct Routing {
    /// The wire view (for /debug/snapshot).
    pub snapshot: v1::Snapshot,
    /// The indexed table.
    pub table: RouteTable,
    /// Live state aligned with `table`.
    pub state: LiveState,
    /// `x-llmroute-snapshot` value, built once.
    pub version_header: HeaderValue,
    /// `x-llmroute-deployment` value of every deployment, aligned with `table`.
    pub deployment_headers: Vec<HeaderValue>,
    /// Metric handles of every deployment, aligned with `table`, resolved on first use.
    pub metrics: OnceLock<Vec<DeploymentMetrics>>,
}

impl Routing {
    /// The metric handles of deployment `idx`.
    pub fn deployment_metrics(&self, metrics: &Metrics, idx: u32) -> &DeploymentMetrics {
        let all = self
            .metrics
            .get_or_init(|| metrics.for_deployments(self.table.deployments.iter().map(|d| d.wire.id.as_str())));
        &all[idx as usize]
    }
}

/// The current routing, shared by every request.
#[derive(Debug, Default)]
pub struct RoutingHandle {
    current: ArcSwapOption<Routing>,
    /// Latest health table, re-applied to every new state.
    health: Mutex<Vec<v1::HealthEntry>>,
}

impl RoutingHandle {
    /// The routing in force, `None` before the first snapshot.
    pub fn load(&self) -> Option<Arc<Routing>> {
        self.current.load_full()
    }

    /// Applies a whole snapshot, keeping live state of unchanged deployments. Returns `false`
    /// when the version is already applied.
    pub fn apply(&self, snapshot: v1::Snapshot) -> Result<bool, InvalidSnapshot> {
        let previous = self.load();
        if previous.as_ref().is_some_and(|p| p.snapshot.version == snapshot.version) {
            return Ok(false);
        }
        let table = RouteTable::try_from(&snapshot)?;
        let state = LiveState::for_table(&table, previous.as_ref().map(|p| &p.state));
        if let Ok(health) = self.health.lock() {
            state.apply_health(&health);
        }
        let header = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let version_header = header(&snapshot.version);
        let deployment_headers = table.deployments.iter().map(|d| header(&d.wire.id)).collect();
        let metrics = OnceLock::new();
        self.current.store(Some(Arc::new(Routing {
            snapshot,
            table,
            state,
            version_header,
            deployment_headers,
            metrics,
        })));
        Ok(true)
    }

    /// Applies a full health table to the current state and remembers it for the next ones.
    pub fn apply_health(&self, entries: Vec<v1::HealthEntry>) {
        if let Some(routing) = self.load() {
            routing.state.apply_health(&entries);
        }
        if let Ok(mut health) = self.health.lock() {
            *health = entries;
        }
    }
}
