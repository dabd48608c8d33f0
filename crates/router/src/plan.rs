//! One request's attempts (DESIGN §4): eligibility, lowest order level, affinity, strategy;
//! after a retryable failure re-pick without the failed deployments (order escalation
//! included), then the `fallbacks` groups; a context-window error goes to
//! `contextWindowFallbacks` only; `maxAttempts` bounds everything; the end names every attempt.

use std::collections::VecDeque;

use rand::Rng;

use crate::classify::Class;
use crate::eligibility::{Filter, Ineligible};
use crate::state::LiveState;
use crate::strategy::Candidates;
use crate::table::{DeploymentIdx, RouteIdx, RouteTable};

/// What the request carries that routing uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestKeys {
    /// `x-llmroute-session-id`.
    pub session: Option<String>,
    /// `x-llmroute-user` or body `user`.
    pub user: Option<String>,
    /// Deployment id named by an llmroute-issued `previous_response_id`.
    pub previous_deployment: Option<String>,
    /// Estimated prompt tokens (for context windows and tpm).
    pub prompt_tokens: u64,
    /// `x-llmroute-min-quality-tier` (0 = any).
    pub min_quality_tier: u32,
    /// The request's type, for adaptive groups (`None`: general).
    pub request_type: Option<crate::RequestType>,
    /// Adaptive groups: the deployment the request's session started on (it stays there
    /// while eligible, so that later signals are charged to the right arm).
    pub session_owner: Option<String>,
    /// Prefix affinity: a hash of the prompt's stable prefix or of its `prompt_cache_key`
    /// (see [`Planner::prefix_bytes`]).
    pub prefix: Option<u128>,
}

/// Why an attempt happens; the failover kinds are the `llmroute_failovers_total` labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptKind {
    /// The request's first attempt.
    First,
    /// Another deployment of the same group and order level.
    InGroup,
    /// A higher order level of the same group.
    Order,
    /// A `fallbacks` group.
    Fallback,
    /// A `contextWindowFallbacks` group.
    ContextWindow,
}

impl AttemptKind {
    /// Metric label (`first` is not a failover).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::InGroup => "in_group",
            Self::Order => "order",
            Self::Fallback => "fallback",
            Self::ContextWindow => "context_window",
        }
    }
}

/// The next attempt to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Deployment to call.
    pub deployment: DeploymentIdx,
    /// Route (group) it was picked from.
    pub route: RouteIdx,
    /// The group: its route's public name (for a wildcard route, the pattern), so metric
    /// labels stay bounded whatever names clients send.
    pub model_group: String,
    /// Model id to send upstream.
    pub upstream_model: String,
    /// Why this attempt happens.
    pub kind: AttemptKind,
}

/// One finished attempt, for the final error and the attempts header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// `namespace/name` of the deployment.
    pub deployment_id: String,
    /// Group name.
    pub model_group: String,
    /// What happened, e.g. `status 503` or `connect error`.
    pub outcome: String,
}

/// Why no further attempt can be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExhaustedReason {
    /// Attempts were made and failed (or `maxAttempts` was reached): 502 / last status.
    AllFailed,
    /// Nothing was attempted because every candidate is over a limit: 429.
    Limited,
    /// Nothing was attempted because no candidate is eligible: 503.
    NoneEligible,
    /// The upstream rejected the request itself (non-retryable 4xx): pass it on.
    ClientError,
    /// The prompt exceeds the context window and no context-window fallback is left (an
    /// upstream said so, or no candidate's declared window can take it).
    ContextWindow,
    /// A failover attempt was due but the group's retry budget is spent: fail fast.
    RetryBudget,
}

/// The end of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// Why.
    pub reason: ExhaustedReason,
    /// Every attempt made, in order.
    pub attempts: Vec<Attempt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Primary,
    Fallback,
    ContextWindow,
}

#[derive(Clone, Debug)]
struct Group {
    route: RouteIdx,
    name: String,
    capture: String,
    entry: Entry,
}

/// The attempt plan of one request.
#[derive(Debug)]
pub struct Planner<'t> {
    table: &'t RouteTable,
    keys: RequestKeys,
    primary: RouteIdx,
    current: Option<Group>,
    queue: VecDeque<Group>,
    visited: Vec<RouteIdx>,
    failed: Vec<DeploymentIdx>,
    attempts: Vec<Attempt>,
    max_attempts: u32,
    last: Option<(RouteIdx, u32)>,
    stop: Option<ExhaustedReason>,
    saw_limited: bool,
    /// Some deployment considered was ineligible for a reason other than its context window.
    fits_somewhere: bool,
    saw_context_window: bool,
    context_window_used: bool,
    /// The primary group's `fallbacks` are resolved only once the plan needs them.
    fallbacks_loaded: bool,
    /// The affinity that decided the last pick, if one did.
    affinity_used: Option<&'static str>,
}

impl<'t> Planner<'t> {
    /// A plan for a request of `name`; `None` when this team cannot call `name`.
    pub fn new(table: &'t RouteTable, name: &str, keys: RequestKeys) -> Option<Self> {
        let resolved = table.resolve(name)?;
        let route = table.route(resolved.route);
        let primary = Group {
            route: resolved.route,
            name: name.to_owned(),
            capture: resolved.capture.to_owned(),
            entry: Entry::Primary,
        };
        let planner = Self {
            table,
            keys,
            primary: resolved.route,
            current: Some(primary),
            queue: VecDeque::new(),
            visited: vec![resolved.route],
            failed: Vec::with_capacity(route.policy.max_attempts as usize),
            attempts: Vec::with_capacity(route.policy.max_attempts as usize),
            max_attempts: route.policy.max_attempts,
            last: None,
            stop: None,
            saw_limited: false,
            fits_somewhere: false,
            saw_context_window: false,
            context_window_used: false,
            fallbacks_loaded: false,
            affinity_used: None,
        };
        Some(planner)
    }

    /// The route the requested name resolved to.
    pub fn primary_route(&self) -> RouteIdx {
        self.primary
    }

    /// Deadline of the whole request, milliseconds (the primary group's policy).
    pub fn timeout_ms(&self) -> u64 {
        self.table.route(self.primary).policy.timeout_ms
    }

    /// The affinity that decided the last pick (`responses`, `session_owner`, `session`,
    /// `user`, `prefix`), never the key's value.
    pub fn affinity_used(&self) -> Option<&'static str> {
        self.affinity_used
    }

    /// Attempts recorded so far.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The next attempt, or the end of the plan.
    pub fn next<R: Rng + ?Sized>(&mut self, state: &LiveState, now_ms: u64, rng: &mut R) -> Result<Pick, Exhausted> {
        if let Some(reason) = self.stop {
            return Err(self.exhausted(reason));
        }
        if self.attempts.len() as u32 >= self.max_attempts {
            return Err(self.exhausted(ExhaustedReason::AllFailed));
        }
        while let Some(group) = self.current.clone() {
            if let Some(idx) = self.pick_in(&group, state, now_ms, rng) {
                let budget = state.budget(self.primary);
                if self.attempts.is_empty() {
                    budget.record_request(now_ms);
                } else if !budget.try_retry(now_ms, &self.table.route(self.primary).policy.retry_budget) {
                    self.stop = Some(ExhaustedReason::RetryBudget);
                    return Err(self.exhausted(ExhaustedReason::RetryBudget));
                }
                return Ok(self.pick(&group, idx));
            }
            self.advance();
        }
        let reason = match (self.attempts.is_empty(), self.saw_limited) {
            (true, _) if self.saw_context_window && !self.fits_somewhere => ExhaustedReason::ContextWindow,
            (true, true) => ExhaustedReason::Limited,
            (true, false) => ExhaustedReason::NoneEligible,
            (false, _) => ExhaustedReason::AllFailed,
        };
        Err(self.exhausted(reason))
    }

    /// An upstream asked for a pause (`Retry-After` on a 429 or 503): cools `pick`'s
    /// deployment for that long, at least 1 s and at most 10 x the group's cooldown or 60 s,
    /// whichever is larger. Returns the period applied, milliseconds.
    pub fn cool_down(&self, pick: &Pick, retry_after_ms: u64, state: &LiveState, now_ms: u64) -> u64 {
        let rule = &self.table.route(pick.route).policy.cooldown;
        let ceiling = rule.duration_ms.saturating_mul(10).max(60_000);
        let period = retry_after_ms.clamp(1_000, ceiling);
        state.get(pick.deployment).cool_for(now_ms, period);
        period
    }

    /// Whether the requested group picks adaptively (then the caller classifies the request
    /// and passes its type with [`Self::set_request_type`]).
    pub fn is_adaptive(&self) -> bool {
        self.table.route(self.primary).policy.strategy == crate::StrategyKind::Adaptive
    }

    /// The request's type, for adaptive groups.
    pub fn set_request_type(&mut self, kind: crate::RequestType) {
        self.keys.request_type = Some(kind);
    }

    /// The request's type as classified (general when not).
    pub fn request_type(&self) -> crate::RequestType {
        self.keys.request_type.unwrap_or(crate::RequestType::General)
    }

    /// How many bytes of the canonical prompt the requested group's prefix affinity hashes;
    /// `None` when the group has no prefix affinity (then no key is worth computing).
    pub fn prefix_bytes(&self) -> Option<usize> {
        self.table.route(self.primary).policy.prefix_affinity.map(|p| p.bytes)
    }

    /// The request's prefix key (see [`Self::prefix_bytes`]).
    pub fn set_prefix(&mut self, key: Option<u128>) {
        self.keys.prefix = key;
    }

    /// Adaptive groups: the deployment the request's session started on.
    pub fn set_session_owner(&mut self, deployment_id: Option<String>) {
        self.keys.session_owner = deployment_id;
    }

    /// Why the first attempt would go where it goes, without making it (nothing is recorded:
    /// no budget, no attempt, no live state touched). For `/debug/route`.
    pub fn explain<R: Rng + ?Sized>(&mut self, state: &LiveState, now_ms: u64, rng: &mut R) -> crate::Explanation {
        let table = self.table;
        let route = table.route(self.primary);
        let policy = &route.policy;
        let mut filter = Filter {
            failed: &[],
            now_ms,
            prompt_tokens: self.keys.prompt_tokens,
            min_quality_tier: self.keys.min_quality_tier,
            use_health: policy.health_routing,
        };
        let health_net = filter.use_health && !route.deployments.iter().any(|i| filter.check(table, state, *i).is_ok());
        if health_net {
            filter.use_health = false;
        }
        let candidates = route
            .deployments
            .iter()
            .map(|i| (*i, filter.check(table, state, *i).err().map(crate::eligibility::Ineligible::as_str)))
            .collect();
        let eligible = |id: Option<&str>| {
            id.and_then(|id| table.deployment_index(id))
                .filter(|i| route.deployments.contains(i) && filter.check(table, state, *i).is_ok())
        };
        let affinity = if policy.responses_affinity && eligible(self.keys.previous_deployment.as_deref()).is_some() {
            Some("responses")
        } else if policy.strategy == crate::StrategyKind::Adaptive
            && eligible(self.keys.session_owner.as_deref()).is_some()
        {
            Some("session_owner")
        } else if policy.session_affinity && self.keys.session.is_some() {
            Some("session")
        } else if policy.user_affinity && self.keys.user.is_some() {
            Some("user")
        } else if policy.prefix_affinity.is_some() && self.keys.prefix.is_some() {
            Some("prefix")
        } else {
            None
        };
        let current = self.current.clone();
        let pick = current.and_then(|group| self.pick_in(&group, state, now_ms, rng));
        crate::Explanation { route: self.primary, candidates, affinity, health_safety_net: health_net, pick }
    }

    /// Records the outcome of `pick`. Retryable failures are charged toward the deployment's
    /// cooldown in `state`.
    pub fn record(&mut self, pick: &Pick, class: Class, outcome: impl Into<String>, state: &LiveState, now_ms: u64) {
        self.attempts.push(Attempt {
            deployment_id: self.table.deployment(pick.deployment).id.clone(),
            model_group: pick.model_group.clone(),
            outcome: outcome.into(),
        });
        let policy = &self.table.route(pick.route).policy;
        // An adaptive group learns from every answer: a success is a 1, a failure that
        // counts against the deployment a 0 (client errors and context windows say nothing
        // about its quality).
        if policy.strategy == crate::StrategyKind::Adaptive {
            let reward = match class {
                Class::Success => Some(1.0),
                Class::Retryable => Some(0.0),
                Class::ContextWindow | Class::ClientError => None,
            };
            if let Some(reward) = reward {
                let deployment = self.table.deployment(pick.deployment);
                let kind = self.keys.request_type.unwrap_or(crate::RequestType::General);
                let group = &self.table.route(pick.route).public_name;
                state.get(pick.deployment).observe_adaptive(group, kind, deployment.quality_tier, reward);
            }
        }
        match class {
            Class::Success => {}
            Class::Retryable => {
                self.failed.push(pick.deployment);
                state.get(pick.deployment).record_failure(now_ms, &policy.cooldown);
                if !policy.failover {
                    self.advance();
                }
            }
            Class::ContextWindow => {
                self.failed.push(pick.deployment);
                self.enter_context_window_fallbacks();
                if self.current.is_none() {
                    self.stop = Some(ExhaustedReason::ContextWindow);
                }
            }
            Class::ClientError => self.stop = Some(ExhaustedReason::ClientError),
        }
    }

    fn exhausted(&self, reason: ExhaustedReason) -> Exhausted {
        Exhausted { reason, attempts: self.attempts.clone() }
    }

    fn pick(&mut self, group: &Group, idx: DeploymentIdx) -> Pick {
        let order = self.table.deployment(idx).order;
        let kind = match self.last {
            None => AttemptKind::First,
            Some((route, last_order)) if route == group.route => {
                if order > last_order {
                    AttemptKind::Order
                } else {
                    AttemptKind::InGroup
                }
            }
            Some(_) => match group.entry {
                Entry::ContextWindow => AttemptKind::ContextWindow,
                Entry::Fallback | Entry::Primary => AttemptKind::Fallback,
            },
        };
        self.last = Some((group.route, order));
        let resolved = crate::Resolved { route: group.route, capture: &group.capture };
        Pick {
            deployment: idx,
            route: group.route,
            model_group: self.table.route(group.route).public_name.clone(),
            upstream_model: self.table.upstream_model(idx, &group.name, &resolved),
            kind,
        }
    }

    /// Resolves fallback names to groups, skipping unknown names and routes already visited.
    fn groups(&self, names: &[String], entry: Entry) -> VecDeque<Group> {
        let mut seen = self.visited.clone();
        let mut out = VecDeque::new();
        for name in names {
            if let Some(r) = self.table.resolve(name)
                && !seen.contains(&r.route)
            {
                seen.push(r.route);
                out.push_back(Group { route: r.route, name: name.clone(), capture: r.capture.to_owned(), entry });
            }
        }
        out
    }

    /// Queues the primary group's `fallbacks` behind whatever is queued, once.
    fn ensure_fallbacks(&mut self) {
        if !self.fallbacks_loaded {
            self.fallbacks_loaded = true;
            let names = self.table.route(self.primary).policy.fallbacks.clone();
            let groups = self.groups(&names, Entry::Fallback);
            self.queue.extend(groups);
        }
    }

    fn advance(&mut self) {
        self.ensure_fallbacks();
        self.current = self.queue.pop_front();
        if let Some(g) = &self.current {
            self.visited.push(g.route);
        }
    }

    fn enter_context_window_fallbacks(&mut self) {
        if self.context_window_used {
            self.current = None;
            self.queue.clear();
            return;
        }
        self.context_window_used = true;
        self.fallbacks_loaded = true;
        let names = self.table.route(self.primary).policy.context_window_fallbacks.clone();
        self.queue = self.groups(&names, Entry::ContextWindow);
        self.advance();
    }

    fn pick_in<R: Rng + ?Sized>(
        &mut self,
        group: &Group,
        state: &LiveState,
        now_ms: u64,
        rng: &mut R,
    ) -> Option<DeploymentIdx> {
        let table = self.table;
        let route = table.route(group.route);
        let policy = &route.policy;
        let mut filter = Filter {
            failed: &self.failed,
            now_ms,
            prompt_tokens: self.keys.prompt_tokens,
            min_quality_tier: self.keys.min_quality_tier,
            use_health: policy.health_routing,
        };
        let ok = |f: &Filter<'_>, i: DeploymentIdx| f.check(table, state, i).is_ok();
        // Health safety net: never filter out everything on health alone.
        if filter.use_health && !route.deployments.iter().any(|i| ok(&filter, *i)) {
            filter.use_health = false;
        }
        let Some(first) = route.deployments.iter().position(|i| ok(&filter, *i)) else {
            let reasons: Vec<Ineligible> =
                route.deployments.iter().filter_map(|i| filter.check(table, state, *i).err()).collect();
            self.note_ineligible(&reasons);
            return None;
        };
        if policy.responses_affinity
            && let Some(prev) = self.keys.previous_deployment.as_deref().and_then(|id| table.deployment_index(id))
            && route.deployments.contains(&prev)
            && ok(&filter, prev)
        {
            self.affinity_used = Some("responses");
            return Some(prev);
        }
        if policy.strategy == crate::StrategyKind::Adaptive
            && let Some(owner) = self.keys.session_owner.as_deref().and_then(|id| table.deployment_index(id))
            && route.deployments.contains(&owner)
            && ok(&filter, owner)
        {
            self.affinity_used = Some("session_owner");
            return Some(owner);
        }
        let order = table.deployment(route.deployments[first]).order;
        let rest = &route.deployments[first..];
        let len = rest.iter().position(|i| table.deployment(*i).order != order).unwrap_or(rest.len());
        let level = &rest[..len];
        let eligible = |i: DeploymentIdx| ok(&filter, i);
        let weighted = level.iter().any(|i| eligible(*i) && table.deployment(*i).weight > 0);
        let request_type = self.keys.request_type.unwrap_or(crate::RequestType::General);
        let candidates = Candidates {
            table,
            state,
            level,
            eligible,
            weighted,
            group: &route.public_name,
            request_type,
            weights: policy.adaptive,
            now_ms,
        };
        let affinity_key = match (&self.keys.session, &self.keys.user) {
            (Some(s), _) if policy.session_affinity => Some(("s:", s.as_str())),
            (_, Some(u)) if policy.user_affinity => Some(("u:", u.as_str())),
            _ => None,
        };
        match affinity_key {
            Some((prefix, key)) => {
                self.affinity_used = Some(if prefix == "s:" { "session" } else { "user" });
                candidates.by_affinity(format!("{prefix}{key}").as_bytes())
            }
            None => match (policy.prefix_affinity, self.keys.prefix) {
                (Some(prefix), Some(key)) => {
                    self.affinity_used = Some("prefix");
                    candidates.by_prefix(&key.to_le_bytes(), prefix.epsilon)
                }
                _ => {
                    self.affinity_used = None;
                    candidates.by_strategy(policy.strategy, rng)
                }
            },
        }
    }

    /// Remembers why a group had nothing eligible; a context-limited group leads to the
    /// context-window fallbacks.
    fn note_ineligible(&mut self, reasons: &[Ineligible]) {
        if reasons.contains(&Ineligible::Limited) {
            self.saw_limited = true;
        }
        if reasons.iter().any(|r| *r != Ineligible::ContextWindow) {
            self.fits_somewhere = true;
        }
        let context_limited = reasons.contains(&Ineligible::ContextWindow);
        self.saw_context_window |= context_limited;
        if context_limited && !self.context_window_used {
            self.ensure_fallbacks();
            let names = self.table.route(self.primary).policy.context_window_fallbacks.clone();
            let mut front = self.groups(&names, Entry::ContextWindow);
            self.context_window_used = true;
            front.extend(self.queue.drain(..));
            self.queue = front;
        }
    }
}
