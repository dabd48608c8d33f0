//! Fleet learning in the operator: what sidecars report on the stream (adaptive posterior
//! deltas, demand on limited deployments, cooldown evidence) merged into one state, and the
//! state pushed back to each sidecar on the fleet channel (never as configuration):
//!
//! - adaptive posteriors merged exactly and deduplicated by (sidecar, sequence number), one
//!   sidecar's and one team's evidence capped per epoch, decayed once per epoch, persisted
//!   (`--fleet-state`) and loaded at start;
//! - quota assignments of every fleet-limited deployment, rebalanced from reported demand
//!   every `--quota-rebalance-seconds`, each with a time to live;
//! - cooldowns shared under Envoy's outlier-detection rules, released when they end or when
//!   the reporters see the deployment answer again.
//!
//! The decisions are the pure functions of `llmroute-fleet`; this module only keeps the
//! inputs, times them and hands out the results.

mod persist;
mod push;
pub mod replicas;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmroute_fleet::learning::{Caps, Cell, Delta, Learning, Merge, Report};
use llmroute_fleet::outlier::{self, Evidence, Rules};
use llmroute_fleet::quota::{Assignment, Demand, assign};
use llmroute_proto::v1;
use llmroute_router::adaptive::Posterior;
use tokio::sync::watch;

pub use self::push::{FleetState, Quota, Sent};
use crate::hub::Built;

/// Most entries of each kind taken from one report (the rest is ignored).
const MAX_ENTRIES: usize = 4_096;
/// Demand not refreshed for this long is forgotten.
const DEMAND_TTL: Duration = Duration::from_secs(10);
/// Cooldown evidence not refreshed for this long is forgotten.
const EVIDENCE_TTL: Duration = Duration::from_secs(30);
/// A sidecar silent for this many epochs is forgotten by the deduplication.
const FORGET_AFTER_EPOCHS: u32 = 60;
/// Merged posteriors are pushed at most this often (assignments and cooldowns at once).
const POSTERIOR_PUSH: Duration = Duration::from_secs(5);
/// Longest shared cooldown, whatever sidecars report.
const MAX_SHARED_COOLDOWN: Duration = Duration::from_secs(3_600);
/// Largest group name or deployment id taken from a report, bytes.
const MAX_NAME: usize = 253;
/// A sidecar's in-flight figures not refreshed for this long are forgotten (it reports
/// about once a second while busy).
pub(crate) const LOAD_TTL: Duration = Duration::from_secs(3);
/// The fleet's in-flight sums are published at most this often (and this often while any
/// is non-zero: sidecars hold them for [`LOAD_TTL`]).
const LOAD_PUSH: Duration = Duration::from_millis(900);
/// Largest in-flight figure taken from one sidecar for one deployment.
const MAX_IN_FLIGHT: u64 = 1_000_000;

/// How the fleet learns and shares.
#[derive(Clone, Debug)]
pub struct Config {
    /// Length of a learning epoch: posteriors decay and are persisted once per epoch.
    pub epoch: Duration,
    /// Decay factor applied at the end of every epoch (0..=1).
    pub decay: f64,
    /// How often quota is reassigned from reported demand.
    pub rebalance: Duration,
    /// How long an assignment holds once a sidecar has it.
    pub assignment_ttl: Duration,
    /// Whether cooldowns are shared at all.
    pub share_cooldowns: bool,
    /// When a cooldown is shared.
    pub rules: Rules,
    /// Per-epoch evidence caps.
    pub caps: Caps,
    /// Where the merged posteriors are persisted (manifests mode).
    pub state_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            epoch: Duration::from_secs(60),
            decay: 0.98,
            rebalance: Duration::from_secs(2),
            assignment_ttl: Duration::from_secs(10),
            share_cooldowns: true,
            rules: Rules::default(),
            caps: Caps::default(),
            state_file: None,
        }
    }
}

/// Who reports.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// Unique per sidecar process.
    pub sidecar: String,
    /// Its team.
    pub team: String,
    /// Its namespace (cooldown evidence of one namespace counts once).
    pub namespace: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Demanded {
    rpm: f64,
    tpm: f64,
    at: Instant,
    seq: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    n: u64,
    at: Instant,
    seq: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Reported {
    evidence: Evidence,
    cooling: bool,
    remaining: Duration,
    at: Instant,
    seq: u64,
}

/// What the derived inputs of a build are (recomputed when the watermark changes).
#[derive(Debug, Default)]
struct Catalog {
    watermark: u64,
    /// Per deployment: its quality tier and limits (rpm, tpm).
    deployments: HashMap<String, (u32, u64, u64)>,
    /// Every group (team, public name) and its deployments.
    groups: BTreeMap<String, Vec<String>>,
    /// Every (group public name, deployment) pair a route holds: the only cells learned.
    cells: std::collections::HashSet<(String, String)>,
}

#[derive(Debug)]
struct Inner {
    learning: Learning,
    demand: HashMap<(String, String), Demanded>,
    /// Requests in flight per (sidecar, deployment), as last reported.
    in_flight: HashMap<(String, String), InFlight>,
    /// The sums last published, and when.
    loads: Arc<BTreeMap<String, u64>>,
    last_loads: Option<Instant>,
    evidence: HashMap<(String, String), Reported>,
    shared: BTreeMap<String, Instant>,
    catalog: Catalog,
    last_epoch: Instant,
    last_rebalance: Option<Instant>,
    last_posteriors: Option<Instant>,
    quotas: BTreeMap<String, Quota>,
    posteriors: Arc<Vec<v1::PosteriorCell>>,
    generation: u64,
    /// Epochs ended so far (the cluster persists once per epoch).
    epochs: u64,
    /// A follower's evidence forwarded so far, cumulative per cell (millionths).
    forwarded: BTreeMap<Cell, (u64, u64)>,
    /// The leader's record of what it absorbed of each replica.
    absorbed: HashMap<String, replicas::Absorbed>,
    /// Tokens and cost reported by this replica's sidecars since it started, per (team,
    /// deployment).
    usage: BTreeMap<(String, String), llmroute_router::Usage>,
}

/// The operator's fleet state.
#[derive(Debug)]
pub struct Fleet {
    config: Config,
    inner: Mutex<Inner>,
    state: watch::Sender<Arc<FleetState>>,
    /// Random per process (a follower's forwarded totals start again with a new one).
    boot: String,
}

impl Fleet {
    /// A fleet with `config`, its posteriors loaded from `config.state_file` when it exists.
    pub fn new(config: Config) -> Self {
        let mut learning = Learning::new(config.caps);
        let mut config = config;
        if let Some(path) = config.state_file.clone() {
            match persist::load(&path) {
                Ok(cells) => {
                    tracing::info!(cells = cells.len(), file = %path.display(), "adaptive state loaded");
                    learning.restore(cells);
                }
                Err(e @ persist::PersistError::NotAFile) => {
                    tracing::error!(file = %path.display(), error = %e, "--fleet-state is not a regular file: adaptive state is neither loaded nor saved");
                    config.state_file = None;
                }
                Err(e) => match persist::set_aside(&path) {
                    Ok(aside) => {
                        tracing::warn!(file = %path.display(), moved_to = %aside.display(), error = %e, "adaptive state unreadable: moved aside, starting afresh")
                    }
                    Err(move_error) => {
                        tracing::error!(file = %path.display(), error = %e, %move_error, "adaptive state unreadable and cannot be moved aside: it is kept, and not saved over");
                        config.state_file = None;
                    }
                },
            }
        }
        let now = Instant::now();
        let inner = Inner {
            learning,
            demand: HashMap::new(),
            in_flight: HashMap::new(),
            loads: Arc::default(),
            last_loads: None,
            evidence: HashMap::new(),
            shared: BTreeMap::new(),
            catalog: Catalog::default(),
            last_epoch: now,
            last_rebalance: None,
            last_posteriors: None,
            quotas: BTreeMap::new(),
            posteriors: Arc::new(Vec::new()),
            generation: 0,
            epochs: 0,
            forwarded: BTreeMap::new(),
            absorbed: HashMap::new(),
            usage: BTreeMap::new(),
        };
        Self {
            config,
            inner: Mutex::new(inner),
            state: watch::Sender::new(Arc::new(FleetState::default())),
            boot: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// The state pushed to sidecars.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FleetState>> {
        self.state.subscribe()
    }

    /// The state in force.
    pub fn current(&self) -> Arc<FleetState> {
        self.state.borrow().clone()
    }

    /// Merges one report. Duplicates (a resend) change nothing.
    /// Only what the reporter's team view holds is taken: made-up groups, deployments or
    /// request types are ignored (they could otherwise grow the state without bound).
    pub fn report(&self, who: &Reporter, report: &v1::FleetReport, built: Option<&Built>, now: Instant) -> Merge {
        let Ok(mut guard) = self.inner.lock() else { return Merge::Duplicate };
        let inner = &mut *guard;
        if let Some(built) = built
            && built.watermark != inner.catalog.watermark
        {
            inner.catalog = catalog(built);
        }
        let name_ok =
            |s: &str| !s.is_empty() && s.len() <= MAX_NAME && built.is_some_and(|b| b.compiled.holds(&who.team, s));
        let cells = &inner.catalog.cells;
        let deltas = report
            .deltas
            .iter()
            .take(MAX_ENTRIES)
            .filter(|d| name_ok(&d.deployment_id) && cells.contains(&(d.group.clone(), d.deployment_id.clone())))
            .filter(|d| llmroute_router::RequestType::parse(&d.request_type).is_some())
            .map(|d| Delta {
                cell: (d.group.clone(), d.request_type.clone(), d.deployment_id.clone()),
                successes: d.successes,
                failures: d.failures,
            })
            .collect();
        let merged = inner.learning.merge(&Report {
            sidecar: who.sidecar.clone(),
            team: who.team.clone(),
            seq: report.seq,
            deltas,
        });
        if merged == Merge::Duplicate {
            return merged;
        }
        for u in report.usage.iter().take(MAX_ENTRIES).filter(|u| name_ok(&u.deployment_id)) {
            let key = (who.sidecar.clone(), u.deployment_id.clone());
            let clean = |x: f64| if x.is_finite() { x.clamp(0.0, 1e12) } else { 0.0 };
            let fresh = Demanded {
                rpm: clean(u.requests_per_minute),
                tpm: clean(u.tokens_per_minute),
                at: now,
                seq: report.seq,
            };
            // A late resend never replaces newer demand.
            if inner.demand.get(&key).is_none_or(|d| d.seq < report.seq) {
                // Demand from a sidecar that holds no grant: rebalance at the next tick rather
                // than leave it on the reserve for a whole period.
                let holds = inner.quotas.get(&u.deployment_id).is_some_and(|q| {
                    [&q.rpm, &q.tpm].into_iter().flatten().any(|a| a.grants.iter().any(|(s, _)| *s == who.sidecar))
                });
                if fresh.rpm + fresh.tpm > 0.0 && !holds {
                    inner.last_rebalance = None;
                }
                inner.demand.insert(key, fresh);
            }
        }
        for l in report.loads.iter().take(MAX_ENTRIES).filter(|l| name_ok(&l.deployment_id)) {
            let key = (who.sidecar.clone(), l.deployment_id.clone());
            // A late resend never replaces a newer figure.
            if inner.in_flight.get(&key).is_none_or(|f| f.seq < report.seq) {
                inner.in_flight.insert(key, InFlight { n: l.in_flight.min(MAX_IN_FLIGHT), at: now, seq: report.seq });
            }
        }
        for t in report.tokens.iter().take(MAX_ENTRIES).filter(|t| name_ok(&t.deployment_id)) {
            let total = inner.usage.entry((who.team.clone(), t.deployment_id.clone())).or_default();
            total.input = total.input.saturating_add(t.input_tokens);
            total.output = total.output.saturating_add(t.output_tokens);
            total.cached = total.cached.saturating_add(t.cached_tokens);
            if t.cost_usd.is_finite() && t.cost_usd > 0.0 {
                total.cost_usd += t.cost_usd.min(1e9);
            }
        }
        for c in report.cooldowns.iter().take(MAX_ENTRIES).filter(|c| name_ok(&c.deployment_id)) {
            let key = (who.sidecar.clone(), c.deployment_id.clone());
            let reported = Reported {
                evidence: Evidence {
                    sidecar: who.sidecar.clone(),
                    namespace: who.namespace.clone(),
                    deployment: c.deployment_id.clone(),
                    failures: c.failures.min(c.requests),
                    requests: c.requests,
                },
                cooling: c.cooling,
                remaining: Duration::from_millis(c.remaining_ms).min(MAX_SHARED_COOLDOWN),
                at: now,
                seq: report.seq,
            };
            if inner.evidence.get(&key).is_none_or(|r| r.seq < report.seq) {
                inner.evidence.insert(key, reported);
            }
        }
        merged
    }

    /// Tokens and cost this replica's sidecars reported, per (team, deployment).
    pub fn usage(&self) -> Vec<((String, String), llmroute_router::Usage)> {
        self.inner.lock().map(|i| i.usage.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    /// Epochs ended so far.
    pub fn epochs(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.epochs)
    }

    /// One step of the leader: forgets stale inputs, ends the epoch when due (decay,
    /// persist), rebalances quota when due, decides shared cooldowns, and publishes the state
    /// when it changed. `connected` is the number of this replica's sidecar streams. A
    /// follower only forgets stale inputs: it serves the leader's decisions.
    pub fn tick(&self, built: Option<&Built>, connected: usize, leader: bool, now: Instant) {
        let connected = connected + self.remote_connected(now);
        let Ok(mut guard) = self.inner.lock() else { return };
        let inner = &mut *guard;
        if let Some(built) = built
            && built.watermark != inner.catalog.watermark
        {
            inner.catalog = catalog(built);
        }
        inner.demand.retain(|_, d| now.duration_since(d.at) < DEMAND_TTL);
        inner.evidence.retain(|_, e| now.duration_since(e.at) < EVIDENCE_TTL);
        inner.in_flight.retain(|_, f| f.n > 0 && now.duration_since(f.at) < LOAD_TTL);
        let mut loads_changed = false;
        if inner.last_loads.is_none_or(|at| now.duration_since(at) >= LOAD_PUSH) {
            inner.last_loads = Some(now);
            let mut sums: BTreeMap<String, u64> = BTreeMap::new();
            for ((_, deployment), f) in &inner.in_flight {
                let sum = sums.entry(deployment.clone()).or_default();
                *sum = sum.saturating_add(f.n);
            }
            // Refreshed while any is non-zero (sidecars hold a figure for LOAD_TTL only).
            loads_changed = *inner.loads != sums || !sums.is_empty();
            inner.loads = Arc::new(sums);
        }
        if !leader {
            // Its own epoch clock starts again when it leads.
            inner.last_epoch = now;
            return;
        }
        let deployments = &inner.catalog.deployments;
        let prior = |cell: &Cell| Posterior::prior(deployments.get(&cell.2).map_or(0, |d| d.0));
        let mut changed = false;
        if now.duration_since(inner.last_epoch) >= self.config.epoch {
            inner.last_epoch = now;
            inner.learning.end_epoch(self.config.decay, FORGET_AFTER_EPOCHS, prior);
            inner.epochs += 1;
        }
        if inner.last_posteriors.is_none_or(|at| now.duration_since(at) >= POSTERIOR_PUSH) {
            inner.last_posteriors = Some(now);
            let cells = push::cells(&inner.learning.merged(prior));
            if *inner.posteriors != cells {
                inner.posteriors = Arc::new(cells);
                changed = true;
            }
        }
        if inner.last_rebalance.is_none_or(|at| now.duration_since(at) >= self.config.rebalance) {
            inner.last_rebalance = Some(now);
            inner.quotas = quotas(&inner.catalog, &inner.demand, connected);
            changed = true;
        }
        let before: BTreeSet<String> = inner.shared.keys().cloned().collect();
        self.share_cooldowns(inner, now);
        changed |= inner.shared.keys().cloned().collect::<BTreeSet<_>>() != before;
        changed |= loads_changed;
        if changed {
            inner.generation += 1;
            self.state.send_replace(Arc::new(FleetState {
                generation: inner.generation,
                posteriors: inner.posteriors.clone(),
                quotas: Arc::new(inner.quotas.clone()),
                cooldowns: inner.shared.clone(),
                ttl: self.config.assignment_ttl,
                loads: inner.loads.clone(),
                load_ttl: LOAD_TTL,
            }));
        }
    }

    fn share_cooldowns(&self, inner: &mut Inner, now: Instant) {
        inner.shared.retain(|_, until| *until > now);
        if !self.config.share_cooldowns {
            inner.shared.clear();
            return;
        }
        let cooling: Vec<Evidence> =
            inner.evidence.values().filter(|r| r.cooling).map(|r| r.evidence.clone()).collect();
        let already: BTreeSet<String> = inner.shared.keys().cloned().collect();
        for deployment in outlier::verdicts(&cooling, &inner.catalog.groups, &already, self.config.rules) {
            // As long as the shortest cooldown the reporters still have (at least a second).
            let remaining = inner
                .evidence
                .values()
                .filter(|r| r.cooling && r.evidence.deployment == deployment)
                .map(|r| r.remaining.saturating_sub(now.duration_since(r.at)))
                .min()
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            tracing::info!(%deployment, seconds = remaining.as_secs(), "cooldown shared with the fleet");
            inner.shared.insert(deployment, now + remaining);
        }
        // Released the same way: enough namespaces see it answer again (failure share at or
        // below the threshold) once their own cooldowns end.
        let mut recovered: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for r in inner.evidence.values() {
            let e = &r.evidence;
            if !r.cooling
                && e.requests > 0
                && f64::from(e.failures) / f64::from(e.requests) <= self.config.rules.failure_share
            {
                recovered.entry(e.deployment.as_str()).or_default().insert(e.namespace.as_str());
            }
        }
        let released: Vec<String> = recovered
            .into_iter()
            .filter(|(d, namespaces)| {
                namespaces.len() >= self.config.rules.min_reporters && inner.shared.contains_key(*d)
            })
            .map(|(d, _)| d.to_owned())
            .collect();
        for deployment in released {
            inner.shared.remove(&deployment);
            tracing::info!(%deployment, "shared cooldown released: the fleet sees it answer again");
        }
    }

    /// The state to save now, when there is a state file (taken under the lock; the file is
    /// written outside it, off the async workers).
    fn to_save(&self) -> Option<(PathBuf, Vec<(Cell, Posterior)>)> {
        let path = self.config.state_file.clone()?;
        let inner = self.inner.lock().ok()?;
        let deployments = &inner.catalog.deployments;
        let cells = inner.learning.merged(|cell: &Cell| Posterior::prior(deployments.get(&cell.2).map_or(0, |d| d.0)));
        Some((path, cells))
    }

    /// Saves the merged posteriors now (every epoch, and at shutdown).
    pub fn save(&self) {
        if let Some((path, cells)) = self.to_save()
            && let Err(e) = persist::save(&path, &cells)
        {
            tracing::warn!(file = %path.display(), error = %e, "adaptive state not saved");
        }
    }

    /// `GET /adaptive`: per cell the merged mean and evidence; the quota assignments and the
    /// shared cooldowns.
    pub fn describe(&self, now: Instant) -> serde_json::Value {
        let Ok(inner) = self.inner.lock() else { return serde_json::Value::Null };
        let deployments = &inner.catalog.deployments;
        let prior = |cell: &Cell| Posterior::prior(deployments.get(&cell.2).map_or(0, |d| d.0));
        let cells: Vec<serde_json::Value> = inner
            .learning
            .merged(prior)
            .iter()
            .map(|((group, kind, deployment), p)| {
                serde_json::json!({
                    "group": group, "requestType": kind, "deployment": deployment,
                    "mean": p.mean(), "samples": p.evidence(), "alpha": p.alpha, "beta": p.beta,
                })
            })
            .collect();
        let quotas: Vec<serde_json::Value> = inner
            .quotas
            .iter()
            .map(|(deployment, q)| {
                let side = |a: &Option<Assignment>| {
                    a.as_ref().map(|a| {
                        serde_json::json!({
                            "grants": a.grants.iter().map(|(s, r)| serde_json::json!({"sidecar": s, "perMinute": r})).collect::<Vec<_>>(),
                            "reserve": a.reserve, "reserveEach": a.reserve_each,
                        })
                    })
                };
                serde_json::json!({"deployment": deployment, "rpm": side(&q.rpm), "tpm": side(&q.tpm)})
            })
            .collect();
        let cooldowns: Vec<serde_json::Value> = inner
            .shared
            .iter()
            .map(|(d, until)| serde_json::json!({"deployment": d, "remainingMs": until.saturating_duration_since(now).as_millis() as u64}))
            .collect();
        serde_json::json!({ "cells": cells, "quotas": quotas, "sharedCooldowns": cooldowns })
    }

    /// Ticks every second until `stopping`, then saves.
    pub async fn run(self: Arc<Self>, shared: Arc<crate::state::Shared>) {
        let mut stopping = shared.stopping.subscribe();
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopping.wait_for(|stop| *stop) => break,
            }
            let built = shared.built();
            let leader = *shared.leader.borrow();
            let epochs = self.epochs();
            self.tick(built.as_deref(), shared.registry.len(), leader, Instant::now());
            shared.metrics.observe_fleet(&self.current());
            shared.metrics.observe_usage(&self.usage());
            if self.epochs() != epochs {
                let fleet = self.clone();
                let _ = tokio::task::spawn_blocking(move || fleet.save()).await;
            }
        }
        let fleet = self.clone();
        let _ = tokio::task::spawn_blocking(move || fleet.save()).await;
    }
}

/// The inputs a build gives the fleet: tiers, limits, groups.
fn catalog(built: &Built) -> Catalog {
    let mut deployments = HashMap::new();
    for d in built.all_deployments() {
        let limits = d.limits.unwrap_or_default();
        deployments.insert(d.id.clone(), (d.quality_tier, limits.rpm, limits.tpm));
    }
    let mut groups = BTreeMap::new();
    let mut cells = std::collections::HashSet::new();
    for (team, route) in built.all_routes() {
        groups.insert(format!("{team}/{}", route.public_name), route.deployment_ids.clone());
        for id in &route.deployment_ids {
            cells.insert((route.public_name.clone(), id.clone()));
        }
    }
    Catalog { watermark: built.watermark, deployments, groups, cells }
}

/// Assignments of every fleet-limited deployment from the demand reported.
fn quotas(
    catalog: &Catalog,
    demand: &HashMap<(String, String), Demanded>,
    connected: usize,
) -> BTreeMap<String, Quota> {
    let mut per_deployment: HashMap<&str, Vec<(&str, &Demanded)>> = HashMap::new();
    for ((sidecar, deployment), d) in demand {
        per_deployment.entry(deployment.as_str()).or_default().push((sidecar.as_str(), d));
    }
    let mut out = BTreeMap::new();
    for (id, (_, rpm, tpm)) in &catalog.deployments {
        if *rpm == 0 && *tpm == 0 {
            continue;
        }
        let mut reports = per_deployment.remove(id.as_str()).unwrap_or_default();
        reports.sort_by(|a, b| a.0.cmp(b.0));
        let side = |limit: u64, f: &dyn Fn(&Demanded) -> f64| {
            (limit > 0).then(|| {
                let demands: Vec<Demand> =
                    reports.iter().map(|(s, d)| Demand { sidecar: (*s).to_owned(), per_minute: f(d) }).collect();
                assign(limit as f64, &demands, connected.max(reports.len()))
            })
        };
        out.insert(id.clone(), Quota { rpm: side(*rpm, &|d| d.rpm), tpm: side(*tpm, &|d| d.tpm) });
    }
    out
}

#[cfg(test)]
mod tests;
