use proptest::prelude::*;

use super::*;

fn demands(values: &[f64]) -> Vec<Demand> {
    values.iter().enumerate().map(|(i, v)| Demand { sidecar: format!("s{i}"), per_minute: *v }).collect()
}

#[test]
fn grants_plus_reserve_fit_the_limit_and_the_hot_pod_gets_more() {
    let a = assign(600.0, &demands(&[700.0, 33.0, 33.0, 33.0]), 10);
    assert!(a.total() <= 600.0 + 1e-6, "{a:?}");
    assert!(a.rate_of("s0") > a.rate_of("s1"));
    // The limit binds: the small ones get exactly their demand (no idle headroom), the hot
    // one all the rest.
    assert!((a.rate_of("s1") - 33.0 * MIN_HEADROOM).abs() < 1e-6);
    assert!((a.rate_of("s0") - (600.0 - a.reserve - 99.0 * MIN_HEADROOM)).abs() < 1e-6);
    // With room to spare, every grant carries headroom over its demand.
    let roomy = assign(600.0, &demands(&[100.0, 10.0]), 2);
    assert!(roomy.rate_of("s1") >= 10.0 * HEADROOM && roomy.rate_of("s0") > roomy.rate_of("s1"));
    // Sidecars that reported nothing share the reserve.
    assert!((a.reserve_each - a.reserve / 6.0).abs() < 1e-9);
}

#[test]
fn at_ten_thousand_sidecars_most_hold_nothing() {
    let mut d = demands(&[300.0, 200.0]);
    d.push(Demand { sidecar: "idle".into(), per_minute: 0.0 });
    let a = assign(600.0, &d, 10_000);
    assert_eq!(a.grants.len(), 2);
    assert!(a.reserve_each < 0.01 && a.total() <= 600.0 + 1e-6);
}

#[test]
fn nonsense_demands_and_limits_are_harmless() {
    let a = assign(f64::NAN, &demands(&[f64::INFINITY, -5.0, f64::NAN]), 3);
    assert_eq!(a.total(), 0.0);
    let a = assign(600.0, &demands(&[f64::INFINITY, -5.0, f64::NAN]), 3);
    assert!(a.total() <= 600.0 + 1e-6 && a.grants.is_empty());
}

#[test]
fn a_bucket_admits_at_its_rate_and_falls_back_when_the_grant_expires() {
    let mut b = Bucket::reserve(0.0, 0.0);
    assert!(!b.admit(1.0, 0.0), "the reserve starts empty");
    b.grant(60.0, 10.0, 0.0, 0.0);
    assert!(b.admit(1.0, 0.0), "a grant starts with one second of its rate");
    assert!(!b.admit(1.0, 0.0));
    assert!(b.admit(1.0, 1.0));
    // After expiry the fallback (nothing) applies: at most the tokens earned until then.
    let admitted = (0..100).filter(|i| b.admit(1.0, 20.0 + f64::from(*i))).count();
    assert!(admitted <= 1, "{admitted}");
}

proptest! {
    #[test]
    fn assignments_never_exceed_the_limit(limit in 0.0f64..100_000.0, wants in proptest::collection::vec(0.0f64..50_000.0, 0..200), extra in 0usize..10_000) {
        let a = assign(limit, &demands(&wants), wants.len() + extra);
        prop_assert!(a.total() <= limit + 1e-6, "{} > {limit}", a.total());
        prop_assert!(a.grants.iter().all(|(_, g)| *g >= 0.0 && g.is_finite()));
        prop_assert!(a.reserve_each >= 0.0);
    }
}
