//! Live state per deployment: health, cooldown, in-flight, latency EWMA, rate windows.
//! Keyed by deployment id + spec hash: a changed deployment starts fresh, a removed one is
//! forgotten when the next table applies. Hot-path reads are atomics; locks are taken only
//! when a failure is recorded or a rate limit is configured.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use llmroute_proto::v1;

use crate::policy::{Cooldown, RetryBudget};
use crate::table::{DeploymentIdx, Limits, RouteIdx, RouteTable};

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.3;
/// A health result older than this many probe intervals is stale and ignored.
const HEALTH_FRESH_INTERVALS: u64 = 3;
/// Rate-limit window, milliseconds.
const MINUTE_MS: u64 = 60_000;

/// The latest active-probe result of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthObservation {
    /// Probe verdict.
    pub healthy: bool,
    /// When it was observed, Unix milliseconds.
    pub observed_at_ms: u64,
    /// Probe interval, milliseconds.
    pub interval_ms: u64,
}

impl HealthObservation {
    /// Whether the result is younger than 3 probe intervals at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.observed_at_ms) < HEALTH_FRESH_INTERVALS * self.interval_ms.max(1)
    }
}

/// Span of the retry budget's window, milliseconds.
const BUDGET_SPAN_MS: u64 = 10_000;

/// A sliding counter over `SPAN` milliseconds (two fixed buckets, the older one weighted by
/// overlap).
#[derive(Debug, Default)]
struct RateWindow<const SPAN: u64> {
    bucket_start_ms: u64,
    current: u64,
    previous: u64,
}

impl<const SPAN: u64> RateWindow<SPAN> {
    fn roll(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.bucket_start_ms);
        if elapsed >= 2 * SPAN {
            (self.previous, self.current) = (0, 0);
            self.bucket_start_ms = now_ms - now_ms % SPAN;
        } else if elapsed >= SPAN {
            (self.previous, self.current) = (self.current, 0);
            self.bucket_start_ms += SPAN;
        }
    }

    fn estimate(&mut self, now_ms: u64) -> u64 {
        self.roll(now_ms);
        let into = now_ms.saturating_sub(self.bucket_start_ms) as f64 / SPAN as f64;
        self.current + (self.previous as f64 * (1.0 - into)).round() as u64
    }

    fn add(&mut self, now_ms: u64, amount: u64) {
        self.roll(now_ms);
        self.current += amount;
    }
}

/// Live state of one deployment.
#[derive(Debug, Default)]
pub struct DeploymentState {
    in_flight: AtomicU32,
    /// Latency EWMA in microseconds; 0 = never answered.
    latency_ewma_us: AtomicU64,
    cooldown_until_ms: AtomicU64,
    /// `observed_at_ms << 1 | healthy`, 0 = no result.
    health: AtomicU64,
    health_interval_ms: AtomicU64,
    failures: Mutex<VecDeque<u64>>,
    requests: Mutex<RateWindow<MINUTE_MS>>,
    tokens: Mutex<RateWindow<MINUTE_MS>>,
    successes: AtomicU64,
    failures_total: AtomicU64,
    /// Adaptive groups' posteriors of this deployment: per group, one per request type.
    adaptive: Mutex<Vec<(String, [Option<crate::adaptive::Posterior>; 7])>>,
}

/// Adaptive groups a deployment keeps posteriors for, at most (a deployment is in few groups;
/// the oldest is dropped past this).
const MAX_ADAPTIVE_GROUPS: usize = 16;

impl DeploymentState {
    /// The posterior of this deployment in `group` for `kind` (its prior from `quality_tier`
    /// when nothing was learned).
    pub fn posterior(&self, group: &str, kind: crate::RequestType, quality_tier: u32) -> crate::adaptive::Posterior {
        let learned =
            self.adaptive.lock().ok().and_then(|cells| {
                cells.iter().find(|(g, _)| g == group).and_then(|(_, per_type)| per_type[kind.index()])
            });
        learned.unwrap_or_else(|| crate::adaptive::Posterior::prior(quality_tier))
    }

    /// Adds an adaptive signal (1 success .. 0 failure).
    pub fn observe_adaptive(&self, group: &str, kind: crate::RequestType, quality_tier: u32, reward: f64) {
        let Ok(mut cells) = self.adaptive.lock() else { return };
        let at = match cells.iter().position(|(g, _)| g == group) {
            Some(at) => at,
            None => {
                if cells.len() >= MAX_ADAPTIVE_GROUPS {
                    cells.remove(0);
                }
                cells.push((group.to_owned(), [None; 7]));
                cells.len() - 1
            }
        };
        let cell = &mut cells[at].1[kind.index()];
        cell.get_or_insert_with(|| crate::adaptive::Posterior::prior(quality_tier)).observe(reward);
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Latency EWMA in milliseconds, `None` when never answered.
    pub fn latency_ms(&self) -> Option<f64> {
        match self.latency_ewma_us.load(Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }

    /// Whether a cooldown is running at `now_ms`.
    pub fn in_cooldown(&self, now_ms: u64) -> bool {
        self.cooldown_until_ms.load(Relaxed) > now_ms
    }

    /// End of the running cooldown, Unix milliseconds (0 = none ever).
    pub fn cooldown_until_ms(&self) -> u64 {
        self.cooldown_until_ms.load(Relaxed)
    }

    /// The latest health result, if any.
    pub fn health(&self) -> Option<HealthObservation> {
        let word = self.health.load(Relaxed);
        (word != 0).then(|| HealthObservation {
            healthy: word & 1 == 1,
            observed_at_ms: word >> 1,
            interval_ms: self.health_interval_ms.load(Relaxed),
        })
    }

    /// Records a probe result.
    pub fn set_health(&self, observation: HealthObservation) {
        self.health_interval_ms.store(observation.interval_ms, Relaxed);
        self.health.store((observation.observed_at_ms.max(1) << 1) | u64::from(observation.healthy), Relaxed);
    }

    /// Whether a fresh probe result says unhealthy at `now_ms`.
    pub fn unhealthy(&self, now_ms: u64) -> bool {
        self.health().is_some_and(|h| !h.healthy && h.is_fresh(now_ms))
    }

    /// Whether starting one more request of `tokens` would break a limit.
    pub fn over_limit(&self, limits: &Limits, now_ms: u64, tokens: u64) -> bool {
        if limits.max_concurrency > 0 && u64::from(self.in_flight()) >= limits.max_concurrency {
            return true;
        }
        let lock = |m: &Mutex<RateWindow<MINUTE_MS>>| m.lock().map(|mut w| w.estimate(now_ms)).unwrap_or(0);
        (limits.rpm > 0 && lock(&self.requests) >= limits.rpm)
            || (limits.tpm > 0 && lock(&self.tokens) + tokens > limits.tpm)
    }

    /// An attempt starts: counts toward in-flight and the rate windows.
    pub fn start(&self, now_ms: u64, tokens: u64) {
        self.in_flight.fetch_add(1, Relaxed);
        if let Ok(mut w) = self.requests.lock() {
            w.add(now_ms, 1);
        }
        if let Ok(mut w) = self.tokens.lock() {
            w.add(now_ms, tokens);
        }
    }

    /// An attempt ends (whatever its outcome).
    pub fn finish(&self) {
        let _ = self.in_flight.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// A successful answer after `latency_ms`.
    pub fn record_success(&self, latency_ms: f64) {
        self.successes.fetch_add(1, Relaxed);
        let sample = (latency_ms * 1000.0).max(1.0);
        let _ = self.latency_ewma_us.fetch_update(Relaxed, Relaxed, |old| {
            let next = if old == 0 { sample } else { EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * old as f64 };
            Some(next.max(1.0) as u64)
        });
    }

    /// A retryable failure at `now_ms`: more than `allowed_fails` within the window starts a
    /// cooldown. Returns whether a cooldown started.
    pub fn record_failure(&self, now_ms: u64, rule: &Cooldown) -> bool {
        self.failures_total.fetch_add(1, Relaxed);
        let Ok(mut failures) = self.failures.lock() else { return false };
        failures.push_back(now_ms);
        while failures.front().is_some_and(|t| now_ms.saturating_sub(*t) >= rule.window_ms.max(1)) {
            failures.pop_front();
        }
        // Only the last allowed_fails + 1 failures can matter: the deque stays bounded.
        while failures.len() as u64 > u64::from(rule.allowed_fails) + 1 {
            failures.pop_front();
        }
        if failures.len() as u64 > u64::from(rule.allowed_fails) && rule.duration_ms > 0 {
            failures.clear();
            self.cooldown_until_ms.store(now_ms + rule.duration_ms, Relaxed);
            return true;
        }
        false
    }

    /// Takes the deployment out until `now_ms + duration_ms` (an upstream's `Retry-After`),
    /// unless a longer cooldown already runs.
    pub fn cool_for(&self, now_ms: u64, duration_ms: u64) {
        self.cooldown_until_ms.fetch_max(now_ms.saturating_add(duration_ms), Relaxed);
    }

    /// Successes and retryable failures seen so far.
    pub fn outcome_counts(&self) -> (u64, u64) {
        (self.successes.load(Relaxed), self.failures_total.load(Relaxed))
    }
}

/// The retry budget of one group: requests and failover attempts over the last 10 s.
#[derive(Debug, Default)]
pub struct RetryBudgetState {
    windows: Mutex<(RateWindow<BUDGET_SPAN_MS>, RateWindow<BUDGET_SPAN_MS>)>,
}

impl RetryBudgetState {
    /// A request's first attempt: deposits into the budget.
    pub fn record_request(&self, now_ms: u64) {
        if let Ok(mut w) = self.windows.lock() {
            w.0.add(now_ms, 1);
        }
    }

    /// Withdraws one failover attempt if `budget` allows it at `now_ms`.
    pub fn try_retry(&self, now_ms: u64, budget: &RetryBudget) -> bool {
        let Ok(mut w) = self.windows.lock() else { return false };
        let floor = u64::from(budget.min_per_second) * BUDGET_SPAN_MS / 1000;
        let share = w.0.estimate(now_ms).saturating_mul(u64::from(budget.percent)) / 100;
        if w.1.estimate(now_ms) >= floor.saturating_add(share) {
            return false;
        }
        w.1.add(now_ms, 1);
        true
    }
}

/// Live state of every deployment and route of one table, aligned with its indices.
#[derive(Debug, Default, Clone)]
pub struct LiveState {
    states: Vec<Arc<DeploymentState>>,
    keys: HashMap<(String, String), usize>,
    budgets: Vec<Arc<RetryBudgetState>>,
    budget_keys: HashMap<(String, i32), usize>,
}

impl LiveState {
    /// State for `table`, keeping what `previous` knew of deployments with the same id and
    /// spec hash; everything else starts fresh and removed deployments are dropped.
    pub fn for_table(table: &RouteTable, previous: Option<&LiveState>) -> Self {
        let mut keys = HashMap::with_capacity(table.deployments.len());
        let states = table
            .deployments
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let key = (d.id.clone(), d.spec_hash.clone());
                let kept = previous.and_then(|p| p.keys.get(&key).map(|j| p.states[*j].clone()));
                keys.insert(key, i);
                kept.unwrap_or_default()
            })
            .collect();
        let mut budget_keys = HashMap::with_capacity(table.routes.len());
        let budgets = table
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let key = (r.public_name.clone(), r.kind as i32);
                let kept = previous.and_then(|p| p.budget_keys.get(&key).map(|j| p.budgets[*j].clone()));
                budget_keys.insert(key, i);
                kept.unwrap_or_default()
            })
            .collect();
        Self { states, keys, budgets, budget_keys }
    }

    /// Retry budget of a route (group).
    pub fn budget(&self, route: RouteIdx) -> &RetryBudgetState {
        &self.budgets[route as usize]
    }

    /// State of a deployment.
    pub fn get(&self, idx: DeploymentIdx) -> &DeploymentState {
        &self.states[idx as usize]
    }

    /// Applies a health table; entries for unknown deployments or other spec hashes are ignored.
    pub fn apply_health(&self, entries: &[v1::HealthEntry]) {
        for e in entries {
            if let Some(i) = self.keys.get(&(e.deployment_id.clone(), e.spec_hash.clone())) {
                self.states[*i].set_health(HealthObservation {
                    healthy: e.healthy,
                    observed_at_ms: u64::try_from(e.observed_at_unix_ms).unwrap_or(0),
                    interval_ms: u64::from(e.interval_seconds) * 1000,
                });
            }
        }
    }

    /// Number of deployments tracked.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests;
