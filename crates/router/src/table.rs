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

/// One upstream endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    /// The wire message (credential included; its Debug is redacted).
    pub wire: v1::Deployment,
    /// Order level (>= 1).
    pub order: u32,
    /// Weight (0 = backup).
    pub weight: u32,
    /// Declared cost of a million input + output tokens.
    pub cost: f64,
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
}

/// Patterns of one resolution tier, longest literal part first.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PatternList(pub Vec<(String, RouteIdx)>);

/// A team's view, ready to route on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    /// Snapshot version.
    pub version: String,
    /// Team the view belongs to.
    pub team: String,
    /// Every deployment of the view.
    pub deployments: Vec<Deployment>,
    /// Every route of the view.
    pub routes: Vec<Route>,
    pub(crate) by_id: HashMap<String, DeploymentIdx>,
    /// Exact names per tier (team model, team deployment, global).
    pub(crate) exact: [HashMap<String, RouteIdx>; 3],
    /// Patterns per tier.
    pub(crate) patterns: [PatternList; 3],
}

impl RouteTable {
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
            let tier = route.kind as usize;
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

fn deployment(d: &v1::Deployment) -> Result<Deployment, InvalidSnapshot> {
    v1::Provider::try_from(d.provider).map_err(|_| InvalidSnapshot::UnknownEnum("provider", d.provider))?;
    if d.order == 0 {
        return Err(InvalidSnapshot::Deployment(d.id.clone(), "order must be >= 1".into()));
    }
    let cost = d.input_cost_per_million + d.output_cost_per_million;
    if !cost.is_finite() || cost < 0.0 {
        return Err(InvalidSnapshot::Deployment(d.id.clone(), "cost must be a non-negative number".into()));
    }
    Ok(Deployment { wire: d.clone(), order: d.order, weight: d.weight, cost })
}

fn route(r: &v1::Route, table: &RouteTable) -> Result<Route, InvalidSnapshot> {
    let kind = v1::RouteKind::try_from(r.kind).map_err(|_| InvalidSnapshot::UnknownEnum("route kind", r.kind))?;
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
        (da.order, &da.wire.id).cmp(&(db.order, &db.wire.id))
    });
    deployments.dedup();
    Ok(Route { public_name: r.public_name.clone(), kind, deployments, policy })
}
