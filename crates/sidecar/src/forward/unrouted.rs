//! Requests answered before routing (an unknown URL, a wrong method, a body too large or
//! unreadable, a malformed request or header, no snapshot yet) are counted and logged as
//! routed ones are: `llmroute_requests_total{model_group="",deployment="",code}`, the series
//! unknown model names share, and an access-log line with the status they got.

use std::time::Instant;

use http::{HeaderMap, Response};

use super::Logged;
use crate::body::Body;
use crate::clock::now_ms;
use crate::context::Context;

/// When a request arrived, taken only when there is an access log to write.
#[derive(Clone, Copy)]
pub(crate) struct Arrival {
    start_unix_ms: u64,
    started: Instant,
}

impl Arrival {
    pub fn now<U>(ctx: &Context<U>) -> Option<Self> {
        ctx.access.as_ref().map(|_| Self { start_unix_ms: now_ms(), started: Instant::now() })
    }
}

/// Counts and logs `response`, the answer to a request refused before routing, and returns it.
pub(crate) fn unrouted<U>(
    ctx: &Context<U>,
    method: &http::Method,
    headers: &HeaderMap,
    operation: &'static str,
    arrival: Option<Arrival>,
    response: Response<Body>,
) -> Response<Body> {
    let code = response.status();
    ctx.metrics.requests.with_label_values(&["", "", code.as_str()]).inc();
    if let (Some(access), Some(arrival)) = (&ctx.access, arrival) {
        let logged = Logged {
            start_unix_ms: arrival.start_unix_ms,
            started: arrival.started,
            request_id: super::request_id(headers),
            operation,
            model: String::new(),
        };
        access.log(&crate::access::Entry { method: method.as_str(), ..logged.entry("", "", 0, code.as_str()) });
    }
    response
}
