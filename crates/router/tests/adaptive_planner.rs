//! `strategy: adaptive` through the planner: every first pick is a Thompson draw over the
//! group's posteriors for the request's type, and every answer is a signal.

mod support;

use llmroute_proto::v1;
use llmroute_router::{Class, LiveState, Planner, RequestKeys, RequestType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::*;

#[test]
fn the_planner_learns_which_deployment_serves_each_request_type() {
    let mut p = policy();
    p.strategy = v1::Strategy::Adaptive as i32;
    // Cooldown out of the way: the adaptive pick itself must learn.
    p.cooldown = Some(v1::Cooldown { allowed_fails: 1_000_000, window_seconds: 60, seconds: 1 });
    let t = table(
        vec![dep("coder", "smart", 1, 1), dep("writer", "smart", 1, 1)],
        vec![route("smart", v1::RouteKind::GlobalDeployment, &["coder", "writer"], p)],
    );
    let s = LiveState::for_table(&t, None);
    let mut rng = StdRng::seed_from_u64(11);
    let mut outcomes = StdRng::seed_from_u64(12);
    let good = |kind: RequestType, id: &str| match (kind, id) {
        (RequestType::CodeGeneration, "coder") | (RequestType::Writing, "writer") => 0.9,
        _ => 0.3,
    };
    let mut late = [[0u32; 2]; 2];
    for i in 0..1_200 {
        let kind = if i % 2 == 0 { RequestType::CodeGeneration } else { RequestType::Writing };
        let keys = RequestKeys { request_type: Some(kind), ..Default::default() };
        let mut planner = Planner::new(&t, "smart", keys).unwrap();
        let pick = planner.next(&s, 0, &mut rng).unwrap();
        let id = t.deployment(pick.deployment).id.clone();
        let ok = rand::RngExt::random::<f64>(&mut outcomes) < good(kind, &id);
        planner.record(&pick, if ok { Class::Success } else { Class::Retryable }, "x", &s, 0);
        if i >= 600 {
            late[usize::from(kind == RequestType::Writing)][usize::from(id == "writer")] += 1;
        }
    }
    let code_to_coder = f64::from(late[0][0]) / f64::from(late[0][0] + late[0][1]);
    let writing_to_writer = f64::from(late[1][1]) / f64::from(late[1][0] + late[1][1]);
    assert!(code_to_coder >= 0.8, "code -> coder {code_to_coder:.2}");
    assert!(writing_to_writer >= 0.8, "writing -> writer {writing_to_writer:.2}");
    // Learning is per group: another group over the same deployments starts from its priors.
    let fresh = s.get(t.deployment_index("coder").unwrap()).posterior("other", RequestType::CodeGeneration, 3);
    assert_eq!(fresh, llmroute_router::adaptive::Posterior::prior(3));
}

#[test]
fn client_errors_and_context_windows_teach_nothing() {
    let mut p = policy();
    p.strategy = v1::Strategy::Adaptive as i32;
    let t = table(vec![dep("a", "m", 1, 1)], vec![route("m", v1::RouteKind::GlobalDeployment, &["a"], p)]);
    let s = LiveState::for_table(&t, None);
    let mut rng = rng();
    for class in [Class::ClientError, Class::ContextWindow] {
        let mut planner = Planner::new(&t, "m", RequestKeys::default()).unwrap();
        let pick = planner.next(&s, 0, &mut rng).unwrap();
        planner.record(&pick, class, "x", &s, 0);
    }
    assert_eq!(s.get(0).posterior("m", RequestType::General, 3), llmroute_router::adaptive::Posterior::prior(3));
}
