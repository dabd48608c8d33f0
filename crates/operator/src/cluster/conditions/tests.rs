use llmroute_snapshot::{ObjectKey, Reason};

use super::*;

fn diag(kind: Kind, reason: Reason) -> Diagnostic {
    Diagnostic {
        kind,
        key: ObjectKey::new("team-a", "gpt"),
        generation: Some(3),
        team: Some("team-a".into()),
        reason,
        message: "m".into(),
        degraded: None,
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

fn status(d: &Diagnostic, acks: Acks, current: Option<&ResourceStatus>, now: i64) -> ResourceStatus {
    desired(&Inputs {
        diagnostic: d,
        snapshot_version: "v1",
        acks,
        health: None,
        ready_threshold: 0.99,
        current,
        now: at(now),
    })
}

fn cond<'a>(s: &'a ResourceStatus, kind: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == kind).unwrap()
}

#[test]
fn ready_needs_the_threshold_share_of_connected_sidecars() {
    let d = diag(Kind::TeamModel, Reason::Accepted);
    let s = status(&d, Acks { connected: 100, acknowledged: 98 }, None, 10);
    assert_eq!((cond(&s, "Ready").status.as_str(), cond(&s, "Ready").reason.as_str()), ("False", "Propagating"));
    let s = status(&d, Acks { connected: 100, acknowledged: 99 }, None, 10);
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(cond(&s, "Accepted").observed_generation, Some(3));
    assert!(s.conditions.iter().all(|c| c.type_ != "Healthy"), "TeamModels have no Healthy");
    let s = status(&d, Acks::default(), None, 10);
    assert_eq!(cond(&s, "Ready").reason, "NoSidecars");
}

#[test]
fn transition_time_moves_only_when_the_status_flips() {
    let d = diag(Kind::ModelDeployment, Reason::Accepted);
    let first = status(&d, Acks { connected: 2, acknowledged: 2 }, None, 10);
    let same = status(&d, Acks { connected: 2, acknowledged: 2 }, Some(&first), 20);
    assert_eq!(first, same, "nothing changed: identical status, so no write");
    let rejected = diag(Kind::ModelDeployment, Reason::SecretNotFound);
    let flipped = status(&rejected, Acks { connected: 2, acknowledged: 2 }, Some(&first), 30);
    assert_eq!(cond(&flipped, "Accepted").last_transition_time, Time(at(30)));
    assert_eq!(cond(&flipped, "Healthy").last_transition_time, Time(at(10)), "Healthy stayed Unknown");
    assert_eq!(flipped.snapshot_version, None, "a rejected object is in no snapshot");
}

#[test]
fn sidecar_counts_change_only_meaningfully() {
    let d = diag(Kind::TeamModel, Reason::Accepted);
    let first = status(&d, Acks { connected: 1000, acknowledged: 1000 }, None, 1);
    // One more pod connected and acknowledged: not worth a write.
    let next = status(&d, Acks { connected: 1001, acknowledged: 1001 }, Some(&first), 2);
    assert_eq!(next, first);
    // A tenth of the fleet gone: written.
    let next = status(&d, Acks { connected: 900, acknowledged: 900 }, Some(&first), 3);
    assert_eq!(next.sidecars, Some(SidecarCounts { acknowledged: 900, connected: 900 }));
    // Fully acknowledged -> not: written even for one sidecar.
    assert!(meaningful(
        &SidecarCounts { acknowledged: 1000, connected: 1000 },
        &SidecarCounts { acknowledged: 999, connected: 1000 }
    ));
}

#[test]
fn degraded_and_health_conditions() {
    let mut d = diag(Kind::ModelDeployment, Reason::Accepted);
    d.degraded = Some("Secret team-a/keys was deleted".into());
    let entry = v1::HealthEntry { healthy: false, message: "HTTP 500".into(), ..Default::default() };
    let s = desired(&Inputs {
        diagnostic: &d,
        snapshot_version: "v1",
        acks: Acks::default(),
        health: Some(&entry),
        ready_threshold: 0.99,
        current: None,
        now: at(1),
    });
    assert_eq!(cond(&s, "Degraded").status, "True");
    assert_eq!(cond(&s, "Healthy").reason, "ProbeFailed");
    assert_eq!(cond(&s, "Healthy").message, "HTTP 500");
}
