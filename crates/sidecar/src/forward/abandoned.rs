//! A request whose client leaves before its answer is committed. hyper drops the request's
//! future when the client's connection closes, so nothing after the `await` runs. The request
//! is counted all the same, when its future is dropped:
//! - in `llmroute_requests_total` with code 499 (nginx's "client closed request"), as a
//!   relayed answer the client leaves is;
//! - the attempt it was waiting on, in `llmroute_upstream_attempts_total` as `cancelled`
//!   (the outcome its span gets);
//! - in the access log.

use std::sync::Arc;

use llmroute_router::{DeploymentIdx, RouteIdx};

use super::Logged;
use crate::context::Context;
use crate::routes::Routes;

/// The code a request its client left is counted with.
pub(crate) const CLIENT_LEFT: &str = "499";

/// Where a request stands in its plan.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The route of the last pick, else the one the requested name resolved to.
    pub route: Option<RouteIdx>,
    /// The deployment of the last pick.
    pub deployment: Option<DeploymentIdx>,
    /// Picks made so far.
    pub attempts: usize,
    /// An attempt is waiting on that deployment.
    pub attempting: bool,
}

impl Progress {
    /// An attempt starts on `deployment` of `route`.
    pub fn attempt(&mut self, route: RouteIdx, deployment: DeploymentIdx) {
        self.route = Some(route);
        self.deployment = Some(deployment);
        self.attempts += 1;
        self.attempting = true;
    }
}

/// Counts its request as left by the client when dropped before [`Abandoned::answered`].
pub(crate) struct Abandoned<'a, U> {
    ctx: &'a Context<U>,
    routes: Arc<Routes>,
    logged: Option<&'a Logged>,
    pub progress: Progress,
    armed: bool,
}

impl<'a, U> Abandoned<'a, U> {
    pub fn new(ctx: &'a Context<U>, routes: Arc<Routes>, logged: Option<&'a Logged>) -> Self {
        Self { ctx, routes, logged, progress: Progress::default(), armed: true }
    }

    /// The request got its answer (which counts it): nothing to count here.
    pub fn answered(mut self) {
        self.armed = false;
    }
}

impl<U> Drop for Abandoned<'_, U> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let table = &self.routes.table;
        let group = self.progress.route.map_or("", |r| table.route(r).public_name.as_str());
        let deployment = self.progress.deployment.map_or("", |d| table.deployment(d).id.as_str());
        let metrics = &self.ctx.metrics;
        metrics.requests.with_label_values(&[group, deployment, CLIENT_LEFT]).inc();
        if self.progress.attempting {
            metrics.attempts.with_label_values(&[deployment, "cancelled"]).inc();
        }
        if let (Some(access), Some(logged)) = (&self.ctx.access, self.logged) {
            access.log(&logged.entry(group, deployment, self.progress.attempts, CLIENT_LEFT));
        }
    }
}
