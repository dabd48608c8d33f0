use std::sync::{Arc, Mutex};

use llmroute_router::adaptive::{FLOOR, Posterior};

use super::*;

fn cell(d: &str) -> Cell {
    ("smart".into(), "code_generation".into(), d.into())
}

fn report(sidecar: &str, team: &str, seq: u64, s: f64, f: f64) -> Report {
    Report {
        sidecar: sidecar.into(),
        team: team.into(),
        seq,
        deltas: vec![Delta { cell: cell("a"), successes: s, failures: f }],
    }
}

#[test]
fn deltas_from_100_concurrent_reporters_sum_exactly_and_resends_count_once() {
    let learning = Arc::new(Mutex::new(Learning::new(Caps { sidecar: 1e9, team: 1e12 })));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let learning = learning.clone();
            std::thread::spawn(move || {
                for seq in 1..=50u64 {
                    // Explicit feedback scores: fractions that floats would sum inexactly.
                    let r = report(&format!("pod-{i}"), &format!("team-{}", i % 7), seq, 0.7, 0.3);
                    assert_eq!(learning.lock().unwrap().merge(&r), Merge::Merged { capped: 0 });
                    // Every fifth report is resent after a "reconnect".
                    if seq % 5 == 0 {
                        assert_eq!(learning.lock().unwrap().merge(&r), Merge::Duplicate);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (s, f) = learning.lock().unwrap().pending_units(&cell("a"));
    assert_eq!((s, f), (100 * 50 * 700_000, 100 * 50 * 300_000));
}

#[test]
fn out_of_order_reports_merge_once_each() {
    let mut l = Learning::new(Caps { sidecar: 1e9, team: 1e9 });
    for seq in [3, 1, 2, 3, 5, 4, 1] {
        l.merge(&report("p", "t", seq, 1.0, 0.0));
    }
    assert_eq!(l.pending_units(&cell("a")).0, 5 * 1_000_000);
}

#[test]
fn one_sidecar_or_team_cannot_flood_a_cell_in_an_epoch() {
    let mut l = Learning::new(Caps { sidecar: 10.0, team: 25.0 });
    assert_eq!(l.merge(&report("p1", "evil", 1, 0.0, 1_000.0)), Merge::Merged { capped: 1 });
    assert_eq!(l.pending_units(&cell("a")).1, 10_000_000, "one sidecar: 10 observations");
    for (i, pod) in ["p2", "p3", "p4"].iter().enumerate() {
        l.merge(&report(pod, "evil", i as u64 + 1, 0.0, 1_000.0));
    }
    assert_eq!(l.pending_units(&cell("a")).1, 25_000_000, "one team: 25 observations");
    l.merge(&report("q1", "good", 1, 8.0, 0.0));
    assert_eq!(l.pending_units(&cell("a")).0, 8_000_000, "another team is unaffected");
    // The next epoch starts with fresh caps.
    l.end_epoch(1.0, 10, |_| Posterior::prior(3));
    assert_eq!(l.merge(&report("p1", "evil", 2, 0.0, 1_000.0)), Merge::Merged { capped: 1 });
}

#[test]
fn epochs_fold_decay_and_survive_a_restart() {
    let mut l = Learning::new(Caps::default());
    l.merge(&report("p", "t", 1, 30.0, 10.0));
    l.end_epoch(0.5, 10, |_| Posterior::prior(3));
    let p = l.posterior(&cell("a"), Posterior::prior(3));
    let prior = Posterior::prior(3);
    assert!((p.alpha - (FLOOR + (prior.alpha + 30.0 - FLOOR) * 0.5)).abs() < 1e-9, "{p:?}");
    // Persisted and restored: the same posteriors.
    let saved: Vec<(Cell, Posterior)> = l.posteriors().map(|(c, p)| (c.clone(), *p)).collect();
    let mut restarted = Learning::new(Caps::default());
    restarted.restore(saved.clone());
    assert_eq!(restarted.posteriors().map(|(c, p)| (c.clone(), *p)).collect::<Vec<_>>(), saved);
    // Garbage in a saved state is dropped or clamped, never kept below the floor.
    restarted.restore([
        (cell("b"), Posterior { alpha: f64::NAN, beta: 1.0 }),
        (cell("c"), Posterior { alpha: -3.0, beta: 0.0 }),
    ]);
    assert!(restarted.posteriors().all(|(_, p)| p.alpha > FLOOR && p.beta > FLOOR));
    assert_eq!(restarted.posteriors().count(), 2);
}

#[test]
fn silent_sidecars_are_forgotten() {
    let mut l = Learning::new(Caps::default());
    l.merge(&report("gone", "t", 7, 1.0, 0.0));
    for _ in 0..3 {
        l.end_epoch(1.0, 2, |_| Posterior::prior(3));
    }
    // Forgotten: its numbering starts over (a new pod with the same uid cannot exist; this
    // bounds memory to the sidecars that report).
    assert_eq!(l.merge(&report("gone", "t", 1, 1.0, 0.0)), Merge::Merged { capped: 0 });
}

#[test]
fn a_flood_over_epochs_stays_under_the_evidence_cap() {
    let mut l = Learning::new(Caps { sidecar: 1e9, team: 1e9 });
    for epoch in 0..20u64 {
        l.merge(&report("p", "t", epoch + 1, 5_000.0, 5_000.0));
        l.end_epoch(1.0, 10, |_| Posterior::prior(3));
    }
    let p = l.posterior(&cell("a"), Posterior::prior(3));
    assert!(p.evidence() <= llmroute_router::adaptive::MAX_EVIDENCE + 1e-9, "{p:?}");
    assert!((p.mean() - 0.5).abs() < 0.01, "the cap keeps the mean: {p:?}");
}
