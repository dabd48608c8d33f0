//! Weighted rendezvous (highest-random-weight) hashing: each candidate scores
//! `-w / ln(u)` with `u` a stable hash of (key, deployment id) in (0, 1); the highest wins.
//! Every sidecar with the same view picks the same deployment for a key, with no shared
//! store, and removing a deployment moves only the keys it held.
//!
//! [`bounded`] adds bounded loads ("consistent hashing with bounded loads", Mirrokni, Thorup
//! and Zadimoghaddam, 2016): a candidate takes the request only while it stays within
//! `(1 + epsilon)` times its weighted share of the load, otherwise the next one in rendezvous
//! order does.

use crate::random::stable_hash;

/// The score of `id` for `key` at weight `weight` (> 0).
pub(crate) fn score(key: &[u8], id: &str, weight: f64) -> f64 {
    let h = stable_hash(&[key, id.as_bytes()]);
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// One candidate of a bounded-load pick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loaded<'a> {
    /// Deployment id (what is hashed with the key).
    pub id: &'a str,
    /// Weight (> 0).
    pub weight: f64,
    /// Requests in flight on it now.
    pub load: u64,
}

/// The capacity of a candidate of weight `weight` out of `total_weight`, when `total_load`
/// requests are in flight over all of them and one more arrives:
/// `ceil((1 + epsilon) * (total_load + 1) * weight / total_weight)`.
pub fn capacity(weight: f64, total_weight: f64, total_load: u64, epsilon: f64) -> u64 {
    let share = (1.0 + epsilon) * (total_load as f64 + 1.0) * weight / total_weight;
    // Float noise must not round an exact share up a whole request.
    (share - 1e-9).ceil().max(1.0) as u64
}

/// Index of the candidate that takes a request of `key`: the first in rendezvous order whose
/// load plus this request stays within its [`capacity`]. `None` only when `candidates` is
/// empty: the capacities add up to more than the load, so someone always has room.
pub fn bounded(key: &[u8], candidates: &[Loaded<'_>], epsilon: f64) -> Option<usize> {
    let total_weight: f64 = candidates.iter().map(|c| c.weight).sum();
    let total_load: u64 = candidates.iter().map(|c| c.load).fold(0, u64::saturating_add);
    let room = |c: &Loaded<'_>| c.load < capacity(c.weight, total_weight, total_load, epsilon);
    // The first in rendezvous order with room is the best-scoring one with room.
    let best = |need_room: bool| {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| !need_room || room(c))
            .map(|(i, c)| (i, score(key, c.id, c.weight)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    };
    // Weights that do not add up (a NaN) leave no one with room: plain rendezvous then.
    best(true).or_else(|| best(false))
}

#[cfg(test)]
mod tests;
