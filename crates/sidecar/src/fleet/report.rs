//! What a sidecar tells the operator, at most once a second: adaptive evidence not reported
//! yet, demand on fleet-limited deployments, and cooldown evidence (its own cooldowns and,
//! for a while after, whether the deployment answers again). Every report is numbered and
//! kept until the operator acknowledges it, then resent after a reconnect: the operator
//! merges a number once, so nothing is lost and nothing counts twice.

use std::collections::{HashMap, VecDeque};

use llmroute_proto::v1;

use crate::routes::Routes;

/// Reports kept for a resend, at most (a minute of reports); older ones are dropped.
const MAX_UNACKED: usize = 60;
/// How long after its own cooldown a sidecar keeps reporting whether the deployment answers.
const RECOVERY_REPORT_MS: u64 = 30_000;

/// Reports made and not yet acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    next_seq: u64,
    unacked: VecDeque<v1::FleetReport>,
    /// Deployments this sidecar cooled, and when its cooldown ended (0 while it runs).
    cooled: HashMap<String, u64>,
    /// Reports dropped unacknowledged because the outbox was full.
    pub dropped: u64,
}

impl Outbox {
    /// Collects a report from `routes` over the last `interval_ms`; `None` when there is
    /// nothing to say. The report is kept until acknowledged.
    pub fn collect(&mut self, routes: &Routes, interval_ms: u64, now_ms: u64) -> Option<v1::FleetReport> {
        let per_minute = 60_000.0 / interval_ms.max(1) as f64;
        let mut report = v1::FleetReport::default();
        // Prefix affinity bounds each deployment's share of the fleet's load: the fleet needs
        // to know what is in flight on them.
        let prefix: std::collections::HashSet<llmroute_router::DeploymentIdx> = routes
            .table
            .routes()
            .iter()
            .filter(|r| r.policy.prefix_affinity.is_some())
            .flat_map(|r| r.deployments.iter().copied())
            .collect();
        for (i, d) in routes.table.deployments().iter().enumerate() {
            let state = routes.state.get(i as llmroute_router::DeploymentIdx);
            for (group, kind, successes, failures) in state.take_adaptive_deltas() {
                report.deltas.push(v1::PosteriorDelta {
                    group,
                    request_type: kind.as_str().to_owned(),
                    deployment_id: d.id.clone(),
                    successes,
                    failures,
                });
            }
            let usage = state.take_usage();
            if usage != llmroute_router::Usage::default() {
                report.tokens.push(v1::TokenUsage {
                    deployment_id: d.id.clone(),
                    input_tokens: usage.input,
                    output_tokens: usage.output,
                    cached_tokens: usage.cached,
                    cost_usd: usage.cost_usd,
                });
            }
            let (requests, tokens) = state.take_demand();
            if d.limits.rpm > 0 || d.limits.tpm > 0 {
                report.usage.push(v1::Usage {
                    deployment_id: d.id.clone(),
                    requests_per_minute: requests as f64 * per_minute,
                    tokens_per_minute: tokens as f64 * per_minute,
                });
            }
            if prefix.contains(&(i as llmroute_router::DeploymentIdx))
                && let Some(in_flight) = state.report_in_flight()
            {
                report.loads.push(v1::DeploymentLoad { deployment_id: d.id.clone(), in_flight });
            }
            let own_until = state.local_cooldown_until_ms();
            let cooling = own_until > now_ms;
            if cooling {
                self.cooled.insert(d.id.clone(), 0);
            } else if let Some(ended) = self.cooled.get_mut(&d.id)
                && *ended == 0
            {
                *ended = now_ms;
            }
            if let Some(ended) = self.cooled.get(&d.id).copied() {
                let (failures, requests) = state.recent_evidence(now_ms);
                report.cooldowns.push(v1::CooldownReport {
                    deployment_id: d.id.clone(),
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    requests: u32::try_from(requests).unwrap_or(u32::MAX),
                    cooling,
                    remaining_ms: own_until.saturating_sub(now_ms),
                });
                if !cooling && now_ms.saturating_sub(ended) >= RECOVERY_REPORT_MS {
                    self.cooled.remove(&d.id);
                }
            }
        }
        // Deployments gone from the view are not reported on any more.
        self.cooled.retain(|id, _| routes.table.deployment_index(id).is_some());
        if report.deltas.is_empty()
            && report.usage.is_empty()
            && report.cooldowns.is_empty()
            && report.tokens.is_empty()
            && report.loads.is_empty()
        {
            return None;
        }
        self.next_seq += 1;
        report.seq = self.next_seq;
        if self.unacked.len() >= MAX_UNACKED {
            self.unacked.pop_front();
            self.dropped += 1;
        }
        self.unacked.push_back(report.clone());
        Some(report)
    }

    /// The operator merged report `seq`.
    pub fn acked(&mut self, seq: u64) {
        self.unacked.retain(|r| r.seq != seq);
    }

    /// Reports to send again on a new stream, oldest first.
    pub fn unacked(&self) -> Vec<v1::FleetReport> {
        self.unacked.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> std::sync::Arc<Routes> {
        let deployment = |id: &str| v1::Deployment {
            id: id.into(),
            model_name: id.into(),
            provider: v1::Provider::Openai as i32,
            base_url: "http://127.0.0.1:9/v1".into(),
            weight: 1,
            order: 1,
            limits: Some(v1::Limits::default()),
            spec_hash: format!("h-{id}"),
            ..Default::default()
        };
        let route = |name: &str, affinity: Vec<i32>| v1::Route {
            public_name: name.into(),
            kind: v1::RouteKind::GlobalDeployment as i32,
            deployment_ids: vec![format!("llm/{name}")],
            policy: Some(v1::RoutingPolicy { max_attempts: 1, affinity, ..Default::default() }),
            ..Default::default()
        };
        let snapshot = v1::Snapshot {
            version: "v1".into(),
            team: "t".into(),
            deployments: vec![deployment("llm/a"), deployment("llm/b")],
            routes: vec![route("a", vec![v1::Affinity::Prefix as i32]), route("b", vec![])],
            ..Default::default()
        };
        let handle = crate::routes::RoutesHandle::default();
        handle.apply(snapshot).unwrap();
        handle.load().unwrap()
    }

    #[test]
    fn in_flight_is_reported_for_prefix_affinity_deployments_only_and_once_more_when_idle() {
        let routes = routes();
        let (a, b) = (routes.table.deployment_index("llm/a").unwrap(), routes.table.deployment_index("llm/b").unwrap());
        routes.state.get(a).start(0, 1);
        routes.state.get(b).start(0, 1);
        let mut outbox = Outbox::default();
        let report = outbox.collect(&routes, 1_000, 1_000).expect("a report");
        assert_eq!(report.loads, vec![v1::DeploymentLoad { deployment_id: "llm/a".into(), in_flight: 1 }]);
        routes.state.get(a).finish();
        let report = outbox.collect(&routes, 1_000, 2_000).expect("the idle figure");
        assert_eq!(report.loads, vec![v1::DeploymentLoad { deployment_id: "llm/a".into(), in_flight: 0 }]);
        assert!(outbox.collect(&routes, 1_000, 3_000).is_none(), "nothing more to say");
    }
}
