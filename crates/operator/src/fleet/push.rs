//! The fleet state as published, and each sidecar's part of it: the posteriors of the
//! deployments its view holds, its own quota shares, the shared cooldowns of its view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmroute_fleet::learning::Cell;
use llmroute_fleet::quota::Assignment;
use llmroute_proto::v1;
use llmroute_router::adaptive::Posterior;

/// A deployment's assignments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quota {
    /// Of `limits.rpm` (when set).
    pub rpm: Option<Assignment>,
    /// Of `limits.tpm` (when set).
    pub tpm: Option<Assignment>,
}

/// The published fleet state.
#[derive(Clone, Debug, Default)]
pub struct FleetState {
    /// Increases with every publication.
    pub generation: u64,
    /// Every merged cell.
    pub posteriors: Arc<Vec<v1::PosteriorCell>>,
    /// Per fleet-limited deployment.
    pub quotas: Arc<BTreeMap<String, Quota>>,
    /// Shared cooldowns and when they end.
    pub cooldowns: BTreeMap<String, Instant>,
    /// How long an assignment holds.
    pub ttl: Duration,
    /// Requests in flight per deployment across the sidecars reporting here.
    pub loads: Arc<BTreeMap<String, u64>>,
    /// How long a sidecar holds the in-flight figures.
    pub load_ttl: Duration,
}

/// What a subscriber was last sent, to send only what changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sent {
    posteriors: Vec<v1::PosteriorCell>,
    assignments: Vec<v1::QuotaAssignment>,
    cooldowns: Vec<(String, Instant)>,
    loads: Vec<(String, u64)>,
    generation: u64,
}

/// Wire cells of merged posteriors.
pub(super) fn cells(merged: &[(Cell, Posterior)]) -> Vec<v1::PosteriorCell> {
    merged
        .iter()
        .map(|((group, kind, deployment), p)| v1::PosteriorCell {
            group: group.clone(),
            request_type: kind.clone(),
            deployment_id: deployment.clone(),
            alpha: p.alpha,
            beta: p.beta,
        })
        .collect()
}

impl FleetState {
    /// The push for `sidecar`, whose view holds the deployments `holds` accepts; `None` when
    /// nothing changed since `sent` (assignments are resent at every rebalance: they expire).
    pub fn push_for(
        &self,
        sidecar: &str,
        holds: impl Fn(&str) -> bool,
        sent: &mut Sent,
        now: Instant,
    ) -> Option<v1::FleetPush> {
        if self.generation == sent.generation {
            return None;
        }
        let posteriors: Vec<v1::PosteriorCell> =
            self.posteriors.iter().filter(|c| holds(&c.deployment_id)).cloned().collect();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let assignments: Vec<v1::QuotaAssignment> = self
            .quotas
            .iter()
            .filter(|(d, _)| holds(d))
            .map(|(d, q)| {
                let rate = |a: &Option<Assignment>| {
                    a.as_ref().map_or((0.0, 0.0, false), |a| {
                        let granted = a.grants.iter().any(|(s, _)| s == sidecar);
                        (a.rate_of(sidecar), a.reserve_each, granted)
                    })
                };
                let (rpm, reserve_rpm, rpm_granted) = rate(&q.rpm);
                let (tpm, reserve_tpm, tpm_granted) = rate(&q.tpm);
                v1::QuotaAssignment {
                    deployment_id: d.clone(),
                    rpm,
                    tpm,
                    reserve_rpm,
                    reserve_tpm,
                    ttl_ms,
                    granted: rpm_granted || tpm_granted,
                }
            })
            .collect();
        let cooldowns: Vec<(String, Instant)> =
            self.cooldowns.iter().filter(|(d, _)| holds(d)).map(|(d, t)| (d.clone(), *t)).collect();
        let loads: Vec<(String, u64)> =
            self.loads.iter().filter(|(d, _)| holds(d)).map(|(d, n)| (d.clone(), *n)).collect();
        // Non-zero figures are resent (sidecars hold them for a while only); all-zero ones
        // once, to clear what the sidecar holds.
        let send_loads = loads != sent.loads || !loads.is_empty();
        sent.generation = self.generation;
        if posteriors == sent.posteriors && cooldowns == sent.cooldowns && assignments.is_empty() && !send_loads {
            return None;
        }
        let push = v1::FleetPush {
            posteriors: posteriors.clone(),
            assignments: assignments.clone(),
            cooldowns: cooldowns
                .iter()
                .map(|(d, until)| v1::SharedCooldown {
                    deployment_id: d.clone(),
                    remaining_ms: u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX),
                })
                .collect(),
            loads: send_loads.then(|| v1::FleetLoads {
                entries: loads
                    .iter()
                    .map(|(d, n)| v1::DeploymentLoad { deployment_id: d.clone(), in_flight: *n })
                    .collect(),
                ttl_ms: u64::try_from(self.load_ttl.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        *sent = Sent { posteriors, assignments, cooldowns, loads, generation: self.generation };
        Some(push)
    }
}
