//! Builders for router tests: wire snapshots made by hand, and a loop that runs a plan
//! against scripted upstream outcomes.
#![allow(dead_code)]

use llmroute_proto::v1;
use llmroute_router::{Class, Exhausted, LiveState, Pick, Planner, RequestKeys, RouteTable};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub fn dep(id: &str, model: &str, order: u32, weight: u32) -> v1::Deployment {
    v1::Deployment {
        id: id.into(),
        model_name: model.into(),
        base_url: "http://127.0.0.1:1".into(),
        provider: v1::Provider::Openai as i32,
        weight,
        order,
        quality_tier: 3,
        limits: Some(v1::Limits::default()),
        spec_hash: format!("h-{id}"),
        ..Default::default()
    }
}

pub fn policy() -> v1::RoutingPolicy {
    v1::RoutingPolicy {
        strategy: v1::Strategy::Weighted as i32,
        failover: true,
        max_attempts: 5,
        cooldown: Some(v1::Cooldown { allowed_fails: 0, window_seconds: 60, seconds: 30 }),
        health_routing: true,
        timeout_seconds: 60,
        ..Default::default()
    }
}

pub fn route(name: &str, kind: v1::RouteKind, ids: &[&str], policy: v1::RoutingPolicy) -> v1::Route {
    v1::Route {
        public_name: name.into(),
        kind: kind as i32,
        pattern: name.contains('*'),
        deployment_ids: ids.iter().map(|s| s.to_string()).collect(),
        policy: Some(policy),
        source: String::new(),
    }
}

pub fn global(name: &str, ids: &[&str]) -> v1::Route {
    route(name, v1::RouteKind::GlobalDeployment, ids, policy())
}

pub fn table(deployments: Vec<v1::Deployment>, routes: Vec<v1::Route>) -> RouteTable {
    let snapshot =
        v1::Snapshot { version: "v".into(), team: "team-a".into(), deployments, routes, ..Default::default() };
    RouteTable::try_from(&snapshot).expect("valid test snapshot")
}

pub fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Runs a whole request: `upstream` says how each deployment id answers.
pub fn run(
    table: &RouteTable,
    state: &LiveState,
    name: &str,
    keys: RequestKeys,
    upstream: impl Fn(&str) -> Class,
) -> (Vec<Pick>, Result<String, Exhausted>) {
    let mut rng = rng();
    let mut planner = Planner::new(table, name, keys).expect("name resolves");
    let mut picks = Vec::new();
    for _ in 0..100 {
        match planner.next(state, 1_000, &mut rng) {
            Ok(pick) => {
                let id = table.deployment(pick.deployment).id.clone();
                let class = upstream(&id);
                planner.record(&pick, class, format!("{class:?}"), state, 1_000);
                picks.push(pick);
                if class == Class::Success {
                    return (picks, Ok(id));
                }
            }
            Err(e) => return (picks, Err(e)),
        }
    }
    panic!("plan did not end within 100 steps");
}

pub fn ids<'a>(table: &'a RouteTable, picks: &[Pick]) -> Vec<&'a str> {
    picks.iter().map(|p| table.deployment(p.deployment).id.as_str()).collect()
}

pub fn fails(bad: &'static [&'static str]) -> impl Fn(&str) -> Class {
    move |id| if bad.contains(&id) { Class::Retryable } else { Class::Success }
}
