//! Custom resource types of llmroute (group `llmroute.dev`, version `v1alpha1`).
//!
//! Schema rules are written once, as CEL on the types (`#[x_kube(validation = ...)]`), so the
//! generated CRD carries them for the API server and [`validation`] evaluates the very same
//! rules client-side for manifests mode.

#![forbid(unsafe_code)]
// kube-derive takes repeated `printcolumn(..., type_ = "string")` arguments, which this lint
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod crds;
pub mod manifest;
mod model_deployment;
mod routing_policy;
mod status;
pub mod strict;
mod team_model;
pub mod validation;

pub use model_deployment::{
    Cost, HealthCheck, HealthCheckMode, Limits, ModelDeployment, ModelDeploymentSpec, Provider, SecretKeyRef, Upstream,
};
pub use routing_policy::{
    AdaptivePolicy, Affinity, ConfigError, CooldownPolicy, Decimal, Epsilon, RetryBudgetPolicy, RoutingConfig,
    RoutingConfigResource, RoutingPolicy, Strategy, Weight,
};
pub use status::{ConditionType, ResourceStatus, SidecarCounts};
pub use team_model::{TeamModel, TeamModelSpec};

/// API group of every llmroute resource.
pub const GROUP: &str = "llmroute.dev";
/// API version of every llmroute resource.
pub const VERSION: &str = "v1alpha1";

/// Largest number of entries in any list field (deployments, fallbacks, affinity...).
pub const MAX_LIST_ITEMS: usize = 64;
