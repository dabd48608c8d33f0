//! Test support for llmroute: a fake OpenAI-compatible upstream whose behaviour is set per
//! instance at start and at run time, and helpers that start the real binaries.

#![forbid(unsafe_code)]

pub mod behaviour;
pub mod fake;
pub mod http_client;
pub mod process;

pub use behaviour::{Behaviour, Mode, Stats};
pub use fake::{FakeUpstreams, serve_fakes};
