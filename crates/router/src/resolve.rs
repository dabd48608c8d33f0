//! Which route serves a requested name (DESIGN §3): TeamModel exact > team-private exact >
//! TeamModel pattern > team-private pattern > global exact > global pattern; among patterns
//! of a tier the longest literal part wins (ties: lexical order of the pattern).

use llmroute_proto::{NamePattern, substitute};

use crate::table::{DeploymentIdx, RouteIdx, RouteTable};

/// A resolved request name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'n> {
    /// The route.
    pub route: RouteIdx,
    /// What the route's `*` matched ("" for an exact route).
    pub capture: &'n str,
}

impl RouteTable {
    /// Resolves `name` in this team view.
    pub fn resolve<'n>(&self, name: &'n str) -> Option<Resolved<'n>> {
        const ORDER: [(bool, usize); 6] = [(false, 0), (false, 1), (true, 0), (true, 1), (false, 2), (true, 2)];
        ORDER.iter().find_map(|&(pattern, tier)| {
            if pattern {
                self.patterns[tier].0.iter().find_map(|(p, route)| {
                    NamePattern::parse(p).capture(name).map(|capture| Resolved { route: *route, capture })
                })
            } else {
                self.exact[tier].get(name).map(|route| Resolved { route: *route, capture: "" })
            }
        })
    }

    /// The model id to send to `deployment` for a request of `requested` resolved as `resolved`.
    /// A `*` in the upstream model takes the route's capture, or else what the deployment's own
    /// pattern matched; an empty upstream model means the requested name.
    pub fn upstream_model(&self, deployment: DeploymentIdx, requested: &str, resolved: &Resolved<'_>) -> String {
        let wire = self.deployment(deployment);
        if wire.upstream_model.is_empty() {
            return requested.to_owned();
        }
        if !wire.upstream_model.contains('*') {
            return wire.upstream_model.clone();
        }
        let capture = if self.route(resolved.route).public_name.contains('*') {
            resolved.capture
        } else {
            NamePattern::parse(&wire.model_name).capture(requested).unwrap_or(requested)
        };
        substitute(&wire.upstream_model, capture)
    }

    /// Public names this team can call (for `GET /v1/models`), in resolution order.
    pub fn public_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.public_name.as_str())
    }
}
