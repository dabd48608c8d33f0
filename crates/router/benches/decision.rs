//! Routing decision time (DESIGN §7: <= 1 µs median) on one team's view in a world of
//! 10,000 deployments and 1,000 teams: the view holds 2,000 global deployments in 200 groups,
//! the team's 8 private ones and 2 TeamModels (10 routes of its own). A decision is: resolve
//! the name, build the plan, pick the first deployment. Baseline in the same run: a bare hash
//! lookup of the name (the floor of any name-based router).

use criterion::{Criterion, criterion_group, criterion_main};
use llmroute_proto::v1;
use llmroute_router::{LiveState, Planner, RequestKeys, RouteTable};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn dep(id: String, model: &str, order: u32, weight: u32) -> v1::Deployment {
    v1::Deployment {
        id,
        model_name: model.into(),
        base_url: "http://127.0.0.1:1/v1".into(),
        provider: v1::Provider::Openai as i32,
        weight,
        order,
        quality_tier: 3,
        limits: Some(v1::Limits::default()),
        spec_hash: "h".into(),
        ..Default::default()
    }
}

fn policy(affinity: Option<v1::Affinity>) -> v1::RoutingPolicy {
    v1::RoutingPolicy {
        max_attempts: 3,
        failover: true,
        health_routing: true,
        timeout_seconds: 600,
        affinity: affinity.map(|a| vec![a as i32]).unwrap_or_default(),
        bounded_load_epsilon: 0.25,
        cooldown: Some(v1::Cooldown { allowed_fails: 3, window_seconds: 60, seconds: 30 }),
        ..Default::default()
    }
}

fn view() -> RouteTable {
    let mut deployments = Vec::new();
    let mut routes = Vec::new();
    for g in 0..200 {
        let model = format!("model-{g}");
        let ids: Vec<String> = (0..10).map(|i| format!("llm/global-{g}-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            deployments.push(dep(id.clone(), &model, 1 + (i as u32 / 7), 1 + i as u32 % 4));
        }
        routes.push(v1::Route {
            public_name: model,
            kind: v1::RouteKind::GlobalDeployment as i32,
            deployment_ids: ids,
            policy: Some(policy(match g % 4 {
                0 | 2 => Some(v1::Affinity::Session),
                1 => Some(v1::Affinity::Prefix),
                _ => None,
            })),
            ..Default::default()
        });
    }
    for j in 0..8 {
        deployments.push(dep(format!("llm/team-7-d{j}"), &format!("private-{}", j / 2), 1, 1));
    }
    routes.push(v1::Route {
        public_name: "smart".into(),
        kind: v1::RouteKind::TeamModel as i32,
        deployment_ids: (0..10).map(|i| format!("llm/global-7-{i}")).collect(),
        policy: Some(policy(Some(v1::Affinity::Session))),
        ..Default::default()
    });
    routes.push(v1::Route {
        public_name: "own/*".into(),
        kind: v1::RouteKind::TeamModel as i32,
        pattern: true,
        deployment_ids: vec!["llm/team-7-d0".into(), "llm/team-7-d1".into()],
        policy: Some(policy(None)),
        ..Default::default()
    });
    deployments.sort_by(|a, b| a.id.cmp(&b.id));
    RouteTable::try_from(&v1::Snapshot {
        version: "v".into(),
        team: "team-7".into(),
        deployments,
        routes,
        ..Default::default()
    })
    .expect("valid view")
}

fn bench(c: &mut Criterion) {
    let table = view();
    let state = LiveState::for_table(&table, None);
    let names: std::collections::HashMap<String, u32> =
        table.routes().iter().enumerate().map(|(i, r)| (r.public_name.clone(), i as u32)).collect();
    let mut rng = StdRng::seed_from_u64(1);
    let plain = RequestKeys::default();
    let session = RequestKeys { session: Some("user-session-42".into()), ..Default::default() };
    let prefix = RequestKeys { prefix: Some(0x5eed_0fa1_0e9a_5e7e_3a11_0c8d_4f2b_91c7), ..Default::default() };
    let mut group = c.benchmark_group("decision_10k_deployments_1k_teams");
    group.bench_function("baseline_hash_lookup", |b| b.iter(|| std::hint::black_box(names.get("model-123"))));
    group.bench_function("weighted", |b| {
        b.iter(|| Planner::new(&table, "model-123", plain.clone()).unwrap().next(&state, 0, &mut rng).unwrap())
    });
    group.bench_function("session_affinity", |b| {
        b.iter(|| Planner::new(&table, "model-124", session.clone()).unwrap().next(&state, 0, &mut rng).unwrap())
    });
    group.bench_function("prefix_affinity_bounded_load", |b| {
        b.iter(|| Planner::new(&table, "model-125", prefix.clone()).unwrap().next(&state, 0, &mut rng).unwrap())
    });
    group.bench_function("team_pattern", |b| {
        b.iter(|| Planner::new(&table, "own/llama", plain.clone()).unwrap().next(&state, 0, &mut rng).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
