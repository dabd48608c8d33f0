//! Hostile upstreams and clients (issue 7 C), through the real binaries: stalls, bad framing,
//! huge answers, echoed keys, oversized prompts, path-walking model names, bursts of large
//! bodies, brownouts.

use std::time::{Duration, Instant};

use bytes::Bytes;
use llmroute_e2e::stream::post_counting;
use llmroute_e2e::{Env, Options, md};
use llmroute_testkit::process::eventually;
use serde_json::json;

const TWO_SECOND_DEADLINE: &str = "defaults: {timeoutSeconds: 2}\n";

async fn two(extra_flags: &'static [&'static str], config: &'static str) -> Env {
    let manifests = md("a", "m", "a", "  order: 1") + &md("b", "m", "b", "  order: 2");
    Env::start(Options { instances: &["a", "b"], manifests, config, flags: extra_flags, ..Default::default() }).await
}

#[tokio::test]
async fn headers_then_silence_is_504_within_the_deadline() {
    let env = two(&[], TWO_SECOND_DEADLINE).await;
    for instance in ["a", "b"] {
        env.behaviour(instance, json!({"mode": "stall_after_headers"})).await;
    }
    let started = Instant::now();
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "deadline_exceeded");
    assert!(started.elapsed() < Duration::from_millis(2_800), "{:?}", started.elapsed());
    assert_eq!(env.metric("llmroute_requests_total{code=\"200\"").await, None, "nothing failed counts as 200");
}

#[tokio::test]
async fn a_stalled_stream_gets_an_error_event_and_is_closed() {
    let env = two(&["--stream-idle-timeout-ms", "300"], "").await;
    env.behaviour("a", json!({"mode": "stall_after_first_chunk"})).await;
    let url = format!("{}/v1/chat/completions", env.api);
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let r = post_counting(&url, Bytes::from(body.to_string()), Duration::from_secs(10)).await.expect("answered");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3), "closed after the idle timeout");
    assert!(r.head.starts_with("data: {"), "{}", r.head);
    assert!(r.tail.contains("event: error\ndata: {\"error\"") && r.tail.contains("stream_idle_timeout"), "{}", r.tail);
    let counted = eventually(Duration::from_secs(3), || async {
        env.metric("llmroute_requests_total{code=\"504\",deployment=\"llm/a\"").await == Some(1.0)
    })
    .await;
    assert!(counted, "{}", env.metrics().await);
    assert_eq!(env.metric("llmroute_requests_total{code=\"200\"").await, None);
}

#[tokio::test]
async fn bad_chunk_framing_before_the_first_byte_fails_over() {
    let env = two(&[], "").await;
    env.behaviour("a", json!({"mode": "bad_chunk"})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-llmroute-deployment"), "llm/b");
    assert_eq!(r.header("x-llmroute-attempts"), "2");
    let text = env.metrics().await;
    assert!(
        text.contains(r#"llmroute_upstream_attempts_total{deployment="llm/a",outcome="malformed_response"} 1"#),
        "{text}"
    );
    // Both broken from the start (the fake's transport modes apply to new connections).
    let env = two(&[], "").await;
    env.behaviour("a", json!({"mode": "bad_chunk"})).await;
    env.behaviour("b", json!({"mode": "bad_chunk"})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 502, "never an empty reply: {}", r.text());
    assert!(r.text().contains("malformed response"), "{}", r.text());
}

#[tokio::test]
async fn an_upstream_echoing_the_key_never_shows_it_to_the_client() {
    let manifests = md("a", "m", "a", "  upstream: {baseUrl: 'http://{a}/v1', apiKeySecretRef: {name: s, key: k}}")
        .replace("  upstream: {baseUrl: 'http://{a}/v1'}\n", "")
        + "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: llm}\nstringData: {k: sk-live-0123456789}\n---\n";
    let env = Env::start(Options { instances: &["a"], manifests, ..Default::default() }).await;
    env.behaviour("a", json!({"mode": "echo_key"})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("sk-live-0123456789") && r.text().contains("******************"), "{}", r.text());
    assert_eq!(env.stats("a").await["last_credential"], "sk-live-0123456789", "the upstream did get the key");
}

#[tokio::test]
async fn a_prompt_larger_than_every_window_is_400_context_length_exceeded() {
    let manifests = md("a", "m", "a", "  contextWindow: 100") + &md("b", "m", "b", "  contextWindow: 200");
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(4_000)}]});
    let r = env.post("/v1/chat/completions", big, &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(env.requests("a").await + env.requests("b").await, 0);
}

#[tokio::test]
async fn model_names_that_would_walk_an_azure_path_are_400_before_any_call() {
    let manifests = md(
        "az",
        "az/*",
        "a",
        "  provider: azure\n  upstream: {baseUrl: 'http://{a}', model: '*', apiVersion: '2024-10-21'}",
    )
    .replace("  upstream: {baseUrl: 'http://{a}/v1'}\n", "");
    let env = Env::start(Options { instances: &["a"], manifests, ..Default::default() }).await;
    for name in ["az/../../admin", "az/x?api-version=1", "az/a#frag", "az/a/b", "az/a\u{7}"] {
        let r = env.post("/v1/chat/completions", json!({"model": name, "messages": []}), &[]).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_model_name", "{name}");
    }
    assert_eq!(env.requests("a").await, 0, "no upstream call");
    let r = env.post("/v1/chat/completions", json!({"model": "az/gpt 4o", "messages": []}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        env.stats("a").await["last_path"],
        "/openai/deployments/gpt%204o/chat/completions?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn retry_after_cools_the_deployment_for_that_long() {
    let env = two(&[], "").await;
    env.behaviour("a", json!({"status": 429, "retry_after": "120"})).await;
    assert_eq!(env.served_by("m", &[]).await, "llm/b");
    assert_eq!(
        env.metric("llmroute_deployment_cooldown{deployment=\"llm/a\"}").await,
        Some(1.0),
        "one 429 with Retry-After cools at once"
    );
    for _ in 0..5 {
        assert_eq!(env.served_by("m", &[]).await, "llm/b");
    }
    assert_eq!(env.requests("a").await, 1, "cooled: not called again");
}

#[tokio::test]
async fn a_brownout_does_not_multiply_the_load() {
    let config = "defaults: {maxAttempts: 3, retryBudget: {percent: 20, minPerSecond: 1}, cooldown: {allowedFails: 10000, windowSeconds: 1, seconds: 0}}\n";
    let manifests = md("a", "m", "a", "") + &md("b", "m", "b", "") + &md("c", "m", "c", "");
    let env = Env::start(Options { instances: &["a", "b", "c"], manifests, config, ..Default::default() }).await;
    for instance in ["a", "b", "c"] {
        env.behaviour(instance, json!({"status": 503})).await;
    }
    let requests = 200u64;
    for _ in 0..requests {
        assert_eq!(env.chat("m", &[]).await.status, 503);
    }
    let attempts = env.requests("a").await + env.requests("b").await + env.requests("c").await;
    // Without a budget: 600. With 20% + 1/s over the run's few seconds: at most ~1.2x + floor.
    assert!(attempts <= requests * 12 / 10 + 30, "{attempts} upstream attempts for {requests} requests");
    assert!(env.metric("llmroute_retry_budget_exhausted_total").await.unwrap_or(0.0) > 0.0);
}

#[tokio::test]
async fn a_300_mb_responses_answer_is_relayed_in_bounded_memory() {
    let env = two(&[], "defaults: {timeoutSeconds: 120}\n").await;
    let idle = env.sidecar.memory_kib("VmRSS").expect("rss");
    let size = 300u64 << 20;
    env.behaviour("a", json!({"huge_bytes": size})).await;
    let url = format!("{}/v1/responses", env.api);
    for stream in [false, true] {
        let body = json!({"model": "m", "input": "hi", "stream": stream});
        let r = post_counting(&url, Bytes::from(body.to_string()), Duration::from_secs(120)).await.expect("answered");
        assert_eq!(r.status, 200);
        assert!(!r.cut && r.bytes >= size, "stream={stream}: {} bytes", r.bytes);
        assert!(
            r.head.contains("resp_llmr1."),
            "the id is rewritten (stream={stream}): {}",
            &r.head[..200.min(r.head.len())]
        );
    }
    let peak = env.sidecar.memory_kib("VmHWM").expect("peak rss");
    eprintln!("sidecar RSS idle {idle} KiB, peak while relaying 2 x 300 MB {peak} KiB");
    assert!(peak < idle + 32 * 1024, "peak {peak} KiB vs idle {idle} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_bodies_is_bounded_and_memory_returns() {
    let env = two(&["--max-buffered-body-bytes", "104857600", "--worker-threads", "2"], "").await;
    let idle = env.sidecar.memory_kib("VmRSS").expect("rss");
    let content = "x".repeat(33_000_000);
    let body = Bytes::from(json!({"model": "m", "messages": [{"role": "user", "content": content}]}).to_string());
    let url = format!("{}/v1/chat/completions", env.api);
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post_counting(&url, body, Duration::from_secs(60)).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in burst {
        let r = task.await.unwrap().expect("answered");
        if r.status == 503 {
            assert!(r.head.contains("\"overloaded\""), "{}", r.head);
        }
        statuses.push(r.status);
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let peak = env.sidecar.memory_kib("VmHWM").expect("peak");
    let settled = eventually(Duration::from_secs(10), || async {
        env.sidecar.memory_kib("VmRSS").is_some_and(|rss| rss < idle + 48 * 1024)
    })
    .await;
    let after = env.sidecar.memory_kib("VmRSS").unwrap_or(0);
    eprintln!("sidecar RSS idle {idle} KiB, peak {peak} KiB, after the burst {after} KiB; statuses {statuses:?}");
    assert!(peak < idle + 200 * 1024, "held bodies bounded by --max-buffered-body-bytes: peak {peak} KiB");
    assert!(settled, "RSS returns near idle: {after} KiB vs {idle} KiB");
    assert_eq!(env.chat("m", &[]).await.status, 200, "still serving");
}

#[tokio::test]
async fn in_flight_and_rejection_metrics_are_exported() {
    let env = two(&[], "").await;
    env.behaviour("a", json!({"latency_ms": 800})).await;
    let slow = env.chat("m", &[]);
    let watch = async {
        eventually(Duration::from_secs(5), || async {
            env.metric("llmroute_deployment_in_flight{deployment=\"llm/a\"}").await == Some(1.0)
        })
        .await
    };
    let (r, seen) = tokio::join!(slow, watch);
    assert_eq!(r.status, 200);
    assert!(seen, "in flight while the answer is pending");
    assert_eq!(env.metric("llmroute_deployment_in_flight{deployment=\"llm/a\"}").await, Some(0.0));
    for name in ["llmroute_config_rejected_total", "llmroute_snapshot_rejected_total"] {
        assert_eq!(env.metric(name).await, Some(0.0), "{name}");
    }
}
