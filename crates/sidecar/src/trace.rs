//! OpenTelemetry traces (`--otlp-endpoint`, off by default): one server span per client
//! request, a client span per upstream attempt, GenAI semantic-convention attributes plus
//! `llmroute.*` ones, W3C `traceparent` continued from the client and propagated upstream.
//!
//! Spans leave through a bounded queue to one export task (OTLP/gRPC, batches of at most 512
//! every second): a dead or slow collector costs a request nothing but dropped spans, counted
//! in `llmroute_trace_spans_dropped_total`. With tracing off there is no tracer at all: the
//! hop pays one `Option` check.

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use prometheus::IntCounter;
use tokio::sync::mpsc;

/// Spans waiting for export, at most.
const QUEUE: usize = 4_096;
/// Spans per export call, at most.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Longest an export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The export loop: batches of at most [`BATCH`] spans, sent at most [`BATCH_DELAY`] after the
/// first of them arrived; ends when the tracer is gone.
async fn export(exporter: opentelemetry_otlp::SpanExporter, mut queue: mpsc::Receiver<SpanData>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = queue.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while batch.len() < BATCH {
            tokio::select! {
                span = queue.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        let sending = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        if let Err(e) = exporter.export(sending).await {
            tracing::debug!(error = %e, "span export failed; those spans are lost");
        }
    }
}

/// Hands ended spans to the export task; drops (and counts) what a full queue refuses.
#[derive(Debug)]
struct BoundedProcessor {
    spans: mpsc::Sender<SpanData>,
    dropped: IntCounter,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The tracer of a sidecar with tracing on.
#[derive(Clone, Debug)]
pub(crate) struct Tracing {
    tracer: SdkTracer,
    _provider: SdkTracerProvider,
}

/// How traces are configured.
#[derive(Clone, Debug)]
pub(crate) struct TraceConfig {
    /// `--otlp-endpoint`, else `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT` (read by the exporter).
    pub endpoint: Option<String>,
    /// `--trace-sample-ratio` (`None`: `OTEL_TRACES_SAMPLER` if set, else 1.0), parent-based.
    pub sample_ratio: Option<f64>,
    /// This pod, a resource attribute.
    pub pod: String,
}

/// Whether the environment names an OTLP endpoint.
fn env_endpoint() -> bool {
    std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

impl Tracing {
    /// Starts the export task on the current runtime; `None` when no endpoint is configured.
    pub fn start(config: &TraceConfig, dropped: IntCounter) -> anyhow::Result<Option<Self>> {
        if config.endpoint.is_none() && !env_endpoint() {
            return Ok(None);
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &config.endpoint {
            exporter = opentelemetry_otlp::WithExportConfig::with_endpoint(exporter, endpoint.clone());
        }
        let exporter = opentelemetry_otlp::WithExportConfig::with_timeout(exporter, EXPORT_TIMEOUT);
        let mut resource = opentelemetry_sdk::Resource::builder();
        // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our defaults.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("llmroute-sidecar");
        }
        if !config.pod.is_empty() {
            resource = resource.with_attribute(KeyValue::new("k8s.pod.name", config.pod.clone()));
        }
        let resource = resource.build();
        let (spans, queue) = mpsc::channel::<SpanData>(QUEUE);
        // Encoding and sending spans run on a thread (and runtime) of their own, never on the
        // runtime that serves requests.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // The channel's background work belongs to the export runtime.
        let mut exporter = {
            let _entered = runtime.enter();
            exporter.build()?
        };
        exporter.set_resource(&resource);
        std::thread::Builder::new()
            .name("llmroute-trace-export".into())
            .spawn(move || runtime.block_on(export(exporter, queue)))?;
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(BoundedProcessor { spans, dropped });
        let explicit = config.sample_ratio;
        if explicit.is_some() || std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
            let ratio = explicit.unwrap_or(1.0);
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
        }
        let provider = provider.build();
        let tracer = provider.tracer("llmroute-sidecar");
        Ok(Some(Self { tracer, _provider: provider }))
    }

    /// The server span of a client request, continuing the client's `traceparent`.
    pub fn request(&self, headers: &HeaderMap, operation: &str, model: &str) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let mut span = self
            .tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        // Attributes are built only for spans that are recorded (sampled).
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("gen_ai.operation.name", operation.to_owned()),
                KeyValue::new("gen_ai.request.model", model.to_owned()),
            ]);
        }
        RequestSpan { cx: parent.with_span(span), tracer: self.tracer.clone() }
    }
}

/// A client request's span.
#[derive(Debug)]
pub(crate) struct RequestSpan {
    cx: Context,
    tracer: SdkTracer,
}

/// What an attempt span records.
pub(crate) struct AttemptInfo<'a> {
    pub number: usize,
    pub deployment: &'a str,
    pub model_group: &'a str,
    pub upstream_model: &'a str,
    pub provider: &'static str,
    pub server_address: &'a str,
    pub kind: &'static str,
}

impl RequestSpan {
    /// Whether the span is recorded (sampled): attributes are worth building only then.
    pub fn recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// Sets attributes on the request span.
    pub fn set(&self, attributes: Vec<KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Starts an attempt span (a child of the request's) and writes its `traceparent` into
    /// `upstream` headers.
    pub fn attempt(&self, info: &AttemptInfo<'_>, upstream: &mut HeaderMap) -> AttemptSpan {
        let recording = self.recording();
        let name = if recording { format!("attempt {} {}", info.number, info.deployment) } else { String::new() };
        let mut span =
            self.tracer.span_builder(name).with_kind(SpanKind::Client).start_with_context(&self.tracer, &self.cx);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("gen_ai.request.model", info.upstream_model.to_owned()),
                KeyValue::new("gen_ai.provider.name", info.provider),
                KeyValue::new("server.address", info.server_address.to_owned()),
                KeyValue::new("llmroute.deployment", info.deployment.to_owned()),
                KeyValue::new("llmroute.model_group", info.model_group.to_owned()),
                KeyValue::new("llmroute.attempt", info.number as i64),
                KeyValue::new("llmroute.attempt.kind", info.kind),
            ]);
        }
        let cx = self.cx.with_span(span);
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(upstream));
        AttemptSpan { cx }
    }

    /// Ends the request span with its outcome (`error` is the `error.type` of a failure).
    pub fn end(self, status: u16, error: Option<&str>) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if let Some(error) = error {
            span.set_attribute(KeyValue::new("error.type", error.to_owned()));
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }
}

/// An upstream attempt's span.
pub(crate) struct AttemptSpan {
    cx: Context,
}

impl AttemptSpan {
    /// Ends the attempt with its outcome (`llmroute.outcome`, and `error.type` on a failure).
    pub fn end(self, outcome: &str, failed: bool) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        span.set_attribute(KeyValue::new("llmroute.outcome", outcome.to_owned()));
        if failed {
            span.set_attribute(KeyValue::new("error.type", outcome.to_owned()));
            span.set_status(Status::error(outcome.to_owned()));
        }
        span.end();
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}
