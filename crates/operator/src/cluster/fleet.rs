//! What replicas tell each other. Every replica serves its own streams, but only the leader
//! writes status: so each follower reports its acknowledgements in a ConfigMap of its own
//! (Istio's distribution reports), fenced by the lease term, and the leader merges them with
//! its own. The other way, the leader's probe results go into one ConfigMap that every
//! follower serves to its sidecars.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::TeamCounts;

/// Label of the fleet ConfigMaps (`report` or `health`).
pub const FLEET_LABEL: &str = "llmroute.dev/fleet";
/// The ConfigMap key holding a report or the health table.
pub const DATA_KEY: &str = "fleet.json";
/// A report older than this is ignored (its replica is gone or stuck), milliseconds.
pub const REPORT_TTL_MS: u64 = 15_000;

/// One team's counts in a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamReport {
    /// Streams connected to the replica.
    pub connected: u64,
    /// Acknowledgements by version.
    pub acked: BTreeMap<String, u64>,
}

/// A follower's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The reporting replica.
    pub replica: String,
    /// The lease term it was written under (`spec.leaseTransitions`).
    pub term: i32,
    /// When it was written (unix ms).
    pub at_ms: u64,
    /// Counts per team.
    pub teams: BTreeMap<String, TeamReport>,
}

impl Report {
    /// A report of `teams`.
    pub fn of(replica: &str, term: i32, at_ms: u64, teams: &BTreeMap<String, TeamCounts>) -> Self {
        let teams = teams
            .iter()
            .map(|(team, c)| (team.clone(), TeamReport { connected: c.connected, acked: c.acked.clone() }))
            .collect();
        Self { replica: replica.to_owned(), term, at_ms, teams }
    }
}

/// The leader's own counts plus every report written under the current `term`, fresh at `now`
/// and not its own.
pub fn merge(
    own: &BTreeMap<String, TeamCounts>,
    reports: &[Report],
    me: &str,
    term: i32,
    now_ms: u64,
) -> BTreeMap<String, TeamCounts> {
    let mut merged = own.clone();
    for report in reports {
        if report.replica == me || report.term != term || now_ms.saturating_sub(report.at_ms) > REPORT_TTL_MS {
            continue;
        }
        for (team, counts) in &report.teams {
            let into = merged.entry(team.clone()).or_default();
            into.connected += counts.connected;
            for (version, n) in &counts.acked {
                *into.acked.entry(version.clone()).or_default() += n;
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(connected: u64, version: &str, acked: u64) -> BTreeMap<String, TeamCounts> {
        let mut c = TeamCounts { connected, ..Default::default() };
        c.acked.insert(version.into(), acked);
        BTreeMap::from([("team-a".to_string(), c)])
    }

    #[test]
    fn reports_of_the_current_term_add_up_and_stale_or_fenced_ones_do_not() {
        let own = counts(3, "v2", 3);
        let fresh = Report::of("b", 7, 100_000, &counts(5, "v2", 4));
        let old_term = Report::of("c", 6, 100_000, &counts(100, "v2", 100));
        let stale = Report::of("d", 7, 100_000 - REPORT_TTL_MS - 1, &counts(100, "v2", 100));
        let mine = Report::of("a", 7, 100_000, &counts(100, "v2", 100));
        let merged = merge(&own, &[fresh, old_term, stale, mine], "a", 7, 100_000);
        let t = &merged["team-a"];
        assert_eq!((t.connected, t.acked["v2"]), (8, 7));
    }

    #[test]
    fn a_report_survives_a_json_round_trip() {
        let r = Report::of("b", 1, 5, &counts(2, "v", 1));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
    }
}
