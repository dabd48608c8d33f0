//! The attempt loop, failure answers and relay without processes: a scripted upstream behind
//! the [`Upstream`] trait, paused time for stalls.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use llmroute_proto::v1;
use llmroute_upstream::{RequestBody, Target};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::*;
use crate::body::BoxError;
use crate::context::RequestLimits;
use crate::inbound::{ReadBody, parse};
use crate::metrics::Metrics;
use crate::routes::RoutesHandle;

/// How a fake origin answers.
#[derive(Clone)]
enum Script {
    Answer(u16, &'static str),
    /// An answer whose length is known up front (as with Content-Length).
    Sized(&'static str),
    AnswerWith(u16, &'static str, &'static str, &'static str),
    Refused,
    NoAnswer,
    HeadThenStall,
    FirstChunkThenStall(&'static str),
    BrokenBody,
    EmptyBody,
    EchoKey,
    /// A 200 that echoes the key in a header and, split across two chunks, in its body.
    EchoKeyInSuccess,
    /// A streamed 200 that echoes the key in its reason phrase, as a header's name, and in its
    /// body split by a `"usage":null,` (which the usage strip removes).
    EchoKeyEverywhere,
    /// A 400 whose error body is larger than what is kept.
    HugeError,
}

#[derive(Default)]
struct Fake {
    scripts: HashMap<String, Script>,
    calls: Mutex<Vec<(String, String)>>,
}

fn stream_of(frames: Vec<Result<Bytes, BoxError>>, then_stall: bool) -> Body {
    let frames = futures_util::stream::iter(frames.into_iter().map(|f| f.map(Frame::data)));
    if then_stall {
        BodyExt::boxed(StreamBody::new(frames.chain(futures_util::stream::pending())))
    } else {
        BodyExt::boxed(StreamBody::new(frames))
    }
}

fn respond(status: u16, body: Body) -> http::Response<Body> {
    let mut r = http::Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

impl Upstream for Fake {
    async fn send(&self, target: &Target, request: Request<RequestBody>) -> Result<http::Response<Body>, BoxError> {
        let key = request.headers().get(http::header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_owned());
        self.calls.lock().unwrap().push((target.origin().to_owned(), request.uri().to_string()));
        let script = self.scripts.get(target.origin()).cloned().unwrap_or(Script::Answer(200, "{}"));
        let body = |text: &'static str| stream_of(vec![Ok(Bytes::from_static(text.as_bytes()))], false);
        match script {
            Script::Answer(status, text) => Ok(respond(status, body(text))),
            Script::Sized(text) => {
                let full = http_body_util::Full::new(Bytes::from_static(text.as_bytes()));
                Ok(respond(200, BodyExt::boxed(full.map_err(|never| match never {}))))
            }
            Script::AnswerWith(status, text, name, value) => {
                let mut r = respond(status, body(text));
                r.headers_mut().insert(http::HeaderName::from_static(name), value.parse().unwrap());
                Ok(r)
            }
            Script::Refused => Err("connection refused".into()),
            Script::NoAnswer => std::future::pending().await,
            Script::HeadThenStall => Ok(respond(200, stream_of(vec![], true))),
            Script::FirstChunkThenStall(text) => {
                Ok(respond(200, stream_of(vec![Ok(Bytes::from_static(text.as_bytes()))], true)))
            }
            Script::BrokenBody => Ok(respond(200, stream_of(vec![Err("bad chunk size".into())], false))),
            Script::EmptyBody => Ok(respond(200, stream_of(vec![], false))),
            Script::HugeError => {
                let text = format!("{{\"error\": {{\"message\": \"{}\"}}}}", "x".repeat(70_000));
                Ok(respond(400, stream_of(vec![Ok(Bytes::from(text))], false)))
            }
            Script::EchoKeyInSuccess => {
                let key = key.unwrap_or_default().trim_start_matches("Bearer ").to_owned();
                let (left, right) = key.split_at(5);
                let frames =
                    vec![Ok(Bytes::from(format!("{{\"debug\": \"{left}"))), Ok(Bytes::from(format!("{right}\"}}")))];
                let mut r = respond(200, stream_of(frames, false));
                r.headers_mut().insert("x-echo", http::HeaderValue::from_str(&format!("key={key}")).unwrap());
                Ok(r)
            }
            Script::EchoKeyEverywhere => {
                let key = key.unwrap_or_default().trim_start_matches("Bearer ").to_owned();
                let (left, right) = key.split_at(5);
                let text = format!("data: {{\"k\":\"{left}\"usage\":null,{right}\"}}\n\ndata: [DONE]\n\n");
                let mut r = respond(200, stream_of(vec![Ok(Bytes::from(text))], false));
                let phrase = hyper::ext::ReasonPhrase::try_from(format!("OK {key}").into_bytes()).unwrap();
                r.extensions_mut().insert(phrase);
                r.headers_mut().insert(http::HeaderName::from_bytes(key.as_bytes()).unwrap(), "1".parse().unwrap());
                Ok(r)
            }
            Script::EchoKey => {
                let text = format!(
                    "{{\"error\": {{\"message\": \"Incorrect API key provided: {}\"}}}}",
                    key.unwrap_or_default()
                );
                Ok(respond(400, stream_of(vec![Ok(Bytes::from(text))], false)))
            }
        }
    }
}

fn deployment(id: &str, provider: v1::Provider, context_window: u64) -> v1::Deployment {
    v1::Deployment {
        id: format!("ns/{id}"),
        model_name: "m".into(),
        provider: provider as i32,
        base_url: format!("http://{id}.test/v1"),
        api_key: format!("sk-{id}-secret"),
        api_version: "2024-10-21".into(),
        weight: 1,
        order: 1,
        quality_tier: 3,
        context_window,
        limits: Some(v1::Limits::default()),
        spec_hash: format!("h-{id}"),
        ..Default::default()
    }
}

fn policy(max_attempts: u32) -> v1::RoutingPolicy {
    v1::RoutingPolicy {
        failover: true,
        max_attempts,
        cooldown: Some(v1::Cooldown { allowed_fails: 100, window_seconds: 60, seconds: 30 }),
        health_routing: true,
        timeout_seconds: 5,
        ..Default::default()
    }
}

fn context(deployments: Vec<v1::Deployment>, scripts: &[(&str, Script)], max_attempts: u32) -> Context<Fake> {
    context_with(deployments, scripts, policy(max_attempts))
}

fn context_with(
    deployments: Vec<v1::Deployment>,
    scripts: &[(&str, Script)],
    policy: v1::RoutingPolicy,
) -> Context<Fake> {
    let ids: Vec<String> = deployments.iter().map(|d| d.id.clone()).collect();
    let route = v1::Route {
        public_name: "m".into(),
        kind: v1::RouteKind::GlobalDeployment as i32,
        deployment_ids: ids,
        policy: Some(policy),
        ..Default::default()
    };
    let pattern = v1::Route { public_name: "az/*".into(), pattern: true, ..route.clone() };
    let snapshot = v1::Snapshot {
        version: "v1".into(),
        team: "t".into(),
        deployments,
        routes: vec![route, pattern],
        ..Default::default()
    };
    let routes = Arc::new(RoutesHandle::default());
    routes.apply(snapshot).unwrap();
    let scripts = scripts.iter().map(|(id, s)| (format!("http://{id}.test:80"), s.clone())).collect();
    Context {
        memory: crate::fleet::Memory::default(),
        access: None,
        tracing: None,
        routes,
        upstream: Fake { scripts, calls: Mutex::default() },
        metrics: Metrics::new().unwrap(),
        team: "t".into(),
        limits: RequestLimits {
            max_body_bytes: 1 << 20,
            body_read_timeout: Duration::from_secs(5),
            attempt_timeout: None,
            stream_idle_timeout: Duration::from_secs(2),
        },
        body_memory: Arc::new(Semaphore::new(1 << 20)),
    }
}

async fn call(ctx: &Context<Fake>, endpoint: Endpoint, body: Value) -> (StatusCode, HeaderMap, String) {
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    let request = parse(endpoint, &HeaderMap::new(), ReadBody { bytes, reservation: None }).unwrap();
    let response = forward(ctx, ctx.routes.load().unwrap(), request, &HeaderMap::new()).await;
    let (parts, body) = response.into_parts();
    let mut text = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => text.extend_from_slice(frame.data_ref().map(|d| d.as_ref()).unwrap_or_default()),
            Err(_) => {
                text.extend_from_slice(b"<cut>");
                break;
            }
        }
    }
    (parts.status, parts.headers, String::from_utf8(text).unwrap())
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn metric(ctx: &Context<Fake>, needle: &str) -> Option<f64> {
    let text = ctx.metrics.render(None, 0);
    text.lines().find(|l| l.starts_with(needle)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

fn openai(id: &str) -> v1::Deployment {
    deployment(id, v1::Provider::Openai, 0)
}

#[tokio::test]
async fn a_failed_attempt_fails_over_and_names_every_attempt() {
    let ctx = context(vec![openai("a"), openai("b")], &[("a", Script::Answer(500, "{}")), ("b", Script::Refused)], 3);
    let (status, headers, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(headers["x-llmroute-attempts"], "2");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "upstream_failed");
    let attempts = body["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    let last = attempts[1]["deployment"].as_str().unwrap();
    let expected = if last == "ns/a" { 500 } else { 502 };
    assert_eq!(status, expected, "the last upstream status, 502 after a transport failure");
}

#[tokio::test]
async fn malformed_or_empty_success_answers_are_upstream_failures() {
    for bad in [Script::BrokenBody, Script::EmptyBody] {
        let ctx = context(vec![openai("a"), openai("b")], &[("a", bad.clone()), ("b", bad)], 2);
        let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains("malformed response"), "{body}");
        assert_eq!(
            metric(&ctx, "llmroute_upstream_attempts_total{deployment=\"ns/a\",outcome=\"malformed_response\"}"),
            Some(1.0)
        );
        let text = ctx.metrics.render(None, 0);
        assert!(!text.contains("code=\"200\""), "nothing that failed counts as 200: {text}");
    }
    let ctx = context(
        vec![openai("a"), openai("b")],
        &[("a", Script::BrokenBody), ("b", Script::Answer(200, "{\"ok\":1}"))],
        2,
    );
    let (status, headers, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"ok\":1}"));
    assert_eq!(headers["x-llmroute-deployment"], "ns/b");
}

#[tokio::test(start_paused = true)]
async fn every_failure_answer_names_the_route_it_took() {
    let az = |id| deployment(id, v1::Provider::Azure, 0);
    // Failed upstreams (502-class), a passed-on 400, a deadline, a refused body (an Azure name
    // that would walk a path), and a name served by the wildcard route.
    let cases: [(Context<Fake>, Value, StatusCode, &str); 5] = [
        (
            context(vec![openai("a")], &[("a", Script::Answer(500, "{}"))], 1),
            chat(false),
            StatusCode::INTERNAL_SERVER_ERROR,
            "m",
        ),
        (context(vec![openai("a")], &[("a", Script::EchoKey)], 1), chat(false), StatusCode::BAD_REQUEST, "m"),
        (context(vec![openai("a")], &[("a", Script::NoAnswer)], 1), chat(false), StatusCode::GATEWAY_TIMEOUT, "m"),
        (context(vec![az("a")], &[], 1), json!({"model": "az/../x", "messages": []}), StatusCode::BAD_REQUEST, "az/*"),
        (
            context(vec![openai("a")], &[("a", Script::Answer(503, "{}"))], 1),
            json!({"model": "az/x", "messages": []}),
            StatusCode::SERVICE_UNAVAILABLE,
            "az/*",
        ),
    ];
    for (ctx, body, status, route) in cases {
        let (got, headers, text) = call(&ctx, Endpoint::ChatCompletions, body).await;
        assert_eq!(got, status, "{text}");
        assert_eq!(headers.get("x-llmroute-route").map(|v| v.to_str().unwrap()), Some(route), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn headers_then_silence_is_a_504_within_the_deadline() {
    let ctx = context(vec![openai("a")], &[("a", Script::HeadThenStall)], 1);
    let started = tokio::time::Instant::now();
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(started.elapsed() <= Duration::from_secs(5) + Duration::from_millis(50));
    let ctx = context(vec![openai("a")], &[("a", Script::NoAnswer)], 1);
    let (status, _, _) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_before_the_answer_is_counted_as_499_with_its_attempt_cancelled() {
    let ctx = context(vec![openai("a")], &[("a", Script::NoAnswer)], 1);
    // The client goes away while the attempt waits: hyper drops the request's future.
    let left = tokio::time::timeout(Duration::from_secs(1), call(&ctx, Endpoint::ChatCompletions, chat(false))).await;
    assert!(left.is_err(), "the upstream never answers");
    assert_eq!(metric(&ctx, "llmroute_requests_total{code=\"499\",deployment=\"ns/a\",model_group=\"m\"}"), Some(1.0));
    assert_eq!(metric(&ctx, "llmroute_upstream_attempts_total{deployment=\"ns/a\",outcome=\"cancelled\"}"), Some(1.0));
    assert_eq!(ctx.routes.load().unwrap().state.get(0).in_flight(), 0, "its in-flight slot is given back");
    // Left during a failover: counted against the deployment it was waiting on, once.
    let second = v1::Deployment { order: 2, ..openai("b") };
    let ctx = context(vec![openai("a"), second], &[("a", Script::Answer(500, "{}")), ("b", Script::NoAnswer)], 2);
    let left = tokio::time::timeout(Duration::from_secs(1), call(&ctx, Endpoint::ChatCompletions, chat(false))).await;
    assert!(left.is_err());
    assert_eq!(ctx.upstream.calls.lock().unwrap().len(), 2, "failed over once");
    let text = ctx.metrics.render(None, 0);
    assert!(text.contains("llmroute_requests_total{code=\"499\",deployment=\"ns/b\",model_group=\"m\"} 1"), "{text}");
    assert_eq!(text.matches("llmroute_requests_total{").count(), 1, "counted once: {text}");
    assert!(text.contains("llmroute_upstream_attempts_total{deployment=\"ns/b\",outcome=\"cancelled\"} 1"), "{text}");
    assert!(
        text.contains("llmroute_upstream_attempts_total{deployment=\"ns/a\",outcome=\"error_status\"} 1"),
        "{text}"
    );
    // A request that got its answer is counted once, by its answer only.
    let ctx = context(vec![openai("a")], &[], 1);
    assert_eq!(call(&ctx, Endpoint::ChatCompletions, chat(false)).await.0, StatusCode::OK);
    let failed = context(vec![openai("a")], &[("a", Script::Answer(500, "{}"))], 1);
    assert_eq!(call(&failed, Endpoint::ChatCompletions, chat(false)).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    for ctx in [&ctx, &failed] {
        let text = ctx.metrics.render(None, 0);
        assert!(!text.contains("code=\"499\"") && !text.contains("cancelled"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_gets_an_error_event_and_ends() {
    let ctx = context(vec![openai("a")], &[("a", Script::FirstChunkThenStall("data: {\"x\":1}\n\n"))], 1);
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(true)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("data: {\"x\":1}\n\n"), "{body}");
    assert!(body.contains("event: error\ndata: {\"error\""), "{body}");
    assert!(body.contains("stream_idle_timeout"), "{body}");
    assert_eq!(metric(&ctx, "llmroute_requests_total{code=\"504\",deployment=\"ns/a\",model_group=\"m\"}"), Some(1.0));
    assert_eq!(metric(&ctx, "llmroute_requests_total{code=\"200\""), None);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_mid_line_gets_its_error_as_an_event_of_its_own() {
    let ctx = context(vec![openai("a")], &[("a", Script::FirstChunkThenStall("data: {\"id\":\"c\",\"choi"))], 1);
    let (_, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(true)).await;
    assert!(body.starts_with("data: {\"id\":\"c\",\"choi\n\nevent: error\ndata: {\"error\""), "{body}");
    assert!(super::relay::ends_event(b"data: x\r\n\r\n") && !super::relay::ends_event(b"x\n"));
}

#[tokio::test(start_paused = true)]
async fn a_plain_answer_that_stalls_midway_is_cut_not_hung() {
    let ctx = context(vec![openai("a")], &[("a", Script::FirstChunkThenStall("{\"partial\":"))], 1);
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "{\"partial\":<cut>");
}

#[tokio::test]
async fn an_echoed_credential_never_reaches_the_client() {
    let ctx = context(vec![openai("a")], &[("a", Script::EchoKey)], 1);
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.contains("sk-a-secret") && body.contains(&"*".repeat("sk-a-secret".len())), "{body}");
}

#[tokio::test]
async fn a_prompt_no_window_takes_is_400_context_length_exceeded_without_a_call() {
    let ctx = context(vec![deployment("a", v1::Provider::Openai, 10)], &[], 3);
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(400)}]});
    let (status, headers, body) = call(&ctx, Endpoint::ChatCompletions, big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "context_length_exceeded");
    assert!(ctx.upstream.calls.lock().unwrap().is_empty());
    assert_eq!(headers["x-llmroute-route"], "m", "no attempt: the route the name resolves to");
}

#[tokio::test]
async fn a_model_name_that_would_walk_an_azure_path_is_400_before_any_call() {
    let mut d = deployment("a", v1::Provider::Azure, 0);
    d.upstream_model = "*".into();
    let ctx = context(vec![d], &[], 3);
    for name in ["az/../../admin", "az/x?api-version=1", "az/a#b", "az/a\u{1}"] {
        let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, json!({"model": name, "messages": []})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(body.contains("invalid_model_name"), "{body}");
    }
    assert!(ctx.upstream.calls.lock().unwrap().is_empty());
    let (status, _, _) = call(&ctx, Endpoint::ChatCompletions, json!({"model": "az/gpt 4", "messages": []})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ctx.upstream.calls.lock().unwrap()[0].1,
        "/v1/openai/deployments/gpt%204/chat/completions?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn retry_after_cools_the_deployment_for_its_period() {
    let ctx = context(
        vec![openai("a"), openai("b")],
        &[
            ("a", Script::AnswerWith(429, "{}", "retry-after", "120")),
            ("b", Script::AnswerWith(429, "{}", "retry-after", "120")),
        ],
        2,
    );
    let (status, headers, _) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[http::header::RETRY_AFTER], "120", "the upstream's pause is passed on");
    let routes = ctx.routes.load().unwrap();
    let now = now_ms();
    for i in 0..2 {
        let state = routes.state.get(i);
        assert!(state.in_cooldown(now + 100_000) && !state.in_cooldown(now + 125_000), "cooled for 120 s");
    }
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn responses_ids_are_wrapped_and_unwrapped() {
    let ctx =
        context(vec![openai("a")], &[("a", Script::Answer(200, "{\"id\":\"resp_9\",\"object\":\"response\"}"))], 1);
    let (_, _, body) = call(&ctx, Endpoint::Responses, json!({"model": "m", "input": "hi"})).await;
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(llmroute_router::unwrap_response_id(&id), Some(("ns/a".into(), "resp_9")));
}

#[tokio::test]
async fn an_answer_of_known_length_keeps_it_and_is_counted_at_once() {
    let ctx = context(vec![openai("a")], &[("a", Script::Sized("{\"ok\":true}"))], 1);
    let bytes = Bytes::from(serde_json::to_vec(&chat(false)).unwrap());
    let request = parse(Endpoint::ChatCompletions, &HeaderMap::new(), ReadBody { bytes, reservation: None }).unwrap();
    let response = forward(&ctx, ctx.routes.load().unwrap(), request, &HeaderMap::new()).await;
    let body = response.into_body();
    assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(11), "Content-Length for the client");
    assert_eq!(body.collect().await.unwrap().to_bytes(), "{\"ok\":true}");
    assert_eq!(metric(&ctx, "llmroute_requests_total{code=\"200\",deployment=\"ns/a\",model_group=\"m\"}"), Some(1.0));
}

#[tokio::test]
async fn a_success_echoing_the_key_in_headers_or_body_is_masked() {
    let ctx = context(vec![openai("a")], &[("a", Script::EchoKeyInSuccess)], 1);
    let (status, headers, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-echo"], "<redacted>");
    assert!(!body.contains("sk-a-secret"), "{body}");
    assert_eq!(body, format!("{{\"debug\": \"{}\"}}", "*".repeat("sk-a-secret".len())));
}

#[tokio::test]
async fn the_key_reaches_the_client_neither_in_the_reason_phrase_nor_a_header_name_nor_joined_by_a_rewrite() {
    let ctx = context(vec![openai("a")], &[("a", Script::EchoKeyEverywhere)], 1);
    let bytes = Bytes::from(serde_json::to_vec(&chat(true)).unwrap());
    let request = parse(Endpoint::ChatCompletions, &HeaderMap::new(), ReadBody { bytes, reservation: None }).unwrap();
    let response = forward(&ctx, ctx.routes.load().unwrap(), request, &HeaderMap::new()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<hyper::ext::ReasonPhrase>().is_none(), "the upstream's reason phrase");
    assert!(response.headers().keys().all(|name| !name.as_str().contains("sk-a-secret")), "{:?}", response.headers());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("sk-a-secret"), "{body}");
    assert!(body.contains(&"*".repeat("sk-a-secret".len())), "masked once joined: {body}");
}

#[tokio::test]
async fn a_passed_on_error_content_type_holding_the_key_is_scrubbed() {
    let echo = Script::AnswerWith(400, "{}", "content-type", "application/json; key=sk-a-secret");
    let ctx = context(vec![openai("a")], &[("a", echo)], 1);
    let (status, headers, _) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (StatusCode::BAD_REQUEST, "<redacted>"));
}

#[tokio::test]
async fn an_error_body_too_large_to_keep_is_replaced_not_cut() {
    let ctx = context(vec![openai("a")], &[("a", Script::HugeError)], 1);
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&body).expect("valid JSON, not a cut body");
    assert!(body["error"]["message"].as_str().unwrap().contains("over 65536 bytes"), "{body}");
}

fn adaptive(scripts: &[(&str, Script)]) -> Context<Fake> {
    let mut p = policy(1);
    p.strategy = v1::Strategy::Adaptive as i32;
    context_with(vec![openai("a")], scripts, p)
}

fn turns(texts: &[&str]) -> Value {
    let mut messages = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            messages.push(json!({"role": "assistant", "content": "an answer"}));
        }
        messages.push(json!({"role": "user", "content": t}));
    }
    json!({"model": "m", "messages": messages})
}

fn deltas(ctx: &Context<Fake>) -> Vec<(f64, f64)> {
    let routes = ctx.routes.load().unwrap();
    routes.state.get(0).take_adaptive_deltas().into_iter().map(|(_, _, s, f)| (s, f)).collect()
}

const ANSWER: &str = r#"{"id":"chatcmpl-1","choices":[{"finish_reason":"stop"}],"usage":{"total_tokens":9}}"#;

#[tokio::test]
async fn the_next_turn_charges_a_repeated_or_corrected_answer_and_not_a_follow_up() {
    let ctx = adaptive(&[("a", Script::Answer(200, ANSWER))]);
    let q = "How do I sort a list in Python?";
    assert_eq!(call(&ctx, Endpoint::ChatCompletions, turns(&[q])).await.0, 200);
    assert_eq!(deltas(&ctx), [(1.0, 0.0)], "a 2xx is a success");
    // Same conversation (same first user message), the question asked again: a failure of
    // the answer before, then this answer's own success.
    call(&ctx, Endpoint::ChatCompletions, turns(&[q, "how do I sort a list in python"])).await;
    assert_eq!(deltas(&ctx), [(1.0, 1.0)]);
    call(&ctx, Endpoint::ChatCompletions, turns(&[q, q, "No, that's wrong."])).await;
    assert_eq!(deltas(&ctx), [(1.0, 1.0)]);
    call(&ctx, Endpoint::ChatCompletions, turns(&[q, q, "x", "Thanks! And how do I reverse it?"])).await;
    assert_eq!(deltas(&ctx), [(1.0, 0.0)], "a follow-up says nothing against the answer");
}

#[tokio::test]
async fn a_complaint_sent_again_and_again_counts_once() {
    // The upstream answers once, then refuses: retries of the complaint never reach it.
    let ctx = adaptive(&[("a", Script::Answer(200, ANSWER))]);
    let q = "How do I sort a list in Python?";
    call(&ctx, Endpoint::ChatCompletions, turns(&[q])).await;
    deltas(&ctx);
    let routes = ctx.routes.load().unwrap();
    routes.state.get(0).set_shared_cooldown(u64::MAX);
    for _ in 0..20 {
        let (status, _, _) = call(&ctx, Endpoint::ChatCompletions, turns(&[q, "No, that's wrong."])).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(deltas(&ctx), [(0.0, 1.0)], "one answer, one complaint");
}

#[tokio::test]
async fn a_truncated_answer_is_a_failure_once_relayed() {
    let truncated = r#"{"id":"chatcmpl-2","choices":[{"finish_reason":"length"}]}"#;
    let ctx = adaptive(&[("a", Script::Answer(200, truncated))]);
    assert_eq!(call(&ctx, Endpoint::ChatCompletions, turns(&["Write an essay"])).await.0, 200);
    assert_eq!(deltas(&ctx), [(1.0, 1.0)]);
}

#[tokio::test]
async fn feedback_credits_the_answer_it_names_once() {
    let ctx = adaptive(&[("a", Script::Answer(200, ANSWER))]);
    call(&ctx, Endpoint::ChatCompletions, turns(&["Write a poem"])).await;
    deltas(&ctx);
    let rate = |body: &str| crate::fleet::feedback(&ctx.memory, &ctx.routes, body.as_bytes()).status();
    assert_eq!(rate(r#"{"response_id":"chatcmpl-1","score":0.25}"#), StatusCode::OK);
    assert_eq!(deltas(&ctx), [(0.25, 0.75)]);
    assert_eq!(rate(r#"{"response_id":"chatcmpl-1","score":1}"#), StatusCode::NOT_FOUND, "rated once");
    assert_eq!(rate(r#"{"response_id":"chatcmpl-1","score":"1"}"#), StatusCode::BAD_REQUEST);
    assert_eq!(rate(r#"{"response_id":"chatcmpl-1","score":1,"extra":1}"#), StatusCode::BAD_REQUEST);
    assert_eq!(rate("not json"), StatusCode::BAD_REQUEST);
    // A Responses id as the client holds it (wrapped, naming the deployment): it must name the
    // deployment that answered.
    let credit = crate::fleet::Credit {
        group: "m".into(),
        kind: llmroute_router::RequestType::General,
        deployment: "ns/a".into(),
        quality_tier: 3,
    };
    for upstream in ["resp_7", "resp_8"] {
        ctx.memory.answered(upstream.into(), credit.clone(), crate::clock::now_ms());
    }
    let wrapped = |deployment: &str, id: &str| {
        json!({"response_id": llmroute_router::wrap_response_id(deployment, id), "score": 1}).to_string()
    };
    assert_eq!(rate(&wrapped("ns/other", "resp_7")), StatusCode::NOT_FOUND);
    assert_eq!(rate(&wrapped("ns/a", "resp_8")), StatusCode::OK);
    // A group that does not learn remembers nothing to rate.
    let plain = context(vec![openai("a")], &[("a", Script::Answer(200, ANSWER))], 1);
    call(&plain, Endpoint::ChatCompletions, chat(false)).await;
    let status =
        crate::fleet::feedback(&plain.memory, &plain.routes, br#"{"response_id":"chatcmpl-1","score":1}"#).status();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_that_ends_after_a_failed_turn_is_one_more_failure() {
    let ctx = adaptive(&[("a", Script::Answer(500, "{}"))]);
    assert_eq!(call(&ctx, Endpoint::ChatCompletions, turns(&["Write a poem"])).await.0, 500);
    assert_eq!(deltas(&ctx), [(0.0, 1.0)]);
    let abandoned = ctx.memory.abandoned(crate::clock::now_ms() + 31 * 60 * 1000);
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].deployment, "ns/a");
}

#[tokio::test]
async fn usage_is_counted_in_tokens_and_priced_from_plain_and_streamed_answers() {
    let mut priced = openai("a");
    priced.input_cost_per_million = 2.0;
    priced.output_cost_per_million = 8.0;
    let plain = r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":200}}}"#;
    let ctx = context(vec![priced.clone()], &[("a", Script::Answer(200, plain))], 1);
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, plain), "the client sees the answer as sent");
    let tokens = |kind: &str| {
        metric(&ctx, &format!("llmroute_tokens_total{{deployment=\"ns/a\",kind=\"{kind}\",model_group=\"m\"}}"))
    };
    assert_eq!((tokens("input"), tokens("output"), tokens("cached")), (Some(1000.0), Some(500.0), Some(200.0)));
    let cost = metric(&ctx, "llmroute_cost_usd_total{deployment=\"ns/a\",model_group=\"m\"}").unwrap();
    assert!((cost - 0.006).abs() < 1e-12, "{cost}");
    assert_eq!(
        metric(&ctx, "llmroute_time_to_first_token_seconds_count{deployment=\"ns/a\"}"),
        Some(0.0),
        "not a stream"
    );
    // A stream whose last chunk carries usage.
    let streamed = "data: {\"id\":\"c2\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"id\":\"c2\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\ndata: [DONE]\n\n";
    let ctx = context(vec![priced.clone()], &[("a", Script::Answer(200, streamed))], 1);
    let (_, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(true)).await;
    // The client did not ask for usage: the sidecar did, and removed what that added.
    let without = "data: {\"id\":\"c2\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
    assert_eq!(body, without);
    assert_eq!((tokens_of(&ctx, "input"), tokens_of(&ctx, "output")), (Some(10.0), Some(3.0)));
    // A client that asked gets the usage chunk as sent.
    let ctx = context(vec![priced], &[("a", Script::Answer(200, streamed))], 1);
    let mut asked = chat(true);
    asked["stream_options"] = json!({"include_usage": true});
    let (_, _, body) = call(&ctx, Endpoint::ChatCompletions, asked).await;
    assert_eq!(body, streamed);
    assert_eq!(metric(&ctx, "llmroute_time_to_first_token_seconds_count{deployment=\"ns/a\"}"), Some(1.0));
    // No usage, no tokens: nothing is made up.
    let ctx = context(vec![openai("a")], &[("a", Script::Answer(200, "{}"))], 1);
    call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!(tokens_of(&ctx, "input"), None);
}

#[tokio::test]
async fn an_absurd_usage_count_is_not_counted_nor_priced() {
    let mut priced = openai("a");
    priced.input_cost_per_million = 2.0;
    // A count that does not fit (its first 20 digits would), one that fits but no answer has,
    // and a fraction: none is usage. The output count is.
    let absurd = r#"{"usage":{"prompt_tokens":123456789012345678901234,"total_tokens":18446744073709551615,"completion_tokens":5,"cached_tokens":12.9}}"#;
    let ctx = context(vec![priced], &[("a", Script::Answer(200, absurd))], 1);
    let (status, _, body) = call(&ctx, Endpoint::ChatCompletions, chat(false)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, absurd), "the client still gets the answer as sent");
    assert_eq!(
        (tokens_of(&ctx, "input"), tokens_of(&ctx, "output"), tokens_of(&ctx, "cached")),
        (None, Some(5.0), None)
    );
    let cost = metric(&ctx, "llmroute_cost_usd_total{deployment=\"ns/a\",model_group=\"m\"}").unwrap_or(0.0);
    assert!(cost < 1e-9, "priced from a count no answer has: {cost}");
}

fn tokens_of(ctx: &Context<Fake>, kind: &str) -> Option<f64> {
    metric(ctx, &format!("llmroute_tokens_total{{deployment=\"ns/a\",kind=\"{kind}\",model_group=\"m\"}}"))
}

#[tokio::test]
async fn only_deployments_this_sidecar_uses_get_per_deployment_series() {
    let many: Vec<v1::Deployment> = (0..50).map(|i| openai(&format!("d{i}"))).collect();
    let ctx = context(many, &[], 1);
    assert_eq!(call(&ctx, Endpoint::ChatCompletions, chat(false)).await.0, StatusCode::OK);
    let routes = ctx.routes.load().unwrap();
    let text = ctx.metrics.render(Some(&routes), crate::clock::now_ms());
    let series = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
    assert_eq!(series("llmroute_deployment_cooldown{"), 1, "{text}");
    assert_eq!(series("llmroute_deployment_in_flight{"), 1);
    assert_eq!(series("llmroute_upstream_latency_seconds_count{"), 1);
    assert_eq!(series("llmroute_time_to_first_token_seconds_count{"), 1);
    // Idle for 15 minutes: forgotten; serving again brings them back.
    let later = crate::clock::now_ms() + 15 * 60 * 1000 + 1;
    let text = ctx.metrics.render(Some(&routes), later);
    let series = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
    assert_eq!(series("llmroute_upstream_latency_seconds_count{") + series("llmroute_requests_total{"), 0, "{text}");
    assert_eq!(series("llmroute_deployment_cooldown{"), 0);
    assert_eq!(call(&ctx, Endpoint::ChatCompletions, chat(false)).await.0, StatusCode::OK);
    let text = ctx.metrics.render(Some(&routes), crate::clock::now_ms());
    assert_eq!(text.lines().filter(|l| l.starts_with("llmroute_upstream_latency_seconds_count{")).count(), 1);
    assert!(text.contains("llmroute_requests_total{"));
}

#[test]
fn the_request_id_is_the_clients_whatever_its_bytes_else_a_new_one() {
    let with = |bytes: &[u8]| {
        let mut map = HeaderMap::new();
        map.insert("x-request-id", http::HeaderValue::from_bytes(bytes).unwrap());
        request_id(&map)
    };
    assert_eq!(with(b"req-1"), "req-1");
    assert_eq!(with("été-1".as_bytes()), "été-1", "UTF-8 kept, not replaced by a new id");
    assert_eq!(with(b"a\xffb"), "a\u{fffd}b");
    for blank in [&b""[..], b"   "] {
        let id = with(blank);
        assert_eq!(id.len(), 16, "a new id: {id:?}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert_eq!(request_id(&HeaderMap::new()).len(), 16);
}
