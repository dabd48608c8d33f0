//! The routing "watch" value: the last good table, its live state and each deployment's
//! upstream target, swapped whole on every applied snapshot. Requests load it lock-free; a
//! rejected snapshot leaves it untouched.

mod inflight;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use llmroute_proto::v1;
use llmroute_router::{DeploymentIdx, InvalidSnapshot, LiveState, RouteTable};
use llmroute_upstream::{InvalidTarget, Target};

pub(crate) use inflight::InFlight;

use crate::metrics::{DeploymentMetrics, Metrics};

/// Why a snapshot cannot be applied (the previous one keeps serving).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// The view is inconsistent.
    #[error(transparent)]
    Table(#[from] InvalidSnapshot),
    /// A deployment's upstream cannot be used.
    #[error(transparent)]
    Target(#[from] InvalidTarget),
}

/// One applied snapshot.
#[derive(Debug)]
pub(crate) struct Routes {
    /// The wire view (for /debug/snapshot and credentials), aligned with `table`.
    pub snapshot: v1::Snapshot,
    /// The indexed table.
    pub table: RouteTable,
    /// Live state aligned with `table`.
    pub state: LiveState,
    /// Upstream of every deployment, aligned with `table`, computed once per snapshot.
    targets: Vec<Target>,
    /// `x-llmroute-snapshot` value.
    pub version_header: HeaderValue,
    /// `x-llmroute-deployment` value of every deployment, aligned with `table`.
    deployment_headers: Vec<HeaderValue>,
    /// `x-llmroute-route` value of every route, aligned with `table` (`None`: not a valid
    /// header value).
    route_headers: Vec<Option<HeaderValue>>,
    /// Metric handles of each deployment, aligned with `table`, resolved when the deployment
    /// first serves: only deployments a sidecar uses get series (at fleet scale a view holds
    /// thousands).
    metrics: Vec<ArcSwapOption<DeploymentMetrics>>,
    /// When each deployment last served (Unix ms, 0 = not since this view applied).
    last_served: Vec<AtomicU64>,
    /// Each deployment's span attributes, aligned with `table`, encoded on its first traced
    /// attempt.
    span_attributes: Vec<crate::trace::AttributeCache>,
}

impl Routes {
    /// The upstream of deployment `idx`.
    pub fn target(&self, idx: DeploymentIdx) -> &Target {
        &self.targets[idx as usize]
    }

    /// The credential of deployment `idx` ("" when none), to scrub it from echoed bodies.
    pub fn credential(&self, idx: DeploymentIdx) -> &str {
        &self.snapshot.deployments[idx as usize].api_key
    }

    /// The `x-llmroute-deployment` header value of deployment `idx`.
    pub fn deployment_header(&self, idx: DeploymentIdx) -> &HeaderValue {
        &self.deployment_headers[idx as usize]
    }

    /// The `x-llmroute-route` header value of route `idx`: `public name (source)`.
    pub fn route_header(&self, idx: llmroute_router::RouteIdx) -> Option<&HeaderValue> {
        self.route_headers.get(idx as usize).and_then(Option::as_ref)
    }

    /// Where deployment `idx`'s span attributes are kept in this view.
    pub fn span_attributes(&self, idx: DeploymentIdx) -> &crate::trace::AttributeCache {
        &self.span_attributes[idx as usize]
    }

    /// Whether deployment `idx` has served since this view applied.
    pub fn has_served(&self, idx: DeploymentIdx) -> bool {
        self.metrics.get(idx as usize).is_some_and(|m| m.load().is_some())
    }

    /// Forgets the series of deployments idle for `idle_ms` at `now_ms` (they come back on
    /// their next answer); the ids forgotten.
    pub fn expire_idle(&self, now_ms: u64, idle_ms: u64) -> Vec<&str> {
        let mut expired = Vec::new();
        for (i, slot) in self.metrics.iter().enumerate() {
            let last = self.last_served[i].load(Ordering::Relaxed);
            if last != 0 && now_ms.saturating_sub(last) >= idle_ms && slot.swap(None).is_some() {
                self.last_served[i].store(0, Ordering::Relaxed);
                expired.push(self.table.deployment(i as DeploymentIdx).id.as_str());
            }
        }
        expired
    }

    /// The metric handles of deployment `idx`.
    pub fn deployment_metrics(&self, metrics: &Metrics, idx: DeploymentIdx, now_ms: u64) -> Arc<DeploymentMetrics> {
        self.last_served[idx as usize].store(now_ms.max(1), Ordering::Relaxed);
        let slot = &self.metrics[idx as usize];
        if let Some(handles) = slot.load_full() {
            return handles;
        }
        let handles = Arc::new(metrics.for_deployment(&self.table.deployment(idx).id));
        slot.store(Some(handles.clone()));
        handles
    }
}

/// The current routes, shared by every request.
#[derive(Debug, Default)]
pub(crate) struct RoutesHandle {
    current: ArcSwapOption<Routes>,
    /// Latest health table, re-applied to every new state.
    health: Mutex<Vec<v1::HealthEntry>>,
    /// Operator mode: limits hold for the fleet (assignments from the operator).
    fleet_mode: std::sync::atomic::AtomicBool,
    /// Latest fleet state and when it arrived (Unix ms), re-applied to every new state.
    fleet: Mutex<Option<(v1::FleetPush, u64)>>,
}

impl RoutesHandle {
    /// The routes in force, `None` before the first snapshot.
    pub fn load(&self) -> Option<Arc<Routes>> {
        self.current.load_full()
    }

    /// Applies a whole snapshot, keeping live state of unchanged deployments. Returns `false`
    /// when the version is already applied.
    pub fn apply(&self, snapshot: v1::Snapshot) -> Result<bool, ApplyError> {
        let previous = self.load();
        if previous.as_ref().is_some_and(|p| p.snapshot.version == snapshot.version) {
            return Ok(false);
        }
        let (snapshot, degraded) = llmroute_router::degrade(snapshot);
        for note in &degraded {
            tracing::warn!(version = %snapshot.version, "{note}");
        }
        let table = RouteTable::try_from(&snapshot)?;
        let targets = snapshot.deployments.iter().map(Target::try_from).collect::<Result<Vec<_>, _>>()?;
        let state = LiveState::for_table(&table, previous.as_ref().map(|p| &p.state));
        if let Ok(health) = self.health.lock() {
            state.apply_health(&health);
        }
        if self.fleet_mode.load(std::sync::atomic::Ordering::Relaxed) {
            state.default_fleet_quota(&table, crate::clock::now_ms());
            if let Ok(fleet) = self.fleet.lock()
                && let Some((push, at)) = fleet.as_ref()
            {
                state.apply_fleet(&table, push, *at);
            }
        }
        let header = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let version_header = header(&snapshot.version);
        let deployment_headers = table.deployments().iter().map(|d| header(&d.id)).collect();
        let metrics = (0..table.deployments().len()).map(|_| ArcSwapOption::empty()).collect();
        let last_served = (0..table.deployments().len()).map(|_| AtomicU64::new(0)).collect();
        let span_attributes = (0..table.deployments().len()).map(|_| crate::trace::AttributeCache::new()).collect();
        let route_headers = (0..table.routes().len())
            .map(|i| {
                let r = table.route(i as llmroute_router::RouteIdx);
                let text = if r.source.is_empty() {
                    r.public_name.clone()
                } else {
                    format!("{} ({})", r.public_name, r.source)
                };
                HeaderValue::from_str(&text).ok()
            })
            .collect();
        self.current.store(Some(Arc::new(Routes {
            snapshot,
            table,
            state,
            targets,
            version_header,
            deployment_headers,
            route_headers,
            metrics,
            last_served,
            span_attributes,
        })));
        Ok(true)
    }

    /// Operator mode: `limits.rpm` / `limits.tpm` hold for the fleet from now on.
    pub fn enable_fleet_limits(&self) {
        self.fleet_mode.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(routes) = self.load() {
            routes.state.default_fleet_quota(&routes.table, crate::clock::now_ms());
        }
    }

    /// Applies the fleet's state (posteriors, quota, shared cooldowns) and keeps it for the
    /// next views.
    pub fn apply_fleet(&self, push: v1::FleetPush) {
        let now = crate::clock::now_ms();
        if let Some(routes) = self.load() {
            routes.state.apply_fleet(&routes.table, &push, now);
        }
        if let Ok(mut fleet) = self.fleet.lock() {
            *fleet = Some((push, now));
        }
    }

    /// Applies a full health table to the current state and remembers it for the next ones.
    pub fn apply_health(&self, entries: Vec<v1::HealthEntry>) {
        if let Some(routes) = self.load() {
            routes.state.apply_health(&entries);
        }
        if let Ok(mut health) = self.health.lock() {
            *health = entries;
        }
    }
}
