//! Configuration and resources, strict and never fatal (issue 7 B), through the real binary.

use std::time::Duration;

use llmroute_e2e::{Env, Options, md};
use llmroute_testkit::process::{Proc, bin, eventually};
use serde_json::json;

/// Starts a sidecar on `manifests` + `config` and waits for it to exit; its code and stderr.
fn start_expecting_exit(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let config_path = dir.path().join("routing.yaml");
    std::fs::write(&config_path, config).unwrap();
    let args: Vec<String> = [
        "--team",
        "t",
        "--manifests",
        &manifests.to_string_lossy(),
        "--config",
        &config_path.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut sidecar = Proc::spawn(&bin("llmroute-sidecar"), &args);
    let code = sidecar.wait_exit(Duration::from_secs(10));
    (code, sidecar.logs())
}

#[test]
fn an_invalid_config_at_start_exits_2_naming_file_and_field() {
    for (config, field) in [
        ("defaults: {maxAtempts: 3}\n", "defaults.maxAtempts"),
        ("defaults: {maxAttempts: 4000000000}\n", "defaults.maxAttempts"),
        ("modelGroups: {m: {timeoutSeconds: 99999999999}}\n", "modelGroups.m.timeoutSeconds"),
        ("defaults: {cooldown: {seconds: 4294967295}}\n", "cooldown.seconds"),
        ("defaults: [not, a, map]\n", "defaults"),
    ] {
        let (code, logs) = start_expecting_exit(config);
        assert_eq!(code, Some(2), "{config}: {logs}");
        assert!(logs.contains("routing.yaml") && logs.contains(field), "{config}: {logs}");
        assert!(!logs.contains("panicked"), "{logs}");
    }
}

#[test]
fn flag_combinations_that_cannot_work_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--team",
        "t",
        "--manifests",
        &dir.path().to_string_lossy(),
        "--max-body-bytes",
        "2000",
        "--max-buffered-body-bytes",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut sidecar = Proc::spawn(&bin("llmroute-sidecar"), &args);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(10)), Some(2));
    assert!(sidecar.logs().contains("--max-buffered-body-bytes"), "{}", sidecar.logs());
}

#[tokio::test]
async fn a_config_rejected_on_reload_leaves_the_last_good_one_serving() {
    let manifests = md("a", "m", "a", "") + &md("b", "other", "b", "");
    let config = "modelGroups: {m: {fallbacks: [other]}}\n";
    let env = Env::start(Options { instances: &["a", "b"], manifests, config, ..Default::default() }).await;
    env.behaviour("a", json!({"status": 500})).await;
    assert_eq!(env.chat("m", &[]).await.status, 200, "the fallback serves");
    for (i, bad) in ["modelGroups: {m: {fallbaks: []}}\n", "defaults: {maxAttempts: 4000000000}\n"].iter().enumerate() {
        env.write_config(bad);
        let logged = eventually(Duration::from_secs(5), || async {
            env.compile_logs().matches("routing config rejected").count() > i
                && env.compile_metric("llmroute_config_rejected_total").await.unwrap_or(0.0) > i as f64
        })
        .await;
        assert!(logged, "{}", env.compile_logs());
        assert_eq!(env.chat("m", &[]).await.status, 200, "the last good config keeps its fallback");
    }
    assert!(env.compile_logs().contains("modelGroups.m.fallbaks"), "the field is named");
    assert_eq!(env.compile_metric("llmroute_config_rejected_total").await, Some(2.0));
}

#[tokio::test]
async fn resources_the_compile_must_refuse_are_reported_and_excluded() {
    let manifests = md("good", "m", "a", "")
        + &md("typo", "typo", "a", "  wieght: 3")
        + &md("userinfo", "userinfo", "a", "").replace("baseUrl: 'http://", "baseUrl: 'http://user:pass@")
        + &md("badkey", "badkey", "a", "  upstream: {baseUrl: 'http://{a}/v1', apiKeySecretRef: {name: s, key: k}}")
            .replace("  upstream: {baseUrl: 'http://{a}/v1'}\n", "")
        + "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: llm}\nstringData: {k: \"sk-1\\nInjected: yes\"}\n---\n";
    let env = Env::start(Options { instances: &["a"], manifests, ..Default::default() }).await;
    let reported = eventually(Duration::from_secs(5), || async {
        let logs = env.compile_logs();
        logs.contains("unknown field spec.wieght")
            && logs.contains("must not carry credentials")
            && logs.contains("SecretInvalid")
    })
    .await;
    assert!(reported, "{}", env.compile_logs());
    assert!(!env.compile_logs().contains("sk-1"), "the secret value is never logged");
    for model in ["typo", "userinfo", "badkey"] {
        assert_eq!(env.chat(model, &[]).await.status, 404, "{model} is excluded");
    }
    assert_eq!(env.served_by("m", &[]).await, "llm/good", "the rest keeps serving");
}

#[tokio::test]
async fn a_file_that_stops_parsing_keeps_its_objects_while_others_reload() {
    let env =
        Env::start(Options { instances: &["a", "b"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    env.write_file("other.yaml", &env.fill(&md("b", "n", "b", "")));
    assert!(eventually(Duration::from_secs(5), || async { env.chat("n", &[]).await.status == 200 }).await);
    std::fs::write(env.manifest_path("all.yaml"), "apiVersion: llmroute.dev/v1alpha1\nkind: [unclosed\n").unwrap();
    let reported = eventually(Duration::from_secs(5), || async { env.compile_logs().contains("all.yaml:3:1:") }).await;
    assert!(reported, "file, line and column: {}", env.compile_logs());
    assert_eq!(env.served_by("m", &[]).await, "llm/a", "the broken file keeps its last good objects");
    env.write_file("other.yaml", &env.fill(&md("b", "n2", "b", "")));
    assert!(
        eventually(Duration::from_secs(5), || async { env.chat("n2", &[]).await.status == 200 }).await,
        "other files still reload"
    );
    assert_eq!(env.served_by("m", &[]).await, "llm/a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_in_place_save_under_load_never_removes_a_route() {
    let manifests = md("a", "m", "a", "") + &md("b", "m", "b", "") + &md("c", "n", "a", "");
    let env = Env::start(Options { instances: &["a", "b"], manifests: manifests.clone(), ..Default::default() }).await;
    let full = env.fill(&(manifests + &md("d", "m", "b", "  weight: 2")));
    let path = env.manifest_path("all.yaml");
    let writer = std::thread::spawn(move || {
        use std::io::{Seek, Write};
        // An editor saving in place: truncate, then write in small pieces with pauses.
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(0).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        for piece in full.as_bytes().chunks(40) {
            file.write_all(piece).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    let mut failures = Vec::new();
    let mut requests = 0;
    while !writer.is_finished() {
        for model in ["m", "n"] {
            let r = env.chat(model, &[]).await;
            requests += 1;
            if r.status != 200 {
                failures.push(format!("{model}: {} {}", r.status, r.text()));
            }
        }
    }
    writer.join().unwrap();
    assert!(requests > 20, "the save overlapped with traffic ({requests} requests)");
    assert!(failures.is_empty(), "{failures:?}");
    let applied = eventually(Duration::from_secs(5), || async { env.served_by("m", &[]).await == "llm/d" }).await;
    assert!(applied, "the finished save applies");
}

#[cfg(unix)]
#[tokio::test]
async fn skipped_paths_are_logged_once() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    let fifo = env.manifest_path("pipe.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink("loop.yaml", env.manifest_path("loop.yaml")).unwrap();
    let logged = eventually(Duration::from_secs(5), || async {
        env.compile_logs().matches("skipping manifest path").count() >= 2
    })
    .await;
    assert!(logged, "{}", env.compile_logs());
    // Several more polls (a change is applied after them), and still one line per path.
    env.change_manifests(&(md("a", "m", "a", "") + &md("b", "n", "a", ""))).await;
    env.change_manifests(&md("a", "m", "a", "")).await;
    assert_eq!(env.compile_logs().matches("skipping manifest path").count(), 2, "{}", env.compile_logs());
    assert_eq!(env.served_by("m", &[]).await, "llm/a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_directory_change_never_stalls_serving() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    let many: String = (0..2_000).map(|i| md(&format!("bulk-{i}"), &format!("bulk-{}", i % 50), "a", "")).collect();
    env.write_file("bulk.yaml", &env.fill(&many));
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut applied = false;
    while started.elapsed() < Duration::from_secs(60) && !applied {
        let asked = std::time::Instant::now();
        let health = llmroute_testkit::http_client::get(&format!("{}/healthz", env.admin)).await;
        assert!(health.is_ok_and(|r| r.status == 200), "healthz answers while the directory compiles");
        assert_eq!(env.chat("m", &[]).await.status, 200, "requests are served meanwhile");
        slowest = slowest.max(asked.elapsed());
        applied = env.chat("bulk-7", &[]).await.status == 200;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "the large change applied");
    // Without its own thread the compile held the only serving thread for the whole 9 s (debug build).
    assert!(slowest < Duration::from_secs(3), "slowest health check + request while compiling: {slowest:?}");
}

#[test]
fn careless_flags_exit_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().to_string_lossy().into_owned();
    for (extra, needle) in [
        (vec!["--team", "Team_A!"], "--team"),
        (vec!["--team", ""], "--team"),
        (vec!["--team", "t", "--upstream-ca-file", "/dev/zero"], "not a regular file"),
    ] {
        let mut args: Vec<String> = vec!["--manifests".into(), manifests.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut sidecar = Proc::spawn(&bin("llmroute-sidecar"), &args);
        assert_eq!(sidecar.wait_exit(Duration::from_secs(10)), Some(2), "{extra:?}: {}", sidecar.logs());
        assert!(sidecar.logs().contains(needle), "{extra:?}: {}", sidecar.logs());
    }
}

#[tokio::test]
async fn admin_endpoints_answer_get_only() {
    let env = Env::start(Options { instances: &["a"], manifests: md("a", "m", "a", ""), ..Default::default() }).await;
    let r = llmroute_testkit::http_client::send(
        http::Method::DELETE,
        &format!("{}/debug/snapshot", env.admin),
        &[],
        bytes::Bytes::new(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 405);
}
