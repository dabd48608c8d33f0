//! Standalone mode: the manifests directory (shared `llmroute-manifests` source) compiled
//! here with `llmroute-snapshot`, exactly as the operator does, and applied whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmroute_manifests::{ManifestDir, RejectionLog};
use llmroute_snapshot::compile;
use llmroute_upstream::Prober;

use crate::metrics::Metrics;
use crate::routes::RoutesHandle;

/// What the watch loop works with.
pub(crate) struct Standalone {
    pub source: ManifestDir,
    pub team: String,
    pub routes: Arc<RoutesHandle>,
    pub prober: Prober,
    pub metrics: Metrics,
    rejections: RejectionLog,
}

impl Standalone {
    pub fn new(source: ManifestDir, team: String, routes: Arc<RoutesHandle>, prober: Prober, metrics: Metrics) -> Self {
        Self { source, team, routes, prober, metrics, rejections: RejectionLog::default() }
    }

    /// Compiles the store in force and applies this team's view; logs new rejections. Nothing
    /// is applied before the directory has been listed (the sidecar stays not ready).
    pub fn apply(&mut self) {
        if !self.source.listed() {
            return;
        }
        let compiled = compile(self.source.store());
        self.rejections.report(compiled.diagnostics());
        let snapshot = compiled.view(&self.team);
        let version = snapshot.version.clone();
        let deployments = snapshot.deployments.clone();
        match self.routes.apply(snapshot) {
            Ok(true) => {
                tracing::info!(%version, deployments = deployments.len(), "snapshot applied");
                self.prober.reconcile(&deployments);
                if let Some(routes) = self.routes.load() {
                    self.metrics.prune(&routes);
                }
            }
            Ok(false) => {}
            Err(e) => {
                self.metrics.snapshot_rejected.inc();
                tracing::error!(error = %e, %version, "snapshot rejected; the previous one keeps serving");
            }
        }
    }

    /// Polls the directory every `interval` and applies every change, forever, on a thread of
    /// its own: reading, admitting and compiling a large directory never stalls the serving
    /// thread (requests, `/healthz`). `runtime` runs the probes.
    pub fn spawn(self, interval: Duration, runtime: tokio::runtime::Handle) -> std::io::Result<()> {
        std::thread::Builder::new().name("llmroute-manifests".into()).spawn(move || {
            let _entered = runtime.enter();
            self.run(interval);
        })?;
        Ok(())
    }

    fn run(mut self, interval: Duration) {
        self.apply();
        loop {
            std::thread::sleep(interval);
            let rejected = self.source.config_rejections();
            let changed = self.source.poll(Instant::now());
            self.metrics.config_rejected.inc_by(self.source.config_rejections() - rejected);
            if changed {
                self.apply();
            }
        }
    }
}
