//! RoutingPolicy (TeamModel `spec.routing`, operator routing config) and the routing config file.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How a deployment is picked among the eligible ones of an order level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random draw proportional to `weight` (uniform when every weight is 0).
    Weighted,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest recent latency (EWMA); untried deployments first.
    Latency,
    /// Cheapest by declared cost.
    Cost,
    /// Thompson sampling over observed outcomes.
    Adaptive,
}

/// Which request key pins a request to a deployment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// `x-llmroute-session-id` header.
    Session,
    /// `x-llmroute-user` header or body `user`.
    User,
    /// `previous_response_id` of the Responses API.
    Responses,
}

/// Cooldown: `allowedFails` failures within `windowSeconds` take a deployment out for `seconds`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CooldownPolicy {
    /// Failures tolerated inside the window; the next one starts the cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("cooldown.allowedFails must be >= 1"))]
    pub allowed_fails: Option<u32>,
    /// Length of the failure-counting window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("cooldown.windowSeconds must be >= 1"))]
    pub window_seconds: Option<u32>,
    /// How long a cooled-down deployment stays out, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
}

/// Routing behaviour of one public model name. Every field is optional: precedence is resolved
/// field by field (TeamModel `routing` > `modelGroups[name]` > `defaults` > built-in defaults).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicy {
    /// weighted | least-busy | latency | cost | adaptive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Affinity keys honoured for this group: session, user, responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 3))]
    pub affinity: Option<Vec<Affinity>>,
    /// How long an affinity binding is remembered, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_ttl_seconds: Option<u32>,
    /// On a retryable failure, re-pick inside the group without the failed deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
    /// Upstream attempts per request, failover and fallbacks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 20").message("maxAttempts must be between 1 and 20"))]
    pub max_attempts: Option<u32>,
    /// Other public names tried, in order, when the whole group is exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub fallbacks: Option<Vec<String>>,
    /// Public names tried when the upstream reports the context window was exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub context_window_fallbacks: Option<Vec<String>>,
    /// Failure-based cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<CooldownPolicy>,
    /// Honour active health-check results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_routing: Option<bool>,
    /// Deadline of a whole request, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("timeoutSeconds must be >= 1"))]
    pub timeout_seconds: Option<u32>,
}

/// The operator's (and standalone sidecar's) routing config file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingConfig {
    /// Policy applied to every group.
    #[serde(default)]
    pub defaults: RoutingPolicy,
    /// Per public-name overrides of `defaults`.
    #[serde(default)]
    pub model_groups: BTreeMap<String, RoutingPolicy>,
}

impl RoutingConfig {
    /// Parses a routing config document (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text)
    }
}
