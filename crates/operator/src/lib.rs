//! llmroute operator: the same manifests source and pure compile as a standalone sidecar,
//! turned into verdicts (`--check`) and, as the control plane grows, per-team views streamed
//! to every sidecar.

#![forbid(unsafe_code)]

pub mod check;
pub mod flags;
pub mod hub;
