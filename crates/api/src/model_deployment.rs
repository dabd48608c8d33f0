//! ModelDeployment: one upstream endpoint serving one model.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::ResourceStatus;

/// One upstream endpoint serving one model (`kubectl get md`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmroute.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    cel,
    derive = "PartialEq",
    status = "ResourceStatus",
    shortname = "md",
    category = "llmroute",
    printcolumn(json_path = ".spec.modelName", name = "Model", type_ = "string"),
    printcolumn(json_path = ".spec.team", name = "Team", type_ = "string"),
    printcolumn(json_path = ".spec.weight", name = "Weight", type_ = "integer"),
    printcolumn(json_path = ".spec.order", name = "Order", type_ = "integer"),
    printcolumn(json_path = ".status.conditions[?(@.type==\"Accepted\")].status", name = "Accepted", type_ = "string"),
    printcolumn(json_path = ".status.conditions[?(@.type==\"Ready\")].status", name = "Ready", type_ = "string"),
    printcolumn(json_path = ".status.conditions[?(@.type==\"Healthy\")].status", name = "Healthy", type_ = "string"),
    printcolumn(json_path = ".status.snapshotVersion", name = "Snapshot", type_ = "string"),
    printcolumn(
        json_path = ".status.sidecars.acknowledged",
        name = "Sidecars",
        type_ = "integer",
        description = "Connected sidecars that acknowledged the view holding this object"
    ),
    printcolumn(
        json_path = ".status.sidecars.connected",
        name = "Connected",
        type_ = "integer",
        priority = 1,
        description = "Connected sidecars whose views hold this object"
    ),
    printcolumn(json_path = ".metadata.creationTimestamp", name = "Age", type_ = "date")
)]
#[x_kube(validation = Rule::new("self.provider != 'azure' || has(self.upstream.apiVersion)").message("upstream.apiVersion is required when provider is azure"))]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// Public name clients request (the model group): exact, or a pattern with one `*`.
    #[x_kube(validation = Rule::new("self.size() >= 1 && self.size() <= 253").message("modelName must be 1..253 characters"))]
    #[x_kube(validation = Rule::new("self.indexOf('*') == self.lastIndexOf('*')").message("modelName may hold at most one '*'"))]
    pub model_name: String,
    /// Team this deployment is private to; absent = global (every team may reach it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("team must be a DNS label (lowercase letters, digits, '-')"))]
    pub team: Option<String>,
    /// API flavour of the upstream.
    #[serde(default)]
    pub provider: Provider,
    /// Where and how to reach the upstream.
    pub upstream: Upstream,
    /// Relative share of traffic within its order level; 0 = used only when nothing weighted is left.
    #[serde(default = "default_one")]
    pub weight: u32,
    /// Preference level, 1 = most preferred; higher levels serve only when no lower one is eligible.
    #[serde(default = "default_one")]
    #[x_kube(validation = Rule::new("self >= 1").message("order must be >= 1"))]
    pub order: u32,
    /// Rate and concurrency limits; 0 = unlimited.
    #[serde(default)]
    pub limits: Limits,
    /// Context window in tokens; 0 = unknown (no pre-call check).
    #[serde(default)]
    pub context_window: u64,
    /// Declared price, used by the `cost` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Quality tier 1..5 (5 best), used by adaptive routing and `x-llmroute-min-quality-tier`.
    #[serde(default = "default_quality_tier")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 5").message("qualityTier must be between 1 and 5"))]
    pub quality_tier: u32,
    /// Active health probing.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Ask the upstream for token usage in streams (`stream_options.include_usage`) when the
    /// client did not, removing the extra usage chunk from what the client receives. Set false
    /// for upstreams that reject the option. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_usage: Option<bool>,
}

fn default_one() -> u32 {
    1
}

fn default_quality_tier() -> u32 {
    3
}

/// API flavour of an upstream.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Any OpenAI-compatible API: OpenAI, vLLM, TGI, Ollama...
    #[default]
    Openai,
    /// Azure OpenAI: deployment URL shape, `api-version`, `api-key` header.
    Azure,
}

/// Where and how to reach the upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Base URL of the API, e.g. `https://api.openai.com/v1`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+([/?#].*)?$')").message("upstream.baseUrl must be an http:// or https:// URL with a host"))]
    #[x_kube(validation = Rule::new("self.size() <= 2048").message("upstream.baseUrl must be at most 2048 characters"))]
    #[x_kube(validation = Rule::new("!self.matches('^https?://[^/?#]*@')").message("upstream.baseUrl must not carry credentials (user:password@): use apiKeySecretRef"))]
    pub base_url: String,
    /// Model id sent upstream; may hold one `*`, replaced by the part a pattern matched.
    /// Default: the requested name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.indexOf('*') == self.lastIndexOf('*')").message("upstream.model may hold at most one '*'"))]
    pub model: Option<String>,
    /// Secret (same namespace) holding the upstream API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Azure `api-version` query parameter (azure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// Rate and concurrency limits; 0 = unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: u64,
    /// Tokens per minute (estimated prompt tokens).
    #[serde(default)]
    pub tpm: u64,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrency: u64,
}

/// Declared price in dollars per million tokens, as decimal strings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// Price of a million prompt tokens, e.g. "2.50".
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,9}(\\\\.[0-9]{1,9})?$')").message("cost.inputPerMillionTokens must be a decimal like \"2.50\""))]
    pub input_per_million_tokens: String,
    /// Price of a million completion tokens, e.g. "10.00".
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,9}(\\\\.[0-9]{1,9})?$')").message("cost.outputPerMillionTokens must be a decimal like \"10.00\""))]
    pub output_per_million_tokens: String,
}

/// How the deployment is probed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckMode {
    /// No active probing.
    #[default]
    None,
    /// `GET {baseUrl}/models`.
    Models,
    /// A one-token completion.
    Completion,
}

/// Active health probing of one deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// none | models | completion.
    #[serde(default)]
    pub mode: HealthCheckMode,
    /// Seconds between probes.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("self >= 1").message("healthCheck.intervalSeconds must be >= 1"))]
    pub interval_seconds: u32,
    /// Seconds before a probe counts as failed.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new("self >= 1").message("healthCheck.timeoutSeconds must be >= 1"))]
    pub timeout_seconds: u32,
    /// Consecutive failures that mark the deployment unhealthy.
    #[serde(default = "default_unhealthy")]
    #[x_kube(validation = Rule::new("self >= 1").message("healthCheck.unhealthyThreshold must be >= 1"))]
    pub unhealthy_threshold: u32,
    /// Consecutive successes that mark it healthy again.
    #[serde(default = "default_one")]
    #[x_kube(validation = Rule::new("self >= 1").message("healthCheck.healthyThreshold must be >= 1"))]
    pub healthy_threshold: u32,
}

fn default_interval() -> u32 {
    30
}

fn default_timeout() -> u32 {
    5
}

fn default_unhealthy() -> u32 {
    2
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            mode: HealthCheckMode::None,
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            unhealthy_threshold: default_unhealthy(),
            healthy_threshold: default_one(),
        }
    }
}
