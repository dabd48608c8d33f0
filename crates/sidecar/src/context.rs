//! What every request handler shares: the routes in force, the upstream, metrics, the team
//! and the request limits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::routes::RoutesHandle;

/// Limits applied to each request.
#[derive(Clone, Debug)]
pub(crate) struct RequestLimits {
    /// Largest request body, bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Time a client has to send its body.
    pub body_read_timeout: Duration,
    /// Per-attempt limit on the upstream's first response bytes (None: the remaining deadline).
    pub attempt_timeout: Option<Duration>,
    /// Longest pause between two frames of an upstream answer being relayed.
    pub stream_idle_timeout: Duration,
}

/// The shared context of every request.
pub(crate) struct Context<U> {
    /// The routing in force.
    pub routes: Arc<RoutesHandle>,
    /// The upstream side.
    pub upstream: U,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Team served.
    pub team: String,
    /// Per-request limits.
    pub limits: RequestLimits,
    /// Bytes of request bodies all requests together may hold in memory.
    pub body_memory: Arc<Semaphore>,
    /// Adaptive groups: answers awaiting feedback, session owners.
    pub memory: crate::fleet::Memory,
    /// `--access-log`.
    pub access: Option<Arc<crate::access::AccessLog>>,
    /// `--otlp-endpoint`: traces.
    pub tracing: Option<crate::trace::Tracing>,
}
