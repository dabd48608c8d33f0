//! The fake OpenAI-compatible upstream: many instances in one process, each on its own port,
//! plus one control port (`POST /{instance}/behaviour`, `GET /{instance}/stats`,
//! `POST /{instance}/reset`) that works whatever an instance is doing.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::behaviour::{Behaviour, Mode, Stats};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// One fake upstream instance.
pub struct Instance {
    name: String,
    behaviour: Mutex<Behaviour>,
    stats: Mutex<Stats>,
    counter: AtomicU64,
    /// Digests of the leading messages of the chat prompts seen (behaviour `prompt_cache`).
    cache: Mutex<std::collections::HashSet<[u8; 32]>>,
}

/// Prompts a fake prompt cache remembers, at most.
const CACHE_ENTRIES: usize = 100_000;

impl Instance {
    /// Cached prompt tokens of a chat request: its longest run of leading messages seen
    /// before (all of them remembered from now on), 4 bytes a token.
    fn cached_tokens(&self, request: &Value) -> u64 {
        use sha2::Digest as _;
        let Some(messages) = request.get("messages").and_then(Value::as_array) else { return 0 };
        let Ok(mut cache) = self.cache.lock() else { return 0 };
        let mut hasher = sha2::Sha256::new();
        let (mut bytes, mut cached) = (0u64, 0u64);
        for m in messages {
            let text = m.to_string();
            bytes += text.len() as u64;
            hasher.update(text.as_bytes());
            let digest: [u8; 32] = hasher.clone().finalize().into();
            if cache.contains(&digest) {
                cached = bytes;
            } else if cache.len() < CACHE_ENTRIES {
                cache.insert(digest);
            }
        }
        cached / 4
    }
}

impl Instance {
    fn behaviour(&self) -> Behaviour {
        self.behaviour.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// A running set of fake upstreams.
pub struct FakeUpstreams {
    /// Instance addresses by name.
    pub addrs: BTreeMap<String, SocketAddr>,
    /// The control port.
    pub control: SocketAddr,
}

/// Binds every instance and the control port and serves them on the current runtime; with
/// `tls`, the instances speak https (the control port stays plain http).
pub async fn serve_fakes(
    instances: Vec<(String, SocketAddr, Behaviour)>,
    control: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<FakeUpstreams> {
    let mut registry = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for (name, addr, behaviour) in instances {
        let listener =
            TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding instance {name} on {addr}: {e}"))?;
        let instance = Arc::new(Instance {
            name: name.clone(),
            behaviour: Mutex::new(behaviour),
            stats: Mutex::default(),
            counter: AtomicU64::new(0),
            cache: Mutex::default(),
        });
        addrs.insert(name.clone(), listener.local_addr()?);
        registry.insert(name, instance.clone());
        tokio::spawn(accept_api(listener, instance, tls.clone()));
    }
    let listener =
        TcpListener::bind(control).await.map_err(|e| anyhow::anyhow!("binding control port {control}: {e}"))?;
    let control = listener.local_addr()?;
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let registry = registry.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(control_handler(&registry, req).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(FakeUpstreams { addrs, control })
}

async fn accept_api(listener: TcpListener, instance: Arc<Instance>, tls: Option<tokio_rustls::TlsAcceptor>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let instance = instance.clone();
        if let Some(acceptor) = tls.clone() {
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |req| {
                    let instance = instance.clone();
                    async move { Ok::<_, Infallible>(api_handler(&instance, req).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
            continue;
        }
        tokio::spawn(async move {
            let raw: Option<&[u8]> = match instance.behaviour().mode {
                Mode::Garbage => Some(b"\x00\x01 THIS IS NOT HTTP \xff\r\n\r\n"),
                Mode::BadChunk => Some(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nZZ-not-a-size\r\n{}\r\n",
                ),
                _ => None,
            };
            if let Some(answer) = raw {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if let Ok(mut s) = instance.stats.lock() {
                    s.requests += 1;
                }
                let _ = stream.write_all(answer).await;
                // Keep the connection open a moment so the client reads what was sent.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            let service = service_fn(move |req| {
                let instance = instance.clone();
                async move { Ok::<_, Infallible>(api_handler(&instance, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn full(status: StatusCode, value: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response<Body> {
    full(status, json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

async fn control_handler(registry: &BTreeMap<String, Arc<Instance>>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_matches('/').to_owned();
    let Some((name, action)) = path.split_once('/') else {
        return openai_error(StatusCode::NOT_FOUND, "no such path", "x", "x");
    };
    let Some(instance) = registry.get(name) else {
        return openai_error(StatusCode::NOT_FOUND, "no such instance", "x", "x");
    };
    match (req.method().clone(), action) {
        (Method::POST, "behaviour") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let Ok(Value::Object(update)) = serde_json::from_slice::<Value>(&body) else {
                return openai_error(StatusCode::BAD_REQUEST, "behaviour must be a JSON object", "x", "x");
            };
            let Ok(mut current) = instance.behaviour.lock() else {
                return openai_error(StatusCode::INTERNAL_SERVER_ERROR, "lock", "x", "x");
            };
            let mut merged = serde_json::to_value(&*current).unwrap_or_default();
            if let Value::Object(map) = &mut merged {
                map.extend(update);
            }
            match serde_json::from_value::<Behaviour>(merged) {
                Ok(b) => {
                    *current = b.clone();
                    full(StatusCode::OK, serde_json::to_value(b).unwrap_or_default())
                }
                Err(e) => openai_error(StatusCode::BAD_REQUEST, &e.to_string(), "x", "x"),
            }
        }
        (Method::GET, "behaviour") => {
            full(StatusCode::OK, serde_json::to_value(instance.behaviour()).unwrap_or_default())
        }
        (Method::GET, "stats") => {
            let stats = instance.stats.lock().map(|s| s.clone()).unwrap_or_default();
            full(StatusCode::OK, serde_json::to_value(stats).unwrap_or_default())
        }
        (Method::POST, "reset") => {
            if let Ok(mut s) = instance.stats.lock() {
                *s = Stats::default();
            }
            full(StatusCode::OK, json!({}))
        }
        _ => openai_error(StatusCode::NOT_FOUND, "no such action", "x", "x"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
    Embeddings,
    Responses,
}

fn api_of(path: &str) -> Option<Api> {
    [
        ("/chat/completions", Api::Chat),
        ("/completions", Api::Completions),
        ("/embeddings", Api::Embeddings),
        ("/responses", Api::Responses),
    ]
    .into_iter()
    .find(|(suffix, _)| path.ends_with(suffix))
    .map(|(_, api)| api)
}

async fn api_handler(instance: &Instance, req: Request<Incoming>) -> Response<Body> {
    let behaviour = instance.behaviour();
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path.ends_with("/models") {
        if let Ok(mut s) = instance.stats.lock() {
            s.probes += 1;
        }
        return if behaviour.healthy {
            full(
                StatusCode::OK,
                json!({"object": "list", "data": [{"id": instance.name, "object": "model", "created": 0, "owned_by": "fake"}]}),
            )
        } else {
            openai_error(StatusCode::SERVICE_UNAVAILABLE, "instance is down", "server_error", "unavailable")
        };
    }
    let Some(api) = api_of(&path).filter(|_| req.method() == Method::POST) else {
        return openai_error(
            StatusCode::NOT_FOUND,
            &format!("unknown path {path}"),
            "invalid_request_error",
            "unknown_url",
        );
    };
    let credential = req
        .headers()
        .get(header::AUTHORIZATION)
        .or_else(|| req.headers().get("api-key"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_owned())
        .unwrap_or_default();
    let path_and_query = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let parts_traceparent =
        req.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // As OpenAI: with `stream_options.include_usage`, every chunk carries `"usage": null` and a
    // last chunk with no choices carries the usage.
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let has_stream_options = request.get("stream_options").is_some();
    let traceparent = parts_traceparent;
    let previous = request.get("previous_response_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Ok(mut s) = instance.stats.lock() {
        s.requests += 1;
        s.last_model = model.clone();
        s.last_path = path_and_query;
        s.last_host = host;
        s.saw_client_authorization |= credential.contains("client");
        s.last_credential = credential;
        s.last_previous_response_id = previous.clone();
        s.saw_stream_options |= has_stream_options;
        s.last_traceparent = traceparent;
        s.rejected_stream_options |= has_stream_options && behaviour.reject_stream_options;
    }
    if has_stream_options && behaviour.reject_stream_options {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Unrecognized request argument supplied: stream_options",
            "invalid_request_error",
            "invalid_request",
        );
    }
    if behaviour.mode == Mode::Hang {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    let fail = instance.behaviour.lock().map(|mut b| {
        let fail = b.fail_next > 0;
        b.fail_next = b.fail_next.saturating_sub(1);
        fail
    });
    if fail.unwrap_or(false) {
        return openai_error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure", "server_error", "internal_error");
    }
    if behaviour.mode == Mode::EchoKey {
        let message = format!(
            "Incorrect API key provided: {}. You can find your API key at ...",
            instance.stats.lock().map(|s| s.last_credential.clone()).unwrap_or_default()
        );
        return openai_error(StatusCode::BAD_REQUEST, &message, "invalid_request_error", "invalid_api_key");
    }
    if behaviour.status != 200 {
        let status = StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = openai_error(status, &format!("injected status {}", behaviour.status), "server_error", "injected");
        if let Ok(v) = http::HeaderValue::from_str(&behaviour.retry_after)
            && !behaviour.retry_after.is_empty()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    match behaviour.mode {
        Mode::StallAfterHeaders => return stalled(None),
        Mode::StallAfterFirstChunk if stream => {
            return stalled(Some(format!(
                "data: {}\n\n",
                json!({"id": "x", "object": "chat.completion.chunk", "choices": []})
            )));
        }
        Mode::StallAfterFirstChunk => return stalled(Some("{\"id\": \"partial".to_owned())),
        _ => {}
    }
    if behaviour.huge_bytes > 0 {
        let id = match api {
            Api::Responses => format!("resp_{}_huge", instance.name),
            _ => format!("chatcmpl-{}-huge", instance.name),
        };
        return huge(&id, behaviour.huge_bytes, stream);
    }
    if behaviour.context_window > 0 && body.len() as u64 / 4 > behaviour.context_window {
        let message = format!(
            "This model's maximum context length is {} tokens. However, your messages resulted in {} tokens.",
            behaviour.context_window,
            body.len() / 4
        );
        return openai_error(StatusCode::BAD_REQUEST, &message, "invalid_request_error", "context_length_exceeded");
    }
    let n = instance.counter.fetch_add(1, Ordering::Relaxed);
    let text = format!("served by {}", instance.name);
    let close_mid_stream = behaviour.mode == Mode::CloseMidStream;
    match api {
        Api::Chat if stream || close_mid_stream => sse(
            chat_chunks(&instance.name, n, &model, &text, behaviour.stream_chunks, include_usage),
            behaviour.chunk_delay_ms,
            close_mid_stream,
        ),
        Api::Responses if stream || close_mid_stream => sse(
            response_events(&instance.name, n, &model, &text, &previous, behaviour.stream_chunks),
            behaviour.chunk_delay_ms,
            close_mid_stream,
        ),
        Api::Chat => {
            let mut answer = chat(&instance.name, n, &model, &text);
            if behaviour.prompt_cache {
                let cached = instance.cached_tokens(&request);
                answer["usage"]["prompt_tokens"] = json!((body.len() as u64 / 4).max(cached));
                answer["usage"]["prompt_tokens_details"] = json!({"cached_tokens": cached});
                if let (true, Ok(mut s)) = (cached > 0, instance.stats.lock()) {
                    s.cache_hits += 1;
                }
            }
            full(StatusCode::OK, answer)
        }
        Api::Completions => full(
            StatusCode::OK,
            json!({
                "id": format!("cmpl-{}-{n}", instance.name), "object": "text_completion", "created": 0, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
            }),
        ),
        Api::Embeddings => full(
            StatusCode::OK,
            json!({
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}
            }),
        ),
        Api::Responses => full(StatusCode::OK, response_object(&instance.name, n, &model, &text, &previous)),
    }
}

fn chat(name: &str, n: u64, model: &str, text: &str) -> Value {
    json!({
        "id": format!("chatcmpl-{name}-{n}"), "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    })
}

fn response_object(name: &str, n: u64, model: &str, text: &str, previous: &str) -> Value {
    json!({
        "id": format!("resp_{name}_{n}"), "object": "response", "created_at": 0, "status": "completed", "model": model,
        "previous_response_id": if previous.is_empty() { Value::Null } else { Value::String(previous.to_owned()) },
        "output": [{"type": "message", "id": format!("msg_{n}"), "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 1, "output_tokens": 3, "total_tokens": 4,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    })
}

fn chat_chunks(name: &str, n: u64, model: &str, text: &str, chunks: u32, include_usage: bool) -> Vec<String> {
    let id = format!("chatcmpl-{name}-{n}");
    let chunks = chunks.max(1);
    let with_usage = |mut chunk: Value| {
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut out: Vec<String> = (0..chunks)
        .map(|i| {
            let content = if i == 0 { text.to_owned() } else { format!(" chunk {i}") };
            let chunk = with_usage(json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": null}]}));
            format!("data: {chunk}\n\n")
        })
        .collect();
    let last = with_usage(json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    out.push(format!("data: {last}\n\n"));
    if include_usage {
        let usage = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": 1 + chunks}});
        out.push(format!("data: {usage}\n\n"));
    }
    out.push("data: [DONE]\n\n".to_owned());
    out
}

fn response_events(name: &str, n: u64, model: &str, text: &str, previous: &str, chunks: u32) -> Vec<String> {
    let done = response_object(name, n, model, text, previous);
    let mut created = done.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    let mut out = vec![format!(
        "event: response.created\ndata: {}\n\n",
        json!({"type": "response.created", "sequence_number": 0, "response": created})
    )];
    for i in 0..chunks.max(1) {
        let delta = if i == 0 { text.to_owned() } else { String::new() };
        let event = json!({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": format!("msg_{n}"), "output_index": 0, "content_index": 0, "delta": delta});
        out.push(format!("event: response.output_text.delta\ndata: {event}\n\n"));
    }
    out.push(format!(
        "event: response.completed\ndata: {}\n\n",
        json!({"type": "response.completed", "sequence_number": chunks + 1, "response": done})
    ));
    out
}

/// A 200 whose body sends `first` (if any) and then nothing, ever.
fn stalled(first: Option<String>) -> Response<Body> {
    let first = futures_util::stream::iter(first.map(|f| Ok::<_, BoxError>(Frame::data(Bytes::from(f)))));
    let body = StreamBody::new(first.chain(futures_util::stream::pending()));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// A 200 of about `bytes` bytes: a JSON object with `id` first and a long `padding`, or one
/// SSE `response.completed` event that large, streamed in 64 KiB chunks without holding it.
fn huge(id: &str, bytes: u64, stream: bool) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let head = if stream {
        format!(
            "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"{id}\",\"object\":\"response\",\"padding\":\""
        )
    } else {
        format!("{{\"id\":\"{id}\",\"object\":\"response\",\"padding\":\"")
    };
    let tail = if stream { "\"}}\n\ndata: [DONE]\n\n" } else { "\"}" };
    let chunks = (bytes as usize).div_ceil(CHUNK).max(1);
    let pad = Bytes::from(vec![b'x'; CHUNK]);
    let parts = std::iter::once(Bytes::from(head))
        .chain(std::iter::repeat_n(pad, chunks))
        .chain(std::iter::once(Bytes::from_static(tail.as_bytes())));
    let body = StreamBody::new(futures_util::stream::iter(parts.map(|b| Ok::<_, BoxError>(Frame::data(b)))));
    let mut r = Response::new(BodyExt::boxed(body));
    let kind = if stream { "text/event-stream" } else { "application/json" };
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
    r
}

fn sse(events: Vec<String>, delay_ms: u64, close_mid_stream: bool) -> Response<Body> {
    let total = events.len();
    let stream = futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, event)| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if close_mid_stream && i >= 1 {
            return Err::<Frame<Bytes>, BoxError>("closing mid-stream on purpose".into());
        }
        let _ = total;
        Ok(Frame::data(Bytes::from(event)))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}
