//! llmroute sidecar: an OpenAI-compatible proxy on localhost that routes every request itself
//! with `llmroute-router`, fed by a manifests directory (standalone) or the operator.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod flags;
pub mod health;
pub mod inflight;
pub mod manifests;
pub mod metrics;
pub mod proxy;
pub mod routing;
