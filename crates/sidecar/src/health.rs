//! Active health probes (standalone mode): one task per probed deployment, verdicts by
//! consecutive-result thresholds, pushed as a full health table into the routing state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use llmroute_proto::v1;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::app::now_ms;
use crate::proxy::upstream::{self, UpstreamClient};
use crate::routing::RoutingHandle;

type Key = (String, String);

/// Runs the probes of the deployments in the current snapshot.
pub struct HealthProber {
    client: UpstreamClient,
    routing: Arc<RoutingHandle>,
    tasks: Mutex<HashMap<Key, JoinHandle<()>>>,
    table: Arc<Mutex<HashMap<Key, v1::HealthEntry>>>,
}

impl HealthProber {
    /// A prober feeding `routing`.
    pub fn new(client: UpstreamClient, routing: Arc<RoutingHandle>) -> Self {
        Self { client, routing, tasks: Mutex::default(), table: Arc::default() }
    }

    /// Starts probes for new deployments and stops those of removed or changed ones.
    pub fn reconcile(&self, deployments: &[v1::Deployment]) {
        let wanted: HashMap<Key, &v1::Deployment> = deployments
            .iter()
            .filter(|d| d.health_check.is_some_and(|h| h.mode != v1::HealthCheckMode::None as i32))
            .map(|d| ((d.id.clone(), d.spec_hash.clone()), d))
            .collect();
        let Ok(mut tasks) = self.tasks.lock() else { return };
        tasks.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        if let Ok(mut table) = self.table.lock() {
            table.retain(|key, _| wanted.contains_key(key));
        }
        for (key, d) in wanted {
            tasks.entry(key).or_insert_with(|| {
                tokio::spawn(probe_loop(self.client.clone(), d.clone(), self.routing.clone(), self.table.clone()))
            });
        }
    }
}

async fn probe_loop(
    client: UpstreamClient,
    d: v1::Deployment,
    routing: Arc<RoutingHandle>,
    table: Arc<Mutex<HashMap<Key, v1::HealthEntry>>>,
) {
    let check = d.health_check.unwrap_or_default();
    let interval = Duration::from_secs(u64::from(check.interval_seconds.max(1)));
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    let (mut successes, mut failures, mut verdict) = (0u32, 0u32, None::<bool>);
    loop {
        let (ok, message) = probe(&client, &d, check.mode, timeout).await;
        if ok {
            (successes, failures) = (successes + 1, 0);
        } else {
            (successes, failures) = (0, failures + 1);
        }
        if successes >= check.healthy_threshold.max(1) {
            verdict = Some(true);
        } else if failures >= check.unhealthy_threshold.max(1) {
            verdict = Some(false);
        }
        if let Some(healthy) = verdict {
            let entry = v1::HealthEntry {
                deployment_id: d.id.clone(),
                spec_hash: d.spec_hash.clone(),
                healthy,
                observed_at_unix_ms: now_ms() as i64,
                interval_seconds: check.interval_seconds.max(1),
                message,
            };
            let entries = match table.lock() {
                Ok(mut t) => {
                    if t.get(&(d.id.clone(), d.spec_hash.clone())).is_none_or(|old| old.healthy != healthy) {
                        tracing::info!(deployment = %d.id, healthy, "health changed");
                    }
                    t.insert((d.id.clone(), d.spec_hash.clone()), entry);
                    t.values().cloned().collect()
                }
                Err(_) => Vec::new(),
            };
            routing.apply_health(entries);
        }
        tokio::time::sleep(interval).await;
    }
}

async fn probe(client: &UpstreamClient, d: &v1::Deployment, mode: i32, timeout: Duration) -> (bool, String) {
    let completion = mode == v1::HealthCheckMode::Completion as i32;
    let request = if completion {
        let model = if d.upstream_model.is_empty() || d.upstream_model.contains('*') {
            d.model_name.clone()
        } else {
            d.upstream_model.clone()
        };
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}).to_string();
        upstream::request(
            d,
            crate::proxy::request::Endpoint::ChatCompletions,
            &model,
            Bytes::from(body),
            &http::HeaderMap::new(),
        )
    } else {
        let mut builder = Request::builder().method(Method::GET).uri(upstream::models_url(d));
        if let Some(headers) = builder.headers_mut() {
            upstream::authorize(headers, d);
        }
        builder.body(Full::new(Bytes::new()))
    };
    let Ok(request) = request else { return (false, "invalid probe request".into()) };
    match tokio::time::timeout(timeout, client.send(request)).await {
        Err(_) => (false, format!("probe timed out after {}s", timeout.as_secs())),
        Ok(Err(e)) => (false, format!("probe failed: {e}")),
        Ok(Ok((response, connection))) => {
            let status = response.status();
            if response.into_body().collect().await.is_ok() {
                connection.release();
            }
            (status.is_success(), format!("probe answered {}", status.as_u16()))
        }
    }
}
