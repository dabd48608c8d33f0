use proptest::prelude::*;

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

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("llm/d{i}")).collect()
}

fn idle<'a>(ids: &'a [String], weights: &[f64]) -> Vec<Loaded<'a>> {
    ids.iter().zip(weights).map(|(id, w)| Loaded { id, weight: *w, load: 0 }).collect()
}

#[test]
fn idle_candidates_spread_prefixes_by_weight() {
    let ids = ids(3);
    let candidates = idle(&ids, &[1.0, 2.0, 5.0]);
    let mut counts = [0usize; 3];
    for k in 0..40_000 {
        counts[bounded(format!("prefix {k}").as_bytes(), &candidates, 0.25).unwrap()] += 1;
    }
    for (count, weight) in counts.iter().zip([1.0, 2.0, 5.0]) {
        let share = *count as f64 / 40_000.0;
        assert!((share - weight / 8.0).abs() < 0.015, "{counts:?}");
    }
}

#[test]
fn a_loaded_winner_spills_to_the_next_in_rendezvous_order() {
    let ids = ids(4);
    let mut candidates = idle(&ids, &[1.0; 4]);
    let key = b"a long shared system prompt";
    let winner = bounded(key, &candidates, 0.25).unwrap();
    // The winner holds 10 of 12 in flight: its capacity is ceil(1.25 * 13 / 4) = 5.
    candidates[winner].load = 10;
    candidates[(winner + 1) % 4].load = 2;
    let spilled = bounded(key, &candidates, 0.25).unwrap();
    assert_ne!(spilled, winner);
    let others: Vec<Loaded<'_>> = idle(&ids, &[1.0; 4]).into_iter().filter(|c| c.id != ids[winner]).collect();
    let second = others[bounded(key, &others, 0.25).unwrap()].id;
    assert_eq!(candidates[spilled].id, second, "the next in rendezvous order, not any other");
    // Within its bound it keeps the key: 1 + 1 <= ceil(1.25 * 4 / 4).
    candidates[winner].load = 1;
    assert_eq!(bounded(key, &candidates, 0.25), Some(winner));
}

#[test]
fn no_candidates_no_pick() {
    assert_eq!(bounded(b"k", &[], 0.25), None);
}

#[test]
fn capacity_matches_the_formula() {
    assert_eq!(capacity(1.0, 4.0, 0, 0.25), 1);
    assert_eq!(capacity(1.0, 4.0, 12, 0.25), 5);
    assert_eq!(capacity(1.0, 4.0, 15, 0.0), 4, "an exact share is not rounded up");
    assert_eq!(capacity(3.0, 4.0, 99, 0.25), 94);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any sidecar (any candidate order) picks the same deployment for the same key and loads.
    #[test]
    fn the_same_prefix_gives_the_same_pick_anywhere(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        spec in proptest::collection::vec((1u32..10, 0u64..20), 1..8),
        rotate in 0usize..8,
        epsilon in 0.0f64..2.0,
    ) {
        let ids = ids(spec.len());
        let candidates: Vec<Loaded<'_>> =
            ids.iter().zip(&spec).map(|(id, (w, l))| Loaded { id, weight: f64::from(*w), load: *l }).collect();
        let mut shuffled = candidates.clone();
        shuffled.rotate_left(rotate % candidates.len());
        let a = bounded(&key, &candidates, epsilon).map(|i| candidates[i].id);
        let b = bounded(&key, &shuffled, epsilon).map(|i| shuffled[i].id);
        prop_assert_eq!(a, b);
    }

    /// Removing one deployment moves only the keys it held.
    #[test]
    fn removing_a_deployment_moves_only_its_keys(
        weights in proptest::collection::vec(1u32..10, 2..8),
        removed in 0usize..8,
        keys in proptest::collection::vec(any::<u64>(), 50..200),
    ) {
        let ids = ids(weights.len());
        let weights: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
        let all = idle(&ids, &weights);
        let removed = removed % all.len();
        let mut rest = all.clone();
        rest.remove(removed);
        for k in keys {
            let key = k.to_le_bytes();
            let before = all[bounded(&key, &all, 0.25).unwrap()].id;
            let after = rest[bounded(&key, &rest, 0.25).unwrap()].id;
            if before != all[removed].id {
                prop_assert_eq!(before, after);
            }
        }
    }

    /// Requests arriving one by one (some leaving) never push any deployment past its bound
    /// by more than the request being placed.
    #[test]
    fn bounded_load_is_never_exceeded_by_more_than_one(
        weights in proptest::collection::vec(1u32..6, 1..6),
        keys in proptest::collection::vec((0u64..30, any::<bool>()), 1..300),
        epsilon in 0.0f64..1.5,
    ) {
        let ids = ids(weights.len());
        let weights: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
        let total_weight: f64 = weights.iter().sum();
        let mut candidates = idle(&ids, &weights);
        for (key, leave) in keys {
            if leave && let Some(busy) = candidates.iter_mut().find(|c| c.load > 0) {
                busy.load -= 1;
            }
            let total: u64 = candidates.iter().map(|c| c.load).sum();
            let i = bounded(&key.to_le_bytes(), &candidates, epsilon).unwrap();
            candidates[i].load += 1;
            let bound = (1.0 + epsilon) * total as f64 * weights[i] / total_weight;
            prop_assert!(
                candidates[i].load as f64 <= bound.ceil() + 1.0,
                "load {} past the bound {bound} + 1", candidates[i].load
            );
        }
    }
}
