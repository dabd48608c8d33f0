//! The routing engine: everything DESIGN.md §3–4 says about choosing a deployment, as a pure
//! library over one team's snapshot view. No IO: the caller passes the time (Unix
//! milliseconds) and the random source, so every behaviour is deterministic under test.
//!
//! - [`RouteTable`]: a snapshot view converted to indexed domain types (invalid views rejected).
//! - [`LiveState`]: health, cooldown, in-flight, latency and rate windows per deployment,
//!   carried across snapshots for unchanged deployments and dropped for removed ones.
//! - [`Planner`]: one request's attempts: eligibility, order levels, affinity, strategy,
//!   failover, fallbacks, `maxAttempts`.
//! - [`classify`]: an upstream outcome -> retryable / context-window / client error.
//! - [`classify_request`]: a request -> its [`RequestType`] (adaptive groups).

#![forbid(unsafe_code)]

pub mod adaptive;
mod classify;
mod eligibility;
mod lru;
mod plan;
mod policy;
pub mod quota;
mod random;
pub mod rendezvous;
mod request_type;
mod resolve;
mod response_id;
pub mod signals;
mod state;
mod strategy;
mod table;

pub use classify::{Class, Outcome, classify};
pub use lru::BoundedLru;
pub use plan::{Attempt, AttemptKind, Exhausted, ExhaustedReason, Pick, Planner, RequestKeys};

/// Why a request would go where it goes ([`Planner::explain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The route the name resolved to.
    pub route: RouteIdx,
    /// Every deployment of the route, in (order, id) order, with why it is excluded (`None`:
    /// eligible).
    pub candidates: Vec<(DeploymentIdx, Option<&'static str>)>,
    /// The affinity that applies (`responses`, `session_owner`, `session`, `user`), never
    /// the key's value.
    pub affinity: Option<&'static str>,
    /// Health was ignored because it excluded every deployment.
    pub health_safety_net: bool,
    /// The deployment a first attempt would go to now (`None`: none eligible in the group).
    pub pick: Option<DeploymentIdx>,
}
pub use policy::{AffinityKind, Cooldown, MAX_ATTEMPTS, MAX_TIMEOUT_SECONDS, Policy, RetryBudget, StrategyKind};
pub use request_type::{MAX_CHARS as CLASSIFY_MAX_CHARS, RequestType, classify_request};
pub use resolve::Resolved;
pub use response_id::{unwrap_response_id, wrap_response_id};
pub use state::{DeploymentState, HealthObservation, LiveState, RetryBudgetState, Share, Usage};
pub use table::{
    Deployment, DeploymentIdx, HealthMode, InvalidSnapshot, Limits, Provider, Route, RouteIdx, RouteTable, degrade,
};
