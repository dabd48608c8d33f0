//! The answer when a plan ends without success: the upstream's own answer about the request
//! (credential scrubbed), 400 context_length_exceeded, 429, 503, 504, or the last upstream
//! status with every attempt named.

use http::{Response, StatusCode};
use llmroute_router::{Attempt, Exhausted, ExhaustedReason, RouteIdx};
use serde_json::json;

use super::attempt::Failure;
use super::headers::llmroute_headers;
use crate::body::{Body, full};
use crate::context::Context;
use crate::inbound::{ApiError, ClientRequest};
use crate::routes::Routes;

/// The last failed attempt, with the credential of its deployment.
pub(crate) struct LastFailure {
    pub failure: Failure,
    pub deployment: u32,
    /// The route it was picked from.
    pub route: RouteIdx,
}

fn attempts_json(attempts: &[Attempt]) -> serde_json::Value {
    attempts
        .iter()
        .map(|a| json!({"deployment": a.deployment_id, "model_group": a.model_group, "outcome": a.outcome}))
        .collect()
}

fn attempts_text(attempts: &[Attempt]) -> String {
    attempts.iter().map(|a| format!("{} ({})", a.deployment_id, a.outcome)).collect::<Vec<_>>().join(", ")
}

/// 504: the deadline passed before an upstream answered (the last pick was from `route`).
pub(crate) fn deadline_exceeded<U>(
    ctx: &Context<U>,
    routes: &Routes,
    request: &ClientRequest,
    attempts: &[Attempt],
    route: RouteIdx,
) -> Response<Body> {
    let message =
        format!("The request deadline passed before an upstream answered. Attempts: {}", attempts_text(attempts));
    let mut r = ApiError::DeadlineExceeded { message, attempts: attempts_json(attempts) }.response();
    finish_headers(ctx, routes, request, &mut r, attempts, Some(route));
    r
}

/// An error of the request itself found while routing (no upstream was called for it), for
/// a pick from `route`.
pub(crate) fn refused<U>(
    ctx: &Context<U>,
    routes: &Routes,
    request: &ClientRequest,
    attempts: &[Attempt],
    error: ApiError,
    route: RouteIdx,
) -> Response<Body> {
    let mut r = error.response();
    finish_headers(ctx, routes, request, &mut r, attempts, Some(route));
    r
}

/// The `x-llmroute-*` headers of a failure (`x-llmroute-route`: `route`, the last pick's,
/// else the one the name resolves to), and its count in `llmroute_requests_total`.
fn finish_headers<U>(
    ctx: &Context<U>,
    routes: &Routes,
    request: &ClientRequest,
    r: &mut Response<Body>,
    attempts: &[Attempt],
    route: Option<RouteIdx>,
) {
    let table = &routes.table;
    if let Some(route) = route.or_else(|| table.resolve(&request.model).map(|r| r.route)) {
        super::headers::route_header(r.headers_mut(), routes, route);
    }
    let last = attempts.last();
    // The group that served last, else the one the name resolves to (never the raw name).
    let resolved = || table.resolve(&request.model).map(|r| table.route(r.route).public_name.as_str());
    let group = last.map(|a| a.model_group.as_str()).or_else(resolved).unwrap_or_default();
    let index = last.and_then(|a| table.deployment_index(&a.deployment_id));
    llmroute_headers(r.headers_mut(), routes, index, group, attempts.len());
    let code = r.status().as_u16().to_string();
    let deployment = last.map_or("", |a| a.deployment_id.as_str());
    ctx.metrics.requests.with_label_values(&[group, deployment, code.as_str()]).inc();
}

/// The answer when the plan ends without success.
pub(crate) fn finish<U>(
    ctx: &Context<U>,
    routes: &Routes,
    request: &ClientRequest,
    exhausted: Exhausted,
    last: Option<LastFailure>,
) -> Response<Body> {
    let attempts = &exhausted.attempts;
    let model = request.model.clone();
    let route = last.as_ref().map(|l| l.route);
    let mut response = match (exhausted.reason, last) {
        (
            ExhaustedReason::ClientError | ExhaustedReason::ContextWindow,
            Some(LastFailure { failure: Failure::Status { status, complete: false, .. }, .. }),
        ) => {
            // Never a cut body that looks whole: an error of our own, with the upstream's status.
            let message = format!(
                "The upstream answered {} with an error body of over {} bytes, which is not passed on. Attempts: {}",
                status.as_u16(),
                super::attempt::ERROR_BODY_LIMIT,
                attempts_text(attempts)
            );
            ApiError::UpstreamFailed { status, message, attempts: attempts_json(attempts) }.response()
        }
        (
            ExhaustedReason::ClientError | ExhaustedReason::ContextWindow,
            Some(LastFailure { failure: Failure::Status { status, headers, body, .. }, deployment, .. }),
        ) => {
            // The upstream's own answer about the request itself: pass it on, key scrubbed.
            let mut r = Response::new(full(super::mask::mask_bytes(body, routes.credential(deployment))));
            *r.status_mut() = status;
            if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
                r.headers_mut().insert(http::header::CONTENT_TYPE, ct.clone());
            }
            super::mask::scrub_headers(r.headers_mut(), routes.credential(deployment));
            r
        }
        (ExhaustedReason::ContextWindow, _) => {
            ApiError::ContextLengthExceeded { model, tokens: request.keys.prompt_tokens }.response()
        }
        (ExhaustedReason::Limited, _) => ApiError::RateLimited(model).response(),
        (ExhaustedReason::NoneEligible, _) => ApiError::NoneEligible(model).response(),
        (reason, last) => {
            if reason == ExhaustedReason::RetryBudget {
                ctx.metrics.retry_budget_exhausted.inc();
            }
            let status = match last.as_ref().map(|l| &l.failure) {
                Some(Failure::Status { status, .. }) => *status,
                Some(Failure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            let budget =
                if reason == ExhaustedReason::RetryBudget { " (retry budget exhausted: failing fast)" } else { "" };
            let message = format!(
                "All {} upstream attempts for `{model}` failed{budget}: {}",
                attempts.len(),
                attempts_text(attempts)
            );
            let mut r = ApiError::UpstreamFailed { status, message, attempts: attempts_json(attempts) }.response();
            // The upstream's own pause request, passed on within bounds.
            if let Some(ms) = last.as_ref().and_then(|l| l.failure.retry_after_ms(std::time::SystemTime::now())) {
                let seconds = ms.div_ceil(1000).clamp(1, 3600);
                r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
            }
            r
        }
    };
    finish_headers(ctx, routes, request, &mut response, attempts, route);
    response
}
