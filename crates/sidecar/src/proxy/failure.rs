//! The answer when a plan ends without success: the upstream's own answer about the request,
//! 429, 503, 504, or the last upstream status with every attempt named.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use llmroute_router::{Exhausted, ExhaustedReason, Pick, Planner};
use serde_json::json;

use super::body::{Body, full};
use super::error::error_response;
use super::headers::llmroute_headers;
use super::request::ClientRequest;
use crate::app::Proxy;
use crate::routing::Routing;

/// The last failed attempt, for the final answer.
pub enum Failure {
    /// An upstream status with its headers and (the start of) its body.
    Status { status: StatusCode, headers: HeaderMap, body: Bytes },
    /// No answer before the attempt's deadline.
    Timeout,
    /// Connect, TLS or protocol failure.
    Transport,
}

fn attempts_json(attempts: &[llmroute_router::Attempt]) -> serde_json::Value {
    attempts
        .iter()
        .map(|a| json!({"deployment": a.deployment_id, "model_group": a.model_group, "outcome": a.outcome}))
        .collect()
}

fn attempts_text(attempts: &[llmroute_router::Attempt]) -> String {
    attempts.iter().map(|a| format!("{} ({})", a.deployment_id, a.outcome)).collect::<Vec<_>>().join(", ")
}

pub fn deadline_exceeded(
    proxy: &Proxy,
    routing: &Routing,
    request: &ClientRequest,
    planner: &Planner<'_>,
) -> Response<Body> {
    let attempts = planner.attempts();
    let message =
        format!("The request deadline passed before an upstream answered. Attempts: {}", attempts_text(attempts));
    let mut r = error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "deadline_exceeded",
        &message,
        Some(("attempts", attempts_json(attempts))),
    );
    finish_headers(proxy, routing, request, &mut r, attempts);
    r
}

fn finish_headers(
    proxy: &Proxy,
    routing: &Routing,
    request: &ClientRequest,
    r: &mut Response<Body>,
    attempts: &[llmroute_router::Attempt],
) {
    let last = attempts.last();
    // The group that served last, else the one the name resolves to (never the raw name).
    let resolved = || routing.table.resolve(&request.model).map(|r| routing.table.route(r.route).public_name.as_str());
    let group = last.map(|a| a.model_group.as_str()).or_else(resolved).unwrap_or_default();
    let index = last.and_then(|a| routing.table.deployment_index(&a.deployment_id));
    llmroute_headers(r.headers_mut(), routing, index, group, attempts.len());
    let code = r.status().as_u16().to_string();
    let deployment = last.map_or("", |a| a.deployment_id.as_str());
    proxy.metrics.requests.with_label_values(&[group, deployment, code.as_str()]).inc();
}

/// The answer when the plan ends without success.
pub fn finish(
    proxy: &Proxy,
    routing: &Routing,
    request: &ClientRequest,
    exhausted: Exhausted,
    last: Option<(Pick, Failure)>,
) -> Response<Body> {
    let attempts = &exhausted.attempts;
    let listing = attempts_text(attempts);
    let mut response = match (exhausted.reason, last) {
        (
            ExhaustedReason::ClientError | ExhaustedReason::ContextWindow,
            Some((_, Failure::Status { status, headers, body })),
        ) => {
            // The upstream's own answer about the request itself: pass it on.
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
                r.headers_mut().insert(http::header::CONTENT_TYPE, ct.clone());
            }
            r
        }
        (ExhaustedReason::Limited, _) => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            &format!("Every deployment of `{}` is at its rpm, tpm or concurrency limit; retry later.", request.model),
            None,
        ),
        (ExhaustedReason::NoneEligible, _) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "no_eligible_deployment",
            &format!("No deployment of `{}` is eligible now (cooling down or unhealthy); retry later.", request.model),
            None,
        ),
        (_, last) => {
            let status = match &last {
                Some((_, Failure::Status { status, .. })) => *status,
                Some((_, Failure::Timeout)) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            let message = format!("All {} upstream attempts for `{}` failed: {listing}", attempts.len(), request.model);
            error_response(
                status,
                "upstream_error",
                "upstream_failed",
                &message,
                Some(("attempts", attempts_json(attempts))),
            )
        }
    };
    finish_headers(proxy, routing, request, &mut response, attempts);
    response
}
