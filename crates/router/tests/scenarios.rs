//! The routing rules of DESIGN §3–4, one scenario each.

mod support;

use llmroute_proto::v1;
use llmroute_router::{
    AttemptKind, Class, ExhaustedReason, HealthObservation, LiveState, Planner, RequestKeys, RouteTable,
    wrap_response_id,
};
use support::*;

fn abc() -> (RouteTable, LiveState) {
    let t =
        table(vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1), dep("c", "m", 1, 1)], vec![global("m", &["a", "b", "c"])]);
    let s = LiveState::for_table(&t, None);
    (t, s)
}

#[test]
fn weights_80_20_hold_over_many_draws() {
    let t = table(vec![dep("east", "m", 1, 80), dep("west", "m", 1, 20)], vec![global("m", &["east", "west"])]);
    let s = LiveState::for_table(&t, None);
    let mut rng = rng();
    let east = (0..10_000)
        .filter(|_| {
            let mut p = Planner::new(&t, "m", RequestKeys::default()).unwrap();
            let pick = p.next(&s, 0, &mut rng).unwrap();
            t.deployment(pick.deployment).id == "east"
        })
        .count();
    let share = east as f64 / 10_000.0;
    assert!((share - 0.8).abs() < 0.02, "east share {share}");
}

#[test]
fn a_fails_then_b_serves_the_same_request() {
    let t = table(vec![dep("a", "m", 1, 1), dep("b", "m", 1, 0)], vec![global("m", &["a", "b"])]);
    let s = LiveState::for_table(&t, None);
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["a"]));
    assert_eq!(ids(&t, &picks), ["a", "b"]);
    assert_eq!(picks[1].kind, AttemptKind::InGroup);
    assert_eq!(result.unwrap(), "b");
}

#[test]
fn a_and_b_fail_then_c() {
    let t =
        table(vec![dep("a", "m", 1, 1), dep("b", "m", 2, 1), dep("c", "m", 3, 1)], vec![global("m", &["a", "b", "c"])]);
    let s = LiveState::for_table(&t, None);
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["a", "b"]));
    assert_eq!(result.unwrap(), "c");
    assert_eq!(ids(&t, &picks), ["a", "b", "c"]);
}

#[test]
fn everything_fails_ends_with_an_error_naming_every_attempt() {
    let (t, s) = abc();
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["a", "b", "c"]));
    let e = result.unwrap_err();
    assert_eq!(e.reason, ExhaustedReason::AllFailed);
    assert_eq!(picks.len(), 3, "no loop: each once, within maxAttempts 5");
    let mut named: Vec<&str> = e.attempts.iter().map(|a| a.deployment_id.as_str()).collect();
    named.sort();
    assert_eq!(named, ["a", "b", "c"]);
    assert!(e.attempts.iter().all(|a| a.outcome == "Retryable"));
}

#[test]
fn max_attempts_bounds_the_request() {
    let mut p = policy();
    p.max_attempts = 2;
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1), dep("c", "m", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a", "b", "c"], p)],
    );
    let s = LiveState::for_table(&t, None);
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), |_| Class::Retryable);
    assert_eq!(picks.len(), 2);
    assert_eq!(result.unwrap_err().reason, ExhaustedReason::AllFailed);
}

#[test]
fn exhausted_group_falls_back_to_the_next_group() {
    let mut p = policy();
    p.fallbacks = vec!["mini".into(), "unknown-name".into()];
    let t = table(
        vec![dep("a", "m", 1, 1), dep("mini-1", "mini", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a"], p), global("mini", &["mini-1"])],
    );
    let s = LiveState::for_table(&t, None);
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["a"]));
    assert_eq!(result.unwrap(), "mini-1");
    assert_eq!(picks[1].kind, AttemptKind::Fallback);
    assert_eq!(picks[1].model_group, "mini");
    assert_eq!(picks[1].upstream_model, "mini", "fallback group sends its own name");
}

#[test]
fn without_failover_a_failure_goes_straight_to_fallbacks() {
    let mut p = policy();
    p.failover = false;
    p.fallbacks = vec!["mini".into()];
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1), dep("mini-1", "mini", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a", "b"], p), global("mini", &["mini-1"])],
    );
    let s = LiveState::for_table(&t, None);
    let (picks, _) =
        run(&t, &s, "m", RequestKeys::default(), |id| if id == "mini-1" { Class::Success } else { Class::Retryable });
    assert_eq!(picks.len(), 2);
    assert_eq!(ids(&t, &picks)[1], "mini-1");
}

#[test]
fn zero_weight_backups_serve_only_when_weighted_ones_are_out() {
    let t = table(
        vec![dep("w1", "m", 1, 5), dep("w2", "m", 1, 5), dep("backup", "m", 1, 0)],
        vec![global("m", &["w1", "w2", "backup"])],
    );
    let s = LiveState::for_table(&t, None);
    let mut rng = rng();
    for _ in 0..500 {
        let pick = Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 0, &mut rng).unwrap();
        assert_ne!(t.deployment(pick.deployment).id, "backup");
    }
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["w1", "w2"]));
    assert_eq!(result.unwrap(), "backup");
    assert_eq!(picks.len(), 3);
}

#[test]
fn all_zero_weights_draw_uniformly() {
    let t = table(vec![dep("a", "m", 1, 0), dep("b", "m", 1, 0)], vec![global("m", &["a", "b"])]);
    let s = LiveState::for_table(&t, None);
    let mut rng = rng();
    let a = (0..4000)
        .filter(|_| {
            Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 0, &mut rng).unwrap().deployment == 0
        })
        .count();
    assert!((a as f64 / 4000.0 - 0.5).abs() < 0.03, "{a}");
}

#[test]
fn order_one_out_escalates_to_order_two() {
    let t = table(
        vec![dep("east", "m", 1, 80), dep("west", "m", 1, 20), dep("openai", "m", 2, 1)],
        vec![global("m", &["east", "west", "openai"])],
    );
    let s = LiveState::for_table(&t, None);
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["east", "west"]));
    assert_eq!(result.unwrap(), "openai");
    assert_eq!(picks[2].kind, AttemptKind::Order);
    let cooled = LiveState::for_table(&t, None);
    let rule = llmroute_router::Cooldown { allowed_fails: 0, window_ms: 1000, duration_ms: 60_000 };
    cooled.get(0).record_failure(500, &rule);
    cooled.get(1).record_failure(500, &rule);
    let (picks, _) = run(&t, &cooled, "m", RequestKeys::default(), |_| Class::Success);
    assert_eq!(ids(&t, &picks), ["openai"], "order 2 serves while order 1 cools down");
}

#[test]
fn affinity_is_per_group() {
    let mut sticky = policy();
    sticky.affinity = vec![v1::Affinity::Session as i32];
    let t = table(
        (0..6)
            .map(|i| dep(&format!("s{i}"), "sticky", 1, 1))
            .chain((0..6).map(|i| dep(&format!("f{i}"), "free", 1, 1)))
            .collect(),
        vec![
            route("sticky", v1::RouteKind::GlobalDeployment, &["s0", "s1", "s2", "s3", "s4", "s5"], sticky),
            global("free", &["f0", "f1", "f2", "f3", "f4", "f5"]),
        ],
    );
    let s = LiveState::for_table(&t, None);
    let keys = RequestKeys { session: Some("session-1".into()), ..Default::default() };
    let mut rng = rng();
    let mut picked = |name: &str| {
        (0..50)
            .map(|_| Planner::new(&t, name, keys.clone()).unwrap().next(&s, 0, &mut rng).unwrap().deployment)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(picked("sticky").len(), 1, "same session, same deployment");
    assert!(picked("free").len() > 1, "no affinity: the strategy draws");
    // Another sidecar (fresh state, other rng) picks the same.
    let other = LiveState::for_table(&t, None);
    let mut other_rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(99);
    let first = Planner::new(&t, "sticky", keys.clone()).unwrap().next(&s, 0, &mut support::rng()).unwrap();
    let second = Planner::new(&t, "sticky", keys).unwrap().next(&other, 0, &mut other_rng).unwrap();
    assert_eq!(first.deployment, second.deployment);
}

#[test]
fn user_affinity_uses_the_user_key() {
    let mut p = policy();
    p.affinity = vec![v1::Affinity::User as i32];
    let t = table(
        (0..8).map(|i| dep(&format!("d{i}"), "m", 1, 1)).collect(),
        vec![route("m", v1::RouteKind::GlobalDeployment, &["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"], p)],
    );
    let s = LiveState::for_table(&t, None);
    let pick = |user: &str| {
        let keys = RequestKeys { user: Some(user.into()), ..Default::default() };
        Planner::new(&t, "m", keys).unwrap().next(&s, 0, &mut rng()).unwrap().deployment
    };
    assert_eq!(pick("alice"), pick("alice"));
    let distinct: std::collections::BTreeSet<_> = (0..40).map(|i| pick(&format!("user-{i}"))).collect();
    assert!(distinct.len() > 4, "users spread over deployments");
}

#[test]
fn affinity_moves_off_a_failed_deployment_within_the_request() {
    let mut p = policy();
    p.affinity = vec![v1::Affinity::Session as i32];
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a", "b"], p)],
    );
    let s = LiveState::for_table(&t, None);
    let keys = RequestKeys { session: Some("k".into()), ..Default::default() };
    let (picks, result) = run(&t, &s, "m", keys, |_| Class::Retryable);
    assert_eq!(picks.len(), 2);
    assert!(result.is_err());
}

#[test]
fn responses_affinity_returns_to_the_deployment_that_holds_the_response() {
    let mut p = policy();
    p.affinity = vec![v1::Affinity::Responses as i32];
    let t = table(
        (0..5).map(|i| dep(&format!("d{i}"), "m", 1, 1)).collect(),
        vec![route("m", v1::RouteKind::GlobalDeployment, &["d0", "d1", "d2", "d3", "d4"], p)],
    );
    let s = LiveState::for_table(&t, None);
    let id = wrap_response_id("d3", "resp_1");
    let (deployment, _) = llmroute_router::unwrap_response_id(&id).unwrap();
    let keys = RequestKeys { previous_deployment: Some(deployment), ..Default::default() };
    for seed in 0..30 {
        let mut r: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(seed);
        let pick = Planner::new(&t, "m", keys.clone()).unwrap().next(&s, 0, &mut r).unwrap();
        assert_eq!(t.deployment(pick.deployment).id, "d3");
    }
}

#[test]
fn cooled_and_unhealthy_deployments_are_never_picked() {
    let (t, s) = abc();
    let rule = llmroute_router::Cooldown { allowed_fails: 0, window_ms: 1000, duration_ms: 60_000 };
    s.get(0).record_failure(0, &rule);
    s.get(1).set_health(HealthObservation { healthy: false, observed_at_ms: 900, interval_ms: 1000 });
    let mut rng = rng();
    for _ in 0..200 {
        let pick = Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 1_000, &mut rng).unwrap();
        assert_eq!(t.deployment(pick.deployment).id, "c");
    }
}

#[test]
fn health_safety_net_applies_when_health_would_filter_out_everything() {
    let (t, s) = abc();
    for i in 0..3 {
        s.get(i).set_health(HealthObservation { healthy: false, observed_at_ms: 900, interval_ms: 1000 });
    }
    let pick = Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 1_000, &mut rng());
    assert!(pick.is_ok(), "all unhealthy: health is ignored rather than failing the request");
    let rule = llmroute_router::Cooldown { allowed_fails: 0, window_ms: 1000, duration_ms: 60_000 };
    s.get(0).record_failure(0, &rule);
    for _ in 0..50 {
        let pick = Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 1_000, &mut rng()).unwrap();
        assert_ne!(pick.deployment, 0, "the net never lifts a cooldown");
    }
}

#[test]
fn stale_health_is_ignored() {
    let (t, s) = abc();
    s.get(0).set_health(HealthObservation { healthy: false, observed_at_ms: 0, interval_ms: 100 });
    s.get(1).set_health(HealthObservation { healthy: false, observed_at_ms: 0, interval_ms: 100 });
    let mut seen = std::collections::BTreeSet::new();
    let mut rng = rng();
    for _ in 0..100 {
        seen.insert(
            Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 1_000, &mut rng).unwrap().deployment,
        );
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn everything_cooling_down_is_none_eligible_and_limits_are_limited() {
    let (t, s) = abc();
    let rule = llmroute_router::Cooldown { allowed_fails: 0, window_ms: 1000, duration_ms: 60_000 };
    for i in 0..3 {
        s.get(i).record_failure(0, &rule);
    }
    let e = Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 1_000, &mut rng()).unwrap_err();
    assert_eq!((e.reason, e.attempts.len()), (ExhaustedReason::NoneEligible, 0));

    let mut d = dep("a", "m", 1, 1);
    d.limits = Some(v1::Limits { max_concurrency: 1, ..Default::default() });
    let t = table(vec![d], vec![global("m", &["a"])]);
    let s = LiveState::for_table(&t, None);
    s.get(0).start(0, 0);
    let e = Planner::new(&t, "m", RequestKeys::default()).unwrap().next(&s, 1_000, &mut rng()).unwrap_err();
    assert_eq!(e.reason, ExhaustedReason::Limited);
}

#[test]
fn context_window_error_goes_to_context_window_fallbacks_never_in_group() {
    let mut p = policy();
    p.context_window_fallbacks = vec!["long".into()];
    p.fallbacks = vec!["mini".into()];
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1), dep("long-1", "long", 1, 1), dep("mini-1", "mini", 1, 1)],
        vec![
            route("m", v1::RouteKind::GlobalDeployment, &["a", "b"], p.clone()),
            global("long", &["long-1"]),
            global("mini", &["mini-1"]),
        ],
    );
    let s = LiveState::for_table(&t, None);
    let upstream = |id: &str| if id == "long-1" { Class::Success } else { Class::ContextWindow };
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), upstream);
    assert_eq!(picks.len(), 2);
    assert_eq!(result.unwrap(), "long-1");
    assert_eq!(picks[1].kind, AttemptKind::ContextWindow);
    assert!(!s.get(0).in_cooldown(1_001) && !s.get(1).in_cooldown(1_001), "not charged to cooldown");

    p.context_window_fallbacks.clear();
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a", "b"], p)],
    );
    let s = LiveState::for_table(&t, None);
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), |_| Class::ContextWindow);
    assert_eq!(picks.len(), 1);
    assert_eq!(result.unwrap_err().reason, ExhaustedReason::ContextWindow);
}

#[test]
fn a_prompt_larger_than_every_window_goes_to_context_window_fallbacks() {
    let mut p = policy();
    p.context_window_fallbacks = vec!["long".into()];
    let mut small = dep("small", "m", 1, 1);
    small.context_window = 1000;
    let mut long = dep("long-1", "long", 1, 1);
    long.context_window = 100_000;
    let t = table(
        vec![small, long],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["small"], p), global("long", &["long-1"])],
    );
    let s = LiveState::for_table(&t, None);
    let keys = RequestKeys { prompt_tokens: 5000, ..Default::default() };
    let (picks, result) = run(&t, &s, "m", keys, |_| Class::Success);
    assert_eq!(result.unwrap(), "long-1");
    assert_eq!(picks[0].kind, AttemptKind::First);
}

#[test]
fn client_errors_return_at_once() {
    let (t, s) = abc();
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), |_| Class::ClientError);
    assert_eq!(picks.len(), 1);
    assert_eq!(result.unwrap_err().reason, ExhaustedReason::ClientError);
}

#[test]
fn retryable_failures_are_charged_toward_cooldown() {
    let (t, s) = abc();
    // allowedFails 0: the first retryable failure starts a 30 s cooldown.
    let _ = run(&t, &s, "m", RequestKeys::default(), fails(&["a"]));
    assert_eq!(s.get(0).outcome_counts().1, 1);
    assert!(s.get(0).in_cooldown(1_001) && !s.get(0).in_cooldown(31_000));
    assert!(!s.get(1).in_cooldown(1_001) && !s.get(2).in_cooldown(1_001));
}

#[test]
fn strategies_pick_by_their_measure() {
    let make = |strategy: v1::Strategy| {
        let mut p = policy();
        p.strategy = strategy as i32;
        let mut cheap = dep("cheap", "m", 1, 1);
        cheap.input_cost_per_million = 0.1;
        let mut dear = dep("dear", "m", 1, 1);
        dear.input_cost_per_million = 5.0;
        table(vec![cheap, dear], vec![route("m", v1::RouteKind::GlobalDeployment, &["cheap", "dear"], p)])
    };
    let first = |t: &RouteTable, s: &LiveState| {
        let p = Planner::new(t, "m", RequestKeys::default()).unwrap().next(s, 0, &mut rng()).unwrap();
        t.deployment(p.deployment).id.clone()
    };
    let t = make(v1::Strategy::Cost);
    assert_eq!(first(&t, &LiveState::for_table(&t, None)), "cheap");

    let t = make(v1::Strategy::LeastBusy);
    let s = LiveState::for_table(&t, None);
    s.get(0).start(0, 0);
    assert_eq!(first(&t, &s), "dear");

    let t = make(v1::Strategy::Latency);
    let s = LiveState::for_table(&t, None);
    s.get(0).record_success(50.0);
    assert_eq!(first(&t, &s), "dear", "untried first");
    s.get(1).record_success(80.0);
    assert_eq!(first(&t, &s), "cheap", "then the lowest EWMA");
}

#[test]
fn min_quality_tier_filters() {
    let mut low = dep("low", "m", 1, 100);
    low.quality_tier = 2;
    let mut high = dep("high", "m", 1, 1);
    high.quality_tier = 5;
    let t = table(vec![low, high], vec![global("m", &["low", "high"])]);
    let s = LiveState::for_table(&t, None);
    let keys = RequestKeys { min_quality_tier: 4, ..Default::default() };
    let (picks, _) = run(&t, &s, "m", keys, |_| Class::Success);
    assert_eq!(ids(&t, &picks), ["high"]);
}

#[test]
fn live_state_is_kept_for_unchanged_deployments_only() {
    let (_, s) = abc();
    s.get(0).record_success(10.0);
    s.get(1).record_success(10.0);
    let mut changed = dep("b", "m", 1, 1);
    changed.spec_hash = "new".into();
    let t2 = table(vec![dep("a", "m", 1, 1), changed], vec![global("m", &["a", "b"])]);
    let s2 = LiveState::for_table(&t2, Some(&s));
    assert!(s2.get(0).latency_ms().is_some(), "unchanged: kept");
    assert!(s2.get(1).latency_ms().is_none(), "changed spec: fresh");
    assert_eq!(s2.len(), 2, "removed c is forgotten");
}

#[test]
fn unknown_names_do_not_resolve() {
    let (t, _) = abc();
    assert!(Planner::new(&t, "team-b-model", RequestKeys::default()).is_none());
}

#[test]
fn a_prompt_no_window_can_take_and_no_fallback_is_a_context_window_end_without_attempts() {
    let mut small = dep("small", "m", 1, 1);
    small.context_window = 1000;
    let mut smaller = dep("smaller", "m", 2, 1);
    smaller.context_window = 500;
    let t = table(vec![small, smaller], vec![global("m", &["small", "smaller"])]);
    let s = LiveState::for_table(&t, None);
    let keys = RequestKeys { prompt_tokens: 5000, ..Default::default() };
    let (picks, result) = run(&t, &s, "m", keys, |_| Class::Success);
    assert!(picks.is_empty());
    assert_eq!(result.unwrap_err().reason, ExhaustedReason::ContextWindow);
}

#[test]
fn a_prompt_too_large_for_some_while_the_rest_cool_down_is_none_eligible() {
    let mut small = dep("small", "m", 1, 1);
    small.context_window = 1000;
    let t = table(vec![small, dep("big", "m", 1, 1)], vec![global("m", &["small", "big"])]);
    let s = LiveState::for_table(&t, None);
    s.get(1).cool_for(0, 60_000);
    let keys = RequestKeys { prompt_tokens: 5000, ..Default::default() };
    let (_, result) = run(&t, &s, "m", keys, |_| Class::Success);
    assert_eq!(result.unwrap_err().reason, ExhaustedReason::NoneEligible, "the prompt fits big: retry later");
}

#[test]
fn the_retry_budget_caps_failover_under_a_brownout() {
    let mut p = policy();
    p.max_attempts = 3;
    p.retry_budget = Some(v1::RetryBudget { percent: 20, min_per_second: 0 });
    p.cooldown = Some(v1::Cooldown { allowed_fails: 1_000, window_seconds: 1, seconds: 0 });
    let ids: Vec<String> = (0..3).map(|i| format!("d{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t = table(
        ids.iter().map(|id| dep(id, "m", 1, 1)).collect(),
        vec![route("m", v1::RouteKind::GlobalDeployment, &refs, p)],
    );
    let s = LiveState::for_table(&t, None);
    let mut attempts = 0u32;
    let mut budget_ends = 0u32;
    let requests = 1_000;
    for _ in 0..requests {
        let (picks, result) = run(&t, &s, "m", RequestKeys::default(), |_| Class::Retryable);
        attempts += picks.len() as u32;
        if result.unwrap_err().reason == ExhaustedReason::RetryBudget {
            budget_ends += 1;
        }
    }
    // Without a budget every request would make 3 attempts (3,000). With 20%: ~1,200.
    assert!(attempts <= requests * 12 / 10 + 10, "{attempts} attempts for {requests} requests");
    assert!(budget_ends > 0);
}

#[test]
fn the_retry_budget_floor_allows_failover_at_low_rates() {
    let (t, s) = abc();
    let (picks, result) = run(&t, &s, "m", RequestKeys::default(), fails(&["a", "b"]));
    assert!(result.is_ok() && picks.len() <= 3);
    let (t, s) = abc();
    let (picks, _) = run(&t, &s, "m", RequestKeys::default(), |_| Class::Retryable);
    assert_eq!(picks.len(), 3, "a single failing request may use all its attempts");
}

#[test]
fn retry_after_cools_for_its_period_within_bounds() {
    let (t, s) = abc();
    let planner = Planner::new(&t, "m", RequestKeys::default()).unwrap();
    let mut p = planner;
    let pick = p.next(&s, 1_000, &mut rng()).unwrap();
    assert_eq!(p.cool_down(&pick, 5_000, &s, 1_000), 5_000);
    assert!(s.get(pick.deployment).in_cooldown(5_999) && !s.get(pick.deployment).in_cooldown(6_000));
    // 30 s group cooldown: the ceiling is 300 s; a day-long Retry-After is cut to that.
    assert_eq!(p.cool_down(&pick, 86_400_000, &s, 1_000), 300_000);
    assert_eq!(p.cool_down(&pick, 0, &s, 1_000), 1_000, "at least a second");
}

#[test]
fn policies_past_their_bounds_are_rejected_whole() {
    for (max_attempts, timeout_seconds) in [(0, 60), (21, 60), (u32::MAX, 60), (3, 86_401)] {
        let mut p = policy();
        p.max_attempts = max_attempts;
        p.timeout_seconds = timeout_seconds;
        let snapshot = v1::Snapshot {
            deployments: vec![dep("a", "m", 1, 1)],
            routes: vec![route("m", v1::RouteKind::GlobalDeployment, &["a"], p)],
            ..Default::default()
        };
        assert!(RouteTable::try_from(&snapshot).is_err(), "{max_attempts} {timeout_seconds}");
    }
}

#[test]
fn values_this_build_does_not_know_degrade_one_entry_not_the_view() {
    let mut unknown = dep("future", "m", 1, 1);
    unknown.provider = 99;
    let mut p = policy();
    p.strategy = 42;
    p.affinity = vec![v1::Affinity::Session as i32, 77];
    let mut odd_kind = global("odd", &["a"]);
    odd_kind.kind = 9;
    let snapshot = v1::Snapshot {
        version: "v".into(),
        deployments: vec![dep("a", "m", 1, 1), unknown],
        routes: vec![
            route("m", v1::RouteKind::GlobalDeployment, &["a", "future"], p),
            global("only-future", &["future"]),
            odd_kind,
        ],
        ..Default::default()
    };
    assert!(RouteTable::try_from(&snapshot).is_err(), "strict without degrading");
    let (degraded, notes) = llmroute_router::degrade(snapshot);
    assert_eq!(notes.len(), 3, "{notes:?}");
    let t = RouteTable::try_from(&degraded).expect("the rest applies");
    let s = LiveState::for_table(&t, None);
    let (_, result) =
        run(&t, &s, "m", RequestKeys { session: Some("k".into()), ..Default::default() }, |_| Class::Success);
    assert_eq!(result.unwrap(), "a", "an unknown strategy serves as weighted, the known affinity still applies");
    assert!(t.resolve("only-future").is_none() && t.resolve("odd").is_none());
}
