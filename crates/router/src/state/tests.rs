use super::*;

fn rule(allowed_fails: u32) -> Cooldown {
    Cooldown { allowed_fails, window_ms: 60_000, duration_ms: 30_000 }
}

#[test]
fn cooldown_starts_after_more_than_allowed_fails_in_the_window() {
    let s = DeploymentState::default();
    assert!(!s.record_failure(1_000, &rule(2)));
    assert!(!s.record_failure(2_000, &rule(2)));
    assert!(s.record_failure(3_000, &rule(2)));
    assert!(s.in_cooldown(3_001) && s.in_cooldown(32_999));
    assert!(!s.in_cooldown(33_000));
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let s = DeploymentState::default();
    assert!(!s.record_failure(0, &rule(1)));
    assert!(!s.record_failure(60_000, &rule(1)), "the first failure left the window");
    assert!(s.record_failure(61_000, &rule(1)));
}

#[test]
fn health_is_ignored_when_stale() {
    let s = DeploymentState::default();
    assert!(!s.unhealthy(10));
    s.set_health(HealthObservation { healthy: false, observed_at_ms: 1_000, interval_ms: 1_000 });
    assert!(s.unhealthy(3_999));
    assert!(!s.unhealthy(4_000), "older than 3 intervals");
}

#[test]
fn latency_ewma_and_in_flight() {
    let s = DeploymentState::default();
    assert_eq!(s.latency_ms(), None);
    s.record_success(10.0);
    s.record_success(20.0);
    assert!((s.latency_ms().unwrap() - 13.0).abs() < 0.01);
    s.start(0, 0);
    s.start(0, 0);
    s.finish();
    assert_eq!(s.in_flight(), 1);
    s.finish();
    s.finish();
    assert_eq!(s.in_flight(), 0, "never underflows");
}

#[test]
fn rate_limits() {
    let s = DeploymentState::default();
    let limits = Limits { rpm: 2, tpm: 100, max_concurrency: 0 };
    assert!(!s.over_limit(&limits, 0, 10));
    s.start(0, 10);
    s.finish();
    s.start(1, 10);
    s.finish();
    assert!(s.over_limit(&limits, 2, 10), "rpm reached");
    assert!(!s.over_limit(&limits, 125_000, 10), "window slid past");
    assert!(s.over_limit(&limits, 125_000, 101), "tpm");
    let conc = Limits { max_concurrency: 1, ..Default::default() };
    s.start(125_000, 0);
    assert!(s.over_limit(&conc, 125_000, 0));
}

#[test]
fn load_is_own_in_flight_plus_the_rest_of_the_fleet_while_fresh() {
    let s = DeploymentState::default();
    s.start(0, 1);
    s.start(0, 1);
    assert_eq!(s.report_in_flight(), Some(2), "busy: reported");
    // The fleet's sum includes this sidecar's reported 2: 7 are elsewhere.
    s.set_fleet_in_flight(9, 5_000);
    assert_eq!(s.load(4_999), 9);
    s.start(0, 1);
    assert_eq!(s.load(4_999), 10, "own requests since the report count at once");
    assert_eq!(s.load(5_000), 3, "a stale fleet figure is dropped");
    s.finish();
    s.finish();
    s.finish();
    assert_eq!(s.report_in_flight(), Some(0), "idle: reported once more");
    assert_eq!(s.report_in_flight(), None, "then not at all");
    s.set_fleet_in_flight(1, 10_000);
    assert_eq!(s.load(0), 1);
}
