//! The cluster layer against an in-process API server: stores, tenancy, grace, status writes
//! (server-side apply, budget, Events), leader election and follower reports, the CA.

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use llmroute_operator::cluster::inputs::Settings;
use llmroute_operator::cluster::{Controller, Options};
use llmroute_operator::metrics::Metrics;
use llmroute_operator::state::Shared;
use serde_json::{Value, json};
use support::fake_api::FakeApi;

const MD: &str = "apis/llmroute.dev/v1alpha1/modeldeployments";
const TM: &str = "apis/llmroute.dev/v1alpha1/teammodels";
const SECRETS: &str = "api/v1/secrets";
const NAMESPACES: &str = "api/v1/namespaces";
const LEASES: &str = "apis/coordination.k8s.io/v1/leases";

fn options(pod: &str, grace: u64, rate: f64) -> Options {
    Options {
        namespace: "llmroute".into(),
        pod: pod.into(),
        settings: Settings {
            global_namespaces: BTreeSet::from(["llmroute".to_string()]),
            config_name: "llmroute".into(),
            namespace: "llmroute".into(),
            grace: Duration::from_secs(grace),
        },
        lease_name: "llmroute-operator".into(),
        writes_per_second: rate,
        ready_threshold: 0.99,
        tick: Duration::from_millis(50),
        lease_seconds: 3,
    }
}

fn namespace(name: &str, team: Option<&str>) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    if let Some(team) = team {
        ns["metadata"]["labels"] = json!({"llmroute.dev/team": team});
    }
    ns
}

fn md(ns: &str, name: &str, team: Option<&str>) -> Value {
    let mut spec = json!({"modelName": "gpt-4o", "upstream": {"baseUrl": "http://127.0.0.1:9/v1",
        "apiKeySecretRef": {"name": "keys", "key": "api-key"}}});
    if let Some(team) = team {
        spec["team"] = team.into();
    }
    json!({"apiVersion": "llmroute.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn tm(ns: &str, name: &str, team: &str) -> Value {
    json!({"apiVersion": "llmroute.dev/v1alpha1", "kind": "TeamModel", "metadata": {"name": name, "namespace": ns},
           "spec": {"team": team, "publicName": name, "modelName": "gpt-4o"}})
}

fn secret(ns: &str, value: &str, labelled: bool) -> Value {
    let labels = if labelled { json!({"llmroute.dev/credentials": "true"}) } else { json!({}) };
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": ns, "labels": labels},
           "data": {"api-key": base64(value)}})
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(Metrics::new().unwrap()))
}

async fn eventually<F: Future<Output = bool>>(within: Duration, mut check: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition(object: &Value, kind: &str) -> Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or(Value::Null)
}

fn cluster_with_global_deployment(api: &FakeApi) {
    api.put(NAMESPACES, namespace("llmroute", None));
    api.put(NAMESPACES, namespace("team-a", Some("team-a")));
    api.put(SECRETS, secret("llmroute", "sk-1", true));
    api.put(MD, md("llmroute", "gpt", None));
}

#[tokio::test]
async fn no_view_is_served_before_every_store_is_ready() {
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    api.hold(TM);
    let shared = shared();
    let _c = Controller::start(api.client(), options("op-0", 60, 5.0), shared.clone(), None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(shared.built().is_none(), "a view was built before the TeamModel store listed");
    api.release(TM);
    assert!(eventually(Duration::from_secs(5), || async { shared.built().is_some() }).await);
    let built = shared.built().unwrap();
    assert!(built.compiled.diagnostics().iter().all(|d| d.accepted()), "{:?}", built.compiled.diagnostics());
}

#[tokio::test]
async fn the_leader_writes_status_by_server_side_apply_once_and_emits_events() {
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    let shared = shared();
    let _c = Controller::start(api.client(), options("op-0", 60, 5.0), shared.clone(), None);
    let written = || api.writes("PATCH", "/modeldeployments/gpt/status");
    assert!(eventually(Duration::from_secs(8), || async { !written().is_empty() }).await, "{:#?}", api.requests());
    let patch = &written()[0];
    assert!(patch.content_type.contains("application/apply-patch+yaml"), "{}", patch.content_type);
    assert!(
        patch.query.contains("fieldManager=llmroute-operator") && patch.query.contains("force=true"),
        "{}",
        patch.query
    );
    assert_eq!(patch.body["apiVersion"], "llmroute.dev/v1alpha1");
    assert_eq!(patch.body["kind"], "ModelDeployment");
    let status = &patch.body["status"];
    assert_eq!(status["observedGeneration"], 1);
    let accepted = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Accepted").unwrap();
    assert_eq!((accepted["status"].as_str(), accepted["reason"].as_str()), (Some("True"), Some("Accepted")));
    assert_eq!(accepted["observedGeneration"], 1);
    assert!(accepted["lastTransitionTime"].is_string());
    let kinds: Vec<&str> = status["conditions"].as_array().unwrap().iter().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(kinds, ["Accepted", "Ready", "Healthy"]);
    assert_eq!(status["snapshotVersion"].as_str().map(str::len), Some(16));
    assert_eq!(status["sidecars"], json!({"acknowledged": 0, "connected": 0}));
    // An Event for the transition to Accepted.
    let events = api.writes("POST", "/apis/events.k8s.io/v1/namespaces/llmroute/events");
    assert!(events.iter().any(|e| e.body["reason"] == "Accepted" && e.body["type"] == "Normal"), "{events:#?}");
    // Nothing changes: nothing more is written.
    let before = written().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(written().len(), before, "an unchanged status was written again");
    // No secret value anywhere in what was written.
    assert!(!api.requests().iter().any(|r| r.method != "GET" && r.body.to_string().contains(&base64("sk-1"))));
}

#[tokio::test]
async fn a_team_object_from_another_teams_namespace_is_rejected_with_team_mismatch() {
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    api.put(NAMESPACES, namespace("team-b", Some("team-b")));
    api.put(TM, tm("team-b", "sneaky", "team-a"));
    api.put(TM, tm("team-a", "chat", "team-a"));
    let shared = shared();
    let _c = Controller::start(api.client(), options("op-0", 60, 20.0), shared.clone(), None);
    let reason =
        |name: &str, ns: &str| condition(&api.get(TM, ns, name).unwrap_or_default(), "Accepted")["reason"].clone();
    assert!(eventually(Duration::from_secs(8), || async { reason("sneaky", "team-b") == "TeamMismatch" }).await);
    assert!(eventually(Duration::from_secs(3), || async { reason("chat", "team-a") == "Accepted" }).await);
    let built = shared.built().unwrap();
    assert_eq!(built.compiled.view("team-a").routes.iter().filter(|r| r.public_name == "sneaky").count(), 0);
    let events = api.writes("POST", "/events");
    assert!(events.iter().any(|e| e.body["reason"] == "TeamMismatch" && e.body["type"] == "Warning"), "{events:#?}");
}

#[tokio::test]
async fn a_rotated_secret_is_a_new_version_and_a_brief_deletion_keeps_the_route_degraded() {
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    let shared = shared();
    let _c = Controller::start(api.client(), options("op-0", 60, 20.0), shared.clone(), None);
    assert!(eventually(Duration::from_secs(5), || async { shared.built().is_some() }).await);
    let version = || shared.built().map(|b| b.compiled.version("team-a")).unwrap_or_default();
    let first = version();
    api.put(SECRETS, secret("llmroute", "sk-2", true));
    assert!(eventually(Duration::from_secs(3), || async { version() != first }).await, "rotation not republished");
    let rotated = version();
    api.remove(SECRETS, "llmroute", "keys");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let built = shared.built().unwrap();
    assert_eq!(built.compiled.view("team-a").deployments.len(), 1, "the route left within the grace period");
    assert_eq!(version(), rotated);
    let degraded = || condition(&api.get(MD, "llmroute", "gpt").unwrap_or_default(), "Degraded");
    assert!(eventually(Duration::from_secs(5), || async { degraded()["status"] == "True" }).await);
    // Recreated (an external-secrets refresh): no longer degraded.
    api.put(SECRETS, secret("llmroute", "sk-2", true));
    assert!(eventually(Duration::from_secs(5), || async { degraded().is_null() }).await, "{}", degraded());
}

#[tokio::test]
async fn a_secret_without_the_label_is_not_seen_and_after_the_grace_period_the_object_leaves() {
    let api = FakeApi::new();
    api.put(NAMESPACES, namespace("llmroute", None));
    api.put(SECRETS, secret("llmroute", "sk-1", false));
    api.put(MD, md("llmroute", "gpt", None));
    let shared = shared();
    let _c = Controller::start(api.client(), options("op-0", 0, 20.0), shared.clone(), None);
    let accepted = || condition(&api.get(MD, "llmroute", "gpt").unwrap_or_default(), "Accepted");
    assert!(eventually(Duration::from_secs(8), || async { accepted()["reason"] == "SecretNotFound" }).await);
    assert!(accepted()["message"].as_str().unwrap_or_default().contains("llmroute.dev/credentials"), "{}", accepted());
    // No Secret was ever listed without the label selector.
    let lists =
        api.requests().into_iter().filter(|r| r.method == "GET" && r.path.ends_with("/secrets")).collect::<Vec<_>>();
    assert!(
        !lists.is_empty() && lists.iter().all(|r| r.query.contains("labelSelector=llmroute.dev%2Fcredentials%3Dtrue")),
        "{lists:#?}"
    );
    let events = api.writes("POST", "/events");
    assert!(events.iter().any(|e| e.body["type"] == "Warning" && e.body["reason"] == "SecretNotFound"));
}

#[tokio::test]
async fn only_the_leader_writes_and_follower_reports_reach_it() {
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    api.put(TM, tm("team-a", "chat", "team-a"));
    let (a, b) = (shared(), shared());
    let ca = Controller::start(api.client(), options("op-a", 60, 20.0), a.clone(), None);
    // Let a lead first.
    assert!(eventually(Duration::from_secs(8), || async { *a.leader.borrow() }).await);
    let cb = Controller::start(api.client(), options("op-b", 60, 20.0), b.clone(), None);
    assert!(eventually(Duration::from_secs(5), || async { b.built().is_some() }).await);
    assert!(!*b.leader.borrow());
    // Three sidecars of team-a on the follower acknowledge its view.
    let version = b.built().unwrap().compiled.version("team-a");
    for i in 0..3 {
        let id = b.registry.register("team-a", format!("team-a/pod-{i}"), 1);
        b.registry.ack(id, &version);
    }
    let sidecars = || api.get(TM, "team-a", "chat").unwrap_or_default()["status"]["sidecars"].clone();
    assert!(
        eventually(Duration::from_secs(8), || async { sidecars() == json!({"acknowledged": 3, "connected": 3}) }).await,
        "{}",
        sidecars()
    );
    assert_eq!(condition(&api.get(TM, "team-a", "chat").unwrap(), "Ready")["status"], "True");
    // The leader's probe results reach the follower (and so its sidecars) and the status.
    let entry = llmroute_proto::v1::HealthEntry {
        deployment_id: "llmroute/gpt".into(),
        spec_hash: "h".into(),
        healthy: false,
        message: "HTTP 500".into(),
        observed_at_unix_ms: 1,
        ..Default::default()
    };
    a.health.send_replace(Arc::new(vec![entry]));
    assert!(
        eventually(Duration::from_secs(5), || async { b.health.borrow().first().is_some_and(|e| !e.healthy) }).await
    );
    let healthy = || condition(&api.get(MD, "llmroute", "gpt").unwrap_or_default(), "Healthy");
    assert!(
        eventually(Duration::from_secs(5), || async { healthy()["reason"] == "ProbeFailed" }).await,
        "{}",
        healthy()
    );
    assert_eq!(b.metrics.status_writes.get(), 0, "a follower wrote status");
    assert!(a.metrics.status_writes.get() > 0);
    // The leader stops: the Lease is released and the follower takes over in about a second.
    ca.stop().await;
    let lease = api.get(LEASES, "llmroute", "llmroute-operator").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert!(eventually(Duration::from_secs(6), || async { *b.leader.borrow() }).await, "no hand-over");
    cb.stop().await;
}

#[tokio::test]
async fn an_acknowledgement_storm_stays_within_the_write_budget() {
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    for i in 0..30 {
        api.put(TM, tm("team-a", &format!("model-{i}"), "team-a"));
    }
    let shared = shared();
    let _c = Controller::start(api.client(), options("op-0", 60, 5.0), shared.clone(), None);
    assert!(eventually(Duration::from_secs(5), || async { *shared.leader.borrow() && shared.built().is_some() }).await);
    let version = shared.built().unwrap().compiled.version("team-a");
    let started = tokio::time::Instant::now();
    let count = || api.writes("PATCH", "/status").len();
    let base = count();
    // 2,000 sidecars connect and acknowledge over 2 s.
    for i in 0..2000 {
        let id = shared.registry.register("team-a", format!("team-a/p{i}"), 1);
        shared.registry.ack(id, &version);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = count() - base;
    // 5 per second, plus a burst of 5.
    assert!(writes as f64 <= 5.0 * elapsed + 5.0 + 1.0, "{writes} writes in {elapsed:.1} s");
    // And the counts do arrive, for every object, to within the tenth that makes a change
    // meaningful (exact live counts are in /status and the metrics).
    let all_acked = || {
        (0..30).all(|i| {
            let s = &api.get(TM, "team-a", &format!("model-{i}")).unwrap()["status"];
            s["sidecars"]["acknowledged"].as_u64().is_some_and(|n| n >= 1800) && s["conditions"][1]["status"] == "True"
        })
    };
    assert!(
        eventually(Duration::from_secs(15), || async { all_acked() }).await,
        "{}",
        api.get(TM, "team-a", "model-7").unwrap()["status"]
    );
}

#[tokio::test]
async fn the_ca_is_created_once_and_published_into_team_namespaces() {
    use llmroute_operator::cluster::ca::{BundlePublisher, ensure_ca};
    let api = FakeApi::new();
    let client = api.client();
    let first = ensure_ca(&client, "llmroute", "llmroute-ca").await.unwrap();
    let again = ensure_ca(&client, "llmroute", "llmroute-ca").await.unwrap();
    assert_eq!(first, again, "a restart (or another replica) keeps the same CA");
    assert_eq!(api.writes("POST", "/namespaces/llmroute/secrets").len(), 1);
    let stored = api.get(SECRETS, "llmroute", "llmroute-ca").unwrap();
    assert!(stored["data"]["ca.crt"].is_string() && stored["data"]["ca.key"].is_string());
    // Issued certificates chain to it.
    let names = llmroute_operator::tls::pki::service_names("llmroute-operator", "llmroute");
    assert!(names.contains(&"llmroute-operator.llmroute.svc".to_string()));
    llmroute_operator::cluster::ca::serve_from(first.clone(), names).unwrap();
    let mut publisher = BundlePublisher::new(client, "llmroute-ca", first.cert_pem.clone());
    let namespaces = ["team-a".to_string(), "team-b".to_string()];
    publisher.publish(namespaces.iter()).await;
    for ns in ["team-a", "team-b"] {
        let cm = api.get("api/v1/configmaps", ns, "llmroute-ca").unwrap();
        assert_eq!(cm["data"]["ca.crt"].as_str(), Some(first.cert_pem.as_str()));
        assert!(!cm.to_string().contains("PRIVATE KEY"), "the CA key left its Secret");
    }
    // Already current: no second write.
    publisher.publish(namespaces.iter()).await;
    assert_eq!(api.writes("PATCH", "/configmaps/llmroute-ca").len(), 2);
}

fn learning_shared() -> Arc<Shared> {
    let mut shared = Shared::new(Metrics::new().unwrap());
    let config = llmroute_operator::fleet::Config {
        epoch: Duration::from_secs(1),
        decay: 1.0,
        rebalance: Duration::from_millis(500),
        ..Default::default()
    };
    shared.fleet = Arc::new(llmroute_operator::fleet::Fleet::new(config));
    let shared = Arc::new(shared);
    tokio::spawn(shared.fleet.clone().run(shared.clone()));
    shared
}

fn cell_alpha(shared: &Shared) -> Option<f64> {
    let described = shared.fleet.describe(std::time::Instant::now());
    described["cells"].as_array()?.iter().find(|c| c["deployment"] == "llmroute/gpt").and_then(|c| c["alpha"].as_f64())
}

#[tokio::test]
async fn reports_reach_the_leader_through_a_follower_count_once_and_survive_a_leader_change() {
    use llmroute_proto::v1;
    let api = FakeApi::new();
    cluster_with_global_deployment(&api);
    let mut limited = md("llmroute", "gpt", None);
    limited["spec"]["limits"] = json!({"rpm": 600});
    api.put(MD, limited);
    let (a, b) = (learning_shared(), learning_shared());
    let ca = Controller::start(api.client(), options("op-a", 60, 20.0), a.clone(), None);
    assert!(eventually(Duration::from_secs(8), || async { *a.leader.borrow() }).await);
    let cb = Controller::start(api.client(), options("op-b", 60, 20.0), b.clone(), None);
    assert!(eventually(Duration::from_secs(5), || async { b.built().is_some() && a.built().is_some() }).await);
    // A sidecar on the follower reports 10 successes and its demand.
    let who = llmroute_operator::fleet::Reporter {
        sidecar: "sidecar-1".into(),
        team: "team-a".into(),
        namespace: "team-a".into(),
    };
    let report = v1::FleetReport {
        seq: 1,
        deltas: vec![v1::PosteriorDelta {
            group: "gpt-4o".into(),
            request_type: "writing".into(),
            deployment_id: "llmroute/gpt".into(),
            successes: 10.0,
            failures: 0.0,
        }],
        usage: vec![v1::Usage {
            deployment_id: "llmroute/gpt".into(),
            requests_per_minute: 300.0,
            tokens_per_minute: 0.0,
        }],
        ..Default::default()
    };
    b.fleet.report(&who, &report, b.built().as_deref(), std::time::Instant::now());
    let prior = llmroute_router::adaptive::Posterior::prior(0).alpha;
    assert!(
        eventually(Duration::from_secs(8), || async { cell_alpha(&a) == Some(prior + 10.0) }).await,
        "the leader merged the follower's report: {:?}\n{:?}\n{}",
        cell_alpha(&a),
        api.get("api/v1/configmaps", "llmroute", "llmroute-report-op-b"),
        b.fleet.describe(std::time::Instant::now())
    );
    // The leader's decisions reach the follower: posteriors, and a grant for its sidecar.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let state = b.fleet.current();
            let granted = state
                .quotas
                .get("llmroute/gpt")
                .and_then(|q| q.rpm.as_ref())
                .is_some_and(|a| a.rate_of("sidecar-1") >= 300.0);
            granted
                && state
                    .posteriors
                    .iter()
                    .any(|c| c.deployment_id == "llmroute/gpt" && (c.alpha - prior - 10.0).abs() < 1e-9)
        })
        .await,
        "{:?}",
        b.fleet.current()
    );
    // Forwards are read again and again: still counted once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cell_alpha(&a), Some(prior + 10.0));
    // The leader saved the merged state in its ConfigMaps.
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.get("api/v1/configmaps", "llmroute", "llmroute-adaptive-index").is_some()
        })
        .await
    );
    // The leader goes: the follower leads and goes on from the saved state, nothing counted twice.
    ca.stop().await;
    assert!(eventually(Duration::from_secs(6), || async { *b.leader.borrow() }).await, "no hand-over");
    assert!(
        eventually(Duration::from_secs(5), || async { cell_alpha(&b) == Some(prior + 10.0) }).await,
        "{:?}",
        cell_alpha(&b)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cell_alpha(&b), Some(prior + 10.0));
    cb.stop().await;
}
