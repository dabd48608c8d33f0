//! A team's snapshot view as indexed domain values. Converting a wire snapshot checks it; an
//! invalid one is rejected whole (the sidecar NACKs it and keeps its previous table).

use std::collections::HashMap;

use llmroute_proto::{NamePattern, v1};

use crate::policy::Policy;

/// Index of a deployment in [`RouteTable::deployments`].
pub type DeploymentIdx = u32;
/// Index of a route in [`RouteTable::routes`].
pub type RouteIdx = u32;

/// Why a snapshot cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSnapshot {
    /// Two deployments share an id.
    #[error("deployment id {0:?} appears twice")]
    DuplicateDeployment(String),
    /// A route names a deployment the view does not hold.
    #[error("route {route:?} names deployment {deployment:?}, which is not in the view")]
    UnknownDeployment {
        /// The route's public name.
        route: String,
        /// The missing id.
        deployment: String,
    },
    /// A route has no deployments.
    #[error("route {0:?} has no deployments")]
    EmptyRoute(String),
    /// An enum value this sidecar does not know.
    #[error("unknown {0} value {1}")]
    UnknownEnum(&'static str, i32),
    /// A policy value out of range.
    #[error("invalid policy: {0}")]
    Policy(String),
    /// A deployment field out of range.
    #[error("deployment {0:?}: {1}")]
    Deployment(String, String),
}

/// The API flavour of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Any OpenAI-compatible API.
    OpenAi,
    /// Azure OpenAI.
    Azure,
}

impl Provider {
    /// Lowercase name, as in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
        }
    }
}

/// How a deployment is actively probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthMode {
    /// Not probed.
    None,
    /// The models listing.
    Models,
    /// A one-token completion.
    Completion,
}

/// Rate and concurrency limits; 0 = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: u64,
    /// Estimated prompt tokens per minute.
    pub tpm: u64,
    /// Requests in flight at once.
    pub max_concurrency: u64,
}

/// One upstream endpoint, as routing sees it (no URL, no credential: those are the
/// caller's, aligned by index with the wire view).
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    /// `namespace/name`.
    pub id: String,
    /// Public model name or pattern.
    pub model_name: String,
    /// Owning team, "" for a global deployment.
    pub team: String,
    /// API flavour.
    pub provider: Provider,
    /// Model id sent upstream ("" = the requested name; may hold one `*`).
    pub upstream_model: String,
    /// Order level (>= 1).
    pub order: u32,
    /// Weight (0 = backup).
    pub weight: u32,
    /// Limits.
    pub limits: Limits,
    /// Context window in tokens, 0 = unknown.
    pub context_window: u64,
    /// Dollars per million input tokens.
    pub input_cost_per_million: f64,
    /// Dollars per million output tokens.
    pub output_cost_per_million: f64,
    /// Declared cost of a million input + output tokens.
    pub cost: f64,
    /// Quality tier 1..5.
    pub quality_tier: u32,
    /// Active probing mode.
    pub health: HealthMode,
    /// Hash of the spec: live state is keyed by id + spec hash.
    pub spec_hash: String,
    /// Streams are asked for usage (`stream_options.include_usage`) when the client did not.
    pub stream_usage: bool,
}

/// A public name and its group.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Public name or pattern.
    pub public_name: String,
    /// Resolution tier (team model, team deployment, global).
    pub kind: v1::RouteKind,
    /// Serving deployments, sorted by (order, id).
    pub deployments: Vec<DeploymentIdx>,
    /// Concrete policy.
    pub policy: Policy,
    /// The object that defined it, e.g. `TeamModel team-a/gpt-4o`.
    pub source: String,
}

/// Patterns of one resolution tier, longest literal part first.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PatternList(pub Vec<(String, RouteIdx)>);

/// A team's view, ready to route on. Built only from a checked wire view; its indices stay
/// consistent because nothing outside this crate can change it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    version: String,
    team: String,
    /// Aligned with the wire view's deployments (same order).
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) routes: Vec<Route>,
    pub(crate) by_id: HashMap<String, DeploymentIdx>,
    /// Exact names per tier (team model, team deployment, global).
    pub(crate) exact: [HashMap<String, RouteIdx>; 3],
    /// Patterns per tier.
    pub(crate) patterns: [PatternList; 3],
}

impl RouteTable {
    /// Snapshot version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Team the view belongs to.
    pub fn team(&self) -> &str {
        &self.team
    }

    /// Every deployment, in the wire view's order (index = [`DeploymentIdx`]).
    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// Every route, in the wire view's order (index = [`RouteIdx`]).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Index of a deployment id.
    pub fn deployment_index(&self, id: &str) -> Option<DeploymentIdx> {
        self.by_id.get(id).copied()
    }

    /// A deployment by index.
    pub fn deployment(&self, idx: DeploymentIdx) -> &Deployment {
        &self.deployments[idx as usize]
    }

    /// A route by index.
    pub fn route(&self, idx: RouteIdx) -> &Route {
        &self.routes[idx as usize]
    }
}

impl TryFrom<&v1::Snapshot> for RouteTable {
    type Error = InvalidSnapshot;

    fn try_from(snapshot: &v1::Snapshot) -> Result<Self, Self::Error> {
        let mut table =
            RouteTable { version: snapshot.version.clone(), team: snapshot.team.clone(), ..Default::default() };
        for d in &snapshot.deployments {
            let idx = table.deployments.len() as DeploymentIdx;
            if table.by_id.insert(d.id.clone(), idx).is_some() {
                return Err(InvalidSnapshot::DuplicateDeployment(d.id.clone()));
            }
            table.deployments.push(deployment(d)?);
        }
        for r in &snapshot.routes {
            let route = route(r, &table)?;
            let idx = table.routes.len() as RouteIdx;
            let tier = tier(route.kind);
            if r.pattern || r.public_name.contains('*') {
                table.patterns[tier].0.push((route.public_name.clone(), idx));
            } else {
                table.exact[tier].entry(route.public_name.clone()).or_insert(idx);
            }
            table.routes.push(route);
        }
        for list in &mut table.patterns {
            // Longest literal first; ties by name so every sidecar resolves alike.
            list.0.sort_by(|(a, _), (b, _)| {
                let (la, lb) = (NamePattern::parse(a).literal_len(), NamePattern::parse(b).literal_len());
                lb.cmp(&la).then_with(|| a.cmp(b))
            });
        }
        Ok(table)
    }
}

/// Index of a resolution tier (team model, team deployment, global).
fn tier(kind: v1::RouteKind) -> usize {
    match kind {
        v1::RouteKind::TeamModel | v1::RouteKind::Unspecified => 0,
        v1::RouteKind::TeamDeployment => 1,
        v1::RouteKind::GlobalDeployment => 2,
    }
}

/// What a newer sender put in a view that this build does not know, degraded entry by entry:
/// a deployment of an unknown provider and a route of an unknown kind are left out (a route
/// left with no deployment too); every other entry stays. Returns the view and what was left
/// out, for the log.
pub fn degrade(mut snapshot: v1::Snapshot) -> (v1::Snapshot, Vec<String>) {
    let mut notes = Vec::new();
    let known = |p: i32| matches!(v1::Provider::try_from(p), Ok(v1::Provider::Openai | v1::Provider::Azure));
    let mut dropped = std::collections::HashSet::new();
    snapshot.deployments.retain(|d| {
        let keep = known(d.provider);
        if !keep {
            notes.push(format!("deployment {} left out: unknown provider {}", d.id, d.provider));
            dropped.insert(d.id.clone());
        }
        keep
    });
    snapshot.routes.retain_mut(|r| {
        r.deployment_ids.retain(|id| !dropped.contains(id));
        let kind_known = matches!(v1::RouteKind::try_from(r.kind), Ok(k) if k != v1::RouteKind::Unspecified);
        if !kind_known {
            notes.push(format!("route {:?} left out: unknown kind {}", r.public_name, r.kind));
        } else if r.deployment_ids.is_empty() {
            notes.push(format!("route {:?} left out: none of its deployments is usable", r.public_name));
        }
        kind_known && !r.deployment_ids.is_empty()
    });
    (snapshot, notes)
}

fn deployment(d: &v1::Deployment) -> Result<Deployment, InvalidSnapshot> {
    let provider = match v1::Provider::try_from(d.provider) {
        Ok(v1::Provider::Openai) => Provider::OpenAi,
        Ok(v1::Provider::Azure) => Provider::Azure,
        Ok(v1::Provider::Unspecified) | Err(_) => return Err(InvalidSnapshot::UnknownEnum("provider", d.provider)),
    };
    // A probe mode this build does not know is not probed here (the operator probes anyway).
    let health = match d.health_check.and_then(|c| v1::HealthCheckMode::try_from(c.mode).ok()) {
        Some(v1::HealthCheckMode::Models) => HealthMode::Models,
        Some(v1::HealthCheckMode::Completion) => HealthMode::Completion,
        _ => HealthMode::None,
    };
    if d.order == 0 {
        return Err(InvalidSnapshot::Deployment(d.id.clone(), "order must be >= 1".into()));
    }
    let cost = d.input_cost_per_million + d.output_cost_per_million;
    if !cost.is_finite() || d.input_cost_per_million < 0.0 || d.output_cost_per_million < 0.0 {
        return Err(InvalidSnapshot::Deployment(d.id.clone(), "cost must be a non-negative number".into()));
    }
    let limits = d.limits.unwrap_or_default();
    Ok(Deployment {
        id: d.id.clone(),
        model_name: d.model_name.clone(),
        team: d.team.clone(),
        provider,
        upstream_model: d.upstream_model.clone(),
        order: d.order,
        weight: d.weight,
        limits: Limits { rpm: limits.rpm, tpm: limits.tpm, max_concurrency: limits.max_concurrency },
        context_window: d.context_window,
        input_cost_per_million: d.input_cost_per_million,
        output_cost_per_million: d.output_cost_per_million,
        cost,
        quality_tier: d.quality_tier,
        health,
        spec_hash: d.spec_hash.clone(),
        stream_usage: !d.no_stream_usage,
    })
}

fn route(r: &v1::Route, table: &RouteTable) -> Result<Route, InvalidSnapshot> {
    let kind = match v1::RouteKind::try_from(r.kind) {
        Ok(v1::RouteKind::Unspecified) | Err(_) => return Err(InvalidSnapshot::UnknownEnum("route kind", r.kind)),
        Ok(kind) => kind,
    };
    let policy = r.policy.as_ref().map(Policy::try_from).transpose()?;
    let policy = policy.ok_or_else(|| InvalidSnapshot::Policy(format!("route {:?} has no policy", r.public_name)))?;
    let mut deployments = Vec::with_capacity(r.deployment_ids.len());
    for id in &r.deployment_ids {
        let idx = table.by_id.get(id).copied().ok_or_else(|| InvalidSnapshot::UnknownDeployment {
            route: r.public_name.clone(),
            deployment: id.clone(),
        })?;
        deployments.push(idx);
    }
    if deployments.is_empty() {
        return Err(InvalidSnapshot::EmptyRoute(r.public_name.clone()));
    }
    deployments.sort_by(|a, b| {
        let (da, db) = (&table.deployments[*a as usize], &table.deployments[*b as usize]);
        (da.order, &da.id).cmp(&(db.order, &db.id))
    });
    deployments.dedup();
    Ok(Route { public_name: r.public_name.clone(), kind, deployments, policy, source: r.source.clone() })
}
