//! The hot path allocates nothing proportional to the number of deployments: a decision over
//! a group of 5,000 makes exactly as many allocations as one over a group of 10.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use llmroute_proto::v1;
use llmroute_router::{LiveState, Planner, RequestKeys};
use support::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10 {
        let mut planner = Planner::new(&t, "m", keys.clone()).unwrap();
        std::hint::black_box(planner.next(&s, 0, &mut rng).unwrap());
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) / 10
}

#[test]
fn decision_allocations_do_not_grow_with_the_group() {
    for affinity in [false, true] {
        let small = allocations_per_decision(10, affinity);
        let large = allocations_per_decision(5_000, affinity);
        assert_eq!(small, large, "affinity={affinity}: allocations per decision must not depend on group size");
    }
}
