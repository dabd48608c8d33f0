//! `llmroute-operator --check`: the verdicts GitOps users read in CI, through the real binary.

use std::path::Path;
use std::process::Command;

use llmroute_testkit::process::bin;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("llmroute-operator")).args(args).output().expect("operator runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_examples_check_clean() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let manifests = examples.join("manifests");
    let config = examples.join("routing-config.yaml");
    let (code, out) =
        run(&["--manifests", &manifests.to_string_lossy(), "--config", &config.to_string_lossy(), "--check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("KIND\tNAMESPACE/NAME\tACCEPTED\tREASON\tMESSAGE\n"));
    assert!(out.lines().filter(|l| l.contains("\tTrue\tAccepted\t")).count() >= 12, "{out}");
    assert!(out.lines().any(|l| l.starts_with("config\t") && l.ends_with("\taccepted")), "{out}");
}

#[test]
fn a_rejected_object_or_config_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("m");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("a.yaml"),
        "apiVersion: llmroute.dev/v1alpha1\nkind: TeamModel\nmetadata: {name: t, namespace: llm}\n\
         spec: {team: a, publicName: x, deployments: [ghost]}\n",
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "defaults: {timeoutSeconds: 0}\n").unwrap();
    let (code, out) =
        run(&["--manifests", &manifests.to_string_lossy(), "--config", &config.to_string_lossy(), "--check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TeamModel\tllm/t\tFalse\tDeploymentNotFound\t"), "{out}");
    assert!(out.contains("config\t") && out.contains("rejected") && out.contains("defaults.timeoutSeconds"), "{out}");
}

/// The operator's exit code and stderr, with no cluster reachable (no kubeconfig, not in a pod).
fn run_without_cluster(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("llmroute-operator"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("POD_NAMESPACE")
        .env_remove("LLMROUTE_MANIFESTS")
        .output()
        .expect("operator runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cluster_mode_and_tls_flags_that_cannot_work_are_clear_errors() {
    let (code, err) = run_without_cluster(&["--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--namespace") && err.contains("--manifests"), "{err}");
    let (code, err) = run_without_cluster(&[
        "--namespace",
        "llmroute",
        "--grpc-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("connecting to the Kubernetes API"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().to_string_lossy().to_string();
    let base = ["--manifests", manifests.as_str(), "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let (code, err) = run_without_cluster(&[&base[..], &["--tls-mode", "self-signed"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-mode files"), "{err}");
    let (code, err) = run_without_cluster(&[&base[..], &["--tls-mode", "files"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-cert-file"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let garbage = garbage.to_string_lossy().to_string();
    let (code, err) = run_without_cluster(
        &[&base[..], &["--tls-mode", "files", "--tls-cert-file", &garbage, "--tls-key-file", &garbage]].concat(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no certificate"), "{err}");
    for bad in [["--ready-threshold", "0"], ["--status-writes-per-second", "-1"], ["--tls-mode", "sometimes"]] {
        let (code, err) = run_without_cluster(&[&base[..], &bad].concat());
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    let (code, err) = run_without_cluster(&["--check"]);
    assert_eq!(code, 2, "--check needs --manifests: {err}");
}

#[test]
fn an_empty_or_unusable_shared_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().to_string_lossy().to_string();
    let base = ["--manifests", manifests.as_str(), "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    for bad in [vec!["--token", ""], vec!["--token", "   "], vec!["--token", "two words"]] {
        let (code, err) = run_without_cluster(&[&base[..], &bad].concat());
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("--token"), "{err}");
    }
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let (code, err) = run_without_cluster(&[&base[..], &["--token-file", &empty.to_string_lossy()]].concat());
    assert_eq!(code, 2, "{err}");
    // Certificate files with TLS turned off contradict each other.
    let (code, err) =
        run_without_cluster(&[&base[..], &["--tls-mode", "off", "--tls-cert-file", "/nonexistent"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-mode off"), "{err}");
}
