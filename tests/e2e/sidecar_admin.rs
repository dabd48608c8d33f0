//! Admin endpoints: health, readiness, Prometheus metrics (checked by a parser), debug snapshot.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use llmroute_e2e::{Env, Options, md};
use llmroute_testkit::http_client::get;
use serde_json::json;

/// The sidecar's access log, each line parsed as JSON, once it holds at least `n` lines.
async fn access_log(env: &Env, n: usize) -> Vec<serde_json::Value> {
    let lines = || {
        env.sidecar
            .stdout()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
            .collect::<Vec<_>>()
    };
    let logged = llmroute_testkit::process::eventually(Duration::from_secs(3), || async { lines().len() >= n }).await;
    assert!(logged, "{n} lines: {}", env.sidecar.stdout());
    lines()
}

#[tokio::test]
async fn health_readiness_and_debug_snapshot() {
    let health = "  healthCheck: {mode: models, intervalSeconds: 1}";
    let env =
        Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", health), ..Default::default() }).await;
    assert_eq!(get(&format!("{}/healthz", env.admin)).await.unwrap().status, 200);
    let ready = get(&format!("{}/readyz", env.admin)).await.unwrap();
    assert_eq!(ready.status, 200);
    let debug = get(&format!("{}/debug/snapshot", env.admin)).await.unwrap().json();
    assert_eq!(Some(debug["version"].as_str().unwrap().to_owned()), env.version().await);
    assert_eq!(debug["team"], "team-a");
    assert_eq!(debug["deployments"][0]["id"], "llm/a");
    assert_eq!(debug["routes"][0]["publicName"], "m");
    assert_eq!(debug["routes"][0]["policy"]["maxAttempts"], 3);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_contract_names() {
    let health = "  healthCheck: {mode: models, intervalSeconds: 1}";
    let manifests = md("a", "m", "a", &format!("  order: 1\n{health}")) + &md("b", "m", "b", "  order: 2");
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    env.behaviour("a", json!({"fail_next": 1})).await;
    assert_eq!(env.chat("m", &[]).await.status, 200);
    assert_eq!(env.chat("nope", &[]).await.status, 404);
    let probed = llmroute_testkit::process::eventually(std::time::Duration::from_secs(3), || async {
        env.metrics().await.contains("llmroute_deployment_healthy")
    })
    .await;
    assert!(probed, "the probe result reached the metrics: {}", env.metrics().await);
    let text = env.metrics().await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let names: std::collections::BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "llmroute_requests_total",
        "llmroute_upstream_attempts_total",
        "llmroute_failovers_total",
        "llmroute_upstream_latency_seconds",
        "llmroute_deployment_healthy",
        "llmroute_deployment_cooldown",
        "llmroute_snapshot_info",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{text}");
    }
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            })
    };
    assert_eq!(
        value("llmroute_requests_total", &[("model_group", "m"), ("deployment", "llm/b"), ("code", "200")]),
        Some(1.0)
    );
    assert_eq!(
        value("llmroute_requests_total", &[("model_group", ""), ("code", "404")]),
        Some(1.0),
        "unknown names share one series"
    );
    assert_eq!(
        value("llmroute_upstream_attempts_total", &[("deployment", "llm/a"), ("outcome", "error_status")]),
        Some(1.0)
    );
    assert_eq!(value("llmroute_failovers_total", &[("kind", "order")]), Some(1.0));
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "llmroute_upstream_latency_seconds" && s.labels.get("deployment") == Some("llm/b"));
    assert!(
        matches!(histogram.map(|h| &h.value), Some(prometheus_parse::Value::Histogram(_))),
        "latency is a histogram"
    );
    assert_eq!(value("llmroute_snapshot_info", &[("version", env.version().await.unwrap().as_str())]), Some(1.0));
}

/// A local address other than loopback (found by routing, no packet sent).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn debug_endpoints_answer_loopback_peers_only_while_metrics_answer_anyone() {
    let Some(ip) = non_loopback_ip() else {
        // A machine with no interface but loopback cannot have a non-loopback peer at all.
        eprintln!("no non-loopback interface: nothing to refuse");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), md("a", "m", "a", "").replace("{a}", "127.0.0.1:9")).unwrap();
    let args: Vec<String> = [
        "--team",
        "team-a",
        "--manifests",
        &dir.path().to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "0.0.0.0:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = llmroute_testkit::process::Proc::spawn(&llmroute_testkit::process::bin("llmroute-sidecar"), &args);
    let line = proc.wait_log_line("llmroute-sidecar serving", std::time::Duration::from_secs(10)).expect("started");
    let port = llmroute_testkit::process::log_field(&line, "admin")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap()
        .port();
    let get = |host: String, path: &str| {
        let url = format!("http://{host}:{port}{path}");
        async move { llmroute_testkit::http_client::get(&url).await.unwrap().status }
    };
    assert_eq!(get(ip.to_string(), "/debug/snapshot").await, 403, "a view's debug output reached the pod network");
    assert_eq!(get(ip.to_string(), "/metrics").await, 200);
    assert_eq!(get("127.0.0.1".into(), "/debug/snapshot").await, 200);
}

#[tokio::test]
async fn debug_route_explains_every_exclusion_the_affinity_and_the_pick_without_calling_upstreams() {
    let probed = "  healthCheck: {mode: models, intervalSeconds: 1}";
    let manifests = md("h1", "h", "a", probed)
        + &md("h2", "h", "b", "")
        + &md("c1", "c", "c", "")
        + &md("c2", "c", "b", "")
        + &md("l1", "l", "b", "  limits: {rpm: 1}")
        + &md("l2", "l", "b", "  order: 2")
        + &md("s1", "s", "b", "")
        + &md("s2", "s", "b", "");
    let config = "modelGroups:\n  c: {cooldown: {allowedFails: 0, seconds: 60}}\n  s: {affinity: [session]}\n";
    let env = Env::start(Options { instances: &["a", "b", "c"], manifests, config, ..Default::default() }).await;
    let route = |model: &str, headers: Vec<(&'static str, String)>| {
        let url = format!("{}/debug/route?model={model}", env.admin);
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = llmroute_testkit::http_client::send(
                http::Method::GET,
                &url,
                &headers,
                Default::default(),
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap();
            (r.status, r.json())
        }
    };
    let excluded = |body: &serde_json::Value, id: &str| {
        body["candidates"].as_array().unwrap().iter().find(|c| c["deployment"] == id).map(|c| c["excluded"].clone())
    };
    // Unhealthy by a fresh probe.
    env.behaviour("a", json!({"healthy": false})).await;
    let unhealthy = llmroute_testkit::process::eventually(std::time::Duration::from_secs(5), || async {
        excluded(&route("h", vec![]).await.1, "llm/h1") == Some(json!("unhealthy"))
    })
    .await;
    assert!(unhealthy, "{}", route("h", vec![]).await.1);
    assert_eq!(route("h", vec![]).await.1["pick"], "llm/h2");
    // Cooling down after a failure.
    env.behaviour("c", json!({"status": 503})).await;
    // Until `c1` has been tried (a weighted pick of two chose `c2` five times in a row once:
    // a fixed count of requests leaves it to chance).
    for _ in 0..64 {
        assert_eq!(env.chat("c", &[]).await.status, 200);
        if env.stats("c").await["requests"].as_u64().unwrap_or(0) > 0 {
            break;
        }
    }
    let (_, cooling) = route("c", vec![]).await;
    assert_eq!(excluded(&cooling, "llm/c1"), Some(json!("cooling_down")), "{cooling}");
    assert!(cooling["candidates"][0]["cooldownRemainingMs"].as_u64().unwrap() > 50_000);
    // At its limit: the next order level is picked.
    let before = env.stats("b").await["requests"].as_u64().unwrap();
    assert_eq!(env.served_by("l", &[]).await, "llm/l1");
    let (_, limited) = route("l", vec![]).await;
    assert_eq!(excluded(&limited, "llm/l1"), Some(json!("at_limit")), "{limited}");
    assert_eq!(limited["pick"], "llm/l2");
    assert_eq!(limited["candidates"][0]["limits"]["rpm"], 1);
    // Session affinity: named (never the key), and the same pick a request makes.
    let session = vec![("x-llmroute-session-id", "user-42".to_string())];
    let (_, affine) = route("s", session.clone()).await;
    assert_eq!(affine["affinity"], "session");
    assert!(!affine.to_string().contains("user-42"), "the key's value never appears");
    let served = env.served_by("s", &[("x-llmroute-session-id", "user-42")]).await;
    assert_eq!(affine["pick"], served.as_str());
    assert_eq!(affine["route"]["policy"]["affinity"], json!(["AFFINITY_SESSION"]));
    // No upstream was called by any of the explanations.
    assert_eq!(env.stats("b").await["requests"].as_u64().unwrap(), before + 2);
    // Clear errors.
    assert_eq!(route("", vec![]).await.0, 400);
    assert_eq!(route("nope", vec![]).await.0, 404);
    assert_eq!(route("h", vec![("x-llmroute-min-quality-tier", "9".to_string())]).await.0, 400);
    // The route that served, on every answer.
    let r = env.chat("s", &[]).await;
    assert_eq!(r.header("x-llmroute-route"), "s");
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_counted_logged_and_its_attempt_cancelled() {
    let env = Env::start(Options {
        instances: &["a"],
        manifests: md("a", "m", "a", ""),
        flags: &["--access-log"],
        ..Default::default()
    })
    .await;
    env.behaviour("a", json!({"mode": "hang"})).await;
    // The client gives up after 300 ms and closes its connection; the upstream never answers.
    let body = Bytes::from(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string());
    let url = format!("{}/v1/chat/completions", env.api);
    let headers = [("content-type", "application/json"), ("x-request-id", "left-1")];
    let left =
        llmroute_testkit::http_client::send(Method::POST, &url, &headers, body, Duration::from_millis(300)).await;
    assert!(left.is_err(), "no answer came");
    let counted = llmroute_testkit::process::eventually(Duration::from_secs(5), || async {
        env.metric("llmroute_requests_total{code=\"499\",deployment=\"llm/a\",model_group=\"m\"}").await == Some(1.0)
    })
    .await;
    assert!(counted, "{}", env.metrics().await);
    assert_eq!(
        env.metric("llmroute_upstream_attempts_total{deployment=\"llm/a\",outcome=\"cancelled\"}").await,
        Some(1.0)
    );
    let lines = access_log(&env, 1).await;
    let line = lines.iter().find(|l| l["request_id"] == "left-1").expect("the request's access-log line");
    assert_eq!(
        (line["status"].as_str(), line["deployment"].as_str(), line["attempts"].as_u64()),
        (Some("499"), Some("llm/a"), Some(1))
    );
    assert!(line["duration_ms"].as_f64().unwrap() >= 250.0, "{line}");
}

#[tokio::test]
async fn the_admin_port_has_a_thread_of_its_own_and_a_flood_of_it_leaves_requests_served() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    let task = std::fs::read_dir(format!("/proc/{}/task", env.sidecar.pid())).unwrap();
    let names: Vec<String> = task
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "llmroute-admin"), "{names:?}");
    // Clients that pipeline renders of /metrics and never read their answers.
    let admin = env.admin.trim_start_matches("http://").to_owned();
    let mut flood = Vec::new();
    for _ in 0..10 {
        let mut stream = tokio::net::TcpStream::connect(&admin).await.unwrap();
        stream.write_all("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".repeat(100).as_bytes()).await.unwrap();
        flood.push(stream);
    }
    // Requests are still served, and so is the admin port.
    for _ in 0..10 {
        assert_eq!(env.chat("m", &[]).await.status, 200);
    }
    assert_eq!(get(&format!("{}/healthz", env.admin)).await.unwrap().status, 200);
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connections_past_a_quarter_of_the_descriptors_are_closed_at_once() {
    use llmroute_testkit::process::{Proc, bin, log_field};
    // A sidecar with 1,024 file descriptors: its admin port keeps at most 256 connections open.
    let dir = tempfile::tempdir().unwrap();
    let sidecar = bin("llmroute-sidecar").to_string_lossy().into_owned();
    let manifests = dir.path().to_string_lossy().into_owned();
    let script = "ulimit -n 1024 && exec \"$0\" \"$@\"";
    let args = [script, &sidecar, "--team", "t", "--manifests", &manifests]
        .into_iter()
        .chain(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mut all = vec!["-c".to_owned()];
    all.extend(args);
    let proc = Proc::spawn(std::path::Path::new("/bin/sh"), &all);
    let line = proc.wait_log_line("llmroute-sidecar serving", Duration::from_secs(10)).expect("started");
    let (api, admin) = (log_field(&line, "listen").unwrap(), log_field(&line, "admin").unwrap());
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&admin).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = idle.iter().filter(|s| matches!(s.try_read(&mut [0u8; 16]), Ok(0))).count();
    assert!((44..=50).contains(&closed), "{closed} of 300 closed");
    // Requests are still accepted and answered.
    let url = format!("http://{api}/v1/chat/completions");
    let reply = llmroute_testkit::http_client::post_json(&url, &json!({"model": "m", "messages": []}), &[]).await;
    assert_eq!(reply.unwrap().status, 404);
    drop(idle);
    let back = llmroute_testkit::process::eventually(Duration::from_secs(5), || async {
        get(&format!("http://{admin}/healthz")).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(back, "the admin port serves again once they are gone");
}

#[tokio::test]
async fn requests_refused_before_routing_are_counted_and_logged() {
    let env = Env::start(Options {
        instances: &["a"],
        manifests: md("a", "m", "a", ""),
        flags: &["--access-log", "--max-body-bytes", "1000"],
        ..Default::default()
    })
    .await;
    let send =
        |method: Method, path: &str, id: &'static str, body: String, extra: Option<(&'static str, &'static str)>| {
            let url = format!("{}{path}", env.api);
            async move {
                let mut headers = vec![("content-type", "application/json"), ("x-request-id", id)];
                headers.extend(extra);
                let body = Bytes::from(body);
                llmroute_testkit::http_client::send(method, &url, &headers, body, Duration::from_secs(10))
                    .await
                    .unwrap()
                    .status
            }
        };
    let chat = "/v1/chat/completions";
    let valid = json!({"model": "m", "messages": []}).to_string();
    let cases = [
        (send(Method::POST, chat, "bad-json", "{".into(), None).await, 400, "bad-json", "chat"),
        (send(Method::POST, "/v1/nope", "bad-url", valid.clone(), None).await, 404, "bad-url", ""),
        (send(Method::GET, chat, "bad-method", String::new(), None).await, 405, "bad-method", "chat"),
        (send(Method::POST, chat, "too-large", "x".repeat(2000), None).await, 413, "too-large", "chat"),
        (
            send(Method::POST, chat, "bad-tier", valid, Some(("x-llmroute-min-quality-tier", "9"))).await,
            400,
            "bad-tier",
            "chat",
        ),
    ];
    for (status, expected, id, _) in &cases {
        assert_eq!(status, expected, "{id}");
    }
    for (code, n) in [("400", 2.0), ("404", 1.0), ("405", 1.0), ("413", 1.0)] {
        let series = format!("llmroute_requests_total{{code=\"{code}\",deployment=\"\",model_group=\"\"}}");
        assert_eq!(env.metric(&series).await, Some(n), "{series}: {}", env.metrics().await);
    }
    let lines = access_log(&env, cases.len()).await;
    for (_, status, id, operation) in cases {
        let line = lines.iter().find(|l| l["request_id"] == id).unwrap_or_else(|| panic!("{id}: {lines:?}"));
        assert_eq!(line["status"], status.to_string(), "{id}");
        assert_eq!(line["operation"], operation, "{id}");
        assert_eq!((line["model_group"].as_str(), line["deployment"].as_str()), (Some(""), Some("")), "{id}");
    }
    assert_eq!(lines.len(), cases.len(), "one line per request: {lines:?}");
    // A method of any length is echoed cut short.
    let long = Method::from_bytes(&[b'M'; 5000]).unwrap();
    let url = format!("{}/nope", env.api);
    let r = llmroute_testkit::http_client::send(long, &url, &[], Bytes::new(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 1000, "{}", r.body.len());
    let method = |id: &str| lines.iter().find(|l| l["request_id"] == id).unwrap()["method"].clone();
    assert_eq!((method("bad-method"), method("bad-json")), (json!("GET"), json!("POST")), "the method sent");
}

#[tokio::test]
async fn the_access_log_is_one_json_line_per_request_without_credentials_or_prompts() {
    let keyed = md("b", "m", "b", "  order: 2").replace(
        "  upstream: {baseUrl: 'http://{b}/v1'}",
        "  upstream: {baseUrl: 'http://{b}/v1', apiKeySecretRef: {name: k, key: k}}",
    );
    assert!(keyed.contains("apiKeySecretRef"));
    let manifests = md("a", "m", "a", "  order: 1")
        + &keyed
        + "apiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: llm}\nstringData: {k: sk-very-secret}\n---\n";
    let env =
        Env::start(Options { instances: &["a", "b"], manifests, flags: &["--access-log"], ..Default::default() }).await;
    env.behaviour("a", json!({"fail_next": 1})).await;
    let r = env
        .post(
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "my secret prompt"}]}),
            &[("x-request-id", "req-1")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.chat("nope", &[]).await.status, 404);
    let lines = access_log(&env, 2).await;
    let served = lines.iter().find(|l| l["request_id"] == "req-1").expect("the request's line");
    assert_eq!(served["status"], "200");
    assert_eq!(served["deployment"], "llm/b");
    assert_eq!(served["model"], "m");
    assert_eq!(served["attempts"], 2);
    assert_eq!(served["input_tokens"], 1, "the fake's usage");
    assert!(served["duration_ms"].as_f64().unwrap() >= 0.0);
    let missing = lines.iter().find(|l| l["model"] == "nope").expect("the 404's line");
    assert_eq!(missing["status"], "404");
    let out = env.sidecar.stdout();
    assert!(!out.contains("my secret prompt") && !out.contains("sk-very-secret"), "{out}");
}
