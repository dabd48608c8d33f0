//! The operator's metrics (prefix `llmroute_`).

use std::collections::BTreeMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
    connected: IntGaugeVec,
    healthy: IntGaugeVec,
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
        Ok(Self {
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
