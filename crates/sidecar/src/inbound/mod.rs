//! The OpenAI-compatible API as clients see it: accept, read the request (bounded), parse
//! what routing needs, dispatch; errors answered here are [`ApiError`]s.

mod body;
mod classify;
mod error;
mod models;
mod parse;
pub(crate) mod prefix;
mod serve;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use llmroute_upstream::Endpoint;

pub(crate) use classify::{Turn, turn};
pub(crate) use error::ApiError;
#[cfg(test)]
pub(crate) use parse::ReadBody;
pub(crate) use parse::{ClientRequest, asks_usage, header_keys, parse, peek, upstream_body};
pub(crate) use serve::{ConnectionLimits, Peer, serve};

use crate::body::Body;
use crate::context::Context;
use crate::forward::{Arrival, unrouted};
use crate::outbound::Upstream;

/// Largest feedback body, bytes (an id and a score).
const FEEDBACK_MAX_BYTES: usize = 8 * 1024;

/// Handles one API request.
pub(crate) async fn handle<U: Upstream>(ctx: Arc<Context<U>>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let method = request.method();
    if method == Method::GET && path.trim_end_matches('/') == "/v1/models" {
        return match ctx.routes.load() {
            Some(r) => models::list(&r),
            None => ApiError::NoSnapshot.response(),
        };
    }
    if path.trim_end_matches('/') == "/v1/feedback" {
        if method != Method::POST {
            return ApiError::MethodNotAllowed(path.to_owned()).response();
        }
        let limits = &ctx.limits;
        let body = match body::read(
            request.into_body(),
            limits.max_body_bytes.min(FEEDBACK_MAX_BYTES),
            limits.body_read_timeout,
            &ctx.body_memory,
        )
        .await
        {
            Ok(body) => body,
            Err(e) => return e.response(),
        };
        let answer = crate::fleet::feedback(&ctx.memory, &ctx.routes, &body.bytes);
        let result = match answer.status().as_u16() {
            200 => "accepted",
            404 => "unknown",
            _ => "invalid",
        };
        ctx.metrics.feedback.with_label_values(&[result]).inc();
        return answer;
    }
    // Refused before routing: counted and logged all the same.
    let arrival = Arrival::now(&ctx);
    let Some(endpoint) = Endpoint::of_path(path) else {
        // The path is echoed back in the message: cap it so a hostile URL stays small.
        let shown: String = path.chars().take(256).collect();
        let error = ApiError::UnknownUrl { method: method.as_str().chars().take(32).collect(), path: shown };
        return unrouted(&ctx, method, request.headers(), "", arrival, error.response());
    };
    let operation = endpoint.operation();
    if method != Method::POST {
        let error = ApiError::MethodNotAllowed(path.to_owned());
        return unrouted(&ctx, method, request.headers(), operation, arrival, error.response());
    }
    let (parts, body) = request.into_parts();
    let limits = &ctx.limits;
    let refused = |error: ApiError| unrouted(&ctx, &parts.method, &parts.headers, operation, arrival, error.response());
    let body = match body::read(body, limits.max_body_bytes, limits.body_read_timeout, &ctx.body_memory).await {
        Ok(body) => body,
        Err(e) => return refused(e),
    };
    // The routes are taken after the body is read: a request routes on the newest view.
    let Some(routes) = ctx.routes.load() else { return refused(ApiError::NoSnapshot) };
    match parse(endpoint, &parts.headers, body) {
        Ok(parsed) => crate::forward::forward(&ctx, routes, parsed, &parts.headers).await,
        Err(e) => refused(e),
    }
}
