//! What the fleet hands a sidecar, applied to its live state: merged posteriors (plus what the
//! sidecar observed since its last report), quota shares with a time to live, shared
//! cooldowns; and what the sidecar reports back (deltas drained once, demand, evidence).

mod support;

use llmroute_proto::v1;
use llmroute_router::adaptive::Posterior;
use llmroute_router::{LiveState, Planner, RequestKeys, RequestType, Share};
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::*;

fn adaptive(cost_weight: f64) -> v1::RoutingPolicy {
    let mut p = policy();
    p.strategy = v1::Strategy::Adaptive as i32;
    p.adaptive = Some(v1::AdaptiveWeights { quality_weight: 1.0, cost_weight });
    p
}

fn limited(id: &str, rpm: u64, tpm: u64) -> v1::Deployment {
    let mut d = dep(id, "m", 1, 1);
    d.limits = Some(v1::Limits { rpm, tpm, max_concurrency: 0 });
    d
}

#[test]
fn deltas_are_reported_once_and_survive_the_next_merged_posterior() {
    let t = table(vec![dep("a", "m", 1, 1)], vec![route("m", v1::RouteKind::GlobalDeployment, &["a"], adaptive(0.0))]);
    let s = LiveState::for_table(&t, None);
    let a = s.get(0);
    a.observe_adaptive("m", RequestType::Writing, 3, 1.0);
    a.observe_adaptive("m", RequestType::Writing, 3, 0.25);
    assert_eq!(a.take_adaptive_deltas(), vec![("m".to_string(), RequestType::Writing, 1.25, 0.75)]);
    assert!(a.take_adaptive_deltas().is_empty(), "a delta is reported once");
    // Observed after the report, then the fleet's merged posterior arrives: both count.
    a.observe_adaptive("m", RequestType::Writing, 3, 1.0);
    let merged = Posterior { alpha: 40.0, beta: 10.0 };
    let push = v1::FleetPush {
        posteriors: vec![
            v1::PosteriorCell {
                group: "m".into(),
                request_type: "writing".into(),
                deployment_id: "a".into(),
                alpha: 40.0,
                beta: 10.0,
            },
            // Unknown deployments, unknown types and nonsense numbers are ignored.
            v1::PosteriorCell {
                group: "m".into(),
                request_type: "poetry".into(),
                deployment_id: "a".into(),
                alpha: 1.0,
                beta: 1.0,
            },
            v1::PosteriorCell {
                group: "m".into(),
                request_type: "general".into(),
                deployment_id: "zz".into(),
                alpha: 1.0,
                beta: 1.0,
            },
            v1::PosteriorCell {
                group: "m".into(),
                request_type: "general".into(),
                deployment_id: "a".into(),
                alpha: f64::NAN,
                beta: 1.0,
            },
        ],
        ..Default::default()
    };
    s.apply_fleet(&t, &push, 0);
    let p = a.posterior("m", RequestType::Writing, 3);
    assert_eq!((p.alpha, p.beta), (merged.alpha + 1.0, merged.beta));
    assert_eq!(a.posterior("m", RequestType::General, 3), Posterior::prior(3));
    assert_eq!(a.take_adaptive_deltas(), vec![("m".to_string(), RequestType::Writing, 1.0, 0.0)]);
}

#[test]
fn with_equal_quality_the_cheaper_deployment_wins_under_a_cost_weight() {
    let mut cheap = dep("cheap", "m", 1, 1);
    cheap.input_cost_per_million = 0.5;
    let mut dear = dep("dear", "m", 1, 1);
    dear.input_cost_per_million = 10.0;
    let picks = |cost_weight: f64| {
        let t = table(
            vec![cheap.clone(), dear.clone()],
            vec![route("m", v1::RouteKind::GlobalDeployment, &["cheap", "dear"], adaptive(cost_weight))],
        );
        let s = LiveState::for_table(&t, None);
        let mut rng = StdRng::seed_from_u64(3);
        (0..1_000)
            .filter(|_| {
                let mut planner = Planner::new(&t, "m", RequestKeys::default()).unwrap();
                t.deployment(planner.next(&s, 0, &mut rng).unwrap().deployment).id == "cheap"
            })
            .count()
    };
    let (without, with) = (picks(0.0), picks(0.5));
    assert!((350..=650).contains(&without), "no cost weight: an even split, got {without}");
    assert!(with >= 900, "costWeight 0.5: the cheaper one wins, got {with}");
}

#[test]
fn a_session_stays_with_the_deployment_it_started_on_while_eligible() {
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a", "b"], adaptive(0.0))],
    );
    let s = LiveState::for_table(&t, None);
    let mut rng = rng();
    for _ in 0..50 {
        let keys = RequestKeys { session_owner: Some("b".into()), ..Default::default() };
        let mut planner = Planner::new(&t, "m", keys).unwrap();
        assert_eq!(t.deployment(planner.next(&s, 0, &mut rng).unwrap().deployment).id, "b");
    }
    s.get(1).set_shared_cooldown(10_000);
    let keys = RequestKeys { session_owner: Some("b".into()), ..Default::default() };
    let mut planner = Planner::new(&t, "m", keys).unwrap();
    assert_eq!(t.deployment(planner.next(&s, 0, &mut rng).unwrap().deployment).id, "a", "the owner is cooling");
}

#[test]
fn a_shared_cooldown_takes_a_deployment_out_until_released() {
    let t = table(vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1)], vec![global("m", &["a", "b"])]);
    let s = LiveState::for_table(&t, None);
    let cooling = v1::FleetPush {
        cooldowns: vec![v1::SharedCooldown { deployment_id: "a".into(), remaining_ms: 30_000 }],
        ..Default::default()
    };
    s.apply_fleet(&t, &cooling, 1_000);
    assert!(s.get(0).in_cooldown(1_000) && !s.get(1).in_cooldown(1_000));
    assert_eq!(s.get(0).local_cooldown_until_ms(), 0, "its own cooldown is not touched");
    let mut rng = rng();
    for _ in 0..20 {
        let mut planner = Planner::new(&t, "m", RequestKeys::default()).unwrap();
        assert_eq!(planner.next(&s, 1_000, &mut rng).unwrap().deployment, 1);
    }
    assert!(!s.get(0).in_cooldown(31_001), "it ends with the period");
    s.apply_fleet(&t, &cooling, 1_000);
    s.apply_fleet(&t, &v1::FleetPush::default(), 2_000);
    assert!(!s.get(0).in_cooldown(2_000), "released when the fleet no longer lists it");
    // An absurd period is cut to a day.
    let absurd = v1::FleetPush {
        cooldowns: vec![v1::SharedCooldown { deployment_id: "a".into(), remaining_ms: u64::MAX }],
        ..Default::default()
    };
    s.apply_fleet(&t, &absurd, 0);
    assert_eq!(s.get(0).shared_cooldown_until_ms(), 86_400_000);
}

#[test]
fn fleet_limits_admit_at_the_assigned_rate_then_fall_back_to_the_reserve() {
    let t = table(vec![limited("a", 600, 0)], vec![global("m", &["a"])]);
    let s = LiveState::for_table(&t, None);
    let limits = &t.deployment(0).limits;
    let a = s.get(0);
    // Before any assignment: the conservative default (5% of 600 = 30 per minute), holding
    // one request so that a cold sidecar's first request goes.
    s.default_fleet_quota(&t, 0);
    assert!(!a.over_limit(limits, 0, 10), "the first request goes");
    a.start(0, 10);
    a.finish();
    assert!(a.over_limit(limits, 0, 10), "then the reserve rate");
    assert!(!a.over_limit(limits, 2_000, 10), "30 per minute earns one request in 2 s");
    // A grant of 120 per minute for 5 s starts with one second of it (2 requests).
    let share = Share { rpm: 120.0, reserve_rpm: 6.0, granted: true, ttl_ms: 5_000, ..Share::default() };
    a.assign(limits, &share, 10_000);
    let mut admitted = 0;
    for ms in (10_000..15_000).step_by(10) {
        if !a.over_limit(limits, ms, 10) {
            a.start(ms, 10);
            a.finish();
            admitted += 1;
        }
    }
    assert!((10..=13).contains(&admitted), "about 2 per second over 5 s plus the burst: {admitted}");
    // Expired: 6 per minute (one every 10 s).
    let mut late = 0;
    for ms in (15_000..75_000).step_by(10) {
        if !a.over_limit(limits, ms, 10) {
            a.start(ms, 10);
            late += 1;
        }
    }
    assert!((5..=8).contains(&late), "the reserve rate after expiry: {late}");
    let (requests, _) = a.take_demand();
    assert_eq!(requests, admitted + late + 1, "every request started counts as demand");
    assert_eq!(a.take_demand(), (0, 0), "demand is taken once");
    // Nonsense shares are clamped to the limit; no limit, no bucket.
    let absurd = Share { rpm: f64::INFINITY, reserve_rpm: -4.0, granted: true, ttl_ms: 1_000, ..Share::default() };
    a.assign(limits, &absurd, 100_000);
    assert_eq!(a.fleet_rates(100_000), Some((Some(0.0), None, true)));
}

#[test]
fn tokens_per_minute_count_the_real_usage() {
    let t = table(vec![limited("a", 0, 6_000)], vec![global("m", &["a"])]);
    let s = LiveState::for_table(&t, None);
    let limits = &t.deployment(0).limits;
    let a = s.get(0);
    let share = Share { tpm: 6_000.0, granted: true, ttl_ms: 60_000, ..Share::default() };
    a.assign(limits, &share, 0);
    assert!(!a.over_limit(limits, 0, 10));
    a.start(0, 10);
    // The answer used 5,000 tokens: the bucket is in debt until it has earned them back.
    a.charge_tokens(0, 4_990);
    assert!(a.over_limit(limits, 1_000, 10));
    assert!(a.over_limit(limits, 40_000, 10));
    assert!(!a.over_limit(limits, 51_000, 10));
    assert_eq!(a.take_demand(), (1, 5_000));
}

#[test]
fn evidence_counts_server_failures_against_requests() {
    let t = table(vec![dep("a", "m", 1, 1)], vec![global("m", &["a"])]);
    let s = LiveState::for_table(&t, None);
    let a = s.get(0);
    for i in 0..10 {
        a.start(i, 1);
        a.finish();
        if i % 2 == 0 {
            a.note_server_failure(i);
        }
    }
    assert_eq!(a.recent_evidence(100), (5, 10));
}
