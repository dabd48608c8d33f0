use std::sync::Arc;
use std::time::{Duration, Instant};

use llmroute_fleet::learning::Merge;
use llmroute_proto::v1;
use llmroute_snapshot::{ResourceStore, compile};

use super::*;

fn built() -> Built {
    let md = |name: &str, extra: &str| {
        format!(
            "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}, namespace: llm}}\n\
             spec: {{modelName: smart, upstream: {{baseUrl: 'http://127.0.0.1:9/v1'}}{extra}}}\n---\n"
        )
    };
    let text = md("d1", ", limits: {rpm: 600}") + &md("d2", "") + &md("d3", "") + &md("d4", "");
    let mut store = ResourceStore::default();
    let (docs, error) = llmroute_api::manifest::parse_documents(&text);
    assert!(error.is_none());
    for d in docs {
        store.apply_document(d);
    }
    Built::new(compile(&store), 1, Instant::now(), None)
}

fn who(sidecar: &str, namespace: &str) -> Reporter {
    Reporter { sidecar: sidecar.into(), team: "team-a".into(), namespace: namespace.into() }
}

fn delta(group: &str, kind: &str, deployment: &str, successes: f64, failures: f64) -> v1::PosteriorDelta {
    v1::PosteriorDelta {
        group: group.into(),
        request_type: kind.into(),
        deployment_id: deployment.into(),
        successes,
        failures,
    }
}

fn report(seq: u64, deltas: Vec<v1::PosteriorDelta>) -> v1::FleetReport {
    v1::FleetReport { seq, deltas, ..Default::default() }
}

fn cell(fleet: &Fleet, deployment: &str) -> Option<v1::PosteriorCell> {
    fleet.current().posteriors.iter().find(|c| c.deployment_id == deployment).cloned()
}

#[test]
fn deltas_from_100_concurrent_reporters_sum_exactly_and_a_resend_counts_once() {
    let fleet = Arc::new(Fleet::new(Config::default()));
    let built = Arc::new(built());
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (fleet, built) = (fleet.clone(), built.clone());
            std::thread::spawn(move || {
                let me = who(&format!("sidecar-{i}"), "team-a");
                for seq in 1..=5 {
                    let r = report(seq, vec![delta("smart", "writing", "llm/d1", 0.75, 0.25)]);
                    fleet.report(&me, &r, Some(&built), Instant::now());
                    // A resend after a reconnect: the same sequence number again.
                    assert_eq!(fleet.report(&me, &r, Some(&built), Instant::now()), Merge::Duplicate);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    fleet.tick(Some(&built), 100, true, Instant::now());
    let c = cell(&fleet, "llm/d1").expect("merged");
    let prior = llmroute_router::adaptive::Posterior::prior(3);
    assert!((c.alpha - (prior.alpha + 375.0)).abs() < 1e-6, "{}", c.alpha);
    assert!((c.beta - (prior.beta + 125.0)).abs() < 1e-6, "{}", c.beta);
}

#[test]
fn made_up_groups_deployments_and_types_are_ignored() {
    let fleet = Fleet::new(Config::default());
    let built = built();
    let r = report(
        1,
        vec![
            delta("other-group", "writing", "llm/d1", 1.0, 0.0),
            delta("smart", "writing", "llm/nope", 1.0, 0.0),
            delta("smart", "poetry", "llm/d1", 1.0, 0.0),
            delta(&"x".repeat(10_000), "writing", "llm/d1", 1.0, 0.0),
        ],
    );
    fleet.report(&who("s", "team-a"), &r, Some(&built), Instant::now());
    // Nothing to learn about without a build.
    fleet.report(
        &who("s", "team-a"),
        &report(2, vec![delta("smart", "writing", "llm/d1", 1.0, 0.0)]),
        None,
        Instant::now(),
    );
    fleet.tick(Some(&built), 1, true, Instant::now());
    assert!(fleet.current().posteriors.is_empty(), "{:?}", fleet.current().posteriors);
}

#[test]
fn what_was_learned_survives_a_restart_and_a_half_written_file_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.json");
    let config = Config { state_file: Some(path.clone()), ..Config::default() };
    let built = built();
    let first = Fleet::new(config.clone());
    first.report(
        &who("s", "team-a"),
        &report(1, vec![delta("smart", "code_generation", "llm/d2", 30.0, 2.0)]),
        Some(&built),
        Instant::now(),
    );
    first.tick(Some(&built), 1, true, Instant::now());
    first.save();
    let before = cell(&first, "llm/d2").unwrap();
    let second = Fleet::new(config.clone());
    second.tick(Some(&built), 1, true, Instant::now());
    assert_eq!(cell(&second, "llm/d2"), Some(before));
    // A truncated file: the operator starts from the priors (and says so), never crashes.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let third = Fleet::new(config.clone());
    third.tick(Some(&built), 1, true, Instant::now());
    assert!(third.current().posteriors.is_empty());
    // ... and the unreadable file is moved aside, not overwritten by the next save.
    third.save();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("fleet.json.bad-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), text[..text.len() / 2]);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    );
}

#[cfg(unix)]
#[test]
fn a_state_path_that_is_a_symlink_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "VICTIM").unwrap();
    let path = dir.path().join("fleet.json");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let fleet = Fleet::new(Config { state_file: Some(path.clone()), ..Config::default() });
    let built = built();
    fleet.report(
        &who("s", "team-a"),
        &report(1, vec![delta("smart", "writing", "llm/d1", 1.0, 0.0)]),
        Some(&built),
        Instant::now(),
    );
    fleet.save();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "VICTIM");
    // The link (to something that is no state) was moved aside; the state is a file of its own.
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file());
    // A directory in the way: neither loaded nor saved, and nothing inside it touched.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    let fleet = Fleet::new(Config { state_file: Some(blocked.clone()), ..Config::default() });
    fleet.save();
    assert!(std::fs::read_dir(&blocked).unwrap().next().is_none());
}

#[test]
fn an_epoch_decays_the_merged_posteriors() {
    let config = Config { epoch: Duration::from_secs(60), decay: 0.5, ..Config::default() };
    let fleet = Fleet::new(config);
    let built = built();
    let t0 = Instant::now();
    fleet.report(
        &who("s", "team-a"),
        &report(1, vec![delta("smart", "writing", "llm/d1", 100.0, 0.0)]),
        Some(&built),
        t0,
    );
    fleet.tick(Some(&built), 1, true, t0);
    let before = cell(&fleet, "llm/d1").unwrap();
    fleet.tick(Some(&built), 1, true, t0 + Duration::from_secs(61));
    let after = cell(&fleet, "llm/d1").unwrap();
    assert!(after.alpha < before.alpha * 0.6 && after.alpha > 0.5, "{} -> {}", before.alpha, after.alpha);
}

#[test]
fn quota_goes_to_the_sidecars_with_demand_and_never_adds_up_past_the_limit() {
    let fleet = Fleet::new(Config::default());
    let built = built();
    let now = Instant::now();
    let usage =
        |rpm: f64| v1::Usage { deployment_id: "llm/d1".into(), requests_per_minute: rpm, tokens_per_minute: 0.0 };
    let hot = v1::FleetReport { seq: 1, usage: vec![usage(420.0)], ..Default::default() };
    let cold = v1::FleetReport { seq: 1, usage: vec![usage(60.0)], ..Default::default() };
    fleet.report(&who("hot", "team-a"), &hot, Some(&built), now);
    fleet.report(&who("cold", "team-a"), &cold, Some(&built), now);
    fleet.tick(Some(&built), 10, true, now);
    let state = fleet.current();
    let holds = |id: &str| built.compiled.holds("team-a", id);
    let share = |sidecar: &str| {
        let push = state.push_for(sidecar, holds, &mut Sent::default(), now).unwrap();
        push.assignments.into_iter().find(|a| a.deployment_id == "llm/d1").unwrap()
    };
    let (h, c, idle) = (share("hot"), share("cold"), share("idle"));
    assert!(h.granted && c.granted && !idle.granted);
    assert!(h.rpm >= 420.0 && c.rpm >= 60.0, "demand is covered: {} {}", h.rpm, c.rpm);
    assert!(h.rpm + c.rpm + idle.reserve_rpm * 8.0 <= 600.0 + 1e-6);
    assert_eq!(h.ttl_ms, 10_000);
    // Deployments without limits get no assignment.
    assert!(state.push_for("hot", holds, &mut Sent::default(), now).unwrap().assignments.len() == 1);
}

fn loads(seq: u64, figures: &[(&str, u64)]) -> v1::FleetReport {
    let loads = figures.iter().map(|(d, n)| v1::DeploymentLoad { deployment_id: (*d).into(), in_flight: *n }).collect();
    v1::FleetReport { seq, loads, ..Default::default() }
}

fn pushed_loads(fleet: &Fleet, built: &Built, sent: &mut Sent, now: Instant) -> Option<Vec<(String, u64)>> {
    let holds = |id: &str| built.compiled.holds("team-a", id);
    let push = fleet.current().push_for("s1", holds, sent, now)?;
    push.loads.map(|l| {
        assert_eq!(l.ttl_ms, LOAD_TTL.as_millis() as u64);
        l.entries.into_iter().map(|e| (e.deployment_id, e.in_flight)).collect()
    })
}

#[test]
fn in_flight_is_summed_across_sidecars_refreshed_and_forgotten_when_stale() {
    let fleet = Fleet::new(Config::default());
    let built = built();
    let t0 = Instant::now();
    fleet.report(&who("s1", "team-a"), &loads(1, &[("llm/d1", 3), ("llm/d2", 1)]), Some(&built), t0);
    fleet.report(&who("s2", "team-a"), &loads(1, &[("llm/d1", 4), ("made/up", 9)]), Some(&built), t0);
    // A late resend of an older report does not replace the newer figure.
    fleet.report(&who("s2", "team-a"), &loads(2, &[("llm/d1", 5)]), Some(&built), t0);
    fleet.report(&who("s2", "team-a"), &loads(1, &[("llm/d1", 4)]), Some(&built), t0);
    fleet.tick(Some(&built), 2, true, t0);
    let mut sent = Sent::default();
    let sums = pushed_loads(&fleet, &built, &mut sent, t0);
    assert_eq!(sums, Some(vec![("llm/d1".into(), 8), ("llm/d2".into(), 1)]), "made-up deployments are ignored");
    // Within a second nothing new is published; after it, the figures are resent though
    // unchanged (sidecars hold them for a while only).
    fleet.tick(Some(&built), 2, true, t0 + Duration::from_millis(500));
    assert_eq!(pushed_loads(&fleet, &built, &mut sent, t0 + Duration::from_millis(500)), None);
    fleet.tick(Some(&built), 2, true, t0 + Duration::from_millis(1_100));
    assert!(pushed_loads(&fleet, &built, &mut sent, t0 + Duration::from_millis(1_100)).is_some());
    // A sidecar gone quiet is forgotten, and the all-clear is sent once.
    let later = t0 + LOAD_TTL + Duration::from_secs(1);
    fleet.tick(Some(&built), 2, true, later);
    assert_eq!(pushed_loads(&fleet, &built, &mut sent, later), Some(vec![]));
    let even_later = later + Duration::from_secs(2);
    fleet.tick(Some(&built), 2, true, even_later);
    assert_eq!(pushed_loads(&fleet, &built, &mut sent, even_later), None);
}

fn cooling(deployment: &str, failures: u32, requests: u32, cooling: bool) -> v1::FleetReport {
    v1::FleetReport {
        seq: 1,
        cooldowns: vec![v1::CooldownReport {
            deployment_id: deployment.into(),
            failures,
            requests,
            cooling,
            remaining_ms: 30_000,
        }],
        ..Default::default()
    }
}

#[test]
fn a_cooldown_is_shared_only_when_two_namespaces_see_it_and_released_when_they_see_it_answer() {
    let fleet = Fleet::new(Config::default());
    let built = built();
    let now = Instant::now();
    fleet.report(&who("a1", "ns-a"), &cooling("llm/d1", 10, 10, true), Some(&built), now);
    fleet.report(&who("a2", "ns-a"), &cooling("llm/d1", 10, 10, true), Some(&built), now);
    fleet.tick(Some(&built), 3, true, now);
    assert!(fleet.current().cooldowns.is_empty(), "one namespace cannot cool it for the fleet");
    fleet.report(&who("b1", "ns-b"), &cooling("llm/d1", 8, 10, true), Some(&built), now);
    fleet.tick(Some(&built), 3, true, now);
    let state = fleet.current();
    assert!(state.cooldowns.contains_key("llm/d1"));
    let push = state.push_for("x", |id| built.compiled.holds("team-a", id), &mut Sent::default(), now).unwrap();
    assert_eq!(push.cooldowns.len(), 1);
    assert!(push.cooldowns[0].remaining_ms <= 30_000 && push.cooldowns[0].remaining_ms > 29_000);
    // Both namespaces see it answer again: released.
    let mut recovered = cooling("llm/d1", 0, 10, false);
    recovered.seq = 2;
    fleet.report(&who("a1", "ns-a"), &recovered, Some(&built), now);
    fleet.report(&who("b1", "ns-b"), &recovered, Some(&built), now);
    fleet.tick(Some(&built), 3, true, now);
    assert!(fleet.current().cooldowns.is_empty());
}

#[test]
fn sharing_never_cools_more_than_half_a_group_and_can_be_turned_off() {
    let built = built();
    let now = Instant::now();
    let run = |config: Config| {
        let fleet = Fleet::new(config);
        for d in ["llm/d1", "llm/d2", "llm/d3", "llm/d4"] {
            fleet.report(&who(&format!("a-{d}"), "ns-a"), &cooling(d, 10, 10, true), Some(&built), now);
            fleet.report(&who(&format!("b-{d}"), "ns-b"), &cooling(d, 10, 10, true), Some(&built), now);
        }
        fleet.tick(Some(&built), 8, true, now);
        fleet.current().cooldowns.len()
    };
    assert_eq!(run(Config::default()), 2);
    assert_eq!(run(Config { share_cooldowns: false, ..Config::default() }), 0);
}

#[test]
fn a_followers_cumulative_forward_counts_once_however_often_it_is_read() {
    let built = built();
    let (leader, follower) = (Fleet::new(Config::default()), Fleet::new(Config::default()));
    let now = Instant::now();
    let alpha = |fleet: &Fleet| described_alpha(fleet, "llm/d1");
    follower.report(
        &who("s", "team-a"),
        &report(1, vec![delta("smart", "writing", "llm/d1", 3.0, 0.0)]),
        Some(&built),
        now,
    );
    let forward = follower.forward(1, now);
    leader.absorb("follower", &forward, Some(&built), now);
    leader.absorb("follower", &forward, Some(&built), now);
    leader.absorb("follower", &follower.forward(1, now), Some(&built), now);
    let prior = llmroute_router::adaptive::Posterior::prior(3).alpha;
    assert_eq!(alpha(&leader), Some(prior + 3.0));
    follower.report(
        &who("s", "team-a"),
        &report(2, vec![delta("smart", "writing", "llm/d1", 2.0, 0.0)]),
        Some(&built),
        now,
    );
    leader.absorb("follower", &follower.forward(1, now), Some(&built), now);
    assert_eq!(alpha(&leader), Some(prior + 5.0), "only the difference is added");
    // Before the leader has a build nothing is taken, and nothing is lost.
    let late = Fleet::new(Config::default());
    late.absorb("follower", &follower.forward(1, now), None, now);
    late.absorb("follower", &follower.forward(1, now), Some(&built), now);
    assert_eq!(alpha(&late), Some(prior + 5.0));
    // A restarted follower (a new boot) starts its totals again: counted from zero.
    let restarted = Fleet::new(Config::default());
    restarted.report(
        &who("s2", "team-a"),
        &report(1, vec![delta("smart", "writing", "llm/d1", 1.0, 0.0)]),
        Some(&built),
        now,
    );
    leader.absorb("follower", &restarted.forward(1, now), Some(&built), now);
    assert_eq!(alpha(&leader), Some(prior + 6.0));
}

#[test]
fn a_new_leader_adds_what_the_old_one_had_not_absorbed_of_it() {
    let built = built();
    let (old, next) = (Fleet::new(Config::default()), Fleet::new(Config::default()));
    let now = Instant::now();
    next.report(
        &who("s", "team-a"),
        &report(1, vec![delta("smart", "writing", "llm/d1", 4.0, 0.0)]),
        Some(&built),
        now,
    );
    old.absorb("next", &next.forward(1, now), Some(&built), now);
    // More evidence on `next` that the old leader never read, then it dies.
    next.report(
        &who("s", "team-a"),
        &report(2, vec![delta("smart", "writing", "llm/d1", 1.0, 0.0)]),
        Some(&built),
        now,
    );
    next.forward(1, now);
    old.tick(Some(&built), 1, true, now);
    let persisted = old.persisted();
    next.restore("next", &persisted);
    let prior = llmroute_router::adaptive::Posterior::prior(3).alpha;
    assert_eq!(described_alpha(&next, "llm/d1"), Some(prior + 5.0));
}

fn described_alpha(fleet: &Fleet, deployment: &str) -> Option<f64> {
    let described = fleet.describe(Instant::now());
    described["cells"].as_array()?.iter().find(|c| c["deployment"] == deployment).and_then(|c| c["alpha"].as_f64())
}
