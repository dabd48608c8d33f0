//! The operator's metrics (prefix `llmroute_`).

use std::collections::BTreeMap;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::registry::TeamCounts;

/// Every metric of the operator.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `llmroute_operator_builds_total`.
    pub builds: IntCounter,
    /// `llmroute_operator_build_seconds`.
    pub build_seconds: Histogram,
    /// `llmroute_config_rejected_total`.
    pub config_rejected: IntCounter,
    /// `llmroute_operator_acks_total{team}` / `nacks`.
    pub acks: IntCounterVec,
    /// `llmroute_operator_nacks_total{team}`.
    pub nacks: IntCounterVec,
    /// `llmroute_operator_propagation_seconds`: change detected -> ACK.
    pub propagation: Histogram,
    /// `llmroute_operator_status_writes_total`: status patches written (leader).
    pub status_writes: IntCounter,
    /// `llmroute_operator_streams_refused_total`: new streams over the admission rate.
    pub streams_refused: IntCounter,
    /// `llmroute_fleet_reports_total{result}`: sidecar fleet reports merged, duplicate (a
    /// resend) or refused (over one a second).
    pub fleet_reports: IntCounterVec,
    connected: IntGaugeVec,
    healthy: IntGaugeVec,
    adaptive_mean: GaugeVec,
    tokens: prometheus::IntCounterVec,
    cost: prometheus::CounterVec,
    adaptive_samples: GaugeVec,
    shared_cooldowns: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let per_team = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &["team"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str| -> Result<Histogram, prometheus::Error> {
            let buckets = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let connected = IntGaugeVec::new(
            Opts::new("llmroute_operator_connected_sidecars", "Connected sidecar streams by team."),
            &["team"],
        )?;
        registry.register(Box::new(connected.clone()))?;
        let healthy = IntGaugeVec::new(
            Opts::new(
                "llmroute_deployment_healthy",
                "Latest probe verdict per probed deployment: 1 healthy, 0 unhealthy.",
            ),
            &["deployment"],
        )?;
        registry.register(Box::new(healthy.clone()))?;
        let cell = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
            let g = GaugeVec::new(Opts::new(name, help), &["group", "request_type", "deployment"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let adaptive_mean = cell(
            "llmroute_adaptive_posterior_mean",
            "Merged adaptive posterior mean per (group, request type, deployment).",
        )?;
        let adaptive_samples = cell(
            "llmroute_adaptive_posterior_samples",
            "Evidence (alpha + beta) of the merged adaptive posterior per (group, request type, deployment).",
        )?;
        let shared_cooldowns =
            IntGauge::new("llmroute_fleet_shared_cooldowns", "Deployments the fleet currently cools together.")?;
        registry.register(Box::new(shared_cooldowns.clone()))?;
        let fleet_reports = IntCounterVec::new(
            Opts::new("llmroute_fleet_reports_total", "Sidecar fleet reports by result: merged, duplicate, refused."),
            &["result"],
        )?;
        registry.register(Box::new(fleet_reports.clone()))?;
        let tokens = IntCounterVec::new(
            Opts::new("llmroute_operator_tokens_total", "Tokens sidecars reported, by team, deployment and kind."),
            &["team", "deployment", "kind"],
        )?;
        registry.register(Box::new(tokens.clone()))?;
        let cost = prometheus::CounterVec::new(
            Opts::new(
                "llmroute_operator_cost_usd_total",
                "Cost sidecars reported (declared prices), by team and deployment.",
            ),
            &["team", "deployment"],
        )?;
        registry.register(Box::new(cost.clone()))?;
        Ok(Self {
            tokens,
            cost,
            fleet_reports,
            adaptive_mean,
            adaptive_samples,
            shared_cooldowns,
            builds: counter("llmroute_operator_builds_total", "Compiles of the resources into views.")?,
            build_seconds: histogram("llmroute_operator_build_seconds", "Duration of a build (compile + encode).")?,
            config_rejected: counter(
                "llmroute_config_rejected_total",
                "Routing configs rejected (the last good one kept serving).",
            )?,
            acks: per_team("llmroute_operator_acks_total", "Views acknowledged by sidecars.")?,
            nacks: per_team("llmroute_operator_nacks_total", "Views rejected by sidecars.")?,
            propagation: histogram(
                "llmroute_operator_propagation_seconds",
                "From a detected resource change to a sidecar's acknowledgement of the view holding it.",
            )?,
            status_writes: counter(
                "llmroute_operator_status_writes_total",
                "Status patches written by the leader (within --status-writes-per-second).",
            )?,
            streams_refused: counter(
                "llmroute_operator_streams_refused_total",
                "New streams refused because they came faster than --new-streams-per-second.",
            )?,
            connected,
            healthy,
            registry,
        })
    }

    /// Refreshes the fleet gauges from the published state.
    pub fn observe_fleet(&self, fleet: &crate::fleet::FleetState) {
        self.adaptive_mean.reset();
        self.adaptive_samples.reset();
        for c in fleet.posteriors.iter() {
            let labels = [c.group.as_str(), c.request_type.as_str(), c.deployment_id.as_str()];
            self.adaptive_mean.with_label_values(&labels).set(c.alpha / (c.alpha + c.beta));
            self.adaptive_samples.with_label_values(&labels).set(c.alpha + c.beta);
        }
        self.shared_cooldowns.set(i64::try_from(fleet.cooldowns.len()).unwrap_or(i64::MAX));
    }

    /// Brings the usage counters up to the totals sidecars reported.
    pub fn observe_usage(&self, usage: &[((String, String), llmroute_router::Usage)]) {
        for ((team, deployment), u) in usage {
            for (kind, n) in [("input", u.input), ("output", u.output), ("cached", u.cached)] {
                let c = self.tokens.with_label_values(&[team.as_str(), deployment.as_str(), kind]);
                c.inc_by(n.saturating_sub(c.get()));
            }
            let c = self.cost.with_label_values(&[team.as_str(), deployment.as_str()]);
            let more = u.cost_usd - c.get();
            if more > 0.0 {
                c.inc_by(more);
            }
        }
    }

    /// Drops the per-team series of a team with no stream left.
    pub fn forget_team(&self, team: &str) {
        let _ = self.acks.remove_label_values(&[team]);
        let _ = self.nacks.remove_label_values(&[team]);
    }

    /// Prometheus text, the gauges refreshed from `teams` and the probe table.
    pub fn render(&self, teams: &BTreeMap<String, TeamCounts>, health: &[llmroute_proto::v1::HealthEntry]) -> String {
        self.healthy.reset();
        for entry in health {
            self.healthy.with_label_values(&[entry.deployment_id.as_str()]).set(i64::from(entry.healthy));
        }
        self.connected.reset();
        for (team, counts) in teams {
            self.connected.with_label_values(&[team.as_str()]).set(i64::try_from(counts.connected).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
