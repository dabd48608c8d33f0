//! Adaptive routing, simulated with fixed seeds through the pure engine: it learns which
//! deployment serves each request type best, prefers the cheaper of equals when price counts,
//! recovers when the leader degrades (with the operator's per-epoch decay), and no signal ever
//! drives a posterior to its floor.

use llmroute_router::RequestType;
use llmroute_router::adaptive::{Arm, FLOOR, MAX_EVIDENCE, Posteriors, Weights};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const GROUP: &str = "smart";

fn arms<'a>(costs: [f64; 2]) -> [Arm<'a>; 2] {
    [Arm { deployment: "a", quality_tier: 3, cost: costs[0] }, Arm { deployment: "b", quality_tier: 3, cost: costs[1] }]
}

/// Runs `n` requests; `success(i, kind, arm)` is the chance that `arm` serves request `i` of
/// `kind` well. Returns, per request, its kind and the arm picked.
fn simulate(
    seed: u64,
    n: usize,
    kinds: &[RequestType],
    costs: [f64; 2],
    weights: Weights,
    decay_every: Option<(usize, f64)>,
    success: impl Fn(usize, RequestType, usize) -> f64,
) -> Vec<(RequestType, usize)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut learned = Posteriors::default();
    let arms = arms(costs);
    let mut picks = Vec::with_capacity(n);
    for i in 0..n {
        let kind = kinds[i % kinds.len()];
        let pick = learned.pick(GROUP, kind, &arms, weights, &mut rng).expect("two arms");
        let reward = if rng.random::<f64>() < success(i, kind, pick) { 1.0 } else { 0.0 };
        learned.observe(GROUP, kind, arms[pick].deployment, 3, reward);
        picks.push((kind, pick));
        if let Some((every, factor)) = decay_every
            && (i + 1) % every == 0
        {
            learned.decay(factor);
        }
    }
    picks
}

fn share(picks: &[(RequestType, usize)], kind: RequestType, arm: usize) -> f64 {
    let of_kind: Vec<_> = picks.iter().filter(|(k, _)| *k == kind).collect();
    of_kind.iter().filter(|(_, a)| *a == arm).count() as f64 / of_kind.len() as f64
}

#[test]
fn each_request_type_goes_to_the_deployment_best_at_it() {
    let kinds = [RequestType::CodeGeneration, RequestType::Writing];
    for seed in 1..=8u64 {
        // a: good at code, mediocre at writing; b: the reverse.
        let picks =
            simulate(seed, 1_200, &kinds, [0.0, 0.0], Weights::default(), None, |_, kind, arm| match (kind, arm) {
                (RequestType::CodeGeneration, 0) | (RequestType::Writing, 1) => 0.9,
                _ => 0.5,
            });
        let late = &picks[600..];
        assert!(
            share(late, RequestType::CodeGeneration, 0) >= 0.8,
            "seed {seed}: code -> a {:.2}",
            share(late, RequestType::CodeGeneration, 0)
        );
        assert!(
            share(late, RequestType::Writing, 1) >= 0.8,
            "seed {seed}: writing -> b {:.2}",
            share(late, RequestType::Writing, 1)
        );
    }
}

#[test]
fn with_equal_quality_the_cheaper_wins_when_price_counts() {
    let kinds = [RequestType::General];
    let weights = Weights { quality: 1.0, cost: 0.5 };
    for seed in 1..=8u64 {
        let picks = simulate(seed, 800, &kinds, [1.0, 10.0], weights, None, |_, _, _| 0.8);
        let late = &picks[400..];
        assert!(
            share(late, RequestType::General, 0) >= 0.8,
            "seed {seed}: cheaper {:.2}",
            share(late, RequestType::General, 0)
        );
        // It is the price, not chance: swap the prices and the other one wins.
        let swapped = simulate(seed, 800, &kinds, [10.0, 1.0], weights, None, |_, _, _| 0.8);
        let cheaper = share(&swapped[400..], RequestType::General, 1);
        assert!(cheaper >= 0.8, "seed {seed}: swapped prices, cheaper {cheaper:.2}");
    }
}

#[test]
fn a_deployment_that_degrades_loses_its_lead_within_a_bounded_number_of_requests() {
    let kinds = [RequestType::AnalyticalReasoning];
    const CHANGE: usize = 1_500;
    const BOUND: usize = 800;
    for seed in 1..=8u64 {
        // a leads (0.9 vs 0.6) until request 1,500, then drops to 0.2. The operator decays the
        // evidence once per epoch (here every 100 requests, by 0.8).
        let picks = simulate(
            seed,
            CHANGE + BOUND + 300,
            &kinds,
            [0.0, 0.0],
            Weights::default(),
            Some((100, 0.8)),
            |i, _, arm| match (arm, i < CHANGE) {
                (0, true) => 0.9,
                (0, false) => 0.2,
                _ => 0.6,
            },
        );
        assert!(share(&picks[CHANGE - 300..CHANGE], RequestType::AnalyticalReasoning, 0) >= 0.8, "seed {seed}: a led");
        let after = &picks[CHANGE + BOUND..];
        assert!(
            share(after, RequestType::AnalyticalReasoning, 1) >= 0.8,
            "seed {seed}: b took over within {BOUND}: {:.2}",
            share(after, RequestType::AnalyticalReasoning, 1)
        );
    }
}

#[derive(Clone, Debug)]
enum Signal {
    Observe(f64),
    Decay(f64),
}

fn signal() -> impl Strategy<Value = Signal> {
    prop_oneof![
        any::<f64>().prop_map(Signal::Observe),
        (0.0f64..=1.0).prop_map(Signal::Observe),
        any::<f64>().prop_map(Signal::Decay),
        (0.0f64..=1.0).prop_map(Signal::Decay),
        Just(Signal::Decay(0.0)),
        Just(Signal::Observe(0.0)),
    ]
}

proptest! {
    #[test]
    fn no_posterior_reaches_its_floor_whatever_the_signals(tier in 0u32..10, signals in proptest::collection::vec(signal(), 0..400)) {
        let mut learned = Posteriors::default();
        for s in &signals {
            match s {
                Signal::Observe(r) => learned.observe(GROUP, RequestType::General, "a", tier, *r),
                Signal::Decay(f) => learned.decay(*f),
            }
            let p = learned.get(GROUP, RequestType::General, "a", tier);
            prop_assert!(p.alpha > FLOOR && p.beta > FLOOR, "{p:?}");
            prop_assert!(p.alpha.is_finite() && p.beta.is_finite());
            prop_assert!(p.evidence() <= MAX_EVIDENCE + 1e-9);
            let mut rng = StdRng::seed_from_u64(7);
            let draw = p.sample(&mut rng);
            prop_assert!((0.0..=1.0).contains(&draw));
        }
    }
}
