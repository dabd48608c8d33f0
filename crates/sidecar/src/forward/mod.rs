//! The attempt loop of one routed request: pick, call, classify, fail over or fall back; once
//! an upstream answers 2xx with its first body bytes, commit: its head and body stream to the
//! client as they come, and nothing is retried after that.

mod abandoned;
mod attempt;
mod failure;
mod headers;
mod learn;
mod mask;
mod relay;
mod responses;
mod transform;
mod unrouted;
mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, Response};
use http_body_util::BodyExt;
use llmroute_router::{AttemptKind, Class, Pick, Planner};
use llmroute_upstream::{Endpoint, shape};

use self::abandoned::{Abandoned, Progress};
use self::attempt::{Answer, Failure};
use self::failure::LastFailure;
use self::headers::llmroute_headers;
use self::learn::adaptive_turn;
use self::relay::{Outcome, Relay, RelaySpec};
pub(crate) use self::unrouted::{Arrival, unrouted};
use crate::body::Body;
use crate::clock::now_ms;
use crate::context::Context;
use crate::inbound::{ApiError, ClientRequest, upstream_body};
use crate::outbound::Upstream;
use crate::routes::{InFlight, Routes};
use crate::trace::Value;

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

/// Marks a response whose body is a relayed answer (logged when the relay ends).
#[derive(Clone, Copy)]
struct Relayed;

/// What the access log needs of a request.
#[derive(Clone, Debug)]
pub(crate) struct Logged {
    pub start_unix_ms: u64,
    pub started: Instant,
    pub request_id: String,
    pub operation: &'static str,
    pub model: String,
}

impl Logged {
    /// The access-log line of this request, ended now with `status` after `attempts` picks,
    /// served (or last tried) by `deployment` of `model_group`.
    pub fn entry<'a>(
        &'a self,
        model_group: &'a str,
        deployment: &'a str,
        attempts: usize,
        status: &'a str,
    ) -> crate::access::Entry<'a> {
        crate::access::Entry {
            start_unix_ms: self.start_unix_ms,
            request_id: &self.request_id,
            method: "POST",
            operation: self.operation,
            model: &self.model,
            model_group,
            deployment,
            attempts,
            status,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            ..Default::default()
        }
    }
}

/// The client's `x-request-id` (any bytes, read as UTF-8 with what is not replaced), else a
/// new one: absent, empty or blank is none.
fn request_id(headers: &HeaderMap) -> String {
    match headers.get("x-request-id").map(|v| String::from_utf8_lossy(v.as_bytes())) {
        Some(id) if !id.trim().is_empty() => id.into_owned(),
        _ => format!("{:016x}", rand::random::<u64>()),
    }
}

/// Routes one parsed request to completion. With tracing, its server span (ended when its
/// answer ends); with `--access-log`, a line for it once its answer has ended (an answer
/// that is relayed, when the relay ends). A request its client leaves before the answer is
/// counted as 499 when its future is dropped ([`abandoned`]).
pub(crate) async fn forward<U: Upstream>(
    ctx: &Context<U>,
    routes: Arc<Routes>,
    request: ClientRequest,
    headers: &HeaderMap,
) -> Response<Body> {
    if ctx.access.is_none() && ctx.tracing.is_none() {
        let mut abandoned = Abandoned::new(ctx, routes.clone(), None);
        let response = route(ctx, routes, request, headers, None, &mut None, &mut abandoned.progress).await;
        abandoned.answered();
        return response;
    }
    let mut span = ctx.tracing.as_ref().map(|t| t.request(headers, request.endpoint.operation(), &request.model));
    let logged = ctx.access.as_ref().map(|_| Logged {
        start_unix_ms: now_ms(),
        started: Instant::now(),
        request_id: request_id(headers),
        operation: request.endpoint.operation(),
        model: request.model.clone(),
    });
    let mut abandoned = Abandoned::new(ctx, routes.clone(), logged.as_ref());
    let response = route(ctx, routes, request, headers, logged.clone(), &mut span, &mut abandoned.progress).await;
    abandoned.answered();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Not relayed: the request ends with this answer.
    if let Some(mut span) = span.take().filter(crate::trace::RequestSpan::recording) {
        let status = response.status();
        let attempts = header("x-llmroute-attempts").parse::<i64>().unwrap_or(0);
        span.set(&[
            ("llmroute.model_group", Value::Str(header("x-llmroute-model-group"))),
            ("llmroute.attempts", Value::Int(attempts)),
        ]);
        span.end(status.as_u16(), (!status.is_success()).then_some(status.as_str()));
    }
    if let (Some(access), Some(logged)) = (&ctx.access, &logged)
        && response.extensions().get::<Relayed>().is_none()
    {
        let attempts = header("x-llmroute-attempts").parse().unwrap_or(0);
        access.log(&logged.entry(header("x-llmroute-model-group"), "", attempts, response.status().as_str()));
    }
    response
}

async fn route<U: Upstream>(
    ctx: &Context<U>,
    routes: Arc<Routes>,
    request: ClientRequest,
    headers: &HeaderMap,
    logged: Option<Logged>,
    span: &mut Option<crate::trace::RequestSpan>,
    progress: &mut Progress,
) -> Response<Body> {
    let table = &routes.table;
    let Some(mut planner) = Planner::new(table, &request.model, request.keys.clone()) else {
        // Unknown names share one series: clients must not be able to grow the label set.
        ctx.metrics.requests.with_label_values(&["", "", "404"]).inc();
        return ApiError::ModelNotFound { model: request.model.clone(), team: ctx.team.clone() }.response();
    };
    progress.route = Some(planner.primary_route());
    if let Some(bytes) = planner.prefix_bytes() {
        planner.set_prefix(crate::inbound::prefix::key(request.endpoint, &request.raw, bytes));
    }
    let adaptive = planner.is_adaptive().then(|| adaptive_turn(ctx, &routes, &request, &mut planner));
    // Policies are bounded (timeoutSeconds <= 86400): the sum cannot overflow.
    let request_started = Instant::now();
    let deadline = request_started + Duration::from_millis(planner.timeout_ms());
    let mut last: Option<LastFailure> = None;
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(rand::Rng::next_u64(&mut rand::rng()));
    loop {
        let attempt_ms = now_ms();
        let pick = match planner.next(&routes.state, attempt_ms, &mut rng) {
            Ok(pick) => pick,
            Err(exhausted) => {
                if exhausted.reason == llmroute_router::ExhaustedReason::Limited {
                    // Demand the fleet should see, though no limit let it through.
                    for idx in &table.route(planner.primary_route()).deployments {
                        routes.state.get(*idx).note_refused();
                    }
                }
                learn::failed(ctx, &routes, &planner, adaptive);
                return failure::finish(ctx, &routes, &request, exhausted, last);
            }
        };
        if pick.kind != AttemptKind::First {
            ctx.metrics.failovers.with_label_values(&[pick.kind.as_str()]).inc();
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return failure::deadline_exceeded(ctx, &routes, &request, planner.attempts(), pick.route);
        }
        let limit = ctx.limits.attempt_timeout.map_or(remaining, |t| t.min(remaining));
        let target = routes.target(pick.deployment);
        let ask_usage = crate::inbound::asks_usage(&request, table.deployment(pick.deployment).stream_usage);
        let body = match upstream_body(&request, &pick.upstream_model, ask_usage) {
            Ok(body) => body,
            Err(error) => return failure::refused(ctx, &routes, &request, planner.attempts(), error, pick.route),
        };
        let mut upstream_request = match shape::request(target, request.endpoint, &pick.upstream_model, body, headers) {
            Ok(r) => r,
            Err(e) => {
                let error = ApiError::InvalidModelName(e.0);
                return failure::refused(ctx, &routes, &request, planner.attempts(), error, pick.route);
            }
        };
        let attempt_span = span.as_ref().map(|s| {
            let d = table.deployment(pick.deployment);
            let to = crate::trace::AttemptTarget {
                deployment: &d.id,
                model_group: &pick.model_group,
                upstream_model: &pick.upstream_model,
                provider: if d.provider == llmroute_router::Provider::Azure { "azure.ai.openai" } else { "openai" },
                server_address: target.host(),
                server_port: target.port(),
                snapshot: &routes.snapshot.version,
            };
            let number = planner.attempts().len() + 1;
            let cache = routes.span_attributes(pick.deployment);
            s.attempt(&to, cache, number, pick.kind.as_str(), upstream_request.headers_mut())
        });
        let guard = InFlight::start(routes.clone(), pick.deployment, request.keys.prompt_tokens, attempt_ms);
        let started = Instant::now();
        progress.attempt(pick.route, pick.deployment);
        let exchanged = attempt::exchange(ctx.upstream.send(target, upstream_request), started, limit).await;
        progress.attempting = false;
        match exchanged {
            Ok(answer) => {
                let handles = routes.deployment_metrics(&ctx.metrics, pick.deployment, now_ms());
                handles.latency.observe(answer.latency.as_secs_f64());
                if request.stream {
                    // Failovers included: what the client waited for its first token.
                    handles.ttft.observe(request_started.elapsed().as_secs_f64());
                }
                handles.success.inc();
                routes.state.get(pick.deployment).record_success(answer.latency.as_secs_f64() * 1000.0);
                let outcome = format!("status {}", answer.parts.status.as_u16());
                planner.record(&pick, Class::Success, outcome, &routes.state, now_ms());
                let attempts = planner.attempts().len();
                let spec = RelaySpec {
                    deadline: deadline.into(),
                    idle_timeout: ctx.limits.stream_idle_timeout,
                    stream: request.stream,
                };
                let ttft = request.stream.then(|| request_started.elapsed());
                let span = span.take().filter(crate::trace::RequestSpan::recording).map(|mut s| {
                    if let Some(a) = attempt_span {
                        s.answered(a, attempts, planner.affinity_used());
                    }
                    s
                });
                let seen = learn::Seen { adaptive, logged, ttft, attempts: planner.attempts().len(), span };
                let watch = learn::answered(ctx, &routes, &request, &planner, &pick, &answer, seen);
                let affinity = planner.affinity_used();
                let committed =
                    Committed { attempts, pick, answer, guard, spec, watch, strip_usage: ask_usage, affinity };
                return commit(ctx, &routes, &request, committed);
            }
            Err(failure) => {
                drop(guard);
                if let Some(a) = attempt_span {
                    a.end(failure.label(), true);
                }
                let id = routes.table.deployment(pick.deployment).id.as_str();
                tracing::debug!(deployment = id, outcome = %failure.describe(), "upstream attempt failed");
                ctx.metrics.attempts.with_label_values(&[id, failure.label()]).inc();
                let now = now_ms();
                if failure.is_server_side() {
                    routes.state.get(pick.deployment).note_server_failure(now);
                }
                planner.record(&pick, failure.class(), failure.describe(), &routes.state, now);
                if let Some(pause) = failure.retry_after_ms(std::time::SystemTime::now()) {
                    planner.cool_down(&pick, pause, &routes.state, now);
                }
                let timed_out = matches!(failure, Failure::Timeout);
                last = Some(LastFailure { failure, deployment: pick.deployment, route: pick.route });
                if timed_out && Instant::now() >= deadline {
                    return failure::deadline_exceeded(ctx, &routes, &request, planner.attempts(), pick.route);
                }
            }
        }
    }
}

/// A 2xx answer about to be relayed.
struct Committed {
    attempts: usize,
    pick: Pick,
    answer: Answer,
    guard: InFlight,
    spec: RelaySpec,
    watch: relay::Watch,
    /// Usage was asked on the client's behalf: what that added is removed.
    strip_usage: bool,
    /// The affinity that decided the pick, if one did.
    affinity: Option<&'static str>,
}

/// Streams a 2xx answer to the client; nothing is retried after this.
fn commit<U>(ctx: &Context<U>, routes: &Arc<Routes>, request: &ClientRequest, c: Committed) -> Response<Body> {
    let Committed { attempts, pick, answer, guard, spec, watch, strip_usage, affinity } = c;
    let Answer { mut parts, first, rest, .. } = answer;
    let deployment_id = routes.table.deployment(pick.deployment).id.clone();
    let outcome = Outcome {
        counter: ctx.metrics.requests.clone(),
        group: pick.model_group.clone(),
        deployment: deployment_id.clone(),
        status: parts.status.as_u16(),
    };
    let secret = routes.credential(pick.deployment);
    let relay = Relay::new(first, rest, spec, guard, outcome).with_watch(Some(watch)).boxed();
    let relay = if strip_usage { usage::strip(relay) } else { relay };
    let relay = if request.endpoint == Endpoint::Responses {
        responses::rewrite(relay, deployment_id, request.stream)
    } else {
        relay
    };
    // Masking comes last: what a rewrite removes (`,"usage":null` inside an echoed key) could
    // otherwise join a credential's halves after they were looked at.
    let body = mask::mask(relay, secret);
    mask::scrub_headers(&mut parts.headers, secret);
    // An upstream's own reason phrase is not passed on (it could hold anything).
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let mut out = Response::from_parts(parts, body);
    out.extensions_mut().insert(Relayed);
    llmroute_headers(out.headers_mut(), routes, Some(pick.deployment), &pick.model_group, attempts);
    headers::route_header(out.headers_mut(), routes, pick.route);
    headers::affinity_header(out.headers_mut(), affinity);
    out
}

#[cfg(test)]
mod tests;
