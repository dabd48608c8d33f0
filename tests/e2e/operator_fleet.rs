//! One operator feeding sidecars of two teams over gRPC, through the real binaries.

use std::time::Duration;

use llmroute_e2e::fleet::{Fakes, FedSidecar, Operator, write_atomic};
use llmroute_e2e::{md, tm};
use llmroute_testkit::process::eventually;
use prost::Message;

struct Fleet {
    fakes: Fakes,
    dir: tempfile::TempDir,
    operator: Operator,
    a: FedSidecar,
    b: FedSidecar,
}

fn private(name: &str, model: &str, instance: &str, team: &str, key: &str) -> String {
    md(name, model, instance, &format!("  team: {team}\n  upstream: {{baseUrl: 'http://{{{instance}}}/v1', apiKeySecretRef: {{name: {name}-key, key: k}}}}"))
        .replace(&format!("  upstream: {{baseUrl: 'http://{{{instance}}}/v1'}}\n"), "")
        + &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-key, namespace: llm}}\nstringData: {{k: {key}}}\n---\n")
}

fn manifests() -> String {
    md("shared", "m", "x", "")
        + &private("a-own", "own", "x", "team-a", "sk-team-a-secret")
        + &private("b-own", "own", "y", "team-b", "sk-team-b-secret")
        + &tm("a-alias", "team-a", "alias", "modelName: m", "")
}

impl Fleet {
    async fn start() -> Fleet {
        let fakes = Fakes::start(&["x", "y", "z"]);
        let dir = tempfile::tempdir().unwrap();
        let manifests_dir = dir.path().join("manifests");
        std::fs::create_dir(&manifests_dir).unwrap();
        write_atomic(&manifests_dir.join("all.yaml"), &fakes.fill(&manifests()));
        std::fs::write(dir.path().join("config.yaml"), "").unwrap();
        let operator = Operator::start(&manifests_dir, &dir.path().join("config.yaml"), "127.0.0.1:0");
        let a = FedSidecar::start("team-a", operator.grpc, dir.path().join("a.cache"));
        let b = FedSidecar::start("team-b", operator.grpc, dir.path().join("b.cache"));
        let fleet = Fleet { fakes, dir, operator, a, b };
        assert!(fleet.operator.converged("team-a", 1).await, "{}", fleet.operator.status().await);
        assert!(fleet.operator.converged("team-b", 1).await, "{}", fleet.operator.status().await);
        fleet
    }

    fn write(&self, text: &str) {
        write_atomic(&self.dir.path().join("manifests/all.yaml"), &self.fakes.fill(text));
    }
}

fn cached(sidecar: &FedSidecar) -> (Vec<String>, Vec<String>) {
    let bytes = std::fs::read(&sidecar.cache).expect("cache written");
    let push = llmroute_proto::v1::ViewPush::decode(bytes.as_slice()).expect("cache decodes");
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for part in [push.global, push.overlay].into_iter().flatten() {
        let part = llmroute_proto::part::decompress_checked(&part.gzip, 1 << 24, &part.digest).expect("part");
        ids.extend(part.deployments.iter().map(|d| d.id.clone()));
        keys.extend(part.deployments.iter().map(|d| d.api_key.clone()).filter(|k| !k.is_empty()));
    }
    (ids, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_every_sidecar_and_is_acknowledged() {
    let fleet = Fleet::start().await;
    assert_eq!(fleet.a.served_by("m").await, "llm/shared");
    assert_eq!(fleet.b.served_by("m").await, "llm/shared");
    assert_eq!(fleet.a.served_by("alias").await, "llm/shared");
    let (va, vb) = (fleet.a.version().await, fleet.b.version().await);
    // A global change: both views change.
    fleet.write(&(manifests() + &md("more", "m2", "z", "")));
    let both = eventually(Duration::from_secs(10), || async {
        fleet.a.served_by("m2").await == "llm/more" && fleet.b.served_by("m2").await == "llm/more"
    })
    .await;
    assert!(both, "{}", fleet.operator.status().await);
    assert!(fleet.operator.converged("team-a", 1).await && fleet.operator.converged("team-b", 1).await);
    assert_ne!(fleet.a.version().await, va);
    assert_ne!(fleet.b.version().await, vb);
    let status = fleet.operator.status().await;
    let object = status["objects"].as_array().unwrap().iter().find(|o| o["name"] == "more").unwrap().clone();
    let ready = object["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "True", "{object}");
    assert_eq!(object["sidecars"], serde_json::json!({"acknowledged": 2, "connected": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sidecar_receives_another_teams_private_entries_or_credentials() {
    let fleet = Fleet::start().await;
    assert_eq!(fleet.a.served_by("own").await, "llm/a-own");
    assert_eq!(fleet.b.served_by("own").await, "llm/b-own");
    assert_eq!(fleet.b.served_by("alias").await, "404", "team-a's TeamModel is not team-b's");
    let (ids, keys) = cached(&fleet.a);
    assert!(ids.contains(&"llm/a-own".to_string()) && !ids.contains(&"llm/b-own".to_string()), "{ids:?}");
    assert_eq!(keys, ["sk-team-a-secret"]);
    let (ids, keys) = cached(&fleet.b);
    assert!(!ids.contains(&"llm/a-own".to_string()), "{ids:?}");
    assert_eq!(keys, ["sk-team-b-secret"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fleet.a.cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the cache holds credentials");
    }
    let logs = fleet.operator.proc.logs() + &fleet.a.proc.logs() + &fleet.b.proc.logs();
    assert!(!logs.contains("sk-team-"), "no credential in any log");
    assert!(!fleet.operator.status().await.to_string().contains("sk-team-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_keep_serving_without_the_operator_and_converge_when_it_returns() {
    let mut fleet = Fleet::start().await;
    let grpc = fleet.operator.grpc;
    fleet.operator.proc.terminate();
    fleet.operator.proc.wait_exit(Duration::from_secs(5));
    for _ in 0..5 {
        assert_eq!(fleet.a.served_by("m").await, "llm/shared");
        assert_eq!(fleet.b.served_by("own").await, "llm/b-own");
    }
    // Changed while the operator was away; it comes back on the same address.
    fleet.write(&(manifests() + &md("later", "m3", "z", "")));
    let dir = fleet.dir.path().to_owned();
    fleet.operator = Operator::start(&dir.join("manifests"), &dir.join("config.yaml"), &grpc.to_string());
    let converged = eventually(Duration::from_secs(15), || async {
        fleet.a.served_by("m3").await == "llm/later" && fleet.b.served_by("m3").await == "llm/later"
    })
    .await;
    assert!(converged, "{}", fleet.a.proc.logs());
    assert!(fleet.operator.converged("team-a", 1).await && fleet.operator.converged("team-b", 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_routing_config_keeps_the_last_good_one_and_status_names_the_field() {
    let fleet = Fleet::start().await;
    std::fs::write(fleet.dir.path().join("config.yaml"), "defaults: {maxAtempts: 2}\n").unwrap();
    let named = eventually(Duration::from_secs(10), || async {
        let config = &fleet.operator.status().await["config"];
        config["accepted"] == false && config["message"].as_str().is_some_and(|m| m.contains("defaults.maxAtempts"))
    })
    .await;
    assert!(named, "{}", fleet.operator.status().await);
    assert_eq!(fleet.a.served_by("m").await, "llm/shared");
    let metrics =
        llmroute_testkit::http_client::get(&format!("{}/metrics", fleet.operator.admin)).await.unwrap().text();
    assert!(metrics.contains("llmroute_config_rejected_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_a_sidecar_rejects_is_a_nack_in_status_and_the_old_view_serves() {
    let mut fleet = Fleet::start().await;
    // A sidecar that holds views of at most 4 KiB per part: the operator's next view is larger.
    fleet.a = FedSidecar::start_with(
        "team-a",
        fleet.operator.grpc,
        fleet.dir.path().join("a2.cache"),
        &["--max-view-bytes", "4096"],
    );
    assert!(fleet.operator.converged("team-a", 1).await, "{}", fleet.operator.status().await);
    // The replaced sidecar may still have been the one counted: wait for the new one's view.
    let applied = eventually(Duration::from_secs(10), || async { fleet.a.version().await.is_some() }).await;
    assert!(applied, "the new sidecar applied the current view");
    let before = fleet.a.version().await;
    let many: String = (0..30).map(|i| md(&format!("bulk{i}"), &format!("bulk-model-{i}"), "z", "")).collect();
    fleet.write(&(manifests() + &many));
    let nacked = eventually(Duration::from_secs(10), || async {
        fleet.operator.team("team-a").await["nacks"].as_array().is_some_and(|n| !n.is_empty())
    })
    .await;
    assert!(nacked, "{}", fleet.operator.status().await);
    let nack = fleet.operator.team("team-a").await["nacks"][0].clone();
    assert!(nack["error"].as_str().unwrap_or_default().contains("larger than 4096 bytes"), "{nack}");
    assert_eq!(fleet.a.version().await, before, "the old view keeps serving");
    assert_eq!(fleet.a.served_by("m").await, "llm/shared");
    // Parked: the rejected version is not sent again in a loop.
    let nacks = || async {
        let text =
            llmroute_testkit::http_client::get(&format!("{}/metrics", fleet.operator.admin)).await.unwrap().text();
        text.lines().find(|l| l.starts_with("llmroute_operator_nacks_total{team=\"team-a\"}")).map(str::to_owned)
    };
    let first = nacks().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(nacks().await, first, "one NACK per rejected version");
    // A fix is a new version: applied.
    fleet.write(&manifests());
    assert!(fleet.operator.converged("team-a", 1).await, "{}", fleet.operator.status().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sidecar_serves_from_its_cache_before_the_operator_answers() {
    let mut fleet = Fleet::start().await;
    let cache = fleet.a.cache.clone();
    fleet.operator.proc.terminate();
    fleet.operator.proc.wait_exit(Duration::from_secs(5));
    fleet.a.proc.terminate();
    fleet.a.proc.wait_exit(Duration::from_secs(5));
    let restarted = FedSidecar::start("team-a", fleet.operator.grpc, cache.clone());
    let ready = eventually(Duration::from_secs(5), || async { restarted.version().await.is_some() }).await;
    assert!(ready, "{}", restarted.proc.logs());
    assert_eq!(restarted.served_by("own").await, "llm/a-own");
    // A corrupt cache is ignored with a warning, never a crash.
    drop(restarted);
    std::fs::write(&cache, b"\x00garbage").unwrap();
    let mut corrupt = FedSidecar::start("team-a", fleet.operator.grpc, cache);
    let warned = corrupt.proc.wait_log_line("snapshot cache", Duration::from_secs(5));
    assert!(warned.is_some_and(|l| l.contains("ignored") || l.contains("corrupt")), "{}", corrupt.proc.logs());
    assert!(corrupt.proc.is_running());
    assert_eq!(corrupt.version().await, None, "not ready without a view");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_views_change_under_load() {
    let fleet = Fleet::start().await;
    let writer = async {
        for i in 0..10 {
            fleet.write(&(manifests() + &md(&format!("extra{i}"), &format!("e{i}"), "z", "")));
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    };
    let load = async {
        let mut failures = Vec::new();
        for _ in 0..150 {
            for (s, model) in [(&fleet.a, "own"), (&fleet.b, "m")] {
                let who = s.served_by(model).await;
                if !who.starts_with("llm/") {
                    failures.push(who);
                }
            }
        }
        failures
    };
    let ((), failures) = tokio::join!(writer, load);
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_probes_once_and_sidecars_route_on_its_health_table() {
    let fleet = Fleet::start().await;
    let probed = md("sick", "p", "y", "  order: 1\n  healthCheck: {mode: models, intervalSeconds: 1}")
        + &md("well", "p", "z", "  order: 2");
    fleet.write(&(manifests() + &probed));
    let applied = eventually(Duration::from_secs(10), || async { fleet.a.served_by("p").await == "llm/sick" }).await;
    assert!(applied, "healthy and preferred (order 1)");
    fleet.fakes.behaviour("y", serde_json::json!({"healthy": false})).await;
    let avoided = eventually(Duration::from_secs(10), || async {
        fleet.a.served_by("p").await == "llm/well" && fleet.b.served_by("p").await == "llm/well"
    })
    .await;
    assert!(avoided, "{}", fleet.operator.status().await);
    let status = fleet.operator.status().await;
    let sick = status["objects"].as_array().unwrap().iter().find(|o| o["name"] == "sick").unwrap().clone();
    let healthy = sick["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Healthy").unwrap().clone();
    assert_eq!(healthy["status"], "False", "{sick}");
    let probes = fleet.fakes.stats("y").await["probes"].as_u64().unwrap_or(0);
    assert!(probes >= 1, "the operator probed");
    let sidecar_metrics =
        llmroute_testkit::http_client::get(&format!("{}/metrics", fleet.a.admin)).await.unwrap().text();
    assert!(sidecar_metrics.contains("llmroute_deployment_healthy{deployment=\"llm/sick\"} 0"), "{sidecar_metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_protocol_revisions_and_an_unknown_revision_is_refused() {
    use llmroute_proto::v1;
    let fleet = Fleet::start().await;
    assert_eq!(fleet.operator.team("team-a").await["protocols"], serde_json::json!({"PROTOCOL_V1": 1}));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", fleet.operator.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = v1::routing_discovery_client::RoutingDiscoveryClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let hello = v1::Hello { team: "team-a".into(), protocol: v1::Protocol::Unspecified as i32, ..Default::default() };
    tx.send(v1::SidecarMessage { kind: Some(v1::sidecar_message::Kind::Hello(hello)) }).await.unwrap();
    let refused = client.stream_routes(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(tonic::Code::FailedPrecondition));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let hello = v1::Hello { team: "Not A Label".into(), protocol: v1::Protocol::V1 as i32, ..Default::default() };
    tx.send(v1::SidecarMessage { kind: Some(v1::sidecar_message::Kind::Hello(hello)) }).await.unwrap();
    let refused = client.stream_routes(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(tonic::Code::InvalidArgument));
}

/// A raw stream: sends `hello`, returns the sender and the first view pushed.
async fn raw_stream(
    operator: &Operator,
    hello: llmroute_proto::v1::Hello,
) -> (tokio::sync::mpsc::Sender<llmroute_proto::v1::SidecarMessage>, tonic::Streaming<llmroute_proto::v1::ControlMessage>)
{
    use llmroute_proto::v1;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", operator.grpc)).unwrap().connect().await.unwrap();
    let mut client = v1::routing_discovery_client::RoutingDiscoveryClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::SidecarMessage { kind: Some(v1::sidecar_message::Kind::Hello(hello)) }).await.unwrap();
    let inbound = client.stream_routes(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, inbound)
}

async fn next_view(inbound: &mut tonic::Streaming<llmroute_proto::v1::ControlMessage>) -> llmroute_proto::v1::ViewPush {
    use llmroute_proto::v1::control_message::Kind;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), inbound.message()).await.expect("a push in time");
        if let Some(Kind::View(push)) = message.unwrap().unwrap().kind {
            return push;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_streams_neither_fake_acks_nor_freeze_nor_leave_series_behind() {
    use llmroute_proto::v1;
    let fleet = Fleet::start().await;
    // A hello claiming a view from the future is still sent the current one (a real sidecar
    // would NACK it, visibly, rather than freeze in silence).
    let hello = v1::Hello {
        team: "made-up".into(),
        protocol: v1::Protocol::V1 as i32,
        last_applied_watermark: u64::MAX,
        ..Default::default()
    };
    let (tx, mut inbound) = raw_stream(&fleet.operator, hello).await;
    let push = next_view(&mut inbound).await;
    // An ACK naming another version is not an acknowledgement.
    let bogus = v1::Ack { version: "deadbeef".into(), nonce: push.nonce.clone() };
    tx.send(v1::SidecarMessage { kind: Some(v1::sidecar_message::Kind::Ack(bogus)) }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fleet.operator.team("made-up").await["acknowledged"], 0);
    let ack = v1::Ack { version: push.version.clone(), nonce: push.nonce.clone() };
    tx.send(v1::SidecarMessage { kind: Some(v1::sidecar_message::Kind::Ack(ack)) }).await.unwrap();
    assert!(fleet.operator.converged("made-up", 1).await);
    let metrics = || async {
        llmroute_testkit::http_client::get(&format!("{}/metrics", fleet.operator.admin)).await.unwrap().text()
    };
    assert!(metrics().await.contains("team=\"made-up\""));
    drop((tx, inbound));
    let forgotten =
        eventually(Duration::from_secs(5), || async { !metrics().await.contains("team=\"made-up\"") }).await;
    assert!(forgotten, "a team's series go with its last stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_holding_the_current_view_counts_as_acknowledged_after_an_operator_restart() {
    let mut fleet = Fleet::start().await;
    let grpc = fleet.operator.grpc;
    fleet.operator.proc.terminate();
    let exited = fleet.operator.proc.wait_exit(Duration::from_secs(8));
    assert_eq!(exited, Some(0), "SIGTERM ends the streams and exits: {}", fleet.operator.proc.logs());
    let dir = fleet.dir.path().to_owned();
    fleet.operator = Operator::start(&dir.join("manifests"), &dir.join("config.yaml"), &grpc.to_string());
    // Same content, so nothing is pushed; the sidecars' hellos say they hold it.
    assert!(fleet.operator.converged("team-a", 1).await, "{}", fleet.operator.status().await);
    assert!(fleet.operator.converged("team-b", 1).await);
}

#[test]
fn a_cache_path_that_is_not_a_regular_file_is_refused_at_start() {
    // A FIFO (it would hang the read) and a directory stand in for devices: nothing that is
    // not a regular file is ever read or replaced.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pb");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for cache in [fifo, dir.path().to_owned()] {
        let args: Vec<String> =
            ["--team", "t", "--operator", "http://127.0.0.1:1", "--snapshot-cache", &cache.to_string_lossy()]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let mut sidecar =
            llmroute_testkit::process::Proc::spawn(&llmroute_testkit::process::bin("llmroute-sidecar"), &args);
        assert_eq!(sidecar.wait_exit(Duration::from_secs(10)), Some(2), "{}", sidecar.logs());
        assert!(sidecar.logs().contains("not a regular file"), "{}", sidecar.logs());
        assert!(std::fs::symlink_metadata(&cache).is_ok_and(|m| !m.is_file()), "left as it was");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_or_corrupt_cache_file_is_ignored_within_bounds() {
    let fleet = Fleet::start().await;
    let huge = fleet.dir.path().join("huge.pb");
    std::fs::File::create(&huge).unwrap().set_len(3 << 30).unwrap();
    let sidecar = FedSidecar::start_with("team-a", fleet.operator.grpc, huge, &["--max-view-bytes", "1048576"]);
    let ready = eventually(Duration::from_secs(5), || async { sidecar.version().await.is_some() }).await;
    assert!(ready, "{}", sidecar.proc.logs());
    assert!(sidecar.proc.logs().contains("ignored"), "{}", sidecar.proc.logs());
    assert!(sidecar.proc.memory_kib("VmHWM").unwrap_or(0) < 200 * 1024, "a sparse 3 GiB file is never read");
}

#[tokio::test]
async fn the_operator_is_ready_only_once_its_first_build_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("later");
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    let operator = Operator::start(&manifests, &dir.path().join("config.yaml"), "127.0.0.1:0");
    let status = |path: &'static str| {
        let url = format!("{}{path}", operator.admin);
        async move { llmroute_testkit::http_client::get(&url).await.map(|r| r.status).unwrap_or(0) }
    };
    assert_eq!(status("/healthz").await, 200);
    assert_eq!(status("/readyz").await, 503, "no build while the directory is missing");
    std::fs::create_dir(&manifests).unwrap();
    let ready = eventually(Duration::from_secs(5), || async { status("/readyz").await == 200 }).await;
    assert!(ready, "{}", operator.proc.logs());
}
