//! Prometheus metrics; names and labels are part of the contract (DESIGN §5).

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::routes::Routes;

/// Every metric of the sidecar.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    /// `llmroute_requests_total{model_group,deployment,code}`.
    pub requests: IntCounterVec,
    /// `llmroute_upstream_attempts_total{deployment,outcome}`.
    pub attempts: IntCounterVec,
    /// `llmroute_failovers_total{kind}`.
    pub failovers: IntCounterVec,
    /// `llmroute_upstream_latency_seconds{deployment}`.
    pub latency: HistogramVec,
    /// `llmroute_config_rejected_total`: routing configs rejected on reload.
    pub config_rejected: IntCounter,
    /// `llmroute_snapshot_rejected_total`: snapshots that could not be applied.
    pub snapshot_rejected: IntCounter,
    /// `llmroute_retry_budget_exhausted_total`: requests failed fast by the retry budget.
    pub retry_budget_exhausted: IntCounter,
    /// `llmroute_adaptive_memory_evictions_total{memory}`: answers (awaiting feedback) and
    /// session owners forgotten early to stay within their bounds.
    pub memory_evictions: IntCounterVec,
    /// `llmroute_feedback_total{result}`: `POST /v1/feedback` by result (accepted, unknown,
    /// invalid).
    pub feedback: IntCounterVec,
    /// `llmroute_tokens_total{model_group,deployment,kind}`: usage read from answers (kind:
    /// input, output, cached).
    pub tokens: IntCounterVec,
    /// `llmroute_cost_usd_total{model_group,deployment}`: usage priced by the deployment's
    /// declared cost.
    pub cost: CounterVec,
    /// `llmroute_time_to_first_token_seconds{deployment}`: streams, request start to the
    /// first body bytes of the answer.
    pub ttft: HistogramVec,
    /// `llmroute_access_log_dropped_total`: access log lines dropped by a full queue.
    pub access_log_dropped: IntCounter,
    /// `llmroute_trace_spans_dropped_total`: spans lost (full queue, failed export, rejected).
    pub trace_spans_dropped: IntCounter,
    healthy: IntGaugeVec,
    cooldown: IntGaugeVec,
    in_flight: IntGaugeVec,
    snapshot: IntGaugeVec,
}

/// The hot-path metric handles of one deployment, resolved once per snapshot.
#[derive(Debug)]
pub(crate) struct DeploymentMetrics {
    /// `llmroute_upstream_attempts_total{deployment, outcome="success"}`.
    pub success: IntCounter,
    /// `llmroute_upstream_latency_seconds{deployment}`.
    pub latency: Histogram,
    /// `llmroute_time_to_first_token_seconds{deployment}`.
    pub ttft: Histogram,
}

impl Metrics {
    /// Handles of deployment `id`.
    pub(crate) fn for_deployment(&self, id: &str) -> DeploymentMetrics {
        DeploymentMetrics {
            success: self.attempts.with_label_values(&[id, "success"]),
            latency: self.latency.with_label_values(&[id]),
            ttft: self.ttft.with_label_values(&[id]),
        }
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let requests = counter(
            "llmroute_requests_total",
            "Client requests by model group, serving deployment and status code.",
            &["model_group", "deployment", "code"],
        )?;
        let attempts = counter(
            "llmroute_upstream_attempts_total",
            "Upstream attempts by deployment and outcome.",
            &["deployment", "outcome"],
        )?;
        let failovers = counter(
            "llmroute_failovers_total",
            "Attempts after the first, by kind (in_group, order, fallback, context_window).",
            &["kind"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("llmroute_upstream_latency_seconds", "Time to the upstream's response headers.")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
            &["deployment"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        let healthy = gauge(
            "llmroute_deployment_healthy",
            "1 healthy, 0 unhealthy by the latest fresh probe; absent when not probed.",
            &["deployment"],
        )?;
        let cooldown = gauge("llmroute_deployment_cooldown", "1 while the deployment cools down.", &["deployment"])?;
        let snapshot = gauge("llmroute_snapshot_info", "The applied snapshot version (value 1).", &["version"])?;
        let in_flight = gauge(
            "llmroute_deployment_in_flight",
            "Upstream attempts in flight per deployment (until the answer is relayed).",
            &["deployment"],
        )?;
        let single = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let config_rejected = single(
            "llmroute_config_rejected_total",
            "Routing configs rejected on reload (the last good one kept serving).",
        )?;
        let snapshot_rejected = single(
            "llmroute_snapshot_rejected_total",
            "Snapshots that could not be applied (the previous one kept serving).",
        )?;
        let retry_budget_exhausted = single(
            "llmroute_retry_budget_exhausted_total",
            "Requests that failed fast because their group's retry budget was spent.",
        )?;
        let memory_evictions = counter(
            "llmroute_adaptive_memory_evictions_total",
            "Remembered answers (for feedback) and session owners evicted early to stay within their bounds.",
            &["memory"],
        )?;
        let feedback = counter("llmroute_feedback_total", "POST /v1/feedback requests by result.", &["result"])?;
        let tokens = counter(
            "llmroute_tokens_total",
            "Tokens read from answers' usage by model group, deployment and kind (input, output, cached).",
            &["model_group", "deployment", "kind"],
        )?;
        let cost = CounterVec::new(
            Opts::new(
                "llmroute_cost_usd_total",
                "Answers' usage priced by the deployment's declared cost, US dollars.",
            ),
            &["model_group", "deployment"],
        )?;
        registry.register(Box::new(cost.clone()))?;
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "llmroute_time_to_first_token_seconds",
                "Streams: from the request's start to the answer's first body bytes.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            &["deployment"],
        )?;
        registry.register(Box::new(ttft.clone()))?;
        let access_log_dropped = single(
            "llmroute_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind (its queue was full).",
        )?;
        let trace_spans_dropped = single(
            "llmroute_trace_spans_dropped_total",
            "Trace spans lost: the export queue was full, an export failed or timed out, or the collector rejected them.",
        )?;
        Ok(Self {
            trace_spans_dropped,
            access_log_dropped,
            memory_evictions,
            feedback,
            tokens,
            cost,
            ttft,
            registry,
            requests,
            attempts,
            failovers,
            latency,
            config_rejected,
            snapshot_rejected,
            retry_budget_exhausted,
            healthy,
            cooldown,
            in_flight,
            snapshot,
        })
    }

    /// Drops the series of deployments that are no longer in `routes`: label sets live and die
    /// with the snapshot, so churn cannot grow the registry.
    pub fn prune(&self, routes: &Routes) {
        let live: std::collections::HashSet<&str> = routes.table.deployments().iter().map(|d| d.id.as_str()).collect();
        prune_vec(&self.requests, &live);
        prune_vec(&self.attempts, &live);
        prune_vec(&self.latency, &live);
        prune_vec(&self.tokens, &live);
        prune_vec(&self.cost, &live);
        prune_vec(&self.ttft, &live);
    }

    /// Removes every series of the deployments in `gone`.
    fn forget(&self, gone: &std::collections::HashSet<&str>) {
        prune_where(&self.requests, |d| gone.contains(d));
        prune_where(&self.attempts, |d| gone.contains(d));
        prune_where(&self.latency, |d| gone.contains(d));
        prune_where(&self.tokens, |d| gone.contains(d));
        prune_where(&self.cost, |d| gone.contains(d));
        prune_where(&self.ttft, |d| gone.contains(d));
    }

    /// Prometheus text format, gauges refreshed from `routing` at `now_ms`; series of
    /// deployments idle for 15 minutes are forgotten first.
    pub fn render(&self, routes: Option<&Routes>, now_ms: u64) -> String {
        self.healthy.reset();
        self.cooldown.reset();
        self.in_flight.reset();
        self.snapshot.reset();
        if let Some(r) = routes {
            let expired: std::collections::HashSet<&str> = r.expire_idle(now_ms, IDLE_MS).into_iter().collect();
            if !expired.is_empty() {
                self.forget(&expired);
            }
            self.snapshot.with_label_values(&[r.snapshot.version.as_str()]).set(1);
            for (i, d) in r.table.deployments().iter().enumerate() {
                let s = r.state.get(i as u32);
                let id = d.id.as_str();
                // Live gauges of deployments this sidecar uses, or that are cooling or busy:
                // a view of thousands does not become thousands of series per pod.
                let cooling = s.in_cooldown(now_ms);
                if r.has_served(i as u32) || cooling || s.in_flight() > 0 {
                    self.cooldown.with_label_values(&[id]).set(i64::from(cooling));
                    self.in_flight.with_label_values(&[id]).set(i64::from(s.in_flight()));
                }
                if let Some(h) = s.health().filter(|h| h.is_fresh(now_ms)) {
                    self.healthy.with_label_values(&[id]).set(i64::from(h.healthy));
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Per-deployment series of a deployment that has not served for this long are forgotten.
const IDLE_MS: u64 = 15 * 60 * 1000;

/// Removes every series of `vec` whose `deployment` label `gone` accepts ("" is kept).
fn prune_where<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    gone: impl Fn(&str) -> bool,
) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> =
                metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            if labels.get("deployment").is_some_and(|d| !d.is_empty() && gone(d)) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// Removes every series of `vec` whose `deployment` label names no live deployment ("" is
/// kept: requests that reached no deployment).
fn prune_vec<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    live: &std::collections::HashSet<&str>,
) {
    prune_where(vec, |d| !live.contains(d));
}
