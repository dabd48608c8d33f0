//! Active health probes: one task per probed deployment (by id + spec hash), verdicts by
//! consecutive-result thresholds, published as a full health table on every verdict change
//! and every refresh. The sidecar (standalone) and the operator run the same prober.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use llmroute_proto::v1;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::{Endpoint, Pool, Target, shape};

/// Receives the full health table after every probe verdict.
pub type HealthSink = Arc<dyn Fn(Vec<v1::HealthEntry>) + Send + Sync>;

type Key = (String, String);

/// Most bytes of a probe answer read (the rest is dropped with the connection).
const PROBE_BODY_LIMIT: usize = 256 * 1024;

/// Runs the probes of the deployments it is given.
pub struct Prober {
    pool: Arc<Pool>,
    sink: HealthSink,
    clock: fn() -> u64,
    tasks: Mutex<HashMap<Key, JoinHandle<()>>>,
    table: Arc<Mutex<HashMap<Key, v1::HealthEntry>>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            tasks.values().for_each(JoinHandle::abort);
        }
    }
}

impl Prober {
    /// A prober publishing to `sink`; `clock` gives Unix milliseconds (the observation time).
    pub fn new(pool: Arc<Pool>, sink: HealthSink, clock: fn() -> u64) -> Self {
        Self { pool, sink, clock, tasks: Mutex::default(), table: Arc::default() }
    }

    /// Starts probes for new deployments and stops those of removed or changed ones.
    pub fn reconcile(&self, deployments: &[v1::Deployment]) {
        let wanted: HashMap<Key, &v1::Deployment> = deployments
            .iter()
            .filter(|d| {
                let mode = d.health_check.map(|h| h.mode);
                mode == Some(v1::HealthCheckMode::Models as i32) || mode == Some(v1::HealthCheckMode::Completion as i32)
            })
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
                let probe = Probe { pool: self.pool.clone(), deployment: d.clone(), clock: self.clock };
                tokio::spawn(probe.run(self.sink.clone(), self.table.clone()))
            });
        }
    }

    /// The current health table.
    pub fn table(&self) -> Vec<v1::HealthEntry> {
        self.table.lock().map(|t| t.values().cloned().collect()).unwrap_or_default()
    }
}

struct Probe {
    pool: Arc<Pool>,
    deployment: v1::Deployment,
    clock: fn() -> u64,
}

impl Probe {
    async fn run(self, sink: HealthSink, table: Arc<Mutex<HashMap<Key, v1::HealthEntry>>>) {
        let d = &self.deployment;
        let check = d.health_check.unwrap_or_default();
        let interval_seconds = check.interval_seconds.clamp(1, 86_400);
        let interval = Duration::from_secs(u64::from(interval_seconds));
        let timeout = Duration::from_secs(u64::from(check.timeout_seconds.clamp(1, 3_600)));
        let key = (d.id.clone(), d.spec_hash.clone());
        let (mut successes, mut failures, mut verdict) = (0u32, 0u32, None::<bool>);
        loop {
            let (ok, message) = self.once(check.mode, timeout).await;
            if ok {
                (successes, failures) = (successes.saturating_add(1), 0);
            } else {
                (successes, failures) = (0, failures.saturating_add(1));
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
                    observed_at_unix_ms: i64::try_from((self.clock)()).unwrap_or(i64::MAX),
                    interval_seconds,
                    message,
                    age_ms: 0,
                };
                let entries = match table.lock() {
                    Ok(mut t) => {
                        if t.get(&key).is_none_or(|old| old.healthy != healthy) {
                            tracing::info!(deployment = %d.id, healthy, "health changed");
                        }
                        t.insert(key.clone(), entry);
                        t.values().cloned().collect()
                    }
                    Err(_) => Vec::new(),
                };
                sink(entries);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One probe: `(healthy, what happened)`.
    async fn once(&self, mode: i32, timeout: Duration) -> (bool, String) {
        let d = &self.deployment;
        let target = match Target::try_from(d) {
            Ok(t) => t,
            Err(e) => return (false, e.to_string()),
        };
        let request = if mode == v1::HealthCheckMode::Completion as i32 {
            let model = if d.upstream_model.is_empty() || d.upstream_model.contains('*') {
                d.model_name.clone()
            } else {
                d.upstream_model.clone()
            };
            let body = json!({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1});
            match shape::request(
                &target,
                Endpoint::ChatCompletions,
                &model,
                Bytes::from(body.to_string()),
                &HeaderMap::new(),
            ) {
                Ok(r) => r,
                Err(e) => return (false, e.to_string()),
            }
        } else {
            shape::models_request(&target)
        };
        let exchange = async {
            let response = self.pool.send(&target, request).await?;
            let status = response.status();
            // Read (a bounded part of) the body so the connection can be reused.
            let _ = Limited::new(response.into_body(), PROBE_BODY_LIMIT).collect().await;
            Ok::<_, crate::PoolError>(status)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => (false, format!("probe timed out after {}s", timeout.as_secs())),
            Ok(Err(e)) => (false, format!("probe failed: {e}")),
            Ok(Ok(status)) => (status.is_success(), format!("probe answered {}", status.as_u16())),
        }
    }
}
