//! Fleet learning through the real binaries: adaptive routing taught by `POST /v1/feedback`
//! and merged by the operator (kept across its restart), a `limits.rpm` shared by two
//! sidecars, and a cooldown one sidecar finds and another honours.

use std::time::Duration;

use llmroute_e2e::fleet::{Fakes, FedSidecar, Operator, write_atomic};
use llmroute_e2e::md;
use llmroute_testkit::http_client::{get, post_json};
use llmroute_testkit::process::eventually;
use serde_json::{Value, json};

struct Setup {
    fakes: Fakes,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(manifests: &str, config: &str) -> Setup {
        let fakes = Fakes::start(&["x", "y"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        write_atomic(&dir.path().join("manifests/all.yaml"), &fakes.fill(manifests));
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        Setup { fakes, dir }
    }

    fn operator(&self, extra: &[&str]) -> Operator {
        let manifests = self.dir.path().join("manifests");
        Operator::start_with(&manifests, &self.dir.path().join("config.yaml"), "127.0.0.1:0", extra)
    }

    fn sidecar(&self, team: &str, operator: &Operator) -> FedSidecar {
        FedSidecar::start(team, operator.grpc, self.dir.path().join(format!("{team}.cache")))
    }
}

async fn chat(sidecar: &FedSidecar, model: &str, text: &str) -> (u16, String, String) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    match post_json(&format!("{}/v1/chat/completions", sidecar.api), &body, &[]).await {
        Ok(r) => {
            let id = r.json()["id"].as_str().unwrap_or_default().to_owned();
            (r.status, r.header("x-llmroute-deployment"), id)
        }
        Err(e) => (0, e, String::new()),
    }
}

async fn feedback(sidecar: &FedSidecar, body: Value) -> (u16, Value) {
    let r = post_json(&format!("{}/v1/feedback", sidecar.api), &body, &[]).await.expect("feedback");
    (r.status, r.json())
}

async fn adaptive(operator: &Operator) -> Value {
    get(&format!("{}/adaptive", operator.admin)).await.map(|r| r.json()).unwrap_or(Value::Null)
}

fn mean(state: &Value, deployment: &str) -> Option<f64> {
    let cells = state["cells"].as_array()?;
    cells
        .iter()
        .find(|c| c["deployment"] == deployment && c["requestType"] == "writing")
        .and_then(|c| c["mean"].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_shifts_an_adaptive_groups_pick_and_the_fleet_keeps_it_across_a_restart() {
    // The poor deployment starts as the favourite (tier 5 against tier 1): only the users'
    // ratings can move the pick away from it.
    let manifests = md("good", "smart", "x", "  qualityTier: 1") + &md("poor", "smart", "y", "  qualityTier: 5");
    let setup = Setup::new(&manifests, "modelGroups:\n  smart: {strategy: adaptive}\n");
    let state = setup.dir.path().join("fleet.json");
    let state_flag = state.to_string_lossy().to_string();
    let operator = setup.operator(&["--fleet-state", &state_flag]);
    let sidecar = setup.sidecar("team-a", &operator);
    assert!(operator.converged("team-a", 1).await, "{}", operator.status().await);

    // Users rate every answer: the poor deployment's answers are bad.
    let mut late_good = 0;
    for i in 0..120 {
        let (status, deployment, id) = chat(&sidecar, "smart", &format!("Write a short poem about boat {i}")).await;
        assert_eq!(status, 200, "{deployment}");
        let score = if deployment == "llm/good" { 1.0 } else { 0.0 };
        let (code, answer) = feedback(&sidecar, json!({"response_id": id, "score": score})).await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["deployment"], deployment.as_str());
        assert_eq!(answer["request_type"], "writing");
        if i >= 80 && deployment == "llm/good" {
            late_good += 1;
        }
    }
    assert!(late_good >= 32, "the pick shifted to the well-rated deployment: {late_good} of the last 40");

    // Feedback is for answers this sidecar gave, once each, in the documented shape.
    let (_, _, id) = chat(&sidecar, "smart", "Write a limerick").await;
    assert_eq!(feedback(&sidecar, json!({"response_id": id, "score": 1})).await.0, 200);
    let (code, again) = feedback(&sidecar, json!({"response_id": id, "score": 1})).await;
    assert_eq!((code, again["error"]["code"].as_str()), (404, Some("response_not_found")), "{again}");
    let (code, forged) = feedback(&sidecar, json!({"response_id": "chatcmpl-forged", "score": 1})).await;
    assert_eq!((code, forged["error"]["code"].as_str()), (404, Some("response_not_found")));
    for bad in [json!({"response_id": id}), json!({"response_id": id, "score": 2}), json!({"score": 1}), json!([1])] {
        let (code, body) = feedback(&sidecar, bad.clone()).await;
        assert_eq!((code, body["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{bad}: {body}");
    }

    // The operator merged the sidecar's reports.
    let merged = eventually(Duration::from_secs(15), || async {
        let state = adaptive(&operator).await;
        // Every 2xx is a success too: a poorly rated answer nets one success and one failure,
        // and how often the poor one was still picked (so how far its tier-5 prior moved) is
        // random: it must rank clearly below the well-rated one, not under a fixed mark.
        matches!((mean(&state, "llm/good"), mean(&state, "llm/poor")), (Some(g), Some(p)) if g > 0.9 && p < g - 0.2)
    })
    .await;
    assert!(merged, "{}", adaptive(&operator).await);
    // Metrics follow the merged state pushed to sidecars (refreshed every few seconds).
    let in_metrics = eventually(Duration::from_secs(15), || async {
        let metrics = get(&format!("{}/metrics", operator.admin)).await.map(|r| r.text()).unwrap_or_default();
        metrics.contains(
            "llmroute_adaptive_posterior_mean{deployment=\"llm/good\",group=\"smart\",request_type=\"writing\"}",
        )
    })
    .await;
    assert!(in_metrics);
    let before = adaptive(&operator).await;

    // A restart keeps what was learned (saved at shutdown, loaded at start).
    operator.proc.terminate();
    let mut proc = operator.proc;
    proc.wait_exit(Duration::from_secs(10));
    let restarted = setup.operator(&["--fleet-state", &state_flag]);
    let kept = eventually(Duration::from_secs(10), || async {
        let now = adaptive(&restarted).await;
        mean(&now, "llm/good").zip(mean(&before, "llm/good")).is_some_and(|(a, b)| (a - b).abs() < 0.05)
    })
    .await;
    assert!(kept, "before {before}\nafter {}", adaptive(&restarted).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_one_rpm_limit() {
    let setup = Setup::new(&md("limited", "m", "x", "  limits: {rpm: 120}"), "");
    let operator = setup.operator(&["--quota-rebalance-seconds", "1", "--quota-ttl-seconds", "3"]);
    let a = setup.sidecar("team-a", &operator);
    let b = setup.sidecar("team-b", &operator);
    assert!(operator.converged("team-a", 1).await && operator.converged("team-b", 1).await);
    // Both hammer the deployment for 10 s (about 20 requests a second each): alone, each
    // sidecar's own window would let 120 through at once.
    let started = std::time::Instant::now();
    let mut admitted = [0u32; 2];
    let mut limited = 0u32;
    while started.elapsed() < Duration::from_secs(10) {
        for (i, s) in [&a, &b].into_iter().enumerate() {
            match chat(s, "m", "hi").await.0 {
                200 => admitted[i] += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = admitted[0] + admitted[1];
    // 120 per minute is 20 in 10 s; the documented bound adds about one second of each
    // holder's rate plus the reserves: well under 40.
    assert!(total <= 40, "admitted {admitted:?} in 10 s under rpm 120 for the fleet");
    assert!(admitted[0] >= 4 && admitted[1] >= 4, "both sidecars get a share: {admitted:?}");
    assert!(limited > 100, "the rest was refused with 429: {limited}");
    let state = adaptive(&operator).await;
    let grants = state["quotas"][0]["rpm"]["grants"].as_array().map_or(0, Vec::len);
    assert_eq!(grants, 2, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_one_sidecar_cools_a_failing_deployment_another_sends_it_nothing() {
    let manifests = md("ok", "m", "x", "") + &md("broken", "m", "y", "");
    let config =
        "modelGroups:\n  m: {cooldown: {allowedFails: 0, windowSeconds: 60, seconds: 60}, healthRouting: false}\n";
    let setup = Setup::new(&manifests, config);
    let operator = setup.operator(&["--cooldown-min-reporters", "1", "--cooldown-min-requests", "1"]);
    let a = setup.sidecar("team-a", &operator);
    let b = setup.sidecar("team-b", &operator);
    assert!(operator.converged("team-a", 1).await && operator.converged("team-b", 1).await);
    setup.fakes.behaviour("y", json!({"status": 503})).await;
    // Sidecar A meets the failure and cools the deployment itself.
    let cooled = eventually(Duration::from_secs(10), || async {
        chat(&a, "m", "hi").await;
        setup.fakes.stats("y").await["requests"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(cooled);
    // The operator shares it: B treats it as cooling without ever having met it.
    let shared = eventually(Duration::from_secs(10), || async {
        let metrics = get(&format!("{}/metrics", b.admin)).await.map(|r| r.text()).unwrap_or_default();
        metrics.contains("llmroute_deployment_cooldown{deployment=\"llm/broken\"} 1")
    })
    .await;
    assert!(shared, "{}", adaptive(&operator).await);
    let before = setup.fakes.stats("y").await["requests"].as_u64().unwrap_or(0);
    for _ in 0..30 {
        let (status, deployment, _) = chat(&b, "m", "hi").await;
        assert_eq!((status, deployment.as_str()), (200, "llm/ok"));
    }
    assert_eq!(setup.fakes.stats("y").await["requests"].as_u64().unwrap_or(0), before, "B sent it nothing");
    assert_eq!(adaptive(&operator).await["sharedCooldowns"][0]["deployment"], "llm/broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_session_ids_cost_an_adaptive_sidecar_a_digest_each() {
    let setup = Setup::new(&md("only", "smart", "x", ""), "modelGroups:\n  smart: {strategy: adaptive}\n");
    let operator = setup.operator(&[]);
    let sidecar = setup.sidecar("team-a", &operator);
    assert!(operator.converged("team-a", 1).await);
    let url = format!("{}/v1/chat/completions", sidecar.api);
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]});
    // Warm up (allocator pools, connection state), then measure.
    for i in 0..20 {
        let key = format!("{i}-{}", "k".repeat(400_000));
        post_json(&url, &body, &[("x-llmroute-session-id", &key)]).await.expect("answer");
    }
    let before = sidecar.proc.memory_kib("VmRSS").expect("rss");
    for i in 0..300 {
        let key = format!("{i}-{}", "s".repeat(400_000));
        let r = post_json(&url, &body, &[("x-llmroute-session-id", &key)]).await.expect("answer");
        assert_eq!(r.status, 200);
    }
    let after = sidecar.proc.memory_kib("VmRSS").expect("rss");
    // Kept whole, 300 keys of 400 KB would hold 120 MB.
    assert!(after.saturating_sub(before) < 40 * 1024, "RSS grew {} KiB", after.saturating_sub(before));
}

/// Metric names a PromQL expression reads (histogram series by their family name).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("llmroute_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    let priced = "  cost: {inputPerMillionTokens: '2.5', outputPerMillionTokens: '10'}\n  healthCheck: {mode: models, intervalSeconds: 1}";
    let manifests = md("good", "smart", "x", priced) + &md("poor", "smart", "y", "");
    let setup = Setup::new(&manifests, "modelGroups:\n  smart: {strategy: adaptive}\n");
    let operator = setup.operator(&[]);
    let sidecar = setup.sidecar("team-a", &operator);
    assert!(operator.converged("team-a", 1).await);
    // Traffic that makes every series exist: answers with usage, a stream, a failover, feedback.
    setup.fakes.behaviour("y", json!({"fail_next": 1})).await;
    for i in 0..6 {
        let (_, _, id) = chat(&sidecar, "smart", &format!("Write a poem {i}")).await;
        feedback(&sidecar, json!({"response_id": id, "score": 1})).await;
    }
    let stream = json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    post_json(&format!("{}/v1/chat/completions", sidecar.api), &stream, &[]).await.unwrap();
    // A failover for certain: the adaptive pick may not have tried `poor` above (it failed
    // this test once so); with both failing their next request, the next first attempt fails
    // whichever it picks.
    setup.fakes.behaviour("x", json!({"fail_next": 1})).await;
    setup.fakes.behaviour("y", json!({"fail_next": 1})).await;
    chat(&sidecar, "smart", "one more").await;
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("../deploy/grafana/llmroute-dashboard.json").unwrap()).unwrap();
    let mut wanted: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned()))
        .flat_map(|e| metric_names(&e))
        .collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 15, "{wanted:?}");
    let exposed = || async {
        let sidecar_metrics = get(&format!("{}/metrics", sidecar.admin)).await.map(|r| r.text()).unwrap_or_default();
        let operator_metrics = get(&format!("{}/metrics", operator.admin)).await.map(|r| r.text()).unwrap_or_default();
        sidecar_metrics + &operator_metrics
    };
    let all_there = eventually(Duration::from_secs(15), || async {
        let text = exposed().await;
        wanted.iter().all(|name| text.contains(&format!("# TYPE {name} ")))
    })
    .await;
    let text = exposed().await;
    let missing: Vec<&String> = wanted.iter().filter(|n| !text.contains(&format!("# TYPE {n} "))).collect();
    assert!(all_there, "the dashboard queries metrics nothing exposes: {missing:?}");
    // The operator sums what the sidecars reported, per team and deployment.
    let summed = eventually(Duration::from_secs(10), || async {
        let status = operator.status().await;
        status["usage"].as_array().is_some_and(|rows| {
            rows.iter().any(|r| {
                r["team"] == "team-a"
                    && r["deployment"] == "llm/good"
                    && r["inputTokens"].as_u64() >= Some(1)
                    && r["costUsd"].as_f64().is_some_and(|c| c > 0.0)
            })
        })
    })
    .await;
    assert!(summed, "{}", operator.status().await["usage"]);
    let metrics = get(&format!("{}/metrics", operator.admin)).await.unwrap().text();
    assert!(
        metrics.contains("llmroute_operator_tokens_total{deployment=\"llm/good\",kind=\"input\",team=\"team-a\"}"),
        "{metrics}"
    );
}
