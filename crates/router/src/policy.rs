//! The resolved routing policy of a route, as domain values.

use llmroute_proto::v1;

use crate::table::InvalidSnapshot;

/// How a deployment is picked inside an order level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyKind {
    /// Random draw proportional to weight.
    Weighted,
    /// Fewest in flight.
    LeastBusy,
    /// Lowest latency EWMA; untried first.
    Latency,
    /// Cheapest declared cost.
    Cost,
    /// Thompson sampling; until the adaptive issue lands it draws like `Weighted`.
    Adaptive,
}

/// An affinity key kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityKind {
    /// `x-llmroute-session-id`.
    Session,
    /// `x-llmroute-user` or body `user`.
    User,
    /// `previous_response_id`.
    Responses,
    /// The prompt's stable prefix.
    Prefix,
}

/// Prefix affinity's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefixAffinity {
    /// Bytes of the canonical prompt hashed (and the shortest prompt that gets a key).
    pub bytes: usize,
    /// Bounded load: spill past `(1 + epsilon)` x the mean.
    pub epsilon: f64,
}

/// Default `prefixBytes` (a sender that leaves it unset).
pub const DEFAULT_PREFIX_BYTES: usize = 4096;
/// Largest `prefixBytes` accepted (the CRD's own bound).
pub const MAX_PREFIX_BYTES: usize = 1 << 20;

/// Failure-based cooldown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cooldown {
    /// Failures tolerated inside the window; one more starts the cooldown.
    pub allowed_fails: u32,
    /// Window length, milliseconds.
    pub window_ms: u64,
    /// Cooldown length, milliseconds.
    pub duration_ms: u64,
}

/// Retry budget: failover attempts allowed as `percent` of recent requests plus
/// `min_per_second` (Linkerd's and Envoy's budgets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Share of recent requests, percent.
    pub percent: u32,
    /// Floor, failover attempts per second.
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { percent: 20, min_per_second: 10 }
    }
}

/// Largest `maxAttempts` accepted (the CRD's own bound).
pub const MAX_ATTEMPTS: u32 = 20;
/// Largest request deadline accepted, seconds (the CRD's own bound).
pub const MAX_TIMEOUT_SECONDS: u32 = 86_400;

/// A route's concrete policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Picking strategy.
    pub strategy: StrategyKind,
    /// Session affinity enabled.
    pub session_affinity: bool,
    /// User affinity enabled.
    pub user_affinity: bool,
    /// Responses-API affinity enabled.
    pub responses_affinity: bool,
    /// Prefix affinity, when enabled.
    pub prefix_affinity: Option<PrefixAffinity>,
    /// Re-pick inside the group after a retryable failure.
    pub failover: bool,
    /// Upstream attempts per request, everything included.
    pub max_attempts: u32,
    /// Public names tried when the group is exhausted.
    pub fallbacks: Vec<String>,
    /// Public names tried after a context-window error.
    pub context_window_fallbacks: Vec<String>,
    /// Cooldown rule.
    pub cooldown: Cooldown,
    /// Honour health-check results.
    pub health_routing: bool,
    /// Whole-request deadline, milliseconds.
    pub timeout_ms: u64,
    /// Cap on failover attempts.
    pub retry_budget: RetryBudget,
    /// Strategy adaptive: quality against price.
    pub adaptive: crate::adaptive::Weights,
}

impl TryFrom<&v1::RoutingPolicy> for Policy {
    type Error = InvalidSnapshot;

    fn try_from(p: &v1::RoutingPolicy) -> Result<Self, Self::Error> {
        // A strategy this build does not know degrades to weighted; an unknown affinity kind
        // is not honoured: the route still serves.
        let strategy = match v1::Strategy::try_from(p.strategy) {
            Ok(v1::Strategy::LeastBusy) => StrategyKind::LeastBusy,
            Ok(v1::Strategy::Latency) => StrategyKind::Latency,
            Ok(v1::Strategy::Cost) => StrategyKind::Cost,
            Ok(v1::Strategy::Adaptive) => StrategyKind::Adaptive,
            Ok(v1::Strategy::Weighted | v1::Strategy::Unspecified) | Err(_) => StrategyKind::Weighted,
        };
        let kinds: Vec<AffinityKind> = p
            .affinity
            .iter()
            .filter_map(|a| match v1::Affinity::try_from(*a) {
                Ok(v1::Affinity::Session) => Some(AffinityKind::Session),
                Ok(v1::Affinity::User) => Some(AffinityKind::User),
                Ok(v1::Affinity::Responses) => Some(AffinityKind::Responses),
                Ok(v1::Affinity::Prefix) => Some(AffinityKind::Prefix),
                Ok(v1::Affinity::Unspecified) | Err(_) => None,
            })
            .collect();
        if !(1..=MAX_ATTEMPTS).contains(&p.max_attempts) {
            return Err(InvalidSnapshot::Policy(format!("max_attempts must be between 1 and {MAX_ATTEMPTS}")));
        }
        if p.timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(InvalidSnapshot::Policy(format!("timeout_seconds must be at most {MAX_TIMEOUT_SECONDS}")));
        }
        let budget = p.retry_budget.map_or_else(RetryBudget::default, |b| RetryBudget {
            percent: b.percent,
            min_per_second: b.min_per_second,
        });
        let cooldown = p.cooldown.unwrap_or_default();
        Ok(Self {
            strategy,
            session_affinity: kinds.contains(&AffinityKind::Session),
            user_affinity: kinds.contains(&AffinityKind::User),
            responses_affinity: kinds.contains(&AffinityKind::Responses),
            prefix_affinity: kinds.contains(&AffinityKind::Prefix).then(|| PrefixAffinity {
                bytes: match p.prefix_bytes as usize {
                    0 => DEFAULT_PREFIX_BYTES,
                    n => n.clamp(1, MAX_PREFIX_BYTES),
                },
                // A sender that breaks the bound cannot make every capacity infinite.
                epsilon: if p.bounded_load_epsilon.is_finite() {
                    p.bounded_load_epsilon.clamp(0.0, 10.0)
                } else {
                    0.25
                },
            }),
            failover: p.failover,
            max_attempts: p.max_attempts,
            fallbacks: p.fallbacks.clone(),
            context_window_fallbacks: p.context_window_fallbacks.clone(),
            cooldown: Cooldown {
                allowed_fails: cooldown.allowed_fails,
                window_ms: u64::from(cooldown.window_seconds) * 1000,
                duration_ms: u64::from(cooldown.seconds) * 1000,
            },
            health_routing: p.health_routing,
            timeout_ms: u64::from(p.timeout_seconds.max(1)) * 1000,
            retry_budget: budget,
            adaptive: p.adaptive.map_or_else(crate::adaptive::Weights::default, |w| {
                // Weights are bounded (0..100) by the schema; a sender that breaks the bound
                // cannot make a score infinite.
                let clean = |x: f64| if x.is_finite() { x.clamp(0.0, 100.0) } else { 0.0 };
                crate::adaptive::Weights { quality: clean(w.quality_weight), cost: clean(w.cost_weight) }
            }),
        })
    }
}
