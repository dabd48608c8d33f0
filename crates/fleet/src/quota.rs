//! Fleet-wide limits. The operator divides a deployment's limit among the sidecars that report
//! demand (max-min fair, then the rest in proportion to demand, so a hot pod gets more), after
//! setting aside a reserve that sidecars without an assignment share. Assignments plus the
//! reserve never add up to more than the limit. A sidecar admits through a token bucket at its
//! assigned rate, which falls back to its share of the reserve when the assignment expires.
//!
//! Error bound: a bucket starts with one second of its rate (at least one request), so within
//! one minute the fleet admits at most `limit + holders` requests, where `holders` is the
//! number of sidecars holding an assignment (each at most one request over its rate at the
//! start of a period). A sidecar on the reserve starts empty and has no burst.

/// Share of a limit set aside for sidecars that hold no assignment.
pub const RESERVE_SHARE: f64 = 0.05;
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

/// A sidecar's admission at a rate: a token bucket refilled continuously.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Holding a grant (else on the reserve).
    granted: bool,
    per_minute: f64,
    tokens: f64,
    at: f64,
    /// When the rate stops being valid (seconds), after which `fallback` applies.
    expires: f64,
    fallback: f64,
}

impl Bucket {
    /// A bucket on the reserve (`fallback` per minute), empty.
    pub fn reserve(fallback: f64, now: f64) -> Self {
        Self { granted: false, per_minute: fallback, tokens: 0.0, at: now, expires: f64::INFINITY, fallback }
    }

    fn capacity(&self) -> f64 {
        if self.granted { (self.per_minute / 60.0).max(1.0) } else { (self.per_minute / 60.0).min(1.0) }
    }

    /// Applies an assignment of `per_minute` valid until `expires`; the reserve share
    /// `fallback` applies after. A new grant starts with one second of its rate.
    pub fn grant(&mut self, per_minute: f64, expires: f64, fallback: f64, now: f64) {
        self.refill(now);
        let fresh = !self.granted;
        self.granted = true;
        self.per_minute = per_minute.max(0.0);
        self.expires = expires;
        self.fallback = fallback.max(0.0);
        if fresh {
            self.tokens = self.tokens.max(self.capacity());
        }
        self.tokens = self.tokens.min(self.capacity());
    }

    fn refill(&mut self, now: f64) {
        if now > self.expires {
            // Tokens earned at the granted rate up to the expiry, then the fallback.
            let granted = (self.expires - self.at).max(0.0);
            self.tokens = (self.tokens + granted * self.per_minute / 60.0).min(self.capacity());
            self.at = self.expires;
            self.per_minute = self.fallback;
            self.granted = false;
            self.expires = f64::INFINITY;
            self.tokens = self.tokens.min(self.capacity());
        }
        let elapsed = (now - self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.capacity());
        self.at = now.max(self.at);
    }

    /// Whether one request (or `cost` tokens) may go now.
    pub fn admit(&mut self, cost: f64, now: f64) -> bool {
        self.refill(now);
        if self.tokens + 1e-9 >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
