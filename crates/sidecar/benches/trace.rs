//! What tracing costs a request (issue 11: at most 5% of the hop at 100% sampling): the
//! sidecar's tracing work for a one-attempt chat request (a server span, an attempt span and
//! its `traceparent`, the answer's attributes, both ends, written in the OTLP wire format and
//! queued), unsampled and fully sampled, with the queue drained once a batch is full as the
//! export thread does (looked at every 64 requests). Baseline in the same run: the same loop with tracing off (no tracer:
//! the upstream headers alone). The hop itself costs ~33 µs of sidecar CPU per request
//! (`make bench-proxy`).

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use llmroute_sidecar::BenchTracer;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracing per request");
    group.bench_function("tracing off (baseline)", |b| {
        b.iter(|| {
            let upstream = HeaderMap::new();
            std::hint::black_box(upstream);
        });
    });
    for (name, ratio) in [("unsampled", 0.0), ("100% sampled", 1.0)] {
        let tracer = BenchTracer::new(ratio);
        let client = HeaderMap::new();
        let mut n = 0u32;
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut upstream = HeaderMap::new();
                tracer.request(&client, &mut upstream);
                n += 1;
                if n.is_multiple_of(64) {
                    std::hint::black_box(tracer.drain());
                }
                std::hint::black_box(upstream);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
