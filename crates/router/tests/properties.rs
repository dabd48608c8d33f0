//! Properties of the planner and of rendezvous hashing over random views and outcomes.

mod support;

use std::collections::BTreeSet;

use llmroute_proto::v1;
use llmroute_router::{Class, Cooldown, LiveState, Planner, RequestKeys};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::*;

#[derive(Clone, Debug)]
struct Case {
    groups: Vec<Vec<(u32, u32)>>, // per group: (order, weight) per deployment
    max_attempts: u32,
    cooled: Vec<bool>,
    outcomes: Vec<u8>,
    fallbacks: Vec<u8>,
    session: Option<u8>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::collection::vec((1..4u32, 0..4u32), 1..6), 1..4),
        1..8u32,
        prop::collection::vec(any::<bool>(), 20),
        prop::collection::vec(0..4u8, 20),
        prop::collection::vec(0..4u8, 0..4),
        prop::option::of(any::<u8>()),
        any::<u64>(),
    )
        .prop_map(|(groups, max_attempts, cooled, outcomes, fallbacks, session, seed)| Case {
            groups,
            max_attempts,
            cooled,
            outcomes,
            fallbacks,
            session,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn planner_terminates_and_never_picks_excluded_cooled_or_foreign(c in case()) {
        let mut deployments = Vec::new();
        let mut routes = Vec::new();
        for (g, members) in c.groups.iter().enumerate() {
            let ids: Vec<String> = (0..members.len()).map(|i| format!("g{g}-d{i}")).collect();
            for (i, (order, weight)) in members.iter().enumerate() {
                deployments.push(dep(&ids[i], &format!("g{g}"), *order, *weight));
            }
            let mut p = policy();
            p.max_attempts = c.max_attempts;
            p.fallbacks = c.fallbacks.iter().map(|f| format!("g{f}")).collect();
            if c.session.is_some() {
                p.affinity = vec![v1::Affinity::Session as i32];
            }
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            routes.push(route(&format!("g{g}"), v1::RouteKind::GlobalDeployment, &refs, p));
        }
        // Foreign deployments: a group no fallback names, and a deployment in no route. A
        // pick may come only from g0 or a group its fallbacks name.
        deployments.push(dep("foreign-d0", "foreign", 1, 1));
        deployments.push(dep("orphan", "orphan", 1, 1));
        routes.push(route("foreign", v1::RouteKind::GlobalDeployment, &["foreign-d0"], policy()));
        let reachable: BTreeSet<String> = std::iter::once("g0".to_string())
            .chain(c.fallbacks.iter().map(|f| format!("g{f}")))
            .collect();
        let t = table(deployments, routes);
        let s = LiveState::for_table(&t, None);
        let rule = Cooldown { allowed_fails: 0, window_ms: 1000, duration_ms: 1_000_000 };
        for i in 0..t.deployments().len() {
            if c.cooled[i % c.cooled.len()] {
                s.get(i as u32).record_failure(0, &rule);
            }
        }
        let cooled_at_start: BTreeSet<u32> = (0..t.deployments().len() as u32).filter(|i| s.get(*i).in_cooldown(10)).collect();
        let keys = RequestKeys { session: c.session.map(|k| format!("s{k}")), ..Default::default() };
        let mut planner = Planner::new(&t, "g0", keys).unwrap();
        let mut rng = StdRng::seed_from_u64(c.seed);
        let mut tried = BTreeSet::new();
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps <= c.max_attempts + 1, "did not terminate within maxAttempts");
            match planner.next(&s, 10, &mut rng) {
                Ok(pick) => {
                    let group = t.deployment(pick.deployment).model_name.clone();
                    prop_assert!(reachable.contains(&group), "picked {} of a group the request cannot reach", group);
                    prop_assert!(!cooled_at_start.contains(&pick.deployment), "picked a cooled deployment");
                    prop_assert!(tried.insert(pick.deployment), "picked a deployment that failed in this request");
                    let class = [Class::Retryable, Class::Retryable, Class::Success, Class::Retryable][c.outcomes[steps as usize % 20] as usize];
                    planner.record(&pick, class, "x", &s, 10);
                    if class == Class::Success { break; }
                }
                Err(e) => {
                    prop_assert!(e.attempts.len() as u32 <= c.max_attempts);
                    break;
                }
            }
        }
    }

    #[test]
    fn rendezvous_moves_only_the_removed_deployments_keys(n in 3..12usize, removed in 0..12usize, weights in prop::collection::vec(1..5u32, 12)) {
        let removed = removed % n;
        let mut p = policy();
        p.affinity = vec![v1::Affinity::Session as i32];
        let build = |skip: Option<usize>| {
            let ids: Vec<String> = (0..n).filter(|i| Some(*i) != skip).map(|i| format!("d{i}")).collect();
            let deployments = ids.iter().map(|id| dep(id, "m", 1, weights[id[1..].parse::<usize>().unwrap()])).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            table(deployments, vec![route("m", v1::RouteKind::GlobalDeployment, &refs, p.clone())])
        };
        let (before, after) = (build(None), build(Some(removed)));
        let (sb, sa) = (LiveState::for_table(&before, None), LiveState::for_table(&after, None));
        let pick = |t: &llmroute_router::RouteTable, s: &LiveState, key: &str| {
            let keys = RequestKeys { session: Some(key.into()), ..Default::default() };
            let p = Planner::new(t, "m", keys).unwrap().next(s, 0, &mut rng()).unwrap();
            t.deployment(p.deployment).id.clone()
        };
        let removed_id = format!("d{removed}");
        for k in 0..200 {
            let key = format!("key-{k}");
            let (b, a) = (pick(&before, &sb, &key), pick(&after, &sa, &key));
            if b != removed_id {
                prop_assert_eq!(b, a, "a key of a surviving deployment moved");
            }
        }
    }
}

/// Measures the fraction of keys that move when one of ten equal deployments is removed
/// (ideal: 1/10) and checks no key of a surviving deployment moved.
#[test]
fn rendezvous_moved_fraction_is_the_removed_share() {
    let mut p = policy();
    p.affinity = vec![v1::Affinity::Session as i32];
    let build = |n: usize| {
        let ids: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        table(
            ids.iter().map(|id| dep(id, "m", 1, 1)).collect(),
            vec![route("m", v1::RouteKind::GlobalDeployment, &refs, p.clone())],
        )
    };
    let (before, after) = (build(10), build(9));
    let (sb, sa) = (LiveState::for_table(&before, None), LiveState::for_table(&after, None));
    let keys = 20_000;
    let mut moved = 0;
    for k in 0..keys {
        let request = RequestKeys { session: Some(format!("k{k}")), ..Default::default() };
        let b = Planner::new(&before, "m", request.clone()).unwrap().next(&sb, 0, &mut rng()).unwrap();
        let a = Planner::new(&after, "m", request).unwrap().next(&sa, 0, &mut rng()).unwrap();
        let (bid, aid) = (&before.deployment(b.deployment).id, &after.deployment(a.deployment).id);
        if bid != aid {
            assert_eq!(bid, "d9", "only keys of the removed deployment move");
            moved += 1;
        }
    }
    let fraction = moved as f64 / keys as f64;
    println!("rendezvous: removing 1 of 10 deployments moved {:.2}% of keys", fraction * 100.0);
    assert!((fraction - 0.1).abs() < 0.01, "{fraction}");
}
