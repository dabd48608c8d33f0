//! The upstream side of llmroute, shared by the sidecar (requests, probes in standalone mode)
//! and the operator (probes): what a provider's request looks like, a keep-alive connection
//! pool, and the active health prober.
//!
//! - [`Target`]: one deployment's origin, path, query and credential header, computed once per
//!   snapshot from the wire message (invalid ones rejected with a typed error).
//! - [`shape`]: one attempt's request for a target (the client's Authorization never leaves).
//! - [`Pool`]: keep-alive HTTP/1.1 connections per origin, idle timeout, per-origin cap, one
//!   transparent retry of a request that failed on a reused connection before it was written.
//! - [`Prober`]: one probe task per probed deployment, verdicts by consecutive thresholds,
//!   published as a full health table.

#![forbid(unsafe_code)]

mod body;
mod endpoint;
mod pool;
mod prober;
pub mod shape;
mod target;

pub use body::RequestBody;
pub use endpoint::Endpoint;
pub use pool::{Pool, PoolConfig, PoolError, PooledBody};
pub use prober::{HealthSink, Prober};
pub use target::{InvalidModelName, InvalidTarget, Provider, Target};

/// Error of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
