//! OpenTelemetry traces through the real sidecar, received by a real OTLP/gRPC collector
//! (the collector's `TraceService`, from the OTLP protobufs): the span tree of a plain
//! request, a failover and a fallback, the GenAI attributes, the client's trace continued and
//! propagated upstream, and nothing at all when tracing is off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmroute_e2e::{Env, Options, md};
use llmroute_testkit::process::eventually;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    /// What the collector claims to have rejected of each export (`partial_success`).
    rejects: i64,
    /// How long the collector takes to answer each export.
    delay: Duration,
    /// Export calls open now, and the most open at once.
    open: Arc<Mutex<(usize, usize)>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if !self.delay.is_zero() {
            {
                let mut open = self.open.lock().unwrap();
                open.0 += 1;
                open.1 = open.1.max(open.0);
            }
            tokio::time::sleep(self.delay).await;
            self.open.lock().unwrap().0 -= 1;
        }
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        let partial_success = (self.rejects != 0)
            .then(|| ExportTracePartialSuccess { rejected_spans: self.rejects, error_message: "rejected".into() });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success }))
    }
}

async fn collector() -> (SocketAddr, Collector) {
    rejecting_collector(0).await
}

async fn rejecting_collector(rejects: i64) -> (SocketAddr, Collector) {
    serve(Collector { rejects, ..Default::default() }).await
}

async fn serve(collector: Collector) -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    (addr, collector)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref()).map(|v| match v {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        _ => String::new(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server span of trace `trace` and its attempt spans, once exported.
async fn tree(collector: &Collector, trace: &str, attempts: usize) -> (Span, Vec<Span>) {
    let done = eventually(Duration::from_secs(10), || async {
        let spans = collector.spans.lock().unwrap();
        spans.iter().filter(|s| hex(&s.trace_id) == trace).count() > attempts
    })
    .await;
    let spans: Vec<Span> =
        collector.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace).cloned().collect();
    assert!(done, "spans of {trace}: {spans:?}");
    let server = spans.iter().find(|s| s.kind == 2).cloned().expect("a server span");
    let mut children: Vec<Span> = spans.iter().filter(|s| s.kind == 3).cloned().collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    (server, children)
}

/// A sidecar with one deployment of `m`, exporting traces to `collector`.
async fn one_deployment_traced_to(collector: SocketAddr) -> Env {
    let endpoint = format!("http://{collector}");
    Env::start(Options {
        instances: &["a"],
        manifests: md("a", "m", "a", ""),
        flags: &["--otlp-endpoint", &endpoint],
        ..Default::default()
    })
    .await
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_server_span_with_an_attempt_span_each_continuing_the_clients_trace() {
    let (addr, collector) = collector().await;
    let endpoint = format!("http://{addr}");
    let manifests =
        md("first", "m", "a", "  order: 1") + &md("second", "m", "b", "  order: 2") + &md("other", "n", "b", "");
    let config = "modelGroups:\n  broken: {fallbacks: [n]}\n";
    let manifests = manifests + &md("lost", "broken", "c", "");
    let env = Env::start(Options {
        instances: &["a", "b", "c"],
        manifests,
        config,
        flags: &["--otlp-endpoint", &endpoint],
        ..Default::default()
    })
    .await;
    // A plain request, continuing the client's trace.
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = env.chat("m", &[("traceparent", &traceparent)]).await;
    assert_eq!(r.status, 200);
    let (server, attempts) = tree(&collector, TRACE, 1).await;
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN, "the client's span is the parent");
    assert_eq!(attr(&server, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(attr(&server, "gen_ai.request.model").as_deref(), Some("m"));
    assert_eq!(attr(&server, "gen_ai.response.model").as_deref(), Some("m"));
    assert_eq!(attr(&server, "gen_ai.usage.input_tokens").as_deref(), Some("1"));
    assert_eq!(attr(&server, "gen_ai.usage.output_tokens").as_deref(), Some("3"));
    assert_eq!(attr(&server, "llmroute.deployment").as_deref(), Some("llm/first"));
    assert_eq!(attr(&server, "llmroute.snapshot"), env.version().await);
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(attr(attempt, "gen_ai.provider.name").as_deref(), Some("openai"));
    // Semantic conventions: the host alone, its port apart.
    assert_eq!(attr(attempt, "server.address"), Some(env.addrs["a"].ip().to_string()));
    assert_eq!(attr(attempt, "server.port"), Some(env.addrs["a"].port().to_string()));
    assert_eq!(attr(attempt, "llmroute.outcome").as_deref(), Some("success"));
    // The upstream got the trace, its parent the attempt span.
    let upstream = env.stats("a").await["last_traceparent"].as_str().unwrap().to_owned();
    assert_eq!(upstream, format!("00-{TRACE}-{}-01", hex(&attempt.span_id)));

    // A failover: two attempts under one server span, the first failed.
    env.behaviour("a", json!({"fail_next": 1})).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    env.chat("m", &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))]).await;
    let (server, attempts) = tree(&collector, trace, 2).await;
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.parent_span_id == server.span_id));
    assert_eq!(attr(&attempts[0], "error.type").as_deref(), Some("error_status"));
    assert_eq!(attr(&attempts[1], "llmroute.attempt.kind").as_deref(), Some("order"));
    assert_eq!(attr(&server, "llmroute.attempts").as_deref(), Some("2"));

    // A fallback to another group.
    env.behaviour("c", json!({"status": 500})).await;
    let trace = "11112222333344445555666677778888";
    let r = env.chat("broken", &[("traceparent", &format!("00-{trace}-1111222233334444-01"))]).await;
    assert_eq!(r.status, 200);
    let (server, attempts) = tree(&collector, trace, 2).await;
    assert_eq!(attr(attempts.last().unwrap(), "llmroute.attempt.kind").as_deref(), Some("fallback"));
    assert_eq!(attr(&server, "llmroute.model_group").as_deref(), Some("n"));

    // An unsampled parent is not sampled.
    let trace = "99990000999900009999000099990000";
    env.chat("m", &[("traceparent", &format!("00-{trace}-1111222233334444-00"))]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!collector.spans.lock().unwrap().iter().any(|s| hex(&s.trace_id) == trace));
    // A request that fails is a server span with its error.
    let trace = "abababababababababababababababab";
    env.chat("nope", &[("traceparent", &format!("00-{trace}-1111222233334444-01"))]).await;
    let done = eventually(Duration::from_secs(5), || async {
        collector.spans.lock().unwrap().iter().any(|s| hex(&s.trace_id) == trace)
    })
    .await;
    assert!(done);
    let spans = collector.spans.lock().unwrap();
    let failed = spans.iter().find(|s| hex(&s.trace_id) == trace).unwrap();
    assert_eq!(attr(failed, "error.type").as_deref(), Some("404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_nothing_is_exported_and_a_dead_collector_costs_nothing_but_spans() {
    let (_addr, collector) = collector().await;
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    for _ in 0..5 {
        assert_eq!(env.chat("m", &[]).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(collector.spans.lock().unwrap().is_empty());
    assert!(!env.metrics().await.contains("llmroute_trace_spans_dropped_total 1"));
    // A collector that is not there: requests are served as ever.
    let dead = llmroute_testkit::process::free_addr();
    let env = one_deployment_traced_to(dead).await;
    for _ in 0..20 {
        assert_eq!(env.chat("m", &[]).await.status, 200);
    }
    // Their spans (a server and an attempt span each) are lost, and counted.
    let counted = eventually(Duration::from_secs(10), || async {
        env.metrics().await.contains("llmroute_trace_spans_dropped_total 40")
    })
    .await;
    assert!(counted, "{}", env.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_the_last_requests_are_sent_before_the_sidecar_exits() {
    let (addr, collector) = collector().await;
    let mut env = one_deployment_traced_to(addr).await;
    for _ in 0..3 {
        assert_eq!(env.chat("m", &[]).await.status, 200);
    }
    // SIGTERM at once, before the export thread's next collection.
    env.sidecar.terminate();
    let code = tokio::task::block_in_place(|| env.sidecar.wait_exit(Duration::from_secs(30)));
    assert_eq!(code, Some(0));
    assert_eq!(collector.spans.lock().unwrap().len(), 6, "a server and an attempt span per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_a_collector_rejects_are_counted_no_more_than_were_sent() {
    // A collector claiming to have rejected i64::MAX spans of every export.
    let (addr, _collector) = rejecting_collector(i64::MAX).await;
    let env = one_deployment_traced_to(addr).await;
    for _ in 0..5 {
        assert_eq!(env.chat("m", &[]).await.status, 200);
    }
    let counted = eventually(Duration::from_secs(10), || async {
        env.metrics().await.contains("llmroute_trace_spans_dropped_total 10")
    })
    .await;
    assert!(counted, "{}", env.metrics().await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.metrics().await.contains("llmroute_trace_spans_dropped_total 10"), "capped at what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_collector_gets_several_exports_at_once_and_loses_nothing() {
    // A collector a round trip of 400 ms away: one export call at a time would send a batch
    // per 400 ms, whatever the sidecar's rate.
    let (addr, collector) = serve(Collector { delay: Duration::from_millis(400), ..Default::default() }).await;
    let env = one_deployment_traced_to(addr).await;
    // Requests for 1.5 s: a collection every 100 ms, each a call of its own.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    let mut served = 0;
    while std::time::Instant::now() < until {
        assert_eq!(env.chat("m", &[]).await.status, 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all =
        eventually(Duration::from_secs(15), || async { collector.spans.lock().unwrap().len() == 2 * served }).await;
    assert!(all, "{} of {} spans", collector.spans.lock().unwrap().len(), 2 * served);
    let most = collector.open.lock().unwrap().1;
    assert!((2..=4).contains(&most), "{most} export calls open at once (at most 4)");
    assert!(env.metrics().await.contains("llmroute_trace_spans_dropped_total 0\n"));
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

// Multi-threaded: the collector's tasks run while the test waits on the sidecar's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_echoing_the_token_in_a_goaway_never_gets_it_logged_even_at_debug() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOKEN: &str = "s3cret-collector-token";
    // A collector that answers every connection with SETTINGS, then a GOAWAY whose debug data
    // echoes the token it was sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
                let mut goaway = vec![0, 0, 0, 0, 0, 0, 0, 11]; // last stream 0, ENHANCE_YOUR_CALM
                goaway.extend_from_slice(format!("echo: Bearer {TOKEN}").as_bytes());
                let mut answer = h2_frame(4, &[]);
                answer.extend(h2_frame(7, &goaway));
                let _ = socket.write_all(&answer).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["--team", "t", "--manifests", &dir.path().to_string_lossy()]
        .into_iter()
        .chain(["--otlp-endpoint", &format!("http://{addr}")])
        .map(str::to_owned)
        .collect();
    let header = format!("authorization=Bearer {TOKEN}");
    let env = [("LLMROUTE_LOG", "debug"), ("OTEL_EXPORTER_OTLP_HEADERS", header.as_str())];
    let (sidecar, api, _) = llmroute_testkit::process::start_sidecar_with_env(&args, &env);
    let url = format!("http://{api}/v1/chat/completions");
    let reply = llmroute_testkit::http_client::post_json(&url, &json!({"model": "m", "messages": []}), &[]).await;
    assert_eq!(reply.unwrap().status, 404, "routed (and traced) though nothing serves it");
    let failing = sidecar.wait_log_line("trace export to the collector is failing", Duration::from_secs(10));
    let logs = sidecar.logs();
    assert!(failing.is_some(), "{logs}");
    assert!(logs.contains(" DEBUG "), "debug lines are on: {logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}
