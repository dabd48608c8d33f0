//! Resources through the real binary: teams, aliases, wildcards, corrections and deletions take
//! effect as whole snapshots; bad objects are excluded while the rest serves.

use std::time::Duration;

use llmroute_e2e::{Env, Options, md, tm};
use llmroute_testkit::http_client::get;
use llmroute_testkit::process::eventually;
use serde_json::json;

fn teams() -> String {
    md("shared", "gpt-4o", "shared", "")
        + &md("a-llama-1", "llama", "a1", "  team: team-a")
        + &md("a-llama-2", "llama", "a2", "  team: team-a")
        + &md("b-secret", "b-only", "b", "  team: team-b")
        + &tm("a-smart", "team-a", "smart", "modelName: gpt-4o", "")
        + &tm("b-chat", "team-b", "chat", "modelName: gpt-4o", "")
}

#[tokio::test]
async fn team_siblings_alias_and_isolation() {
    let env =
        Env::start(Options { instances: &["shared", "a1", "a2", "b"], manifests: teams(), ..Default::default() }).await;
    let mut siblings = std::collections::BTreeSet::new();
    for _ in 0..30 {
        siblings.insert(env.served_by("llama", &[]).await);
    }
    assert_eq!(siblings.into_iter().collect::<Vec<_>>(), ["llm/a-llama-1", "llm/a-llama-2"]);
    assert_eq!(env.served_by("smart", &[]).await, "llm/shared", "a team alias of the global group");
    for foreign in ["b-only", "chat"] {
        let r = env.chat(foreign, &[]).await;
        assert_eq!(r.status, 404, "{foreign}");
        assert_eq!(r.json()["error"]["code"], "model_not_found");
    }
    assert_eq!(env.requests("b").await, 0);
    let models = get(&format!("{}/v1/models", env.api)).await.unwrap().json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"smart") && ids.contains(&"llama") && ids.contains(&"gpt-4o"), "{ids:?}");
    assert!(!ids.contains(&"chat") && !ids.contains(&"b-only"), "{ids:?}");
}

#[tokio::test]
async fn a_corrected_wildcard_takes_effect_with_no_request_to_the_old_model() {
    let broken = md("wild", "openai/*", "w", "").replace("/v1'}", "/v1', model: 'old-*'}");
    let env = Env::start(Options { instances: &["w"], manifests: broken, ..Default::default() }).await;
    assert_eq!(env.served_by("openai/gpt-4o", &[]).await, "llm/wild");
    assert_eq!(env.stats("w").await["last_model"], "old-gpt-4o");
    let fixed = md("wild", "openai/*", "w", "").replace("/v1'}", "/v1', model: '*'}");
    let version = env.change_manifests(&fixed).await;
    for i in 0..20 {
        let r = env.chat(&format!("openai/model-{i}"), &[]).await;
        assert_eq!(r.header("x-llmroute-snapshot"), version);
        assert_eq!(r.header("x-llmroute-model-group"), "openai/*", "the group is the pattern, not the name sent");
        assert_eq!(
            env.stats("w").await["last_model"],
            format!("model-{i}"),
            "no request goes to the old upstream model"
        );
    }
}

#[tokio::test]
async fn a_deleted_deployment_receives_nothing() {
    let both = md("keep", "m", "keep", "") + &md("gone", "m", "gone", "");
    let env = Env::start(Options { instances: &["keep", "gone"], manifests: both, ..Default::default() }).await;
    for _ in 0..10 {
        env.chat("m", &[]).await;
    }
    let before = env.requests("gone").await;
    env.change_manifests(&md("keep", "m", "keep", "")).await;
    for _ in 0..30 {
        assert_eq!(env.served_by("m", &[]).await, "llm/keep");
    }
    assert_eq!(env.requests("gone").await, before);
}

#[tokio::test]
async fn an_invalid_object_is_excluded_and_the_rest_serves() {
    let good = md("good", "m", "good", "");
    let env = Env::start(Options { instances: &["good", "bad"], manifests: good.clone(), ..Default::default() }).await;
    let with_bad = good.clone()
        + &md("bad", "other", "bad", "  order: 0")
        + &tm("dangling", "team-a", "x", "deployments: [ghost]", "");
    let version = env.version().await;
    env.write_manifests(&with_bad);
    let reported = llmroute_testkit::process::eventually(Duration::from_secs(5), || async {
        let logs = env.compile_logs();
        logs.contains("order must be >= 1") && logs.contains("DeploymentNotFound")
    })
    .await;
    assert!(reported, "{}", env.compile_logs());
    assert_eq!(env.version().await, version, "invalid objects leave the view unchanged");
    assert_eq!(env.served_by("m", &[]).await, "llm/good");
    assert_eq!(env.chat("other", &[]).await.status, 404, "the invalid deployment is excluded");
}

#[tokio::test]
async fn broken_yaml_or_config_keeps_the_last_good_snapshot() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    let version = env.version().await;
    env.write_file("zz-broken.yaml", "kind: [unclosed\n");
    let reported =
        eventually(Duration::from_secs(5), || async { env.compile_logs().contains("zz-broken.yaml:2:") }).await;
    assert!(reported, "{}", env.compile_logs());
    assert_eq!(env.served_by("m", &[]).await, "llm/a");
    assert_eq!(env.version().await, version, "a file that never parsed changes nothing");
    env.write_manifests(&md("a", "m", "a", "  weight: [not, a, number]"));
    let excluded = eventually(Duration::from_secs(5), || async { env.chat("m", &[]).await.status == 404 }).await;
    assert!(excluded, "the unreadable deployment is excluded, reported on its name");
    assert!(env.compile_logs().contains("spec.weight"));
    env.write_manifests(&md("a", "m", "a", ""));
    let back = eventually(Duration::from_secs(5), || async { env.version().await == version }).await;
    assert!(back, "same content, same version");
    assert_eq!(env.served_by("m", &[]).await, "llm/a");
}

#[tokio::test]
async fn routing_config_changes_apply_live() {
    let manifests = md("a", "m", "a", "") + &md("b", "other", "b", "");
    let env = Env::start(Options { instances: &["a", "b"], manifests: manifests.clone(), ..Default::default() }).await;
    env.behaviour("a", json!({"status": 500})).await;
    assert_eq!(env.chat("m", &[]).await.status, 500);
    // A config change alone is a new snapshot.
    env.write_config("modelGroups: {m: {fallbacks: [other]}}\n");
    let ok = llmroute_testkit::process::eventually(Duration::from_secs(5), || async {
        env.chat("m", &[]).await.status == 200
    })
    .await;
    assert!(ok, "fallback from the new config never applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_routes_on_the_view_in_force_when_its_body_is_complete() {
    use std::io::{Read, Write};
    let env =
        Env::start(Options { instances: &["a", "b"], manifests: md("old", "m", "a", ""), ..Default::default() }).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (first, rest) = body.split_at(10);
    let addr = env.api.trim_start_matches("http://").to_owned();
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(first.as_bytes()).unwrap();
    // The body is still arriving when the view changes: `m` moves to another deployment.
    env.change_manifests(&md("new", "m", "b", "")).await;
    socket.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-llmroute-deployment: llm/new"), "{answer}");
    assert_eq!(env.requests("a").await, 0, "the old view was not used");
}

#[tokio::test]
async fn metric_series_of_a_removed_deployment_go_with_it() {
    let manifests = md("stay", "m", "a", "") + &md("gone", "g", "b", "");
    let env = Env::start(Options { instances: &["a", "b"], manifests, ..Default::default() }).await;
    assert_eq!(env.served_by("g", &[]).await, "llm/gone");
    assert_eq!(env.served_by("m", &[]).await, "llm/stay");
    assert!(env.metrics().await.contains("deployment=\"llm/gone\""));
    env.change_manifests(&md("stay", "m", "a", "")).await;
    let text = env.metrics().await;
    assert!(!text.contains("llm/gone"), "{text}");
    assert!(text.contains("deployment=\"llm/stay\""), "live series stay");
}
