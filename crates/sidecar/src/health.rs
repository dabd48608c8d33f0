//! Active health in standalone mode: the shared prober of `llmroute-upstream`, publishing its
//! health table into the routes in force.

use std::sync::Arc;

use llmroute_upstream::{Pool, Prober};

use crate::clock::now_ms;
use crate::routes::RoutesHandle;

/// A prober whose verdicts reach `routes`.
pub(crate) fn prober(pool: Arc<Pool>, routes: Arc<RoutesHandle>) -> Prober {
    Prober::new(pool, Arc::new(move |entries| routes.apply_health(entries)), now_ms)
}
