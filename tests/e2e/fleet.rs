//! Harness of the operator tests: fake upstreams, one operator on a manifests directory, and
//! sidecars of several teams fed by it, every process on ports it binds itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use llmroute_testkit::http_client::get;
use llmroute_testkit::process::{Proc, bin, eventually, log_field, start_sidecar};
use serde_json::Value;

/// A running operator.
pub struct Operator {
    /// The process.
    pub proc: Proc,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Admin base URL.
    pub admin: String,
}

impl Operator {
    /// Starts `llmroute-operator` on `manifests` (+ `config`), gRPC on `grpc` (port 0: any).
    pub fn start(manifests: &std::path::Path, config: &std::path::Path, grpc: &str) -> Operator {
        Self::start_with(manifests, config, grpc, &[])
    }

    /// Like [`Self::start`], with extra flags.
    pub fn start_with(manifests: &std::path::Path, config: &std::path::Path, grpc: &str, extra: &[&str]) -> Operator {
        let mut args: Vec<String> = [
            "--manifests",
            &manifests.to_string_lossy(),
            "--config",
            &config.to_string_lossy(),
            "--grpc-listen",
            grpc,
            "--admin-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(&bin("llmroute-operator"), &args);
        let line = proc.wait_log_line("llmroute-operator serving", Duration::from_secs(10));
        let line = line.unwrap_or_else(|| panic!("operator did not start:\n{}", proc.logs()));
        let addr = |key| log_field(&line, key).and_then(|v| v.parse::<SocketAddr>().ok()).expect("announced address");
        let (grpc, admin) = (addr("grpc"), addr("admin"));
        Operator { proc, grpc, admin: format!("http://{admin}") }
    }

    /// The `/status` document.
    pub async fn status(&self) -> Value {
        get(&format!("{}/status", self.admin)).await.map(|r| r.json()).unwrap_or(Value::Null)
    }

    /// The status entry of `team`.
    pub async fn team(&self, team: &str) -> Value {
        let status = self.status().await;
        status["teams"].as_array().and_then(|t| t.iter().find(|t| t["team"] == team).cloned()).unwrap_or(Value::Null)
    }

    /// Waits until every connected sidecar of `team` (at least `connected`) acknowledged.
    pub async fn converged(&self, team: &str, connected: u64) -> bool {
        eventually(Duration::from_secs(10), || async {
            let t = self.team(team).await;
            t["connected"].as_u64() == Some(connected) && t["acknowledged"].as_u64() == Some(connected)
        })
        .await
    }
}

/// A sidecar fed by an operator.
pub struct FedSidecar {
    /// The process.
    pub proc: Proc,
    /// API base URL.
    pub api: String,
    /// Admin base URL.
    pub admin: String,
    /// Its snapshot cache file.
    pub cache: PathBuf,
}

impl FedSidecar {
    /// Starts a sidecar of `team` on `operator` (a gRPC address), caching to `cache`.
    pub fn start(team: &str, operator: SocketAddr, cache: PathBuf) -> FedSidecar {
        Self::start_with(team, operator, cache, &[])
    }

    /// Like [`Self::start`], with extra flags.
    pub fn start_with(team: &str, operator: SocketAddr, cache: PathBuf, extra: &[&str]) -> FedSidecar {
        Self::start_url(team, &format!("http://{operator}"), cache, extra)
    }

    /// A sidecar of `team` on the operator at `url` (http:// or https://).
    pub fn start_url(team: &str, url: &str, cache: PathBuf, extra: &[&str]) -> FedSidecar {
        let mut args: Vec<String> = [
            "--team",
            team,
            "--operator",
            url,
            "--snapshot-cache",
            &cache.to_string_lossy(),
            "--pod-name",
            &format!("{team}-pod"),
            "--namespace",
            team,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (proc, api, admin) = start_sidecar(&args);
        FedSidecar { proc, api: format!("http://{api}"), admin: format!("http://{admin}"), cache }
    }

    /// The applied version (None before the first).
    pub async fn version(&self) -> Option<String> {
        let r = get(&format!("{}/readyz", self.admin)).await.ok()?;
        (r.status == 200).then(|| r.text().trim().trim_start_matches("ready ").to_owned())
    }

    /// The deployment that served a chat of `model`, or the status code as text.
    pub async fn served_by(&self, model: &str) -> String {
        let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        match llmroute_testkit::http_client::post_json(&format!("{}/v1/chat/completions", self.api), &body, &[]).await {
            Ok(r) if r.status == 200 => r.header("x-llmroute-deployment"),
            Ok(r) => r.status.to_string(),
            Err(e) => e,
        }
    }
}

/// Fake upstream instances, by name.
pub struct Fakes {
    /// The process.
    pub proc: Proc,
    /// Addresses by instance.
    pub addrs: BTreeMap<String, SocketAddr>,
    control: SocketAddr,
}

impl Fakes {
    /// Starts `instances`.
    pub fn start(instances: &[&str]) -> Fakes {
        let mut args = vec!["--control".to_owned(), "127.0.0.1:0".to_owned()];
        for name in instances {
            args.push("--instance".into());
            args.push(format!("{name}=127.0.0.1:0"));
        }
        let proc = Proc::spawn(&bin("fake-upstream"), &args);
        let line = proc.wait_log_line("fake_upstream", Duration::from_secs(10)).expect("fakes started");
        let announced: Value = serde_json::from_str(&line).expect("announcement");
        let addrs = announced["fake_upstream"]["instances"]
            .as_object()
            .map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().parse().expect("addr"))).collect()
            })
            .unwrap_or_default();
        let control = announced["fake_upstream"]["control"].as_str().unwrap_or_default().parse().expect("control");
        Fakes { proc, addrs, control }
    }

    /// Sets behaviour fields of an instance.
    pub async fn behaviour(&self, instance: &str, update: Value) {
        let url = format!("http://{}/{instance}/behaviour", self.control);
        let r = llmroute_testkit::http_client::post_json(&url, &update, &[]).await.expect("control");
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// What an instance has seen.
    pub async fn stats(&self, instance: &str) -> Value {
        get(&format!("http://{}/{instance}/stats", self.control)).await.expect("stats").json()
    }

    /// `text` with `{instance}` placeholders filled in.
    pub fn fill(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (name, addr) in &self.addrs {
            text = text.replace(&format!("{{{name}}}"), &addr.to_string());
        }
        text
    }
}

/// Writes `path` atomically.
pub fn write_atomic(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
