//! The tracing work of one request, reachable from `benches/trace.rs`.

use std::sync::Arc;

use http::HeaderMap;
use prometheus::IntCounter;

use super::{AttemptInfo, Tracing, Value, context, export};

/// The tracing work of one request, for `benches/trace.rs`: a tracer with no export thread,
/// whose queue the caller drains as the export thread would.
#[doc(hidden)]
pub struct BenchTracer(Tracing);

impl BenchTracer {
    /// A tracer sampling new traces at `ratio`.
    pub fn new(ratio: f64) -> Self {
        let dropped = IntCounter::new("bench_dropped", "spans dropped").expect("a valid counter");
        Self(Tracing {
            sampler: context::Sampler::ratio(ratio),
            queue: Arc::new(export::Queue::new(dropped)),
            flush: Arc::default(),
        })
    }

    /// What a one-attempt chat request does with tracing: its server span, an attempt span
    /// and its `traceparent` in `upstream`, the answer's attributes and usage, both ends.
    pub fn request(&self, client: &HeaderMap, upstream: &mut HeaderMap) {
        let mut span = self.0.request(client, "chat", "gpt-4o");
        let info = AttemptInfo {
            number: 1,
            deployment: "team-a/gpt-4o-eastus",
            model_group: "gpt-4o",
            upstream_model: "gpt-4o",
            provider: "openai",
            server_address: "https://eastus.example.openai.azure.com",
            kind: "first",
        };
        span.attempt(&info, upstream).end("success", false);
        if span.recording() {
            span.set(&[
                ("gen_ai.response.model", Value::Str("gpt-4o")),
                ("llmroute.deployment", Value::Str(info.deployment)),
                ("llmroute.model_group", Value::Str(info.model_group)),
                ("llmroute.attempts", Value::Int(1)),
                ("llmroute.attempt.kind", Value::Str("first")),
                ("llmroute.snapshot", Value::Str("5f0c3a9e1b2d4c6f")),
                ("gen_ai.usage.input_tokens", Value::Int(1_200)),
                ("gen_ai.usage.output_tokens", Value::Int(300)),
            ]);
        }
        span.end(200, None);
    }

    /// Empties the queue, its buffers kept for reuse, as the export thread does; the bytes
    /// that were queued.
    pub fn drain(&self) -> usize {
        let batches = self.0.queue.take();
        let bytes = batches.iter().map(|b| b.body.len()).sum();
        for batch in batches {
            self.0.queue.recycle(batch.body);
        }
        bytes
    }
}
