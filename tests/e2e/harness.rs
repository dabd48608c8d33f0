//! Harness of the black-box tests: fake upstreams and a standalone sidecar on free loopback
//! ports, fed by a manifests directory the test writes.

#![forbid(unsafe_code)]

pub mod fleet;
pub mod stream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use llmroute_testkit::http_client::{Reply, get, post_json};
use llmroute_testkit::process::{Proc, bin, eventually, start_sidecar};
use serde_json::{Value, json};

/// A running fake-upstream process and sidecar.
pub struct Env {
    /// Fake upstream instance addresses.
    pub addrs: BTreeMap<String, SocketAddr>,
    control: SocketAddr,
    /// Base URL of the sidecar API.
    pub api: String,
    /// Base URL of the sidecar admin server.
    pub admin: String,
    dir: tempfile::TempDir,
    /// The sidecar process.
    pub sidecar: Proc,
    /// The operator feeding the sidecar, when the suite runs through one.
    pub operator: Option<fleet::Operator>,
    /// The sidecar's arguments (another sidecar of the same team starts with them).
    sidecar_args: Vec<String>,
    _fakes: Proc,
}

/// A further sidecar of an [`Env`]'s team.
pub struct Sidecar {
    /// The process.
    pub proc: Proc,
    /// Base URL of its API.
    pub api: String,
    /// Base URL of its admin server.
    pub admin: String,
}

/// Whether the suite runs through an operator (`LLMROUTE_E2E_VIA_OPERATOR` set): every
/// sidecar is then fed over gRPC by an operator on the same manifests, not standalone.
pub fn via_operator() -> bool {
    std::env::var_os("LLMROUTE_E2E_VIA_OPERATOR").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A ModelDeployment document pointing at fake instance `instance` (`{instance}` is replaced by
/// its address when the manifests are written).
pub fn md(name: &str, model: &str, instance: &str, extra: &str) -> String {
    format!(
        "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}, namespace: llm}}\n\
         spec:\n  modelName: '{model}'\n  upstream: {{baseUrl: 'http://{{{instance}}}/v1'}}\n{extra}\n---\n"
    )
}

/// A TeamModel document.
pub fn tm(name: &str, team: &str, public: &str, target: &str, routing: &str) -> String {
    format!(
        "apiVersion: llmroute.dev/v1alpha1\nkind: TeamModel\nmetadata: {{name: {name}, namespace: llm}}\n\
         spec:\n  team: {team}\n  publicName: '{public}'\n  {target}\n{routing}\n---\n"
    )
}

/// Writes `manifests/all.yaml` atomically, `{instance}` placeholders filled in.
fn write_filled(dir: &std::path::Path, addrs: &BTreeMap<String, SocketAddr>, manifests: &str) {
    let mut text = manifests.to_owned();
    for (name, addr) in addrs {
        text = text.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    let tmp = dir.join("all.yaml.tmp");
    std::fs::write(&tmp, text).expect("write manifests");
    std::fs::rename(&tmp, dir.join("manifests/all.yaml")).expect("move manifests");
}

/// Options of an environment.
pub struct Options<'a> {
    /// Fake instances to start.
    pub instances: &'a [&'a str],
    /// Manifests (with `{instance}` placeholders).
    pub manifests: String,
    /// Routing config YAML.
    pub config: &'a str,
    /// Team of the sidecar.
    pub team: &'a str,
    /// Extra sidecar flags.
    pub flags: &'a [&'a str],
    /// Wait for the first snapshot.
    pub wait_ready: bool,
    /// Extra fake-upstream flags (e.g. `--tls-cert`).
    pub fake_flags: Vec<String>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            instances: &[],
            manifests: String::new(),
            config: "",
            team: "team-a",
            flags: &[],
            wait_ready: true,
            fake_flags: Vec::new(),
        }
    }
}

impl Env {
    /// Starts the fakes and the sidecar, every process on ports it binds itself.
    pub async fn start(options: Options<'_>) -> Env {
        let mut args = vec!["--control".to_owned(), "127.0.0.1:0".to_owned()];
        for name in options.instances {
            args.push("--instance".into());
            args.push(format!("{name}=127.0.0.1:0"));
        }
        args.extend(options.fake_flags.iter().cloned());
        let fakes = Proc::spawn(&bin("fake-upstream"), &args);
        let announced = fakes.wait_log_line("fake_upstream", Duration::from_secs(10));
        let announced: Value = announced.and_then(|l| serde_json::from_str(&l).ok()).unwrap_or_else(|| {
            panic!("fake-upstream did not start:\n{}", fakes.logs());
        });
        let addr = |v: &Value| v.as_str().and_then(|s| s.parse::<SocketAddr>().ok()).expect("announced address");
        let control = addr(&announced["fake_upstream"]["control"]);
        let addrs: BTreeMap<String, SocketAddr> = announced["fake_upstream"]["instances"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), addr(v))).collect())
            .unwrap_or_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("manifests dir");
        let config = dir.path().join("routing.yaml");
        std::fs::write(&config, options.config).expect("config");
        write_filled(dir.path(), &addrs, &options.manifests);
        let operator = via_operator().then(|| fleet::Operator::start(&manifests, &config, "127.0.0.1:0"));
        let source: Vec<String> = match &operator {
            Some(op) => vec!["--operator".into(), format!("http://{}", op.grpc)],
            None => vec![
                "--manifests".into(),
                manifests.to_string_lossy().into_owned(),
                "--config".into(),
                config.to_string_lossy().into_owned(),
            ],
        };
        let mut args: Vec<String> =
            ["--team", options.team, "--poll-interval-ms", "50"].iter().map(|s| s.to_string()).collect();
        args.extend(source);
        args.extend(options.flags.iter().map(|s| s.to_string()));
        let (sidecar, api, admin) = start_sidecar(&args);
        let env = Env {
            addrs,
            control,
            api: format!("http://{api}"),
            admin: format!("http://{admin}"),
            dir,
            sidecar,
            operator,
            sidecar_args: args,
            _fakes: fakes,
        };
        if options.wait_ready {
            env.wait_ready().await;
        }
        env
    }

    /// Another sidecar of the same team on the same source (the manifests directory, or the
    /// operator), ready to serve.
    pub async fn another_sidecar(&self) -> Sidecar {
        let (proc, api, admin) = start_sidecar(&self.sidecar_args);
        let admin = format!("http://{admin}");
        let ready = eventually(Duration::from_secs(10), || async {
            get(&format!("{admin}/readyz")).await.is_ok_and(|r| r.status == 200)
        })
        .await;
        assert!(ready, "the second sidecar never became ready:\n{}", proc.logs());
        Sidecar { proc, api: format!("http://{api}"), admin }
    }

    /// Replaces the manifests file (placeholders filled in).
    pub fn write_manifests(&self, manifests: &str) {
        write_filled(self.dir.path(), &self.addrs, manifests);
    }

    /// Path of the routing config file.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("routing.yaml")
    }

    /// Replaces the routing config in one step (written aside, then renamed), as a
    /// ConfigMap mount or `kubectl apply` does: a writer stalled between truncating and
    /// writing in place for longer than the settle time would otherwise publish an empty
    /// (valid, default) config for a moment.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("routing.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("move config");
    }

    /// Writes a file into the manifests directory.
    pub fn write_file(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("manifests").join(name), text).expect("write file");
    }

    /// The applied snapshot version (None before the first).
    pub async fn version(&self) -> Option<String> {
        let r = get(&format!("{}/readyz", self.admin)).await.ok()?;
        (r.status == 200).then(|| r.text().trim().trim_start_matches("ready ").to_owned())
    }

    /// Waits for the first snapshot.
    pub async fn wait_ready(&self) {
        let ok = eventually(Duration::from_secs(10), || async { self.version().await.is_some() }).await;
        assert!(ok, "sidecar never became ready:\n{}", self.sidecar.logs());
    }

    /// Rewrites the manifests and waits until a new snapshot version is applied.
    pub async fn change_manifests(&self, manifests: &str) -> String {
        let before = self.version().await;
        self.write_manifests(manifests);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let after = self.version().await;
            if after.is_some() && after != before {
                return after.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no new snapshot applied:\n{}", self.sidecar.logs());
    }

    /// POSTs to a sidecar API path.
    pub async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        post_json(&format!("{}{path}", self.api), &body, headers).await.expect("sidecar answered")
    }

    /// A chat completion of `model`.
    pub async fn chat(&self, model: &str, headers: &[(&str, &str)]) -> Reply {
        self.post(
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            headers,
        )
        .await
    }

    /// The deployment that served a chat of `model` (`x-llmroute-deployment`), asserting 200.
    pub async fn served_by(&self, model: &str, headers: &[(&str, &str)]) -> String {
        let r = self.chat(model, headers).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        r.header("x-llmroute-deployment")
    }

    /// Sets behaviour fields of a fake instance.
    pub async fn behaviour(&self, instance: &str, update: Value) {
        let r =
            post_json(&format!("http://{}/{instance}/behaviour", self.control), &update, &[]).await.expect("control");
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// What a fake instance has seen.
    pub async fn stats(&self, instance: &str) -> Value {
        get(&format!("http://{}/{instance}/stats", self.control)).await.expect("stats").json()
    }

    /// API requests a fake instance has received.
    pub async fn requests(&self, instance: &str) -> u64 {
        self.stats(instance).await["requests"].as_u64().unwrap_or(0)
    }

    /// The value of the sample whose line starts with `prefix` (name and labels as rendered).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    /// Path of a file in the manifests directory.
    pub fn manifest_path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("manifests").join(name)
    }

    /// `text` with `{instance}` placeholders filled in.
    pub fn fill(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (name, addr) in &self.addrs {
            text = text.replace(&format!("{{{name}}}"), &addr.to_string());
        }
        text
    }

    /// Logs of whatever compiles the manifests: the operator's when there is one, else the
    /// standalone sidecar's.
    pub fn compile_logs(&self) -> String {
        match &self.operator {
            Some(op) => op.proc.logs(),
            None => self.sidecar.logs(),
        }
    }

    /// A metric of whatever compiles the manifests (see [`Env::compile_logs`]).
    pub async fn compile_metric(&self, prefix: &str) -> Option<f64> {
        let text = match &self.operator {
            Some(op) => get(&format!("{}/metrics", op.admin)).await.map(|r| r.text()).unwrap_or_default(),
            None => self.metrics().await,
        };
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    /// The sidecar's metrics text.
    pub async fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.admin)).await.expect("metrics").text()
    }
}
