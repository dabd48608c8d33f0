//! OpenTelemetry traces (`--otlp-endpoint`, off by default): one server span per client
//! request, a client span per upstream attempt, GenAI semantic-convention attributes plus
//! `llmroute.*` ones, W3C `traceparent` continued from the client and propagated upstream.
//!
//! A span is written in the OTLP protobuf format as it ends ([`wire`]) and queued for one
//! export thread ([`export`]): a request never allocates per attribute, never wakes another
//! thread and never waits for the collector. An unsampled request costs its ids and its
//! `traceparent`; with tracing off there is no tracer at all.

mod attributes;
mod bench;
mod call;
mod config;
mod context;
mod export;
mod transport;
mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use prometheus::IntCounter;

pub(crate) use attributes::{AttemptTarget, AttributeCache, DeploymentAttributes};
pub use bench::BenchTracer;
pub(crate) use wire::Value;

/// How traces are configured.
#[derive(Clone, Debug)]
pub(crate) struct TraceConfig {
    /// `--otlp-endpoint`, else `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `--trace-sample-ratio` (`None`: `OTEL_TRACES_SAMPLER` if set, else 1.0), parent-based.
    pub sample_ratio: Option<f64>,
    /// This pod, a resource attribute.
    pub pod: String,
}

/// The tracer of a sidecar with tracing on.
#[derive(Clone, Debug)]
pub(crate) struct Tracing {
    sampler: context::Sampler,
    queue: Arc<export::Queue>,
    flush: Arc<export::Flush>,
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The longest attribute value kept, bytes (as `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`): a
/// client's model name of megabytes must not make a span a collector refuses.
const MAX_VALUE: usize = 1_024;
/// The longest part of a span's name kept, bytes.
const MAX_NAME_PART: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The encoded `Resource`: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (through the
/// OpenTelemetry SDK's detectors) over our defaults.
fn resource(pod: &str) -> Vec<u8> {
    let mut builder = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        builder = builder.with_service_name("llmroute-sidecar");
    }
    if !pod.is_empty() {
        builder = builder.with_attribute(opentelemetry::KeyValue::new("k8s.pod.name", pod.to_owned()));
    }
    let mut encoded = Vec::new();
    for (key, value) in builder.build().iter() {
        let text;
        let value = match value {
            opentelemetry::Value::Bool(b) => Value::Bool(*b),
            opentelemetry::Value::I64(i) => Value::Int(*i),
            opentelemetry::Value::F64(f) => Value::Double(*f),
            opentelemetry::Value::String(s) => Value::Str(s.as_str()),
            other => {
                text = other.to_string();
                Value::Str(&text)
            }
        };
        wire::attribute(&mut encoded, wire::RESOURCE_ATTRIBUTES, key.as_str(), &value);
    }
    encoded
}

impl Tracing {
    /// Starts the export thread; `None` when no endpoint is configured.
    pub fn start(config: &TraceConfig, dropped: IntCounter) -> anyhow::Result<Option<Self>> {
        let env = |name: &str| std::env::var_os(name).and_then(|v| v.into_string().ok());
        let resolved =
            config::resolve(config.endpoint.as_deref(), config.sample_ratio, env).map_err(anyhow::Error::msg)?;
        let Some(resolved) = resolved else {
            if config.sample_ratio.is_some() {
                tracing::warn!("--trace-sample-ratio has no effect: no OTLP endpoint is configured");
            }
            return Ok(None);
        };
        for warning in &resolved.warnings {
            tracing::warn!("{warning}");
        }
        let queue = Arc::new(export::Queue::new(dropped));
        let collector = export::Collector {
            endpoint: resolved.endpoint,
            headers: resolved.headers,
            timeout: resolved.timeout,
            keepalive: export::KEEPALIVE,
            resource: resource(&config.pod),
            scope: wire::scope("llmroute-sidecar", env!("CARGO_PKG_VERSION")),
        };
        let flush = Arc::new(export::Flush::default());
        export::spawn(collector, Arc::downgrade(&queue), flush.clone())?;
        Ok(Some(Self { sampler: resolved.sampler, queue, flush }))
    }

    /// Sends what has ended now, waiting at most `within` (at shutdown, so that the last
    /// requests' spans are not lost); what could not be sent by then is counted as dropped.
    pub fn flush(&self, within: std::time::Duration) {
        if !self.flush.now(within) {
            let left: usize = self.queue.take().iter().map(|b| b.spans).sum();
            self.queue.drop_spans(left);
        }
    }

    /// The server span of a client request, continuing the client's `traceparent`.
    pub fn request(&self, headers: &HeaderMap, operation: &str, model: &str) -> RequestSpan {
        // Several `traceparent` headers are no parent at all (W3C): a new trace.
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(only), None) => context::parse(only.as_bytes()),
            _ => None,
        };
        let trace = parent.map_or_else(context::new_trace, |p| p.trace);
        let sampled = self.sampler.sample(parent.as_ref(), trace);
        let tracestate = parent.and_then(|_| context::tracestate(headers.get_all(TRACESTATE).iter()));
        let recording = sampled.then(|| {
            let mut r = Recording::new(&[operation, model]);
            r.set("gen_ai.operation.name", Value::Str(operation));
            r.set("gen_ai.request.model", Value::Str(model));
            r
        });
        RequestSpan {
            ids: Ids { trace, id: context::new_span(), parent: parent.map(|p| p.span), sampled },
            remote_parent: parent.is_some(),
            tracestate,
            recording,
            queue: self.queue.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Ids {
    trace: u128,
    id: u64,
    parent: Option<u64>,
    sampled: bool,
}

/// What a recorded (sampled) span holds until it ends: one buffer, its name then its encoded
/// `KeyValue`s, so that a span costs one allocation.
#[derive(Debug)]
struct Recording {
    start_ns: u64,
    name_len: usize,
    buf: Vec<u8>,
}

/// A thread's span buffers kept for reuse: a busy heap's malloc cost more than the span.
const FREE_BUFFERS: usize = 32;
/// Buffers larger than this (a span with huge attributes) are not kept.
const KEEP_CAPACITY: usize = 4_096;

thread_local! {
    static FREE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Recording {
    fn new(name: &[&str]) -> Self {
        let mut buf = FREE.with(|free| free.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(640));
        for (i, part) in name.iter().enumerate() {
            if i > 0 {
                buf.push(b' ');
            }
            buf.extend_from_slice(clip(part, MAX_NAME_PART).as_bytes());
        }
        Self { start_ns: now_ns(), name_len: buf.len(), buf }
    }

    fn set(&mut self, name: &str, value: Value<'_>) {
        let value = match value {
            Value::Str(s) => Value::Str(clip(s, MAX_VALUE)),
            other => other,
        };
        wire::attribute(&mut self.buf, wire::SPAN_ATTRIBUTES, name, &value);
    }

    /// Appends attributes already encoded.
    fn extend(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
    }

    fn name(&self) -> &str {
        // Built from `&str` parts at a char boundary.
        std::str::from_utf8(&self.buf[..self.name_len]).unwrap_or_default()
    }

    fn attributes(&self) -> &[u8] {
        &self.buf[self.name_len..]
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= KEEP_CAPACITY {
            buf.clear();
            // `try_with`: a span dropped while its thread exits just frees its buffer.
            let _ = FREE.try_with(|free| {
                let mut free = free.borrow_mut();
                if free.len() < FREE_BUFFERS {
                    free.push(buf);
                }
            });
        }
    }
}

/// `n` in decimal, written into `buf`.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// An ended span's fields, but for its ids.
struct Ended<'a> {
    kind: wire::Kind,
    name: &'a [&'a str],
    start_ns: u64,
    attributes: &'a [&'a [u8]],
    extra: &'a [(&'a str, Value<'a>)],
    error: Option<&'a str>,
}

/// Writes an ended span into the export queue.
fn finish(
    queue: &export::Queue,
    ids: Ids,
    remote_parent: bool,
    tracestate: Option<&http::HeaderValue>,
    span: &Ended<'_>,
) {
    let end_ns = now_ns();
    queue.push(|buf| {
        wire::span(
            buf,
            &wire::Span {
                trace: ids.trace,
                id: ids.id,
                parent: ids.parent,
                remote_parent,
                sampled: ids.sampled,
                trace_state: tracestate.and_then(|v| v.to_str().ok()).unwrap_or_default(),
                name: span.name,
                kind: span.kind,
                start_ns: span.start_ns,
                end_ns,
                attributes: span.attributes,
                extra: span.extra,
                error: span.error,
            },
        );
    });
}

/// Ends a request span recorded as `r`, with `extra` attributes.
fn finish_request(span: &RequestSpan, r: &Recording, extra: &[(&str, Value<'_>)], error: Option<&str>) {
    let ended = Ended {
        kind: wire::Kind::Server,
        name: &[r.name()],
        start_ns: r.start_ns,
        attributes: &[r.attributes()],
        extra,
        error,
    };
    finish(&span.queue, span.ids, span.remote_parent, span.tracestate.as_ref(), &ended);
}

/// A client request's span. Dropped without [`RequestSpan::end`] (its client left before the
/// answer), it ends as 499, as `llmroute_requests_total` counts that request.
#[derive(Debug)]
pub(crate) struct RequestSpan {
    ids: Ids,
    remote_parent: bool,
    tracestate: Option<http::HeaderValue>,
    recording: Option<Recording>,
    queue: Arc<export::Queue>,
}

impl RequestSpan {
    /// Whether the span is recorded (sampled): attributes are worth building only then.
    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets attributes on the request span (nothing when it is not recorded).
    pub fn set(&mut self, attributes: &[(&str, Value<'_>)]) {
        if let Some(r) = &mut self.recording {
            for (name, value) in attributes {
                r.set(name, *value);
            }
        }
    }

    /// Starts attempt `number` (a child of the request's span) to `target`, whose
    /// deployment's attributes `cache` holds for the current view, and writes its
    /// `traceparent` (and the client's `tracestate`) into `upstream` headers.
    pub fn attempt(
        &self,
        target: &AttemptTarget<'_>,
        cache: &AttributeCache,
        number: usize,
        kind: &'static str,
        upstream: &mut HeaderMap,
    ) -> AttemptSpan {
        let ids = Ids {
            trace: self.ids.trace,
            id: context::new_span(),
            parent: Some(self.ids.id),
            sampled: self.ids.sampled,
        };
        upstream.insert(TRACEPARENT, context::format(ids.trace, ids.id, ids.sampled));
        match &self.tracestate {
            Some(state) => upstream.insert(TRACESTATE, state.clone()),
            None => upstream.remove(TRACESTATE),
        };
        let attributes = self.recording.is_some().then(|| DeploymentAttributes::cached(cache, target));
        AttemptSpan {
            ids,
            start_ns: if attributes.is_some() { now_ns() } else { 0 },
            attributes,
            number,
            kind,
            tracestate: self.tracestate.clone(),
            queue: self.queue.clone(),
        }
    }

    /// Ends `attempt`, which answered (`success`), and records on the request span where it
    /// went: the deployment's answer attributes, the attempts made, the attempt's kind and
    /// the affinity that applied.
    pub fn answered(&mut self, mut attempt: AttemptSpan, attempts: usize, affinity: Option<&str>) {
        if let (Some(r), Some(deployment)) = (&mut self.recording, &attempt.attributes) {
            r.extend(&deployment.answer);
            r.set("llmroute.attempts", Value::Int(i64::try_from(attempts).unwrap_or(i64::MAX)));
            r.set("llmroute.attempt.kind", Value::Str(attempt.kind));
            if let Some(affinity) = affinity {
                r.set("llmroute.affinity", Value::Str(affinity));
            }
        }
        attempt.finish("success", false);
    }

    /// Ends the request span with its outcome (`error` is the `error.type` of a failure).
    pub fn end(mut self, status: u16, error: Option<&str>) {
        let Some(r) = self.recording.take() else { return };
        let status = ("http.response.status_code", Value::Int(i64::from(status)));
        match error {
            Some(e) => finish_request(&self, &r, &[status, ("error.type", Value::Str(clip(e, MAX_VALUE)))], error),
            None => finish_request(&self, &r, &[status], None),
        }
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        if let Some(r) = self.recording.take() {
            // Dropped before its answer: the client left (499, as the request is counted).
            let status = ("http.response.status_code", Value::Int(499));
            finish_request(self, &r, &[status, ("error.type", Value::Str("499"))], Some("499"));
        }
    }
}

/// An upstream attempt's span. Dropped without [`AttemptSpan::end`] (the client went away
/// during the attempt), it ends as `cancelled`. Its attributes are written as it ends: the
/// deployment's, encoded once per view, and its own.
pub(crate) struct AttemptSpan {
    ids: Ids,
    start_ns: u64,
    /// The deployment's attributes; `None`: not recorded.
    attributes: Option<Arc<DeploymentAttributes>>,
    number: usize,
    kind: &'static str,
    tracestate: Option<http::HeaderValue>,
    queue: Arc<export::Queue>,
}

impl AttemptSpan {
    /// Ends the attempt with its outcome (`llmroute.outcome`, and `error.type` on a failure).
    pub fn end(mut self, outcome: &str, failed: bool) {
        self.finish(outcome, failed);
    }

    fn finish(&mut self, outcome: &str, failed: bool) {
        let Some(deployment) = self.attributes.take() else { return };
        let mut digits = [0u8; 20];
        let number = decimal(self.number, &mut digits);
        let outcome = clip(outcome, MAX_VALUE);
        let own = [
            ("llmroute.attempt", Value::Int(i64::try_from(self.number).unwrap_or(i64::MAX))),
            ("llmroute.attempt.kind", Value::Str(self.kind)),
            ("llmroute.outcome", Value::Str(outcome)),
            ("error.type", Value::Str(outcome)),
        ];
        let ended = Ended {
            kind: wire::Kind::Client,
            name: &["attempt", number, &deployment.name],
            start_ns: self.start_ns,
            attributes: &[&deployment.attempt],
            extra: if failed { &own } else { &own[..3] },
            error: failed.then_some(outcome),
        };
        finish(&self.queue, self.ids, false, self.tracestate.as_ref(), &ended);
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        self.finish("cancelled", true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    fn tracing(sampler: context::Sampler) -> Tracing {
        Tracing {
            sampler,
            queue: Arc::new(export::Queue::new(IntCounter::new("d", "d").unwrap())),
            flush: Arc::default(),
        }
    }

    /// What the export thread would send now.
    fn exported(t: &Tracing) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        let mut spans = Vec::new();
        for batch in t.queue.take() {
            let mut bytes = wire::request_head(&resource("pod-1"), &wire::scope("s", "1"), batch.body.len());
            bytes.extend_from_slice(&batch.body);
            let request = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("valid OTLP");
            spans.extend(request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans));
        }
        spans
    }

    fn target() -> AttemptTarget<'static> {
        AttemptTarget {
            deployment: "team/d",
            model_group: "m",
            upstream_model: "gpt-4o",
            provider: "openai",
            server_address: "127.0.0.1",
            server_port: 1,
            snapshot: "v1",
        }
    }

    /// Attempt `number` of `span` to `target()`.
    fn attempt(span: &RequestSpan, number: usize, upstream: &mut HeaderMap) -> AttemptSpan {
        span.attempt(&target(), &AttributeCache::new(), number, "first", upstream)
    }

    #[test]
    fn a_request_and_its_attempts_export_as_a_tree() {
        let t = tracing(context::Sampler::ratio(1.0));
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        headers.insert("tracestate", "vendor=x".parse().unwrap());
        let mut span = t.request(&headers, "chat", "m");
        let mut upstream = HeaderMap::new();
        attempt(&span, 1, &mut upstream).end("connect error", true);
        let second = attempt(&span, 2, &mut upstream);
        let traceparent = context::parse(upstream["traceparent"].as_bytes()).unwrap();
        assert_eq!(upstream["tracestate"], "vendor=x");
        span.answered(second, 2, Some("session"));
        span.end(200, None);
        let spans = exported(&t);
        assert_eq!(spans.len(), 3);
        let server = &spans[2];
        assert_eq!(server.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
        assert_eq!(server.name, "chat m");
        assert_eq!((spans[0].name.as_str(), spans[1].name.as_str()), ("attempt 1 team/d", "attempt 2 team/d"));
        let mut digits = [0; 20];
        assert_eq!((decimal(0, &mut digits), decimal(usize::MAX, &mut [0; 20])), ("0", "18446744073709551615"));
        assert_eq!(server.trace_state, "vendor=x");
        assert!(spans.iter().all(|s| s.trace_id == 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes()));
        assert!(spans[..2].iter().all(|s| s.parent_span_id == server.span_id && s.kind == 3));
        assert_eq!(spans[1].span_id, traceparent.span.to_be_bytes(), "the upstream's parent is the attempt");
        assert_eq!(spans[0].status.as_ref().map(|s| s.code), Some(2));
        assert!(spans[1].status.is_none());
        let failed = attributes(&spans[0]);
        assert_eq!(failed["llmroute.outcome"], "connect error");
        assert_eq!(failed["error.type"], "connect error");
        assert_eq!(failed["llmroute.attempt"], "1");
        let served = attributes(&spans[1]);
        let expected = [
            ("gen_ai.request.model", "gpt-4o"),
            ("gen_ai.provider.name", "openai"),
            ("server.address", "127.0.0.1"),
            ("server.port", "1"),
            ("llmroute.deployment", "team/d"),
            ("llmroute.model_group", "m"),
            ("llmroute.attempt", "2"),
            ("llmroute.attempt.kind", "first"),
            ("llmroute.outcome", "success"),
        ];
        assert_eq!(served, expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let request = attributes(server);
        let expected = [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.request.model", "m"),
            ("gen_ai.response.model", "gpt-4o"),
            ("llmroute.deployment", "team/d"),
            ("llmroute.model_group", "m"),
            ("llmroute.snapshot", "v1"),
            ("llmroute.attempts", "2"),
            ("llmroute.attempt.kind", "first"),
            ("llmroute.affinity", "session"),
            ("http.response.status_code", "200"),
        ];
        assert_eq!(request, expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(server.attributes.len(), expected.len(), "each attribute once");
    }

    /// A span's attributes, their values as text.
    fn attributes(span: &opentelemetry_proto::tonic::trace::v1::Span) -> std::collections::BTreeMap<String, String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        let text = |v: Option<Any>| match v {
            Some(Any::StringValue(s)) => s,
            Some(Any::IntValue(i)) => i.to_string(),
            other => format!("{other:?}"),
        };
        span.attributes.iter().map(|a| (a.key.clone(), text(a.value.clone().and_then(|v| v.value)))).collect()
    }

    #[test]
    fn hostile_headers_and_names_are_bounded() {
        let t = tracing(context::Sampler::ratio(1.0));
        let mut headers = HeaderMap::new();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.append("traceparent", traceparent.parse().unwrap());
        headers.append("traceparent", "00-11111111111111111111111111111111-1111111111111111-01".parse().unwrap());
        headers.insert("tracestate", "!!!not valid".parse().unwrap());
        let huge = "é".repeat(1_000_000);
        let span = t.request(&headers, "chat", &huge);
        let mut upstream = HeaderMap::new();
        attempt(&span, 1, &mut upstream).end("success", false);
        span.end(404, Some("404"));
        let sent = context::parse(upstream["traceparent"].as_bytes()).unwrap();
        assert_ne!(sent.trace, 0x4bf92f3577b34da6a3ce929d0e0e4736, "duplicates start a new trace");
        assert!(!upstream.contains_key("tracestate"));
        let spans = exported(&t);
        let server = spans.iter().find(|s| s.kind == 2).unwrap();
        assert!(server.name.len() <= "chat ".len() + MAX_NAME_PART, "{}", server.name.len());
        let model = server.attributes.iter().find(|a| a.key == "gen_ai.request.model").unwrap();
        let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(model)) =
            model.value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("a string")
        };
        assert!(model.len() <= MAX_VALUE && model.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_resource_names_the_service_and_the_pod() {
        let attributes = |pod: &str| {
            let head = wire::request_head(&resource(pod), &wire::scope("s", "1"), 0);
            let request = ExportTraceServiceRequest::decode(head.as_slice()).expect("valid OTLP");
            let resource = request.resource_spans[0].resource.clone().expect("a resource");
            resource
                .attributes
                .into_iter()
                .map(|kv| (kv.key, format!("{:?}", kv.value.and_then(|v| v.value))))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let with_pod = attributes("pod-7");
        assert_eq!(with_pod["k8s.pod.name"], r#"Some(StringValue("pod-7"))"#);
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            assert_eq!(with_pod["service.name"], r#"Some(StringValue("llmroute-sidecar"))"#);
        }
        assert!(with_pod.contains_key("telemetry.sdk.language"), "{with_pod:?}");
        assert!(!attributes("").contains_key("k8s.pod.name"));
    }

    #[test]
    fn span_buffers_are_reused_by_their_thread() {
        let kept = || FREE.with(|free| free.borrow().len());
        let first = Recording::new(&["chat", "m"]);
        let before = kept();
        drop(first);
        assert_eq!(kept(), before + 1, "an ended span's buffer is kept");
        let second = Recording::new(&["attempt", "1", "d"]);
        assert_eq!(kept(), before, "and taken by the next span");
        assert_eq!(second.name(), "attempt 1 d");
        drop(second);
        // A buffer grown past KEEP_CAPACITY is freed, not kept.
        let mut huge = Recording::new(&["x"]);
        huge.buf.reserve(2 * KEEP_CAPACITY);
        let before = kept();
        drop(huge);
        assert_eq!(kept(), before);
    }

    #[test]
    fn an_unsampled_request_records_nothing_but_still_propagates() {
        let t = tracing(context::Sampler::ratio(0.0));
        let mut span = t.request(&HeaderMap::new(), "chat", "m");
        assert!(!span.recording());
        let mut upstream = HeaderMap::new();
        upstream.insert("tracestate", "stale=1".parse().unwrap());
        attempt(&span, 1, &mut upstream).end("success", false);
        span.set(&[("x", Value::Int(1))]);
        span.end(200, None);
        let sent = context::parse(upstream["traceparent"].as_bytes()).unwrap();
        assert!(!sent.sampled);
        assert!(!upstream.contains_key("tracestate"), "a client's tracestate only");
        assert!(exported(&t).is_empty());
    }

    #[test]
    fn an_abandoned_request_still_ends_its_spans() {
        let t = tracing(context::Sampler::ratio(1.0));
        let span = t.request(&HeaderMap::new(), "chat", "m");
        let attempt = attempt(&span, 1, &mut HeaderMap::new());
        drop(attempt);
        drop(span);
        let spans = exported(&t);
        assert_eq!(spans.len(), 2);
        let outcome = spans[0].attributes.iter().find(|a| a.key == "llmroute.outcome").unwrap();
        assert_eq!(
            format!("{:?}", outcome.value),
            format!(
                "{:?}",
                Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "cancelled".into()
                    )),
                })
            )
        );
        // The request's span ends as its request is counted: 499, the client left.
        let request = &spans[1];
        let attribute = |key: &str| {
            request.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value)
        };
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        assert_eq!(attribute("http.response.status_code"), Some(Any::IntValue(499)));
        assert_eq!(attribute("error.type"), Some(Any::StringValue("499".into())));
        let status = request.status.as_ref().expect("an error status");
        assert_eq!((status.code, status.message.as_str()), (2, "499"));
    }
}
