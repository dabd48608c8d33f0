//! Bad input never crashes the sidecar and always gets a clear error within its deadline.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use llmroute_e2e::{Env, Options, md};
use llmroute_testkit::http_client::send;
use serde_json::json;

async fn env(flags: &'static [&'static str], config: &'static str) -> Env {
    let manifests = md("a", "m", "a", "  order: 1") + &md("b", "m", "b", "  order: 2");
    Env::start(Options { instances: &["a", "b"], manifests, config, flags, ..Default::default() }).await
}

async fn still_serving(env: &Env) {
    env.behaviour("a", json!({"mode": "normal", "status": 200})).await;
    assert_eq!(env.chat("m", &[]).await.status, 200, "the sidecar keeps serving");
}

#[tokio::test]
async fn malformed_requests_get_openai_shaped_400s() {
    let env = env(&[], "").await;
    let url = format!("{}/v1/chat/completions", env.api);
    for (body, code) in [
        ("{not json", "invalid_json"),
        ("[]", "invalid_request"),
        ("{}", "missing_model"),
        (r#"{"model": 7}"#, "invalid_model"),
    ] {
        let r = send(
            Method::POST,
            &url,
            &[("content-type", "application/json")],
            Bytes::from(body),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{body}");
        let error = &r.json()["error"];
        assert_eq!(error["code"], code, "{body}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = env.chat("m", &[("x-llmroute-min-quality-tier", "eleven")]).await;
    assert_eq!(r.status, 400);
    still_serving(&env).await;
}

#[tokio::test]
async fn unknown_model_and_unknown_path() {
    let env = env(&[], "").await;
    let r = env.chat("no-such-model", &[]).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("model_not_found")));
    let r =
        send(Method::GET, &format!("{}/v1/nope", env.api), &[], Bytes::new(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, 404);
    let r = send(Method::GET, &format!("{}/v1/chat/completions", env.api), &[], Bytes::new(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let env = env(&["--max-body-bytes", "1000"], "").await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = env.post("/v1/chat/completions", big, &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert_eq!(env.requests("a").await + env.requests("b").await, 0);
    still_serving(&env).await;
}

#[tokio::test]
async fn a_slow_client_that_never_finishes_its_headers_is_cut_off() {
    let env = env(&["--header-read-timeout-ms", "300"], "").await;
    let addr = env.api.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let closed = s.read_to_end(&mut buf).is_ok();
        (buf, closed)
    });
    still_serving(&env).await;
    let (answer, closed) = handle.join().unwrap();
    assert!(closed, "the sidecar closed the connection (the read did not time out)");
    assert!(started.elapsed() < Duration::from_secs(3), "closed after the header read timeout");
    // Like nginx's client_header_timeout: no request was read, so no answer is written.
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn an_upstream_that_sends_garbage_is_failed_over() {
    let env = env(&[], "").await;
    env.behaviour("a", json!({"mode": "garbage"})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-llmroute-deployment"), "llm/b");
    assert!(
        env.metrics()
            .await
            .contains(r#"llmroute_upstream_attempts_total{deployment="llm/a",outcome="connect_error"} 1"#)
    );
}

#[tokio::test]
async fn every_upstream_unreachable_is_502() {
    let env = env(&[], "").await;
    env.behaviour("a", json!({"mode": "garbage"})).await;
    env.behaviour("b", json!({"mode": "garbage"})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_failed");
    assert_eq!(r.header("x-llmroute-attempts"), "2");
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_within_the_deadline() {
    let env = env(&[], "defaults: {timeoutSeconds: 1}\n").await;
    env.behaviour("a", json!({"mode": "hang"})).await;
    let started = Instant::now();
    let r = env.chat("m", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "deadline_exceeded");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    still_serving(&env).await;
}

#[tokio::test]
async fn a_hung_upstream_is_failed_over_with_an_attempt_timeout() {
    let env = env(&["--attempt-timeout-ms", "300"], "").await;
    env.behaviour("a", json!({"mode": "hang"})).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmroute-deployment"), "llm/b");
    assert_eq!(r.header("x-llmroute-attempts"), "2");
}

#[tokio::test]
async fn no_snapshot_yet_is_503() {
    // An empty directory compiles (to an empty view); a missing one never does.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    let args: Vec<String> =
        ["--team", "t", "--manifests", &missing.to_string_lossy()].iter().map(|s| s.to_string()).collect();
    let (_sidecar, api, admin) = llmroute_testkit::process::start_sidecar(&args);
    let url = format!("http://{api}/v1/chat/completions");
    let mut reply = None;
    for _ in 0..100 {
        if let Ok(r) = llmroute_testkit::http_client::post_json(&url, &json!({"model": "m"}), &[]).await {
            reply = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = reply.expect("sidecar answered");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (503, Some("no_snapshot")));
    let ready = llmroute_testkit::http_client::get(&format!("http://{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_requests_before_exiting() {
    let mut env = env(&["--drain-timeout-ms", "5000"], "").await;
    env.behaviour("a", json!({"latency_ms": 1000})).await;
    let api = env.api.clone();
    let request = tokio::spawn(async move {
        llmroute_testkit::http_client::post_json(&format!("{api}/v1/chat/completions"), &json!({"model": "m"}), &[])
            .await
    });
    let in_flight = llmroute_testkit::process::eventually(Duration::from_secs(5), || async {
        env.metrics().await.contains("llmroute_deployment_in_flight{deployment=\"llm/a\"} 1")
    })
    .await;
    assert!(in_flight, "the request reached the upstream");
    env.sidecar.terminate();
    let answer = request.await.unwrap().expect("the in-flight request was answered");
    assert_eq!(answer.status, 200, "not cut off by the shutdown");
    let code = tokio::task::block_in_place(|| env.sidecar.wait_exit(Duration::from_secs(5)));
    assert_eq!(code, Some(0), "exits cleanly once drained");
    assert!(env.sidecar.logs().contains("draining open requests"));
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let env = env(&["--body-read-timeout-ms", "300"], "").await;
    let addr = env.api.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let answer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\"")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .join()
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(env.requests("a").await + env.requests("b").await, 0);
    still_serving(&env).await;
}
