//! DESIGN §4–5 through the real binaries: routing, failover, fallbacks, affinity, health.

use std::collections::BTreeMap;
use std::time::Duration;

use llmroute_e2e::{Env, Options, md, tm};
use llmroute_testkit::process::eventually;
use serde_json::json;

const FAST_COOLDOWN: &str = "defaults: {cooldown: {allowedFails: 0, windowSeconds: 60, seconds: 60}}\n";

#[tokio::test]
async fn weighted_split_follows_weights() {
    let manifests = md("east", "gpt-4o", "east", "  weight: 80") + &md("west", "gpt-4o", "west", "  weight: 20");
    let env = Env::start(Options { instances: &["east", "west"], manifests, ..Default::default() }).await;
    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    let n = 1_500u32;
    for _ in 0..n {
        *served.entry(env.served_by("gpt-4o", &[]).await).or_default() += 1;
    }
    // The sidecar draws from OS entropy, so the bound is statistical: the share's standard
    // deviation is sqrt(0.8 * 0.2 / 1500) = 0.0103; 6 of them (0.062) make a false failure
    // rarer than 1 in 10^8 runs, and still fail a 70/30 or 90/10 split.
    let east = f64::from(served.get("llm/east").copied().unwrap_or(0)) / f64::from(n);
    assert!((east - 0.8).abs() < 0.062, "east share {east}: {served:?}");
    assert_eq!(env.requests("east").await + env.requests("west").await, u64::from(n));
}

#[tokio::test]
async fn failover_chain_inside_one_request() {
    let manifests =
        md("a", "m", "a", "  order: 1") + &md("b", "m", "b", "  order: 2") + &md("c", "m", "c", "  order: 3");
    let env = Env::start(Options { instances: &["a", "b", "c"], manifests, ..Default::default() }).await;
    env.behaviour("a", json!({"status": 503})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(
        (r.status, r.header("x-llmroute-deployment").as_str(), r.header("x-llmroute-attempts").as_str()),
        (200, "llm/b", "2")
    );
    env.behaviour("b", json!({"status": 500})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmroute-deployment"), "llm/c");
    assert!(r.text().contains("served by c"));
}

#[tokio::test]
async fn all_failing_returns_the_last_status_with_every_attempt_named() {
    let manifests =
        md("a", "m", "a", "  order: 1") + &md("b", "m", "b", "  order: 2") + &md("c", "m", "c", "  order: 3");
    let env = Env::start(Options { instances: &["a", "b", "c"], manifests, ..Default::default() }).await;
    for i in ["a", "b", "c"] {
        env.behaviour(i, json!({"status": 503})).await;
    }
    let started = std::time::Instant::now();
    let r = env.chat("m", &[]).await;
    assert!(started.elapsed() < Duration::from_secs(5), "never a hang");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-llmroute-attempts"), "3");
    let error = &r.json()["error"];
    assert_eq!(error["code"], "upstream_failed");
    for d in ["llm/a", "llm/b", "llm/c"] {
        assert!(error["message"].as_str().unwrap().contains(d), "{error}");
    }
    assert_eq!(error["attempts"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn exhausted_group_falls_back_to_another_group() {
    let manifests = md("a", "m", "a", "") + &md("mini", "mini", "mini", "");
    let config = "modelGroups: {m: {fallbacks: [mini]}}\n";
    let env = Env::start(Options { instances: &["a", "mini"], manifests, config, ..Default::default() }).await;
    env.behaviour("a", json!({"status": 500})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmroute-deployment"), "llm/mini");
    assert_eq!(r.header("x-llmroute-model-group"), "mini");
    assert_eq!(env.stats("mini").await["last_model"], "mini", "the fallback group's own model name");
    assert!(env.metrics().await.contains(r#"llmroute_failovers_total{kind="fallback"} 1"#));
}

#[tokio::test]
async fn context_window_error_goes_to_context_window_fallbacks_only() {
    let manifests = md("small-1", "m", "small1", "  order: 1")
        + &md("small-2", "m", "small2", "  order: 1")
        + &md("long", "long", "long", "");
    let config = "modelGroups: {m: {contextWindowFallbacks: [long]}}\n";
    let env =
        Env::start(Options { instances: &["small1", "small2", "long"], manifests, config, ..Default::default() }).await;
    env.behaviour("small1", json!({"context_window": 5})).await;
    env.behaviour("small2", json!({"context_window": 5})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-llmroute-deployment"), "llm/long");
    assert_eq!(r.header("x-llmroute-attempts"), "2", "never in-group failover");
    assert_eq!(env.requests("small1").await + env.requests("small2").await, 1);
}

#[tokio::test]
async fn context_window_error_without_fallbacks_reaches_the_client() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    env.behaviour("a", json!({"context_window": 5})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn cooldown_takes_a_failing_deployment_out() {
    let manifests = md("bad", "m", "bad", "  weight: 1") + &md("good", "m", "good", "  weight: 1");
    let env =
        Env::start(Options { instances: &["bad", "good"], manifests, config: FAST_COOLDOWN, ..Default::default() })
            .await;
    env.behaviour("bad", json!({"status": 500})).await;
    for _ in 0..30 {
        assert_eq!(env.served_by("m", &[]).await, "llm/good");
    }
    assert_eq!(env.requests("bad").await, 1, "one failure, then cooled down for 60 s");
    assert!(env.metrics().await.contains(r#"llmroute_deployment_cooldown{deployment="llm/bad"} 1"#));
}

#[tokio::test]
async fn health_check_excludes_a_dead_upstream_with_a_safety_net() {
    let health = "  healthCheck: {mode: models, intervalSeconds: 1, timeoutSeconds: 1, unhealthyThreshold: 1}";
    let manifests = md("a", "m", "a", health) + &md("b", "m", "b", health);
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    env.behaviour("a", json!({"healthy": false})).await;
    let metrics_say_down = eventually(Duration::from_secs(5), || async {
        env.metrics().await.contains(r#"llmroute_deployment_healthy{deployment="llm/a"} 0"#)
    })
    .await;
    assert!(metrics_say_down, "probe never marked a unhealthy");
    for _ in 0..20 {
        assert_eq!(env.served_by("m", &[]).await, "llm/b");
    }
    env.behaviour("b", json!({"healthy": false})).await;
    let both_down = eventually(Duration::from_secs(5), || async {
        env.metrics().await.contains(r#"llmroute_deployment_healthy{deployment="llm/b"} 0"#)
    })
    .await;
    assert!(both_down);
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200, "safety net: health alone never fails every request");
}

#[tokio::test]
async fn session_affinity_is_per_group() {
    let mut manifests = String::new();
    for i in 0..4 {
        manifests += &md(&format!("s{i}"), "sticky", &format!("s{i}"), "");
        manifests += &md(&format!("f{i}"), "free", &format!("f{i}"), "");
    }
    let config = "modelGroups: {sticky: {affinity: [session]}}\n";
    let instances = ["s0", "s1", "s2", "s3", "f0", "f1", "f2", "f3"];
    let env = Env::start(Options { instances: &instances, manifests, config, ..Default::default() }).await;
    let session = [("x-llmroute-session-id", "conversation-17")];
    let mut sticky = std::collections::BTreeSet::new();
    let mut free = std::collections::BTreeSet::new();
    for _ in 0..20 {
        sticky.insert(env.served_by("sticky", &session).await);
        free.insert(env.served_by("free", &session).await);
    }
    assert_eq!(sticky.len(), 1, "same session, same deployment");
    assert!(free.len() > 1, "no affinity on this group: {free:?}");
}

#[tokio::test]
async fn responses_api_affinity_returns_to_the_same_deployment() {
    let mut manifests = String::new();
    for i in 0..4 {
        manifests += &md(&format!("r{i}"), "m", &format!("r{i}"), "");
    }
    let config = "modelGroups: {m: {affinity: [responses]}}\n";
    let env =
        Env::start(Options { instances: &["r0", "r1", "r2", "r3"], manifests, config, ..Default::default() }).await;
    let first = env.post("/v1/responses", json!({"model": "m", "input": "hi"}), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_llmr1."), "{id}");
    let holder = first.header("x-llmroute-deployment");
    let instance = holder.trim_start_matches("llm/");
    for _ in 0..10 {
        let next =
            env.post("/v1/responses", json!({"model": "m", "input": "more", "previous_response_id": id}), &[]).await;
        assert_eq!(next.header("x-llmroute-deployment"), holder);
    }
    let upstream_id = env.stats(instance).await["last_previous_response_id"].as_str().unwrap().to_owned();
    assert!(upstream_id.starts_with(&format!("resp_{instance}_")), "the upstream gets its own id back: {upstream_id}");
}

#[tokio::test]
async fn streaming_is_passed_through_chunk_by_chunk() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    env.behaviour("a", json!({"stream_chunks": 4, "chunk_delay_ms": 300})).await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (arrivals, text) = llmroute_e2e::stream::post_timed(&format!("{}/v1/chat/completions", env.api), &body).await;
    assert!(text.contains("served by a") && text.trim_end().ends_with("data: [DONE]"), "{text}");
    let first = arrivals.first().copied().unwrap();
    let last = arrivals.last().copied().unwrap();
    assert!(last - first >= Duration::from_millis(900), "chunks arrived as sent, not buffered: {arrivals:?}");
}

#[tokio::test]
async fn a_stream_closed_midway_is_not_retried() {
    let manifests = md("a", "m", "a", "  order: 1") + &md("b", "m", "b", "  order: 2");
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    env.behaviour("a", json!({"mode": "close_mid_stream"})).await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (_, text) = llmroute_e2e::stream::post_timed(&format!("{}/v1/chat/completions", env.api), &body).await;
    assert!(text.contains("served by a"), "the first chunk reached the client: {text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(env.requests("b").await, 0, "nothing is retried after the first byte");
    env.behaviour("a", json!({"mode": "normal"})).await;
    assert_eq!(env.served_by("m", &[]).await, "llm/a", "the sidecar keeps serving");
}

#[tokio::test]
async fn credentials_are_injected_and_the_clients_authorization_dropped() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: llm}\nstringData: {k: sk-upstream-secret}\n---\n";
    let manifests = secret.to_owned()
        + &md("a", "m", "a", "")
            .replace("baseUrl: 'http://{a}/v1'}", "baseUrl: 'http://{a}/v1', apiKeySecretRef: {name: keys, key: k}}");
    let env = Env::start(Options { instances: &["a"], manifests, ..Default::default() }).await;
    let r = env.chat("m", &[("authorization", "Bearer sk-client-token")]).await;
    assert_eq!(r.status, 200);
    let stats = env.stats("a").await;
    assert_eq!(stats["last_credential"], "sk-upstream-secret");
    assert_eq!(stats["last_host"], env.addrs["a"].to_string(), "HTTP/1.1 Host header sent upstream");
    assert!(stats["last_path"].as_str().unwrap().starts_with("/v1/"), "origin-form request line");
    assert_eq!(stats["saw_client_authorization"], false);
    assert!(!r.text().contains("sk-upstream-secret"));
    let debug = llmroute_testkit::http_client::get(&format!("{}/debug/snapshot", env.admin)).await.unwrap().text();
    assert!(!debug.contains("sk-upstream-secret") && debug.contains("<redacted>"), "{debug}");
    assert!(!env.metrics().await.contains("sk-upstream-secret"));
    assert!(!env.sidecar.logs().contains("sk-upstream-secret"));
}

#[tokio::test]
async fn response_headers_name_deployment_group_snapshot_and_attempts() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.header("x-llmroute-deployment"), "llm/a");
    assert_eq!(r.header("x-llmroute-model-group"), "m");
    assert_eq!(r.header("x-llmroute-attempts"), "1");
    assert_eq!(Some(r.header("x-llmroute-snapshot")), env.version().await);
}

#[tokio::test]
async fn every_endpoint_is_routed() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    for (path, body) in [
        ("/v1/completions", json!({"model": "m", "prompt": "hi"})),
        ("/v1/embeddings", json!({"model": "m", "input": "hi"})),
        ("/v1/responses", json!({"model": "m", "input": "hi"})),
    ] {
        let r = env.post(path, body, &[]).await;
        assert_eq!((path, r.status), (path, 200), "{}", r.text());
        assert!(env.stats("a").await["last_path"].as_str().unwrap().ends_with(&path[3..]));
    }
}

#[tokio::test]
async fn every_candidate_at_its_limit_is_429() {
    let manifests = md("only", "m", "only", "  limits: {maxConcurrency: 1}");
    let env = Env::start(Options { instances: &["only"], manifests, ..Default::default() }).await;
    env.behaviour("only", json!({"latency_ms": 800})).await;
    let slow = env.chat("m", &[]);
    let second = async {
        let busy = eventually(Duration::from_secs(5), || async {
            env.metrics().await.contains("llmroute_deployment_in_flight{deployment=\"llm/only\"} 1")
        })
        .await;
        assert!(busy, "the first request is in flight");
        env.chat("m", &[]).await
    };
    let (first, second) = tokio::join!(slow, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(second.json()["error"]["code"], "rate_limited");
    assert_eq!(env.requests("only").await, 1, "the limited request never reached the upstream");
}

#[tokio::test]
async fn min_quality_tier_header_filters_deployments() {
    let manifests = md("cheap", "m", "cheap", "  qualityTier: 2\n  weight: 100")
        + &md("good", "m", "good", "  qualityTier: 5\n  weight: 1");
    let env = Env::start(Options { instances: &["cheap", "good"], manifests, ..Default::default() }).await;
    for _ in 0..10 {
        assert_eq!(env.served_by("m", &[("x-llmroute-min-quality-tier", "4")]).await, "llm/good");
    }
}

#[tokio::test]
async fn zero_weight_backup_serves_only_when_the_weighted_ones_are_out() {
    let manifests = md("main", "m", "main", "  weight: 1") + &md("backup", "m", "backup", "  weight: 0");
    let env =
        Env::start(Options { instances: &["main", "backup"], manifests, config: FAST_COOLDOWN, ..Default::default() })
            .await;
    for _ in 0..20 {
        assert_eq!(env.served_by("m", &[]).await, "llm/main");
    }
    env.behaviour("main", json!({"status": 503})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!((r.status, r.header("x-llmroute-deployment").as_str()), (200, "llm/backup"));
}

#[tokio::test]
async fn azure_deployments_get_the_azure_url_shape_and_api_key_header() {
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: az, namespace: llm}\nstringData: {k: azure-secret}\n---\n";
    let azure = md("az", "gpt-4o", "az", "  provider: azure").replace(
        "upstream: {baseUrl: 'http://{az}/v1'}",
        "upstream: {baseUrl: 'http://{az}', model: east-deployment, apiVersion: '2024-10-21', apiKeySecretRef: {name: az, key: k}}",
    );
    let env =
        Env::start(Options { instances: &["az"], manifests: secret.to_owned() + &azure, ..Default::default() }).await;
    assert_eq!(env.served_by("gpt-4o", &[]).await, "llm/az");
    let stats = env.stats("az").await;
    assert_eq!(stats["last_path"], "/openai/deployments/east-deployment/chat/completions?api-version=2024-10-21");
    assert_eq!(stats["last_credential"], "azure-secret");
    let r = env.post("/v1/embeddings", json!({"model": "gpt-4o", "input": "x"}), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        env.stats("az").await["last_path"],
        "/openai/deployments/east-deployment/embeddings?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn completion_health_checks_send_a_one_token_request() {
    let health = "  healthCheck: {mode: completion, intervalSeconds: 1, unhealthyThreshold: 1}";
    let manifests = md("a", "m", "a", health) + &md("b", "m", "b", "");
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    let probed = eventually(Duration::from_secs(5), || async { env.requests("a").await >= 1 }).await;
    assert!(probed, "the completion probe reaches the chat endpoint");
    assert_eq!(env.stats("a").await["last_model"], "m");
    env.behaviour("a", json!({"status": 500})).await;
    let down = eventually(Duration::from_secs(5), || async {
        env.metrics().await.contains(r#"llmroute_deployment_healthy{deployment="llm/a"} 0"#)
    })
    .await;
    assert!(down);
    for _ in 0..10 {
        assert_eq!(env.served_by("m", &[]).await, "llm/b");
    }
}

#[tokio::test]
async fn an_adaptive_group_learns_to_avoid_a_failing_deployment() {
    // Cooldown out of the way (it would exclude the failing one on its own): the adaptive pick
    // must learn from the failures.
    let routing = "  routing: {strategy: adaptive, cooldown: {allowedFails: 1000, windowSeconds: 1, seconds: 1}}";
    let manifests = md("good", "m", "good", "")
        + &md("flaky", "m", "flaky", "")
        + &tm("smart", "team-a", "smart", "modelName: m", routing);
    let env = Env::start(Options { instances: &["good", "flaky"], manifests, ..Default::default() }).await;
    env.behaviour("flaky", json!({"status": 500})).await;
    let mut first_tries_on_flaky = Vec::new();
    for _ in 0..120 {
        let r = env.chat("smart", &[]).await;
        assert_eq!((r.status, r.header("x-llmroute-deployment").as_str()), (200, "llm/good"), "{}", r.text());
        first_tries_on_flaky.push(r.header("x-llmroute-attempts") == "2");
    }
    // Every failure taught it: over the last 60 requests the failing deployment is almost
    // never tried first (a weighted split would try it about half the time).
    let late = first_tries_on_flaky[60..].iter().filter(|f| **f).count();
    assert!(late <= 6, "{late} of 60 first attempts still went to the failing deployment");
    assert!(env.requests("flaky").await <= 30, "flaky saw {} requests", env.requests("flaky").await);
}

/// An answer's text with the fake's per-request ids made equal.
fn normalised(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("chatcmpl-") {
        out.push_str(&rest[..at]);
        out.push_str("chatcmpl-ID");
        rest = &rest[at..];
        let end = rest.find('"').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn usage_is_counted_from_streams_whose_client_asked_for_none_and_the_client_sees_no_difference() {
    let opted_out = "  streamUsage: false";
    let manifests = md("a", "m", "a", "") + &md("b", "strict", "b", opted_out);
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let through = env.post("/v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(through.status, 200);
    // The same request straight to the upstream, without llmroute.
    let direct =
        llmroute_testkit::http_client::post_json(&format!("http://{}/v1/chat/completions", env.addrs["a"]), &body, &[])
            .await
            .unwrap();
    assert_eq!(normalised(&through.text()), normalised(&direct.text()), "the client sees what it would have seen");
    assert!(!through.text().contains("usage"), "{}", through.text());
    assert!(env.stats("a").await["saw_stream_options"].as_bool().unwrap(), "usage was asked upstream");
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("llmroute_tokens_total{deployment=\"llm/a\",kind=\"output\",model_group=\"m\"} 3"),
        "{metrics}"
    );
    // A client that asks gets the usage chunk; a plain answer's usage counts too.
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    assert!(env.post("/v1/chat/completions", asked, &[]).await.text().contains("\"usage\":{"));
    env.chat("m", &[]).await;
    assert!(
        env.metrics().await.contains("llmroute_tokens_total{deployment=\"llm/a\",kind=\"input\",model_group=\"m\"} 3")
    );
    // An upstream that rejects the option is never sent it when its deployment opts out.
    env.behaviour("b", json!({"reject_stream_options": true})).await;
    let strict = json!({"model": "strict", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(env.post("/v1/chat/completions", strict, &[]).await.status, 200);
    assert!(!env.stats("b").await["saw_stream_options"].as_bool().unwrap());
}
