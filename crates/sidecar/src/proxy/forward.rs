//! The attempt loop of one routed request: pick, call, classify, fail over or fall back, and
//! once an upstream answers 2xx, commit: its headers and body stream to the client as they
//! come. Nothing is retried after that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response};
use http_body_util::BodyExt;
use llmroute_router::{AttemptKind, Class, Outcome, Pick, Planner, classify};

use super::body::Body;
use super::error::ApiError;
use super::failure::{Failure, deadline_exceeded, finish};
use super::headers::llmroute_headers;
use super::request::{ClientRequest, Endpoint, upstream_body};
use super::responses;
use super::upstream;
use crate::app::{Proxy, now_ms};
use crate::inflight::InFlight;
use crate::routing::Routing;

/// Most bytes of a failed upstream answer kept for classification and the final error.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Routes one parsed request to completion.
pub async fn forward(
    proxy: &Proxy,
    routing: Arc<Routing>,
    request: ClientRequest,
    headers: &HeaderMap,
) -> Response<Body> {
    let table = &routing.table;
    let Some(mut planner) = Planner::new(table, &request.model, request.keys.clone()) else {
        // Unknown names share one series: clients must not be able to grow the label set.
        proxy.metrics.requests.with_label_values(&["", "", "404"]).inc();
        return ApiError::model_not_found(&request.model, &proxy.team).response();
    };
    let deadline = Instant::now() + Duration::from_millis(planner.timeout_ms());
    let mut last: Option<(Pick, Failure)> = None;
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(rand::Rng::next_u64(&mut rand::rng()));
    loop {
        let attempt_ms = now_ms();
        let pick = match planner.next(&routing.state, attempt_ms, &mut rng) {
            Ok(pick) => pick,
            Err(exhausted) => return finish(proxy, &routing, &request, exhausted, last),
        };
        if pick.kind != AttemptKind::First {
            proxy.metrics.failovers.with_label_values(&[pick.kind.as_str()]).inc();
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return deadline_exceeded(proxy, &routing, &request, &planner);
        }
        let limit = proxy.attempt_timeout.map_or(remaining, |t| t.min(remaining));
        let deployment = &table.deployment(pick.deployment).wire;
        let body = upstream_body(&request, &pick.upstream_model);
        let upstream_request =
            match upstream::request(deployment, request.endpoint, &pick.upstream_model, body, headers) {
                Ok(r) => r,
                Err(e) => {
                    record(
                        proxy,
                        &mut planner,
                        &pick,
                        &routing,
                        Class::Retryable,
                        "invalid_request",
                        format!("invalid upstream request: {e}"),
                    );
                    last = Some((pick, Failure::Transport));
                    continue;
                }
            };
        let guard = InFlight::start(routing.clone(), pick.deployment, request.keys.prompt_tokens, attempt_ms);
        let started = Instant::now();
        match tokio::time::timeout(limit, proxy.client.send(upstream_request)).await {
            Err(_) => {
                record(
                    proxy,
                    &mut planner,
                    &pick,
                    &routing,
                    classify(Outcome::Timeout),
                    "timeout",
                    "timeout before the first response byte".into(),
                );
                last = Some((pick, Failure::Timeout));
                if Instant::now() >= deadline {
                    return deadline_exceeded(proxy, &routing, &request, &planner);
                }
            }
            Ok(Err(e)) => {
                let outcome = format!("connect error: {}", error_chain(&e));
                record(proxy, &mut planner, &pick, &routing, classify(Outcome::ConnectError), "connect_error", outcome);
                last = Some((pick, Failure::Transport));
            }
            Ok(Ok((response, connection))) => {
                let latency = started.elapsed();
                let handles = routing.deployment_metrics(&proxy.metrics, pick.deployment);
                handles.latency.observe(latency.as_secs_f64());
                let status = response.status();
                if status.as_u16() < 400 {
                    routing.state.get(pick.deployment).record_success(latency.as_secs_f64() * 1000.0);
                    handles.success.inc();
                    planner.record(
                        &pick,
                        Class::Success,
                        format!("status {}", status.as_u16()),
                        &routing.state,
                        now_ms(),
                    );
                    let answer = Answer { response, guard, connection };
                    return commit(proxy, &routing, &request, planner.attempts().len(), &pick, answer).await;
                }
                let (parts, body) = response.into_parts();
                let (bytes, complete) = read_limited(body, deadline).await;
                if complete {
                    connection.release();
                }
                let class = classify(Outcome::Status { code: status.as_u16(), body: &bytes });
                let label = match class {
                    Class::ContextWindow => "context_window",
                    Class::ClientError => "client_error",
                    _ => "error_status",
                };
                record(proxy, &mut planner, &pick, &routing, class, label, format!("status {}", status.as_u16()));
                last = Some((pick, Failure::Status { status, headers: parts.headers, body: bytes }));
            }
        }
    }
}

fn record(
    proxy: &Proxy,
    planner: &mut Planner<'_>,
    pick: &Pick,
    routing: &Routing,
    class: Class,
    label: &str,
    outcome: String,
) {
    let id = routing.table.deployment(pick.deployment).wire.id.as_str();
    proxy.metrics.attempts.with_label_values(&[id, label]).inc();
    planner.record(pick, class, outcome, &routing.state, now_ms());
}

/// The error and its sources, one line (upstream URLs carry no credentials).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads an error body up to [`ERROR_BODY_LIMIT`]; `true` when it was read to its end.
async fn read_limited(body: hyper::body::Incoming, deadline: Instant) -> (Bytes, bool) {
    let collect = async {
        let mut out = Vec::new();
        let mut body = body;
        loop {
            match body.frame().await {
                None => return (Bytes::from(out), true),
                Some(Err(_)) => return (Bytes::from(out), false),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        out.extend_from_slice(&data[..data.len().min(ERROR_BODY_LIMIT - out.len())]);
                        if out.len() >= ERROR_BODY_LIMIT {
                            return (Bytes::from(out), false);
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), collect).await.unwrap_or_default()
}

/// Headers never copied from an upstream answer.
const HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::TRANSFER_ENCODING,
    http::header::CONTENT_LENGTH,
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];

/// A successful upstream answer, still holding its in-flight slot and connection.
struct Answer {
    response: Response<hyper::body::Incoming>,
    guard: InFlight,
    connection: super::pool::Checkout,
}

/// Streams a 2xx answer to the client; nothing is retried after this.
async fn commit(
    proxy: &Proxy,
    routing: &Arc<Routing>,
    request: &ClientRequest,
    attempts: usize,
    pick: &Pick,
    answer: Answer,
) -> Response<Body> {
    let Answer { response, guard, connection } = answer;
    let deployment_id = routing.table.deployment(pick.deployment).wire.id.clone();
    let (parts, body) = response.into_parts();
    let body = if request.endpoint == Endpoint::Responses {
        responses::rewrite_ids(body, deployment_id.clone(), request.stream, guard, connection).await
    } else {
        crate::inflight::guarded(body, guard, connection)
    };
    let mut parts = parts;
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let status = parts.status;
    let mut out = Response::from_parts(parts, body);
    llmroute_headers(out.headers_mut(), routing, Some(pick.deployment), &pick.model_group, attempts);
    let code = status.as_u16().to_string();
    proxy.metrics.requests.with_label_values(&[pick.model_group.as_str(), deployment_id.as_str(), code.as_str()]).inc();
    out
}
