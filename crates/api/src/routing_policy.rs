//! RoutingPolicy (TeamModel `spec.routing`, operator routing config) and the routing config file.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
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
    /// The prompt's stable prefix (or its `prompt_cache_key`): requests that share a prefix
    /// share a deployment and its prompt cache.
    Prefix,
}

/// Cooldown: `allowedFails` failures within `windowSeconds` take a deployment out for `seconds`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CooldownPolicy {
    /// Failures tolerated inside the window; the next one starts the cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self <= 10000").message("cooldown.allowedFails must be between 0 and 10000"))]
    pub allowed_fails: Option<u32>,
    /// Length of the failure-counting window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("cooldown.windowSeconds must be between 1 and 86400"))]
    pub window_seconds: Option<u32>,
    /// How long a cooled-down deployment stays out, in seconds (a `Retry-After` from the
    /// upstream sets the period instead, up to 10 x this value or 60 s, whichever is larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self <= 86400").message("cooldown.seconds must be at most 86400"))]
    pub seconds: Option<u32>,
}

/// Retry budget: failover attempts are capped at a share of recent requests plus a floor
/// (Linkerd's and Envoy's retry budgets), so a brownout cannot multiply the upstream load.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudgetPolicy {
    /// Failover attempts allowed as a percentage of recent requests (0..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self <= 1000").message("retryBudget.percent must be between 0 and 1000"))]
    pub percent: Option<u32>,
    /// Failover attempts always allowed per second, whatever the request rate (0..100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self <= 100000").message("retryBudget.minPerSecond must be between 0 and 100000"))]
    pub min_per_second: Option<u32>,
}

/// A number from 0 to `MAX`, kept in thousandths so that policies compare exactly (`Eq`).
/// Written as a plain number (`1.0`, `0.25`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Decimal<const MAX: u32>(u32);

/// A weight of adaptive scoring, from 0 to 100.
pub type Weight = Decimal<100>;

/// Prefix affinity's `boundedLoadEpsilon`, from 0 to 10.
pub type Epsilon = Decimal<10>;

impl<const MAX: u32> Decimal<MAX> {
    /// The number `value` (rounded to thousandths; saturating far above `MAX`, which the
    /// schema's bound then refuses with the field named).
    pub fn new(value: f64) -> Option<Self> {
        (value.is_finite() && value >= 0.0).then(|| Self((value * 1000.0).round().min(f64::from(u32::MAX)) as u32))
    }

    /// The number.
    pub fn get(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl<const MAX: u32> Serialize for Decimal<MAX> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.get())
    }
}

impl<'de, const MAX: u32> Deserialize<'de> for Decimal<MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Self::new(value).ok_or_else(|| serde::de::Error::custom(format!("{value} is not a number from 0 to {MAX}")))
    }
}

impl<const MAX: u32> schemars::JsonSchema for Decimal<MAX> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Decimal{MAX}").into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "number", "minimum": 0, "maximum": MAX })
    }
}

/// How an adaptive group trades quality for price: it picks the deployment maximising
/// `qualityWeight * sampled success - costWeight * normalised price`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptivePolicy {
    /// Weight of the sampled success rate (0..100; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_weight: Option<Weight>,
    /// Weight of the price, normalised so the group's most expensive deployment is 1
    /// (0..100; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_weight: Option<Weight>,
}

/// Routing behaviour of one public model name. Every field is optional: precedence is resolved
/// field by field (TeamModel `routing` > `modelGroups[name]` > `defaults` > built-in defaults).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicy {
    /// weighted | least-busy | latency | cost | adaptive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Affinity keys honoured for this group: session, user, responses, prefix (explicit
    /// keys first, then prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub affinity: Option<Vec<Affinity>>,
    /// Prefix affinity: bytes of the canonical prompt hashed (and the shortest prompt that
    /// gets prefix affinity), 64..1048576; default 4096 (about 1,024 tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 64 && self <= 1048576").message("prefixBytes must be between 64 and 1048576"))]
    pub prefix_bytes: Option<u32>,
    /// Prefix affinity: a deployment whose load (requests in flight across the fleet) would
    /// pass (1 + epsilon) x the group's mean hands the request to the next one in rendezvous
    /// order, 0..10 in thousandths; default 0.25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded_load_epsilon: Option<Epsilon>,
    /// How long an affinity binding is remembered, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self <= 2592000").message("affinityTtlSeconds must be at most 2592000 (30 days)"))]
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
    /// Cap on failover attempts under a brownout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudgetPolicy>,
    /// Honour active health-check results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_routing: Option<bool>,
    /// Deadline of a whole request, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("timeoutSeconds must be between 1 and 86400"))]
    pub timeout_seconds: Option<u32>,
    /// Strategy `adaptive`: how quality and price are weighed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptivePolicy>,
}

/// The routing config: the `RoutingConfig` custom resource's spec in a cluster, the
/// `--config` file in manifests mode. Validated by the same CEL rules either way.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[kube(
    group = "llmroute.dev",
    version = "v1alpha1",
    kind = "RoutingConfig",
    root = "RoutingConfigResource",
    namespaced,
    cel,
    category = "llmroute"
)]
#[serde(rename_all = "camelCase")]
pub struct RoutingConfig {
    /// Policy applied to every group.
    #[serde(default)]
    pub defaults: RoutingPolicy,
    /// Per public-name overrides of `defaults`.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub model_groups: BTreeMap<String, RoutingPolicy>,
}

/// Why a routing config cannot be used; names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML, or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A field this version does not know (a misspelling, most often).
    #[error("{0}: unknown field")]
    UnknownField(String),
    /// A schema rule is broken.
    #[error("{0}")]
    Invalid(crate::validation::Violation),
}

impl RoutingConfig {
    /// Parses and validates a routing config document (YAML or JSON): unknown fields and
    /// broken rules are errors naming the field.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let config: Self = crate::strict::from_value(value).map_err(|e| match e {
            crate::strict::StrictError::Unknown(path) => ConfigError::UnknownField(path),
            crate::strict::StrictError::Type(message) => ConfigError::Syntax(message),
        })?;
        match crate::validation::validate_routing_config(&config) {
            Ok(()) => Ok(config),
            Err(mut violations) => Err(ConfigError::Invalid(violations.remove(0))),
        }
    }
}
