//! Fleet-shared cooldown, decided by the operator after Envoy's outlier detection. A sidecar
//! that cools a deployment reports its evidence: failures out of requests in its window
//! (5xx, connection errors and timeouts only, never 4xx). The operator shares the cooldown
//! only when enough distinct sidecars report it, the failure share over a minimum volume is
//! above a threshold, and sharing would not cool more than `maxEjectionPercent` of the group:
//! one sidecar, or one namespace with broken egress, cannot cool a deployment for the fleet.

use std::collections::{BTreeMap, BTreeSet};

/// A sidecar's cooldown evidence for one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The reporting sidecar.
    pub sidecar: String,
    /// Its namespace (reports of one namespace count as one reporter).
    pub namespace: String,
    /// The deployment.
    pub deployment: String,
    /// Failures (5xx, connect errors, timeouts) in the window.
    pub failures: u32,
    /// Requests in the window.
    pub requests: u32,
}

/// The sharing rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    /// Distinct namespaces that must report (default 2).
    pub min_reporters: usize,
    /// Failure share above which a deployment is cooled (default 0.5).
    pub failure_share: f64,
    /// Requests the reports must add up to (default 10).
    pub min_requests: u32,
    /// Most of a group cooled by sharing at once, percent (default 50).
    pub max_ejection_percent: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self { min_reporters: 2, failure_share: 0.5, min_requests: 10, max_ejection_percent: 50 }
    }
}

/// The deployments to cool fleet-wide. `groups` maps each group to its deployments;
/// `cooling` holds those already shared as cooling. Worst failure share first.
pub fn verdicts(
    evidence: &[Evidence],
    groups: &BTreeMap<String, Vec<String>>,
    cooling: &BTreeSet<String>,
    rules: Rules,
) -> Vec<String> {
    let mut per_deployment: BTreeMap<&str, (BTreeSet<&str>, u64, u64)> = BTreeMap::new();
    for e in evidence {
        let entry = per_deployment.entry(e.deployment.as_str()).or_default();
        entry.0.insert(e.namespace.as_str());
        entry.1 += u64::from(e.failures.min(e.requests));
        entry.2 += u64::from(e.requests);
    }
    let mut candidates: Vec<(&str, f64)> = per_deployment
        .into_iter()
        .filter(|(d, (namespaces, _, requests))| {
            !cooling.contains(*d)
                && namespaces.len() >= rules.min_reporters
                && *requests >= u64::from(rules.min_requests)
        })
        .map(|(d, (_, failures, requests))| (d, failures as f64 / requests as f64))
        .filter(|(_, share)| *share > rules.failure_share)
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut cooled: BTreeSet<String> = cooling.clone();
    let mut out = Vec::new();
    for (deployment, _) in candidates {
        // Every group holding it must stay within maxEjectionPercent once it is cooled.
        let fits = groups.values().filter(|members| members.iter().any(|m| m == deployment)).all(|members| {
            let after = members.iter().filter(|m| cooled.contains(*m) || *m == deployment).count();
            after * 100 <= members.len() * rules.max_ejection_percent as usize
        });
        if fits {
            cooled.insert(deployment.to_owned());
            out.push(deployment.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(sidecar: &str, namespace: &str, deployment: &str, failures: u32, requests: u32) -> Evidence {
        Evidence {
            sidecar: sidecar.into(),
            namespace: namespace.into(),
            deployment: deployment.into(),
            failures,
            requests,
        }
    }

    fn groups(members: &[&str]) -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([("g".to_string(), members.iter().map(|s| s.to_string()).collect())])
    }

    #[test]
    fn two_namespaces_with_enough_failures_cool_it_for_the_fleet() {
        let e = [ev("a1", "team-a", "d1", 8, 10), ev("b1", "team-b", "d1", 6, 8)];
        assert_eq!(verdicts(&e, &groups(&["d1", "d2"]), &BTreeSet::new(), Rules::default()), ["d1"]);
    }

    #[test]
    fn one_sidecar_or_one_namespace_cannot_cool_it() {
        let one = [ev("a1", "team-a", "d1", 50, 50)];
        assert!(verdicts(&one, &groups(&["d1", "d2"]), &BTreeSet::new(), Rules::default()).is_empty());
        let one_namespace = [ev("a1", "team-a", "d1", 50, 50), ev("a2", "team-a", "d1", 50, 50)];
        assert!(verdicts(&one_namespace, &groups(&["d1", "d2"]), &BTreeSet::new(), Rules::default()).is_empty());
    }

    #[test]
    fn low_volume_or_low_failure_share_is_not_enough() {
        let few = [ev("a1", "team-a", "d1", 2, 2), ev("b1", "team-b", "d1", 2, 2)];
        assert!(verdicts(&few, &groups(&["d1", "d2"]), &BTreeSet::new(), Rules::default()).is_empty());
        let healthy = [ev("a1", "team-a", "d1", 2, 20), ev("b1", "team-b", "d1", 3, 20)];
        assert!(verdicts(&healthy, &groups(&["d1", "d2"]), &BTreeSet::new(), Rules::default()).is_empty());
        // Failures above requests (a lying report) count as at most the requests.
        let lying = [ev("a1", "team-a", "d1", 1_000, 10), ev("b1", "team-b", "d1", 0, 10)];
        assert!(verdicts(&lying, &groups(&["d1", "d2"]), &BTreeSet::new(), Rules::default()).is_empty());
    }

    #[test]
    fn sharing_never_cools_more_than_max_ejection_percent_of_a_group() {
        let e = [
            ev("a1", "team-a", "d1", 10, 10),
            ev("b1", "team-b", "d1", 10, 10),
            ev("a1", "team-a", "d2", 9, 10),
            ev("b1", "team-b", "d2", 9, 10),
            ev("a1", "team-a", "d3", 8, 10),
            ev("b1", "team-b", "d3", 8, 10),
        ];
        let g = groups(&["d1", "d2", "d3", "d4"]);
        assert_eq!(verdicts(&e, &g, &BTreeSet::new(), Rules::default()), ["d1", "d2"], "worst first, half at most");
        let already = BTreeSet::from(["d1".to_string()]);
        assert_eq!(verdicts(&e, &g, &already, Rules::default()), ["d2"]);
    }
}
