//! Fleet learning across operator replicas. Sidecars report to whichever replica holds their
//! stream; only the leader decides. A follower forwards what its streams reported in its
//! report ConfigMap: its adaptive evidence as *cumulative* totals since it started (so a
//! forward read twice, or missed once, still adds up exactly: the leader adds the difference
//! to what it absorbed before), and the latest demand and cooldown evidence of its
//! sidecars. The leader publishes the decided state (posteriors, assignments, shared
//! cooldowns) in one ConfigMap that followers serve to their streams, and persists the merged
//! posteriors with what it absorbed of each replica, so a new leader goes on exactly from the
//! last saved epoch: a leader change loses at most the old leader's own streams' evidence of
//! one unsaved epoch.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use llmroute_fleet::learning::Cell;
use llmroute_fleet::outlier::Evidence;
use llmroute_fleet::quota::Assignment;
use llmroute_proto::v1;
use llmroute_router::adaptive::Posterior;
use serde::{Deserialize, Serialize};

use super::{Demanded, Fleet, FleetState, Quota, Reported};
use crate::hub::Built;

/// Most cells, demand rows or evidence rows in one forward or publication (a ConfigMap holds
/// at most 1 MiB).
pub const MAX_ROWS: usize = 4_096;

/// What a follower forwards to the leader.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    /// Random per follower process: totals of an earlier process are not continued.
    pub boot: String,
    /// Evidence merged since the follower started, per cell: successes, failures (millionths).
    pub cells: Vec<(Cell, u64, u64)>,
    /// Latest demand per (sidecar, deployment): requests and tokens per minute.
    pub demand: Vec<(String, String, f64, f64)>,
    /// Latest cooldown evidence per (sidecar, deployment).
    pub evidence: Vec<ForwardedEvidence>,
    /// Streams the follower holds.
    pub connected: usize,
}

/// One sidecar's cooldown evidence, forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedEvidence {
    pub sidecar: String,
    pub namespace: String,
    pub deployment: String,
    pub failures: u32,
    pub requests: u32,
    pub cooling: bool,
    pub remaining_ms: u64,
}

/// The leader's decisions, as followers serve them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub generation: u64,
    pub posteriors: Vec<(Cell, f64, f64)>,
    pub quotas: BTreeMap<String, (Option<PublishedAssignment>, Option<PublishedAssignment>)>,
    /// Shared cooldowns and what is left of them when published, milliseconds.
    pub cooldowns: Vec<(String, u64)>,
    pub ttl_ms: u64,
}

/// An assignment as published.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedAssignment {
    pub grants: Vec<(String, f64)>,
    pub reserve_each: f64,
    pub reserve: f64,
}

impl From<&Assignment> for PublishedAssignment {
    fn from(a: &Assignment) -> Self {
        Self { grants: a.grants.clone(), reserve_each: a.reserve_each, reserve: a.reserve }
    }
}

impl From<&PublishedAssignment> for Assignment {
    fn from(a: &PublishedAssignment) -> Self {
        Self { grants: a.grants.clone(), reserve_each: a.reserve_each, reserve: a.reserve }
    }
}

/// Evidence totals per cell, in millionths: (cell, successes, failures).
pub type Totals = Vec<(Cell, u64, u64)>;

/// Per replica: its boot and the totals absorbed of it.
pub type AbsorbedTotals = BTreeMap<String, (String, Totals)>;

/// What the leader persists: merged posteriors and what it absorbed of each replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub cells: Vec<(Cell, f64, f64)>,
    /// Per replica: its boot and the cumulative totals absorbed.
    pub absorbed: AbsorbedTotals,
}

/// What the leader absorbed of one replica.
#[derive(Clone, Debug, Default)]
pub(super) struct Absorbed {
    boot: String,
    totals: HashMap<Cell, (u64, u64)>,
    connected: usize,
    at: Option<Instant>,
}

impl Fleet {
    /// A follower's forward: its evidence so far (cumulative), its sidecars' latest demand
    /// and cooldown evidence, its stream count.
    pub fn forward(&self, connected: usize, now: Instant) -> Forward {
        let Ok(mut guard) = self.inner.lock() else { return Forward::default() };
        let inner = &mut *guard;
        for (cell, s, f) in inner.learning.take_pending() {
            let total = inner.forwarded.entry(cell).or_default();
            total.0 = total.0.saturating_add(s);
            total.1 = total.1.saturating_add(f);
        }
        let cells = inner.forwarded.iter().take(MAX_ROWS).map(|(c, (s, f))| (c.clone(), *s, *f)).collect();
        let demand = inner
            .demand
            .iter()
            .take(MAX_ROWS)
            .map(|((sidecar, deployment), d)| (sidecar.clone(), deployment.clone(), d.rpm, d.tpm))
            .collect();
        let evidence = inner
            .evidence
            .values()
            .take(MAX_ROWS)
            .map(|r| ForwardedEvidence {
                sidecar: r.evidence.sidecar.clone(),
                namespace: r.evidence.namespace.clone(),
                deployment: r.evidence.deployment.clone(),
                failures: r.evidence.failures,
                requests: r.evidence.requests,
                cooling: r.cooling,
                remaining_ms: u64::try_from(r.remaining.saturating_sub(now.duration_since(r.at)).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        Forward { boot: self.boot.clone(), cells, demand, evidence, connected }
    }

    /// The leader takes a follower's forward: the evidence it adds since the last one it
    /// absorbed, and its sidecars' demand and cooldown evidence as fresh at `now`.
    /// Cells the leader's build does not hold are left for a later forward (its totals keep
    /// them), so evidence that arrives before the leader's first build is not lost.
    pub fn absorb(&self, replica: &str, forward: &Forward, built: Option<&Built>, now: Instant) {
        let Some(built) = built else { return };
        let Ok(mut guard) = self.inner.lock() else { return };
        let inner = &mut *guard;
        if built.watermark != inner.catalog.watermark {
            inner.catalog = super::catalog(built);
        }
        let known = |cell: &Cell| inner.catalog.cells.contains(&(cell.0.clone(), cell.2.clone()));
        let absorbed = inner.absorbed.entry(replica.to_owned()).or_default();
        if absorbed.boot != forward.boot {
            *absorbed = Absorbed { boot: forward.boot.clone(), ..Absorbed::default() };
        }
        let mut adds = Vec::new();
        for (cell, s, f) in forward.cells.iter().take(MAX_ROWS) {
            if !known(cell) {
                continue;
            }
            let before = absorbed.totals.get(cell).copied().unwrap_or_default();
            // Totals only grow; one that shrank is a reset, counted from zero.
            let ds = if *s >= before.0 { s - before.0 } else { *s };
            let df = if *f >= before.1 { f - before.1 } else { *f };
            absorbed.totals.insert(cell.clone(), (*s, *f));
            if ds + df > 0 {
                adds.push((cell.clone(), ds, df));
            }
        }
        absorbed.connected = forward.connected;
        absorbed.at = Some(now);
        for (cell, s, f) in adds {
            inner.learning.add_units(cell, s, f);
        }
        for (sidecar, deployment, rpm, tpm) in forward.demand.iter().take(MAX_ROWS) {
            if inner.catalog.deployments.contains_key(deployment) {
                let clean = |x: f64| if x.is_finite() { x.clamp(0.0, 1e12) } else { 0.0 };
                let d = Demanded { rpm: clean(*rpm), tpm: clean(*tpm), at: now, seq: 0 };
                inner.demand.insert((sidecar.clone(), deployment.clone()), d);
            }
        }
        for e in forward.evidence.iter().take(MAX_ROWS) {
            if inner.catalog.deployments.contains_key(&e.deployment) {
                let reported = Reported {
                    evidence: Evidence {
                        sidecar: e.sidecar.clone(),
                        namespace: e.namespace.clone(),
                        deployment: e.deployment.clone(),
                        failures: e.failures.min(e.requests),
                        requests: e.requests,
                    },
                    cooling: e.cooling,
                    remaining: Duration::from_millis(e.remaining_ms).min(super::MAX_SHARED_COOLDOWN),
                    at: now,
                    seq: 0,
                };
                inner.evidence.insert((e.sidecar.clone(), e.deployment.clone()), reported);
            }
        }
    }

    /// Streams held by other replicas whose forwards are fresh.
    pub(super) fn remote_connected(&self, now: Instant) -> usize {
        self.inner.lock().map_or(0, |inner| {
            inner
                .absorbed
                .values()
                .filter(|a| a.at.is_some_and(|at| now.duration_since(at) < super::DEMAND_TTL))
                .map(|a| a.connected)
                .sum()
        })
    }

    /// The leader's decisions as followers serve them.
    pub fn published(&self, now: Instant) -> Published {
        let state = self.current();
        let side = |a: &Option<Assignment>| a.as_ref().map(PublishedAssignment::from);
        Published {
            generation: state.generation,
            posteriors: state.posteriors.iter().map(|c| (cell_of(c), c.alpha, c.beta)).collect(),
            quotas: state.quotas.iter().map(|(d, q)| (d.clone(), (side(&q.rpm), side(&q.tpm)))).collect(),
            cooldowns: state
                .cooldowns
                .iter()
                .map(|(d, until)| {
                    (d.clone(), u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX))
                })
                .collect(),
            ttl_ms: u64::try_from(state.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A follower serves the leader's decisions (when they changed).
    pub fn adopt(&self, published: &Published, now: Instant) {
        if self.current().generation == published.generation && published.generation != 0 {
            return;
        }
        let side = |a: &Option<PublishedAssignment>| a.as_ref().map(Assignment::from);
        let state = FleetState {
            generation: published.generation,
            posteriors: std::sync::Arc::new(
                published
                    .posteriors
                    .iter()
                    .take(MAX_ROWS * 4)
                    .map(|((group, kind, deployment), alpha, beta)| v1::PosteriorCell {
                        group: group.clone(),
                        request_type: kind.clone(),
                        deployment_id: deployment.clone(),
                        alpha: *alpha,
                        beta: *beta,
                    })
                    .collect(),
            ),
            quotas: std::sync::Arc::new(
                published
                    .quotas
                    .iter()
                    .map(|(d, (rpm, tpm))| (d.clone(), Quota { rpm: side(rpm), tpm: side(tpm) }))
                    .collect(),
            ),
            cooldowns: published
                .cooldowns
                .iter()
                .map(|(d, ms)| (d.clone(), now + Duration::from_millis(*ms).min(super::MAX_SHARED_COOLDOWN)))
                .collect(),
            ttl: Duration::from_millis(published.ttl_ms.min(600_000)),
            // In-flight sums change every second: they are not replicated, and a follower's
            // sidecars bound prefix affinity on their own in-flight counts.
            loads: std::sync::Arc::default(),
            load_ttl: super::LOAD_TTL,
        };
        self.state.send_replace(std::sync::Arc::new(state));
    }

    /// What the leader persists now.
    pub fn persisted(&self) -> Persisted {
        let Ok(inner) = self.inner.lock() else { return Persisted::default() };
        let deployments = &inner.catalog.deployments;
        let prior = |cell: &Cell| Posterior::prior(deployments.get(&cell.2).map_or(0, |d| d.0));
        Persisted {
            cells: inner.learning.merged(prior).into_iter().map(|(c, p)| (c, p.alpha, p.beta)).collect(),
            absorbed: inner
                .absorbed
                .iter()
                .map(|(replica, a)| {
                    let totals = a.totals.iter().map(|(c, (s, f))| (c.clone(), *s, *f)).collect();
                    (replica.clone(), (a.boot.clone(), totals))
                })
                .collect(),
        }
    }

    /// A new leader (replica `me`) goes on from what was persisted: the posteriors replace
    /// its own; its own streams' evidence the old leader had not absorbed is added; and what
    /// each other replica had forwarded is known, so their next forwards add exactly the rest.
    pub fn restore(&self, me: &str, persisted: &Persisted) {
        let Ok(mut guard) = self.inner.lock() else { return };
        let inner = &mut *guard;
        let pending = inner.learning.take_pending();
        let mut learning = llmroute_fleet::learning::Learning::new(self.config.caps);
        learning.restore(persisted.cells.iter().map(|(c, a, b)| (c.clone(), Posterior { alpha: *a, beta: *b })));
        for (cell, s, f) in pending {
            learning.add_units(cell, s, f);
        }
        let mine: HashMap<Cell, (u64, u64)> = persisted
            .absorbed
            .get(me)
            .filter(|(boot, _)| *boot == self.boot)
            .map(|(_, totals)| totals.iter().map(|(c, s, f)| (c.clone(), (*s, *f))).collect())
            .unwrap_or_default();
        for (cell, (s, f)) in &inner.forwarded {
            let (ds, df) = mine.get(cell).copied().unwrap_or_default();
            learning.add_units(cell.clone(), s.saturating_sub(ds), f.saturating_sub(df));
        }
        inner.learning = learning;
        inner.absorbed = persisted
            .absorbed
            .iter()
            .map(|(replica, (boot, totals))| {
                let totals = totals.iter().map(|(c, s, f)| (c.clone(), (*s, *f))).collect();
                (replica.clone(), Absorbed { boot: boot.clone(), totals, connected: 0, at: None })
            })
            .collect();
        // What this replica forwarded is now all in: a later forward (as a follower again)
        // continues from these totals.
        let totals = inner.forwarded.clone();
        inner.absorbed.insert(
            me.to_owned(),
            Absorbed { boot: self.boot.clone(), totals: totals.into_iter().collect(), connected: 0, at: None },
        );
    }
}

fn cell_of(c: &v1::PosteriorCell) -> Cell {
    (c.group.clone(), c.request_type.clone(), c.deployment_id.clone())
}
