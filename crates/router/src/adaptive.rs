//! Adaptive routing (`strategy: adaptive`): Thompson sampling over Beta posteriors, one per
//! (group, request type, deployment). A pick maximises `quality * sample - cost * normalised
//! price`. Pure: the caller passes the random source and the signals; decay is applied by the
//! caller once per epoch (in the fleet: only the operator).

use std::collections::HashMap;

use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::RequestType;

/// α and β always stay strictly above this.
pub const FLOOR: f64 = 0.5;
/// The smallest margin kept above [`FLOOR`].
const MARGIN: f64 = 1e-6;
/// Weight of the prior from `qualityTier`, in observations.
pub const PRIOR_STRENGTH: f64 = 4.0;
/// Evidence (α + β) a cell holds at most after a decay: old evidence fades so that a
/// deployment that got better can win again; no update is ever dropped.
pub const MAX_EVIDENCE: f64 = 2_000.0;

/// A Beta posterior of a deployment's success on one request type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Posterior {
    /// Successes (plus prior).
    pub alpha: f64,
    /// Failures (plus prior).
    pub beta: f64,
}

impl Posterior {
    /// The prior of a deployment of `quality_tier` (1..=5; 0 or unknown: 3): mean 0.3 at tier
    /// 1 to 0.7 at tier 5, worth [`PRIOR_STRENGTH`] observations.
    pub fn prior(quality_tier: u32) -> Self {
        let tier = if quality_tier == 0 { 3 } else { quality_tier.clamp(1, 5) };
        let mean = 0.3 + 0.1 * f64::from(tier - 1);
        Self { alpha: FLOOR + mean * PRIOR_STRENGTH, beta: FLOOR + (1.0 - mean) * PRIOR_STRENGTH }
    }

    /// Adds one signal: `reward` 1 is a success, 0 a failure, in between partial (explicit
    /// feedback). Anything not a finite number is ignored; values outside [0, 1] are clamped.
    pub fn observe(&mut self, reward: f64) {
        if !reward.is_finite() {
            return;
        }
        let r = reward.clamp(0.0, 1.0);
        self.alpha += r;
        self.beta += 1.0 - r;
        self.cap();
    }

    /// Fades evidence toward the floor by `factor` (0..=1; anything else is ignored), then
    /// caps the total at [`MAX_EVIDENCE`], keeping the mean.
    pub fn decay(&mut self, factor: f64) {
        if !(0.0..=1.0).contains(&factor) {
            return;
        }
        self.alpha = FLOOR + (self.alpha - FLOOR) * factor;
        self.beta = FLOOR + (self.beta - FLOOR) * factor;
        self.cap();
    }

    fn cap(&mut self) {
        let total = self.alpha + self.beta;
        if total > MAX_EVIDENCE {
            let scale = MAX_EVIDENCE / total;
            self.alpha *= scale;
            self.beta *= scale;
        }
        self.alpha = self.alpha.max(FLOOR + MARGIN);
        self.beta = self.beta.max(FLOOR + MARGIN);
    }

    /// The posterior mean.
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// The evidence held (α + β).
    pub fn evidence(&self) -> f64 {
        self.alpha + self.beta
    }

    /// A draw from the posterior.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        Beta::new(self.alpha, self.beta).map_or_else(|_| self.mean(), |b| b.sample(rng))
    }
}

/// How an adaptive group trades quality for price (`adaptive: {qualityWeight, costWeight}`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Weight of the sampled success.
    pub quality: f64,
    /// Weight of the normalised price (0..=1, the most expensive candidate is 1).
    pub cost: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { quality: 1.0, cost: 0.0 }
    }
}

/// A candidate of one pick.
#[derive(Clone, Copy, Debug)]
pub struct Arm<'a> {
    /// The deployment's id.
    pub deployment: &'a str,
    /// Its `qualityTier` (the prior).
    pub quality_tier: u32,
    /// Its declared price (input + output per million tokens; 0: unknown).
    pub cost: f64,
}

/// Every cell's posterior.
#[derive(Clone, Debug, Default)]
pub struct Posteriors {
    cells: HashMap<(String, RequestType, String), Posterior>,
}

impl Posteriors {
    /// The posterior of a cell (its prior when nothing was learned).
    pub fn get(&self, group: &str, kind: RequestType, deployment: &str, quality_tier: u32) -> Posterior {
        self.cells
            .get(&(group.to_owned(), kind, deployment.to_owned()))
            .copied()
            .unwrap_or_else(|| Posterior::prior(quality_tier))
    }

    /// Adds a signal to a cell.
    pub fn observe(&mut self, group: &str, kind: RequestType, deployment: &str, quality_tier: u32, reward: f64) {
        self.cells
            .entry((group.to_owned(), kind, deployment.to_owned()))
            .or_insert_with(|| Posterior::prior(quality_tier))
            .observe(reward);
    }

    /// Decays every cell (once per epoch).
    pub fn decay(&mut self, factor: f64) {
        for p in self.cells.values_mut() {
            p.decay(factor);
        }
    }

    /// Keeps only the cells `keep` accepts (deployments still in the view).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, RequestType, &str) -> bool) {
        self.cells.retain(|(group, kind, deployment), _| keep(group, *kind, deployment));
    }

    /// Every cell.
    pub fn cells(&self) -> impl Iterator<Item = ((&str, RequestType, &str), Posterior)> {
        self.cells.iter().map(|((g, k, d), p)| ((g.as_str(), *k, d.as_str()), *p))
    }

    /// Thompson sampling: the index in `arms` maximising `quality * sample - cost * price /
    /// max price`; `None` when `arms` is empty.
    pub fn pick<R: Rng + ?Sized>(
        &self,
        group: &str,
        kind: RequestType,
        arms: &[Arm<'_>],
        weights: Weights,
        rng: &mut R,
    ) -> Option<usize> {
        let max_cost = arms.iter().map(|a| a.cost).filter(|c| c.is_finite() && *c > 0.0).fold(0.0, f64::max);
        let mut best: Option<(usize, f64)> = None;
        for (i, arm) in arms.iter().enumerate() {
            let sample = self.get(group, kind, arm.deployment, arm.quality_tier).sample(rng);
            let price = if max_cost > 0.0 && arm.cost.is_finite() { arm.cost.max(0.0) / max_cost } else { 0.0 };
            let score = weights.quality * sample - weights.cost * price;
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priors_follow_the_quality_tier() {
        assert!(Posterior::prior(5).mean() > Posterior::prior(3).mean());
        assert!(Posterior::prior(3).mean() > Posterior::prior(1).mean());
        assert_eq!(Posterior::prior(0), Posterior::prior(3));
        assert_eq!(Posterior::prior(99), Posterior::prior(5));
    }

    #[test]
    fn signals_move_the_mean_and_nonsense_is_ignored() {
        let mut p = Posterior::prior(3);
        let before = p;
        p.observe(f64::NAN);
        p.observe(f64::INFINITY);
        assert_eq!(p, before);
        p.observe(1.0);
        assert!(p.mean() > before.mean());
        p.observe(-5.0);
        assert_eq!(p.beta, before.beta + 1.0, "clamped to a failure");
        p.decay(2.0);
        p.decay(f64::NAN);
        assert_eq!(p.beta, before.beta + 1.0, "a factor outside [0, 1] is ignored");
    }
}
