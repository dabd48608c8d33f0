//! The hot path allocates nothing proportional to the number of deployments: a decision over
//! a group of 5,000 makes exactly as many allocations as one over a group of 10.

mod support;

use llmroute_proto::v1;
use llmroute_router::{LiveState, Planner, RequestKeys};
use support::*;

mod counting;

use counting::allocations;

fn allocations_per_decision(group: usize, affinity: bool) -> usize {
    let ids: Vec<String> = (0..group).map(|i| format!("d{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut p = policy();
    if affinity {
        p.affinity = vec![v1::Affinity::Session as i32];
    }
    let t = table(
        // Three order levels, interleaved by index, so a decision scans past other levels.
        ids.iter().enumerate().map(|(i, id)| dep(id, "m", 1 + (i % 3) as u32, 1)).collect(),
        vec![route("m", v1::RouteKind::GlobalDeployment, &refs, p)],
    );
    let s = LiveState::for_table(&t, None);
    let mut rng = rng();
    let keys = RequestKeys { session: Some("session".into()), ..Default::default() };
    let before = allocations();
    for _ in 0..10 {
        let mut planner = Planner::new(&t, "m", keys.clone()).unwrap();
        std::hint::black_box(planner.next(&s, 0, &mut rng).unwrap());
    }
    (allocations() - before) / 10
}

#[test]
fn decision_allocations_do_not_grow_with_the_group() {
    for affinity in [false, true] {
        let small = allocations_per_decision(10, affinity);
        let large = allocations_per_decision(5_000, affinity);
        assert_eq!(small, large, "affinity={affinity}: allocations per decision must not depend on group size");
    }
}
