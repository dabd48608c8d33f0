//! The tracing work of one request, reachable from `benches/trace.rs`.

use std::sync::Arc;

use http::HeaderMap;
use prometheus::IntCounter;

use super::{AttemptTarget, AttributeCache, Tracing, context, export};

/// The tracing work of one request, for `benches/trace.rs`: a tracer with no export thread,
/// whose queue the caller drains as the export thread would, and a deployment's attributes
/// cached as a view caches them.
#[doc(hidden)]
pub struct BenchTracer(Tracing, AttributeCache);

impl BenchTracer {
    /// A tracer sampling new traces at `ratio`.
    pub fn new(ratio: f64) -> Self {
        let dropped = IntCounter::new("bench_dropped", "spans dropped").expect("a valid counter");
        Self(
            Tracing {
                sampler: context::Sampler::ratio(ratio),
                queue: Arc::new(export::Queue::new(dropped)),
                flush: Arc::default(),
            },
            AttributeCache::new(),
        )
    }

    /// What a one-attempt chat request does with tracing: its server span, an attempt span
    /// and its `traceparent` in `upstream`, the answer's attributes and usage, both ends.
    pub fn request(&self, client: &HeaderMap, upstream: &mut HeaderMap) {
        let mut span = self.0.request(client, "chat", "gpt-4o");
        let target = AttemptTarget {
            deployment: "team-a/gpt-4o-eastus",
            model_group: "gpt-4o",
            upstream_model: "gpt-4o",
            provider: "openai",
            server_address: "eastus.example.openai.azure.com",
            server_port: 443,
            snapshot: "5f0c3a9e1b2d4c6f",
        };
        let attempt = span.attempt(&target, &self.1, 1, "first", upstream);
        span.answered(attempt, 1, None);
        if span.recording() {
            span.set(&[
                ("gen_ai.usage.input_tokens", super::Value::Int(1_200)),
                ("gen_ai.usage.output_tokens", super::Value::Int(300)),
            ]);
        }
        span.end(200, None);
    }

    /// Empties the queue when a batch is full, its buffers kept for reuse, as the export
    /// thread does; the bytes that were queued.
    pub fn drain(&self) -> usize {
        if !self.0.queue.has_full_batch() {
            return 0;
        }
        let batches = self.0.queue.take();
        let bytes = batches.iter().map(|b| b.body.len()).sum();
        for batch in batches {
            self.0.queue.recycle(batch.body);
        }
        bytes
    }
}
