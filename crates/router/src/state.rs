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
    adaptive: Mutex<Vec<(String, [Option<AdaptiveCell>; 7])>>,
    /// End of a cooldown the fleet shares (operator mode), Unix milliseconds; 0 = none.
    shared_cooldown_until_ms: AtomicU64,
    /// Fleet-wide limits (operator mode): admission by the operator's assignment. `None`:
    /// the limits hold for this sidecar alone (standalone).
    quota: Mutex<Option<FleetQuota>>,
    /// Whether `quota` is set: the hot path of an unlimited deployment never takes its lock.
    quota_active: std::sync::atomic::AtomicBool,
    /// Demand since the last fleet report: requests (admitted or refused by a limit), tokens.
    demand_requests: AtomicU64,
    demand_tokens: AtomicU64,
    /// Server-side failures (5xx, connection errors, timeouts) over the last minute: the
    /// evidence of a cooldown shared with the fleet.
    server_failures: Mutex<RateWindow<MINUTE_MS>>,
    /// Answers' usage since the last fleet report: input, output, cached tokens, cost (USD).
    usage: Mutex<Usage>,
    /// Requests in flight at the rest of the fleet (operator mode: the operator's sum of
    /// reports less this sidecar's own last report), and until when that holds (Unix ms).
    fleet_in_flight: AtomicU64,
    fleet_in_flight_until_ms: AtomicU64,
    /// This sidecar's in flight as last reported to the operator.
    reported_in_flight: AtomicU64,
}

/// Tokens and cost of answers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// Cached input tokens.
    pub cached: u64,
    /// Priced by the declared cost, US dollars.
    pub cost_usd: f64,
}

/// One adaptive cell: the posterior in force (the fleet's merged one plus what this sidecar
/// observed since), and what it observed that the fleet has not been told yet.
#[derive(Clone, Copy, Debug)]
struct AdaptiveCell {
    posterior: crate::adaptive::Posterior,
    unreported: (f64, f64),
}

/// Admission buckets of a fleet-limited deployment.
#[derive(Clone, Debug, Default)]
struct FleetQuota {
    rpm: Option<crate::quota::Bucket>,
    tpm: Option<crate::quota::Bucket>,
}

/// This sidecar's share of a deployment's fleet limits, per minute (see [`DeploymentState::assign`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Share {
    /// Requests per minute granted (when `granted`).
    pub rpm: f64,
    /// Tokens per minute granted (when `granted`).
    pub tpm: f64,
    /// Requests per minute without a grant (and once the grant expires).
    pub reserve_rpm: f64,
    /// Tokens per minute without a grant (and once the grant expires).
    pub reserve_tpm: f64,
    /// Whether a grant is given (else the reserve rates apply at once).
    pub granted: bool,
    /// How long the grant holds, milliseconds.
    pub ttl_ms: u64,
}

/// A sidecar's first bucket on a deployment: at the reserve rate, holding one request, so
/// that a cold sidecar's first request goes (and its demand is seen) before any assignment.
fn first_bucket(per_minute: f64, now: f64) -> crate::quota::Bucket {
    let mut bucket = crate::quota::Bucket::reserve(per_minute, now);
    bucket.charge(-1.0, now);
    bucket
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Adaptive groups a deployment keeps posteriors for, at most (a deployment is in few groups;
/// the oldest is dropped past this).
const MAX_ADAPTIVE_GROUPS: usize = 16;

impl DeploymentState {
    /// The posterior of this deployment in `group` for `kind` (its prior from `quality_tier`
    /// when nothing was learned).
    pub fn posterior(&self, group: &str, kind: crate::RequestType, quality_tier: u32) -> crate::adaptive::Posterior {
        let learned = self.adaptive.lock().ok().and_then(|cells| {
            cells.iter().find(|(g, _)| g == group).and_then(|(_, per_type)| per_type[kind.index()].map(|c| c.posterior))
        });
        learned.unwrap_or_else(|| crate::adaptive::Posterior::prior(quality_tier))
    }

    /// The cell of (`group`, `kind`), created from `prior` when new.
    fn with_cell<T>(
        &self,
        group: &str,
        kind: crate::RequestType,
        prior: crate::adaptive::Posterior,
        f: impl FnOnce(&mut AdaptiveCell) -> T,
    ) -> Option<T> {
        let mut cells = self.adaptive.lock().ok()?;
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
        let cell = cells[at].1[kind.index()].get_or_insert(AdaptiveCell { posterior: prior, unreported: (0.0, 0.0) });
        Some(f(cell))
    }

    /// Adds an adaptive signal (1 success .. 0 failure); it is also kept for the next fleet
    /// report.
    pub fn observe_adaptive(&self, group: &str, kind: crate::RequestType, quality_tier: u32, reward: f64) {
        if !reward.is_finite() {
            return;
        }
        let r = reward.clamp(0.0, 1.0);
        self.with_cell(group, kind, crate::adaptive::Posterior::prior(quality_tier), |cell| {
            cell.posterior.observe(r);
            cell.unreported.0 += r;
            cell.unreported.1 += 1.0 - r;
        });
    }

    /// Takes the adaptive evidence not reported yet: (group, type, successes, failures).
    pub fn take_adaptive_deltas(&self) -> Vec<(String, crate::RequestType, f64, f64)> {
        let Ok(mut cells) = self.adaptive.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for (group, per_type) in cells.iter_mut() {
            for (kind, cell) in crate::RequestType::ALL.into_iter().zip(per_type.iter_mut()) {
                if let Some(cell) = cell
                    && cell.unreported != (0.0, 0.0)
                {
                    out.push((group.clone(), kind, cell.unreported.0, cell.unreported.1));
                    cell.unreported = (0.0, 0.0);
                }
            }
        }
        out
    }

    /// Sets a cell to the fleet's merged posterior plus what this sidecar observed since its
    /// last report.
    pub fn set_fleet_posterior(&self, group: &str, kind: crate::RequestType, merged: crate::adaptive::Posterior) {
        if !(merged.alpha.is_finite() && merged.beta.is_finite()) {
            return;
        }
        self.with_cell(group, kind, merged, |cell| {
            let mut p = merged;
            p.alpha += cell.unreported.0;
            p.beta += cell.unreported.1;
            p.decay(1.0); // floors and the evidence cap
            cell.posterior = p;
        });
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Requests in flight across the fleet: this sidecar's own now, plus the rest of the
    /// fleet's as last reported while that figure holds (prefix affinity's bounded load).
    pub fn load(&self, now_ms: u64) -> u64 {
        let others =
            if now_ms < self.fleet_in_flight_until_ms.load(Relaxed) { self.fleet_in_flight.load(Relaxed) } else { 0 };
        u64::from(self.in_flight()).saturating_add(others)
    }

    /// This sidecar's in flight for a fleet report: `Some` while busy, and once more (0)
    /// after it went idle; the figure is remembered to tell it apart from the fleet's sum.
    pub fn report_in_flight(&self) -> Option<u64> {
        let now = u64::from(self.in_flight());
        let before = self.reported_in_flight.swap(now, Relaxed);
        (now > 0 || before > 0).then_some(now)
    }

    /// The fleet's in flight here (every sidecar's last report, this one's included), holding
    /// until `until_ms`.
    pub fn set_fleet_in_flight(&self, fleet: u64, until_ms: u64) {
        let others = fleet.saturating_sub(self.reported_in_flight.load(Relaxed));
        self.fleet_in_flight.store(others, Relaxed);
        self.fleet_in_flight_until_ms.store(until_ms, Relaxed);
    }

    /// Latency EWMA in milliseconds, `None` when never answered.
    pub fn latency_ms(&self) -> Option<f64> {
        match self.latency_ewma_us.load(Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }

    /// Whether a cooldown (this sidecar's own or the fleet's) is running at `now_ms`.
    pub fn in_cooldown(&self, now_ms: u64) -> bool {
        self.cooldown_until_ms() > now_ms
    }

    /// End of the running cooldown, Unix milliseconds (0 = none ever).
    pub fn cooldown_until_ms(&self) -> u64 {
        self.cooldown_until_ms.load(Relaxed).max(self.shared_cooldown_until_ms.load(Relaxed))
    }

    /// End of this sidecar's own cooldown, Unix milliseconds.
    pub fn local_cooldown_until_ms(&self) -> u64 {
        self.cooldown_until_ms.load(Relaxed)
    }

    /// Sets the cooldown the fleet shares (0: none, a shared cooldown is released).
    pub fn set_shared_cooldown(&self, until_ms: u64) {
        self.shared_cooldown_until_ms.store(until_ms, Relaxed);
    }

    /// End of the fleet's shared cooldown, Unix milliseconds (0 = none).
    pub fn shared_cooldown_until_ms(&self) -> u64 {
        self.shared_cooldown_until_ms.load(Relaxed)
    }

    /// A server-side failure (5xx, connection error, timeout): evidence for the fleet.
    pub fn note_server_failure(&self, now_ms: u64) {
        if let Ok(mut w) = self.server_failures.lock() {
            w.add(now_ms, 1);
        }
    }

    /// Server-side failures and requests over the last minute.
    pub fn recent_evidence(&self, now_ms: u64) -> (u64, u64) {
        let read = |m: &Mutex<RateWindow<MINUTE_MS>>| m.lock().map(|mut w| w.estimate(now_ms)).unwrap_or(0);
        (read(&self.server_failures), read(&self.requests))
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

    /// Whether starting one more request of `tokens` would break a limit. `maxConcurrency`
    /// always holds per sidecar; rpm and tpm hold for the fleet under an assignment, else for
    /// this sidecar alone.
    pub fn over_limit(&self, limits: &Limits, now_ms: u64, tokens: u64) -> bool {
        if limits.max_concurrency > 0 && u64::from(self.in_flight()) >= limits.max_concurrency {
            return true;
        }
        if (limits.rpm > 0 || limits.tpm > 0)
            && self.quota_active.load(Relaxed)
            && let Ok(mut quota) = self.quota.lock()
            && let Some(quota) = quota.as_mut()
        {
            let now = secs(now_ms);
            // tpm: admitted while the balance is positive; the tokens are charged at the start
            // (estimate) and corrected by the answer's real usage.
            return quota.rpm.as_mut().is_some_and(|b| !b.allows(1.0, now))
                || quota.tpm.as_mut().is_some_and(|b| !b.allows(1.0, now));
        }
        let lock = |m: &Mutex<RateWindow<MINUTE_MS>>| m.lock().map(|mut w| w.estimate(now_ms)).unwrap_or(0);
        (limits.rpm > 0 && lock(&self.requests) >= limits.rpm)
            || (limits.tpm > 0 && lock(&self.tokens) + tokens > limits.tpm)
    }

    /// An attempt starts: counts toward in-flight and the rate windows.
    pub fn start(&self, now_ms: u64, tokens: u64) {
        self.in_flight.fetch_add(1, Relaxed);
        self.demand_requests.fetch_add(1, Relaxed);
        self.demand_tokens.fetch_add(tokens, Relaxed);
        if self.quota_active.load(Relaxed)
            && let Ok(mut quota) = self.quota.lock()
            && let Some(quota) = quota.as_mut()
        {
            let now = secs(now_ms);
            if let Some(b) = quota.rpm.as_mut() {
                b.charge(1.0, now);
            }
            if let Some(b) = quota.tpm.as_mut() {
                b.charge(tokens as f64, now);
            }
        }
        if let Ok(mut w) = self.requests.lock() {
            w.add(now_ms, 1);
        }
        if let Ok(mut w) = self.tokens.lock() {
            w.add(now_ms, tokens);
        }
    }

    /// The real token usage of an answer is known: `delta` more (or fewer, when negative) than
    /// was counted at the start.
    pub fn charge_tokens(&self, now_ms: u64, delta: i64) {
        if delta > 0 {
            self.demand_tokens.fetch_add(delta.unsigned_abs(), Relaxed);
            if let Ok(mut w) = self.tokens.lock() {
                w.add(now_ms, delta.unsigned_abs());
            }
        }
        if self.quota_active.load(Relaxed)
            && let Ok(mut quota) = self.quota.lock()
            && let Some(b) = quota.as_mut().and_then(|q| q.tpm.as_mut())
        {
            b.charge(delta as f64, secs(now_ms));
        }
    }

    /// An answer's usage (for the operator's sums).
    pub fn add_usage(&self, usage: Usage) {
        if let Ok(mut u) = self.usage.lock() {
            u.input = u.input.saturating_add(usage.input);
            u.output = u.output.saturating_add(usage.output);
            u.cached = u.cached.saturating_add(usage.cached);
            if usage.cost_usd.is_finite() && usage.cost_usd > 0.0 {
                u.cost_usd += usage.cost_usd;
            }
        }
    }

    /// Takes the usage added since the last call.
    pub fn take_usage(&self) -> Usage {
        self.usage.lock().map(|mut u| std::mem::take(&mut *u)).unwrap_or_default()
    }

    /// A request wanted this deployment but its limit refused it (demand the fleet should see).
    pub fn note_refused(&self) {
        self.demand_requests.fetch_add(1, Relaxed);
    }

    /// Takes the demand counted since the last call: (requests, tokens).
    pub fn take_demand(&self) -> (u64, u64) {
        (self.demand_requests.swap(0, Relaxed), self.demand_tokens.swap(0, Relaxed))
    }

    /// Applies this sidecar's share of the fleet limits at `now_ms`.
    pub fn assign(&self, limits: &Limits, share: &Share, now_ms: u64) {
        let Ok(mut quota) = self.quota.lock() else { return };
        let now = secs(now_ms);
        self.quota_active.store(true, Relaxed);
        let quota = quota.get_or_insert_with(FleetQuota::default);
        let expires = now + secs(share.ttl_ms);
        let apply = |slot: &mut Option<crate::quota::Bucket>, limit: u64, rate: f64, reserve: f64| {
            if limit == 0 {
                *slot = None;
                return;
            }
            let clean = |x: f64| if x.is_finite() { x.clamp(0.0, limit as f64) } else { 0.0 };
            let bucket = slot.get_or_insert_with(|| first_bucket(clean(reserve), now));
            if share.granted {
                bucket.grant(clean(rate), expires, clean(reserve), now);
            } else {
                bucket.set_reserve(clean(reserve), now);
            }
        };
        apply(&mut quota.rpm, limits.rpm, share.rpm, share.reserve_rpm);
        apply(&mut quota.tpm, limits.tpm, share.tpm, share.reserve_tpm);
    }

    /// Operator mode, before any assignment: a fleet-limited deployment admits at the
    /// conservative reserve share of its limits.
    pub fn default_fleet_quota(&self, limits: &Limits, now_ms: u64) {
        if limits.rpm == 0 && limits.tpm == 0 {
            return;
        }
        let Ok(mut quota) = self.quota.lock() else { return };
        if quota.is_none() {
            let now = secs(now_ms);
            let bucket =
                |limit: u64| (limit > 0).then(|| first_bucket(limit as f64 * crate::quota::RESERVE_SHARE, now));
            *quota = Some(FleetQuota { rpm: bucket(limits.rpm), tpm: bucket(limits.tpm) });
            self.quota_active.store(true, Relaxed);
        }
    }

    /// The fleet rates in force (requests, tokens per minute), `None` outside operator mode.
    pub fn fleet_rates(&self, now_ms: u64) -> Option<(Option<f64>, Option<f64>, bool)> {
        let quota = self.quota.lock().ok()?;
        let quota = quota.as_ref()?;
        let now = secs(now_ms);
        let granted = quota.rpm.iter().chain(quota.tpm.iter()).any(|b| b.granted(now));
        Some((quota.rpm.as_ref().map(|b| b.per_minute()), quota.tpm.as_ref().map(|b| b.per_minute()), granted))
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

    /// Applies the fleet's state (operator mode): merged adaptive posteriors, this sidecar's
    /// quota shares, and the cooldowns the fleet shares (a deployment not listed is released).
    /// Entries for deployments not in `table` are ignored.
    pub fn apply_fleet(&self, table: &RouteTable, push: &v1::FleetPush, now_ms: u64) {
        for cell in &push.posteriors {
            if let (Some(idx), Some(kind)) =
                (table.deployment_index(&cell.deployment_id), crate::RequestType::parse(&cell.request_type))
            {
                let merged = crate::adaptive::Posterior { alpha: cell.alpha, beta: cell.beta };
                self.get(idx).set_fleet_posterior(&cell.group, kind, merged);
            }
        }
        for a in &push.assignments {
            if let Some(idx) = table.deployment_index(&a.deployment_id) {
                let share = Share {
                    rpm: a.rpm,
                    tpm: a.tpm,
                    reserve_rpm: a.reserve_rpm,
                    reserve_tpm: a.reserve_tpm,
                    granted: a.granted,
                    ttl_ms: a.ttl_ms.min(600_000),
                };
                self.get(idx).assign(&table.deployment(idx).limits, &share, now_ms);
            }
        }
        let mut shared = vec![0u64; self.states.len()];
        for c in &push.cooldowns {
            if let Some(idx) = table.deployment_index(&c.deployment_id) {
                // A shared cooldown lasts at most a day, whatever is sent.
                shared[idx as usize] = now_ms.saturating_add(c.remaining_ms.min(86_400_000));
            }
        }
        for (state, until) in self.states.iter().zip(shared) {
            state.set_shared_cooldown(until);
        }
        if let Some(loads) = &push.loads {
            // Replaces the last figures whole: a deployment not listed has none in flight.
            let mut fleet = vec![0u64; self.states.len()];
            for l in &loads.entries {
                if let Some(idx) = table.deployment_index(&l.deployment_id) {
                    fleet[idx as usize] = l.in_flight;
                }
            }
            let until = now_ms.saturating_add(loads.ttl_ms.min(60_000));
            for (state, n) in self.states.iter().zip(fleet) {
                state.set_fleet_in_flight(n, until);
            }
        }
    }

    /// Operator mode: fleet-limited deployments without an assignment admit at the
    /// conservative reserve share of their limits until one arrives.
    pub fn default_fleet_quota(&self, table: &RouteTable, now_ms: u64) {
        for (state, d) in self.states.iter().zip(table.deployments()) {
            state.default_fleet_quota(&d.limits, now_ms);
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
