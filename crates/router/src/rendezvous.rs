//! Weighted rendezvous (highest-random-weight) hashing: each candidate scores
//! `-w / ln(u)` with `u` a stable hash of (key, deployment id) in (0, 1); the highest wins.
//! Every sidecar with the same view picks the same deployment for a key, with no shared
//! store, and removing a deployment moves only the keys it held.

use crate::random::stable_hash;

/// The score of `id` for `key` at weight `weight` (> 0).
pub(crate) fn score(key: &[u8], id: &str, weight: f64) -> f64 {
    let h = stable_hash(&[key, id.as_bytes()]);
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick<'a>(key: &str, ids: &[(&'a str, f64)]) -> &'a str {
        ids.iter()
            .max_by(|a, b| score(key.as_bytes(), a.0, a.1).total_cmp(&score(key.as_bytes(), b.0, b.1)))
            .map(|(id, _)| *id)
            .unwrap()
    }

    #[test]
    fn weights_shape_the_share() {
        let ids = [("a", 3.0), ("b", 1.0)];
        let a = (0..20_000).filter(|i| pick(&format!("k{i}"), &ids) == "a").count();
        let share = a as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn same_key_same_pick() {
        let ids = [("a", 1.0), ("b", 1.0), ("c", 1.0)];
        assert_eq!(pick("session-42", &ids), pick("session-42", &ids));
    }
}
