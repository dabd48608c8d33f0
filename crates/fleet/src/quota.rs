//! Fleet-wide limits. The operator divides a deployment's limit among the sidecars that report
//! demand (max-min fair, then the rest in proportion to demand, so a hot pod gets more), after
//! setting aside a reserve that sidecars without an assignment share. Assignments plus the
//! reserve never add up to more than the limit. A sidecar admits through a token bucket at its
//! assigned rate, which falls back to its share of the reserve when the assignment expires.
//!
//! Error bound: a bucket holds at most one second of its rate (at least one request) and a new
//! grant starts full, so within one minute the fleet admits at most `limit + Σ max(rate/60, 1)`
//! over the sidecars holding a grant (about `limit × 1.02 + holders`), plus what a grant the
//! operator has already moved elsewhere admits until it expires (its time to live, a few
//! seconds of its rate). A sidecar on the reserve starts empty.

pub use llmroute_router::quota::{Bucket, RESERVE_SHARE};
/// Headroom on reported demand while capacity lasts, so that growing demand can show in the
/// next report.
pub const HEADROOM: f64 = 1.25;
/// Headroom always given first: arrivals are never exactly as even as a refill.
pub const MIN_HEADROOM: f64 = 1.05;

/// One sidecar's reported demand, per minute.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// The sidecar.
    pub sidecar: String,
    /// Requests (or tokens) per minute it wanted recently.
    pub per_minute: f64,
}

/// The operator's decision for one deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Per sidecar that reported demand: its rate, per minute.
    pub grants: Vec<(String, f64)>,
    /// The rate, per minute, each sidecar without a grant may use.
    pub reserve_each: f64,
    /// The reserve set aside in total, per minute.
    pub reserve: f64,
}

impl Assignment {
    /// What `sidecar` may use, per minute.
    pub fn rate_of(&self, sidecar: &str) -> f64 {
        self.grants.iter().find(|(s, _)| s == sidecar).map_or(self.reserve_each, |(_, r)| *r)
    }

    /// Grants plus the reserve.
    pub fn total(&self) -> f64 {
        self.grants.iter().map(|(_, r)| r).sum::<f64>() + self.reserve
    }
}

/// Divides `limit` (per minute) among `demands`, `connected` sidecars in all.
pub fn assign(limit: f64, demands: &[Demand], connected: usize) -> Assignment {
    let limit = if limit.is_finite() { limit.max(0.0) } else { 0.0 };
    let reserve = (limit * RESERVE_SHARE).max(1.0_f64.min(limit));
    let mut left = limit - reserve;
    let demand: Vec<f64> =
        demands.iter().map(|d| if d.per_minute.is_finite() { d.per_minute.max(0.0) } else { 0.0 }).collect();
    let mut grants = vec![0.0; demands.len()];
    // Demand first (max-min fair), then headroom on it while capacity lasts, so that when the
    // limit binds nothing is held back as unused headroom.
    let first: Vec<f64> = demand.iter().map(|d| d * MIN_HEADROOM).collect();
    water_fill(&mut grants, &first, &mut left);
    let with_headroom: Vec<f64> = demand.iter().map(|d| d * HEADROOM).collect();
    water_fill(&mut grants, &with_headroom, &mut left);
    // Whatever is left goes in proportion to demand, so a hot pod can grow into it.
    let total_demand: f64 = demand.iter().sum();
    if left > 1e-9 && total_demand > 0.0 {
        for (grant, d) in grants.iter_mut().zip(&demand) {
            *grant += left * d / total_demand;
        }
    }
    let holders = grants.iter().filter(|g| **g > 0.0).count();
    let others = connected.saturating_sub(holders).max(1);
    let grants = demands.iter().zip(grants).filter(|(_, g)| *g > 0.0).map(|(d, g)| (d.sidecar.clone(), g)).collect();
    Assignment { grants, reserve_each: reserve / others as f64, reserve }
}

/// Raises every grant toward its `want` together (max-min fair) until each has it or `left`
/// runs out.
fn water_fill(grants: &mut [f64], wants: &[f64], left: &mut f64) {
    let mut open: Vec<usize> = (0..grants.len()).filter(|&i| wants[i] - grants[i] > 1e-9).collect();
    while !open.is_empty() && *left > 1e-9 {
        let share = *left / open.len() as f64;
        let before = open.len();
        open.retain(|&i| {
            let give = (wants[i] - grants[i]).min(share);
            grants[i] += give;
            *left -= give;
            wants[i] - grants[i] > 1e-9
        });
        if open.len() == before {
            break;
        }
    }
}

#[cfg(test)]
mod tests;
