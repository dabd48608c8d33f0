//! llmroute operator: the same manifests source and pure compile as a standalone sidecar,
//! turned into verdicts (`--check`) and, as the control plane grows, per-team views streamed
//! to every sidecar.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod check;
pub mod clock;
pub mod cluster;
pub mod flags;
pub mod fleet;
pub mod hub;
pub mod metrics;
pub mod publish;
pub mod registry;
pub mod serve;
pub mod state;
pub mod status;
pub mod stream;
pub mod tls;
