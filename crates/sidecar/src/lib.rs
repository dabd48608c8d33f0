//! llmroute sidecar: an OpenAI-compatible proxy on localhost that routes every request itself
//! with `llmroute-router`, fed by a manifests directory (standalone) or the operator.
//!
//! Rooms: [`inbound`] (serve, parse, API errors) -> [`forward`] (attempt loop, failure
//! answers, relay, Responses rewrite) -> [`outbound`] (the upstream behind a trait); [`routes`]
//! holds the last good table and live state; `admin`, `metrics`, `health` and `standalone`
//! are the edges; `app` only wires them.

#![forbid(unsafe_code)]

mod access;
mod admin;
pub mod app;
mod body;
mod clock;
mod context;
pub mod flags;
mod fleet;
mod forward;
mod health;
mod inbound;
pub mod logging;
mod metrics;
mod operator;
mod outbound;
mod routes;
mod standalone;
mod trace;
#[doc(hidden)]
pub use trace::BenchTracer;

/// The prefix-affinity key of a chat body, for `benches/prefix.rs`.
#[doc(hidden)]
pub fn bench_prefix_key(body: &[u8], bytes: usize) -> Option<u128> {
    inbound::prefix::key(llmroute_upstream::Endpoint::ChatCompletions, body, bytes)
}

/// The routing fields every request's body is read for, for `benches/prefix.rs` (baseline).
#[doc(hidden)]
pub fn bench_peek(body: &[u8]) -> bool {
    inbound::peek(body).is_ok()
}
