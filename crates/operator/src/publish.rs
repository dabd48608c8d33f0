//! From a resource store to served views: compile, encode (re-using unchanged parts), report
//! rejections once, hand the deployments to the prober, publish. Shared by both sources.

use std::sync::Arc;
use std::time::Instant;

use llmroute_manifests::RejectionLog;
use llmroute_snapshot::{ResourceStore, compile};
use llmroute_upstream::Prober;

use crate::hub::Built;
use crate::state::Shared;

/// Publishes builds into `shared`.
pub struct Publisher {
    shared: Arc<Shared>,
    prober: Option<Prober>,
    watermark: u64,
    rejections: RejectionLog,
}

impl Publisher {
    /// A publisher; `prober` (when given) follows every build's deployments.
    pub fn new(shared: Arc<Shared>, prober: Option<Prober>) -> Self {
        Self { shared, prober, watermark: 0, rejections: RejectionLog::default() }
    }

    /// Compiles `store` and serves the result; `detected` is when the change was first seen.
    pub fn publish(&mut self, store: &ResourceStore, detected: Instant) -> Arc<Built> {
        let started = Instant::now();
        // Never below the previous build, and comparable across restarts: wall-clock based.
        self.watermark = (self.watermark + 1).max(crate::clock::now_ms());
        let previous = self.shared.built();
        let built = Arc::new(Built::new(compile(store), self.watermark, detected, previous.as_deref()));
        self.rejections.report(built.compiled.diagnostics());
        self.shared.metrics.builds.inc();
        self.shared.metrics.build_seconds.observe(started.elapsed().as_secs_f64());
        if let Some(prober) = &self.prober {
            let all: Vec<_> = built.all_deployments().cloned().collect();
            prober.reconcile(&all);
        }
        tracing::info!(watermark = self.watermark, teams = built.compiled.teams().count(), "views built");
        self.shared.views.send_replace(Some(built.clone()));
        built
    }
}
