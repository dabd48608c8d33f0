//! The OpenAI-compatible HTTP API: parse what routing needs, run the attempt plan against the
//! upstreams, stream the winner's answer back.

pub mod body;
pub mod error;
pub mod failure;
pub mod forward;
pub mod headers;
pub mod models;
pub mod pool;
pub mod request;
pub mod responses;
pub mod server;
pub mod upstream;
