//! Generated types and gRPC service of `proto/llmroute/v1/routing.proto`, plus the one-`*`
//! name pattern both the compile and the router use.

#![forbid(unsafe_code)]

mod name_pattern;
pub mod part;
mod redact;
pub mod view;

pub use name_pattern::{NamePattern, substitute};

/// `llmroute.v1` messages and the `RoutingDiscovery` service.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/llmroute.v1.rs"));
}
