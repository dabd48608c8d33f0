//! `Planner::explain` (behind the sidecar's `/debug/route`): every candidate with why it is
//! excluded, the affinity that applies, the pick, and nothing recorded.

mod support;

use llmroute_proto::v1;
use llmroute_router::{HealthObservation, LiveState, Planner, RequestKeys};
use support::*;

fn explain(
    t: &llmroute_router::RouteTable,
    s: &LiveState,
    name: &str,
    keys: RequestKeys,
) -> llmroute_router::Explanation {
    Planner::new(t, name, keys).unwrap().explain(s, 1_000, &mut rng())
}

fn reasons(t: &llmroute_router::RouteTable, e: &llmroute_router::Explanation) -> Vec<(String, Option<&'static str>)> {
    e.candidates.iter().map(|(i, r)| (t.deployment(*i).id.clone(), *r)).collect()
}

#[test]
fn unhealthy_cooling_and_limited_deployments_are_named_with_their_reason() {
    let mut limited = dep("c", "m", 1, 1);
    limited.limits = Some(v1::Limits { rpm: 0, tpm: 0, max_concurrency: 1 });
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1), limited, dep("d", "m", 1, 1)],
        vec![global("m", &["a", "b", "c", "d"])],
    );
    let s = LiveState::for_table(&t, None);
    let idx = |id: &str| t.deployment_index(id).unwrap();
    s.get(idx("a")).set_health(HealthObservation { healthy: false, observed_at_ms: 900, interval_ms: 10_000 });
    s.get(idx("b")).cool_for(0, 60_000);
    s.get(idx("c")).start(0, 1);
    let e = explain(&t, &s, "m", RequestKeys::default());
    assert_eq!(
        reasons(&t, &e),
        [
            ("a".into(), Some("unhealthy")),
            ("b".into(), Some("cooling_down")),
            ("c".into(), Some("at_limit")),
            ("d".into(), None)
        ]
    );
    assert_eq!(e.pick, Some(idx("d")));
    assert!(e.affinity.is_none() && !e.health_safety_net);
    // Nothing was recorded: the retry budget and in-flight counts are as they were.
    assert_eq!(s.get(idx("d")).in_flight(), 0);
}

#[test]
fn the_health_safety_net_and_the_affinity_that_applies_are_shown() {
    let mut p = policy();
    p.affinity = vec![v1::Affinity::Session as i32, v1::Affinity::User as i32];
    let t = table(
        vec![dep("a", "m", 1, 1), dep("b", "m", 1, 1)],
        vec![route("m", v1::RouteKind::GlobalDeployment, &["a", "b"], p)],
    );
    let s = LiveState::for_table(&t, None);
    for i in 0..2 {
        s.get(i).set_health(HealthObservation { healthy: false, observed_at_ms: 900, interval_ms: 10_000 });
    }
    let keys = RequestKeys { session: Some("s-1".into()), user: Some("u".into()), ..Default::default() };
    let e = explain(&t, &s, "m", keys.clone());
    assert!(e.health_safety_net, "every deployment unhealthy: health is ignored");
    assert!(e.candidates.iter().all(|(_, r)| r.is_none()));
    assert_eq!(e.affinity, Some("session"));
    // The same session picks the same deployment as a real request would.
    let mut planner = Planner::new(&t, "m", keys).unwrap();
    assert_eq!(e.pick, Some(planner.next(&s, 1_000, &mut rng()).unwrap().deployment));
    let by_user = explain(&t, &s, "m", RequestKeys { user: Some("u".into()), ..Default::default() });
    assert_eq!(by_user.affinity, Some("user"));
}
