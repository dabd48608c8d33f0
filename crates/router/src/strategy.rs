//! Step 4 of DESIGN §4: picking among the eligible deployments of one order level.
//! Passes run over the level's slice with a predicate: no allocation per decision.

use rand::Rng;

use crate::policy::StrategyKind;
use crate::random::{below, unit};
use crate::rendezvous;
use crate::state::LiveState;
use crate::table::{DeploymentIdx, RouteTable};

/// The candidates of one decision: one order level, filtered.
pub(crate) struct Candidates<'a, F: Fn(DeploymentIdx) -> bool> {
    pub table: &'a RouteTable,
    pub state: &'a LiveState,
    pub level: &'a [DeploymentIdx],
    pub eligible: F,
    /// Some eligible deployment has weight > 0: zero-weight ones are left out.
    pub weighted: bool,
    /// The group (adaptive posteriors are kept per group).
    pub group: &'a str,
    /// The request's type (adaptive posteriors are kept per type).
    pub request_type: crate::RequestType,
    /// Adaptive groups: quality against price.
    pub weights: crate::adaptive::Weights,
    /// Now, Unix milliseconds (how fresh the fleet's load figures are).
    pub now_ms: u64,
}

impl<F: Fn(DeploymentIdx) -> bool> Candidates<'_, F> {
    fn iter(&self) -> impl Iterator<Item = DeploymentIdx> + '_ {
        self.level.iter().copied().filter(|i| (self.eligible)(*i) && (!self.weighted || self.weight(*i) > 0))
    }

    /// Effective weight: the declared one, or 1 each when every candidate has weight 0.
    fn weight(&self, idx: DeploymentIdx) -> u32 {
        self.table.deployment(idx).weight
    }

    fn effective_weight(&self, idx: DeploymentIdx) -> u64 {
        if self.weighted { u64::from(self.weight(idx)) } else { 1 }
    }

    /// Weighted rendezvous hashing of `key`.
    pub fn by_affinity(&self, key: &[u8]) -> Option<DeploymentIdx> {
        self.iter()
            .map(|i| (i, rendezvous::score(key, &self.table.deployment(i).id, self.effective_weight(i) as f64)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// Weighted rendezvous hashing of `key` with bounded loads: the first deployment in
    /// rendezvous order whose load (requests in flight across the fleet) plus this request
    /// stays within `(1 + epsilon)` x its weighted share.
    pub fn by_prefix(&self, key: &[u8], epsilon: f64) -> Option<DeploymentIdx> {
        let order: Vec<DeploymentIdx> = self.iter().collect();
        let loaded: Vec<rendezvous::Loaded<'_>> = order
            .iter()
            .map(|i| rendezvous::Loaded {
                id: &self.table.deployment(*i).id,
                weight: self.effective_weight(*i) as f64,
                load: self.state.get(*i).load(self.now_ms),
            })
            .collect();
        rendezvous::bounded(key, &loaded, epsilon).map(|at| order[at])
    }

    /// The strategy's pick.
    pub fn by_strategy<R: Rng + ?Sized>(&self, strategy: StrategyKind, rng: &mut R) -> Option<DeploymentIdx> {
        match strategy {
            StrategyKind::Weighted => self.weighted_draw(rng),
            StrategyKind::Adaptive => self.thompson(rng),
            StrategyKind::LeastBusy => self.min_by(rng, |i| f64::from(self.state.get(i).in_flight())),
            StrategyKind::Cost => self.min_by(rng, |i| self.table.deployment(i).cost),
            StrategyKind::Latency => {
                // Untried deployments first, so every one gets measured.
                let untried = |i: DeploymentIdx| if self.state.get(i).latency_ms().is_none() { 0.0 } else { 1.0 };
                let any_untried = self.iter().any(|i| untried(i) == 0.0);
                if any_untried {
                    self.min_by(rng, untried)
                } else {
                    self.min_by(rng, |i| self.state.get(i).latency_ms().unwrap_or(f64::MAX))
                }
            }
        }
    }

    /// Thompson sampling: the candidate maximising `quality * draw - cost * price / max
    /// price`, where the draw comes from its posterior for this group and request type (priors
    /// from `qualityTier`) and the price is its declared cost.
    fn thompson<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<DeploymentIdx> {
        let price = |i: DeploymentIdx| {
            let c = self.table.deployment(i).cost;
            if c.is_finite() && c > 0.0 { c } else { 0.0 }
        };
        let max_price = if self.weights.cost > 0.0 { self.iter().map(price).fold(0.0, f64::max) } else { 0.0 };
        let mut best: Option<(DeploymentIdx, f64)> = None;
        for i in self.iter() {
            let tier = self.table.deployment(i).quality_tier;
            let draw = self.state.get(i).posterior(self.group, self.request_type, tier).sample(rng);
            let normalised = if max_price > 0.0 { price(i) / max_price } else { 0.0 };
            let score = self.weights.quality * draw - self.weights.cost * normalised;
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    fn weighted_draw<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<DeploymentIdx> {
        let total: u64 = self.iter().map(|i| self.effective_weight(i)).sum();
        if total == 0 {
            return None;
        }
        let mut point = below(rng, total);
        for i in self.iter() {
            let w = self.effective_weight(i);
            if point < w {
                return Some(i);
            }
            point -= w;
        }
        None
    }

    /// The candidate with the lowest `key`; ties broken uniformly at random (reservoir).
    fn min_by<R: Rng + ?Sized>(&self, rng: &mut R, key: impl Fn(DeploymentIdx) -> f64) -> Option<DeploymentIdx> {
        let mut best: Option<(DeploymentIdx, f64)> = None;
        let mut ties = 0u32;
        for i in self.iter() {
            let k = key(i);
            match best {
                Some((_, b)) if k > b => {}
                Some((_, b)) if k == b => {
                    ties += 1;
                    if unit(rng) * f64::from(ties) < 1.0 {
                        best = Some((i, k));
                    }
                }
                _ => {
                    best = Some((i, k));
                    ties = 1;
                }
            }
        }
        best.map(|(i, _)| i)
    }
}
