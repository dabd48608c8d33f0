//! One attempt in flight on a deployment, counted until the answer has been relayed (or
//! dropped).

use std::sync::Arc;

use llmroute_router::DeploymentIdx;

use super::Routes;

/// Counts toward the deployment's in-flight and rate windows; finishes on drop.
pub(crate) struct InFlight {
    routes: Arc<Routes>,
    deployment: DeploymentIdx,
}

impl InFlight {
    /// Starts an attempt of `tokens` estimated prompt tokens at `now_ms`.
    pub fn start(routes: Arc<Routes>, deployment: DeploymentIdx, tokens: u64, now_ms: u64) -> Self {
        routes.state.get(deployment).start(now_ms, tokens);
        Self { routes, deployment }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.routes.state.get(self.deployment).finish();
    }
}
