//! Step 1 of DESIGN §4: which deployments of a group may take the next attempt.

use crate::state::LiveState;
use crate::table::{DeploymentIdx, RouteTable};

/// Why a deployment is not eligible (the first reason found, in DESIGN order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ineligible {
    /// Failed earlier in this request.
    Failed,
    /// Below the requested minimum quality tier.
    QualityTier,
    /// Cooling down.
    Cooldown,
    /// A fresh probe says unhealthy.
    Unhealthy,
    /// Over rpm, tpm or concurrency.
    Limited,
    /// Context window smaller than the prompt.
    ContextWindow,
}

impl Ineligible {
    /// The reason as shown in `/debug/route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::QualityTier => "below_min_quality_tier",
            Self::Cooldown => "cooling_down",
            Self::Unhealthy => "unhealthy",
            Self::Limited => "at_limit",
            Self::ContextWindow => "context_window_too_small",
        }
    }
}

/// The request-level inputs of the filter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Filter<'a> {
    pub failed: &'a [DeploymentIdx],
    pub now_ms: u64,
    pub prompt_tokens: u64,
    pub min_quality_tier: u32,
    pub use_health: bool,
}

impl Filter<'_> {
    pub fn check(&self, table: &RouteTable, state: &LiveState, idx: DeploymentIdx) -> Result<(), Ineligible> {
        let d = table.deployment(idx);
        let s = state.get(idx);
        if self.failed.contains(&idx) {
            return Err(Ineligible::Failed);
        }
        if d.quality_tier < self.min_quality_tier {
            return Err(Ineligible::QualityTier);
        }
        if s.in_cooldown(self.now_ms) {
            return Err(Ineligible::Cooldown);
        }
        if self.use_health && s.unhealthy(self.now_ms) {
            return Err(Ineligible::Unhealthy);
        }
        if s.over_limit(&d.limits, self.now_ms, self.prompt_tokens) {
            return Err(Ineligible::Limited);
        }
        if d.context_window > 0 && self.prompt_tokens > d.context_window {
            return Err(Ineligible::ContextWindow);
        }
        Ok(())
    }
}
