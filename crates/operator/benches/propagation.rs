//! Propagation benchmark (DESIGN §7): a light client harness subscribes N sidecar streams
//! across 100 teams to a real `llmroute-operator` (release build, its own process), ACKs every
//! view like a sidecar, and measures the time from a manifest change (the file written) to the
//! last affected stream's receipt of the new view (its ACK follows at once), debounce
//! included; over 20 changes, alternately to one team and to the global part. Also the
//! operator's RSS and CPU seconds per change. At 1,000 streams every stream has its own
//! connection; at 10,000, 100 streams share each connection.
//!
//! `cargo bench -p llmroute-operator --bench propagation` (the Makefile builds the binary).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmroute_proto::v1;
use llmroute_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use llmroute_proto::v1::{control_message, sidecar_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TEAMS: usize = 100;
const CHANGES: usize = 20;

/// Latest version each stream received, and when.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

fn manifests(dir: &Path, revision: usize, team_changed: Option<usize>, global_revision: usize) {
    let mut text = String::new();
    for g in 0..20 {
        let weight = if g == 0 { 1 + global_revision } else { 1 };
        text.push_str(&format!(
            "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: g{g}, namespace: llm}}\n\
             spec: {{modelName: model-{}, upstream: {{baseUrl: 'http://127.0.0.1:9/v1'}}, weight: {weight}}}\n---\n",
            g % 10
        ));
    }
    for t in 0..TEAMS {
        let weight = if team_changed == Some(t) { 1 + revision } else { 1 };
        for d in 0..2 {
            text.push_str(&format!(
                "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: t{t}-d{d}, namespace: llm}}\n\
                 spec: {{modelName: own-{d}, team: team-{t}, upstream: {{baseUrl: 'http://127.0.0.1:9/v1'}}, weight: {weight}}}\n---\n"
            ));
        }
        text.push_str(&format!(
            "apiVersion: llmroute.dev/v1alpha1\nkind: TeamModel\nmetadata: {{name: t{t}-alias, namespace: llm}}\n\
             spec: {{team: team-{t}, publicName: smart, modelName: model-1}}\n---\n"
        ));
    }
    let tmp = dir.join("all.tmp");
    std::fs::write(&tmp, text).expect("write manifests");
    std::fs::rename(&tmp, dir.join("all.yaml")).expect("move manifests");
}

/// Writes a CA and a `localhost` certificate it signed into `dir`: the CA's PEM.
fn pki(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("params").signed_by(&key, &ca).expect("cert");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
    ca.pem()
}

fn operator(bin: &Path, dir: &Path, tls: bool) -> (Child, String) {
    let log = dir.parent().unwrap_or(dir).join("operator.log");
    let parent = dir.parent().unwrap_or(dir);
    let mut args: Vec<String> = [
        "--manifests",
        &dir.to_string_lossy(),
        "--grpc-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--new-streams-per-second",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if tls {
        args.extend([
            "--tls-mode".into(),
            "files".into(),
            "--tls-cert-file".into(),
            parent.join("tls.crt").display().to_string(),
        ]);
        args.extend(["--tls-key-file".into(), parent.join("tls.key").display().to_string()]);
    }
    let mut child = Command::new(bin)
        .args(&args)
        .env("LLMROUTE_LOG", "warn,llmroute_operator::serve=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("operator starts");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("llmroute-operator serving")) {
            let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")).expect("grpc address");
            let port = grpc.rsplit(':').next().unwrap_or_default();
            return (child, if tls { format!("https://localhost:{port}") } else { format!("http://{grpc}") });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("operator did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

async fn subscribe(channel: tonic::transport::Channel, team: String, index: usize, seen: Seen) {
    let mut client = RoutingDiscoveryClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    let hello =
        v1::Hello { team, pod: format!("bench-{index}"), protocol: v1::Protocol::V1 as i32, ..Default::default() };
    let _ = tx.send(v1::SidecarMessage { kind: Some(sidecar_message::Kind::Hello(hello)) }).await;
    let Ok(response) = client.stream_routes(ReceiverStream::new(rx)).await else { return };
    let mut inbound = response.into_inner();
    while let Ok(Some(message)) = inbound.message().await {
        if let Some(control_message::Kind::View(push)) = message.kind {
            if let Ok(mut seen) = seen.lock() {
                seen[index] = (push.version.clone(), Instant::now());
            }
            let ack = v1::Ack { version: push.version, nonce: push.nonce };
            if tx.send(v1::SidecarMessage { kind: Some(sidecar_message::Kind::Ack(ack)) }).await.is_err() {
                return;
            }
        }
    }
}

fn proc_stat(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (rss_kib / 1024.0, ticks / 100.0)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or(f64::NAN)
}

async fn run(bin: &Path, streams: usize, per_connection: usize, tls: bool) {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("manifests");
    std::fs::create_dir(&dir).expect("dir");
    manifests(&dir, 0, None, 0);
    let ca = pki(work.path());
    let (mut child, url) = operator(bin, &dir, tls);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle, _) = proc_stat(child.id());
    let seen: Seen = Arc::new(Mutex::new(vec![(String::new(), Instant::now()); streams]));
    let mut channel = None;
    for i in 0..streams {
        if i % per_connection == 0 {
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone()).expect("url").tcp_nodelay(true);
            if tls {
                let config = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca.clone()))
                    .assume_http2(true);
                endpoint = endpoint.tls_config(config).expect("tls");
            }
            channel = Some(endpoint.connect().await.expect("connect"));
        }
        let team = format!("team-{}", i % TEAMS);
        tokio::spawn(subscribe(channel.clone().expect("channel"), team, i, seen.clone()));
    }
    let all_have_a_view = || seen.lock().map(|s| s.iter().all(|(v, _)| !v.is_empty())).unwrap_or(false);
    let started = Instant::now();
    while !all_have_a_view() {
        assert!(started.elapsed() < Duration::from_secs(120), "streams never all received a view");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribed_in = started.elapsed();
    let (rss_connected, cpu_before) = proc_stat(child.id());
    let (mut team_ms, mut global_ms) = (Vec::new(), Vec::new());
    let mut global_revision = 0;
    for change in 0..CHANGES {
        let team_change = change % 2 == 0;
        let team = change % TEAMS;
        let affected: Vec<usize> = (0..streams).filter(|i| !team_change || i % TEAMS == team).collect();
        let before: HashMap<usize, String> = {
            let s = seen.lock().expect("lock");
            affected.iter().map(|i| (*i, s[*i].0.clone())).collect()
        };
        let t0 = Instant::now();
        if team_change {
            manifests(&dir, change + 1, Some(team), global_revision);
        } else {
            global_revision += 1;
            manifests(&dir, change + 1, None, global_revision);
        }
        loop {
            let done = {
                let s = seen.lock().expect("lock");
                affected.iter().all(|i| s[*i].0 != before[i]).then(|| affected.iter().map(|i| s[*i].1).max())
            };
            if let Some(Some(last)) = done {
                let ms = last.duration_since(t0).as_secs_f64() * 1000.0;
                if team_change {
                    team_ms.push(ms)
                } else {
                    global_ms.push(ms)
                }
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "change {change} never reached every stream");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rss, cpu_after) = proc_stat(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let cpu_per_change = (cpu_after - cpu_before) / CHANGES as f64;
    println!(
        "| {streams}{} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} |",
        if tls { " (TLS)" } else { "" },
        streams / per_connection,
        percentile(&mut team_ms, 0.5),
        percentile(&mut team_ms, 0.99),
        percentile(&mut global_ms, 0.5),
        percentile(&mut global_ms, 0.99),
        rss_idle,
        rss_connected,
        (rss_connected - rss_idle) * 1024.0 / streams as f64,
        rss,
        cpu_per_change,
        subscribed_in.as_secs_f64(),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::var_os("LLMROUTE_RELEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release"));
    let bin = dir.join("llmroute-operator");
    assert!(bin.exists(), "{} is not built: cargo build --release -p llmroute-operator", bin.display());
    let sizes: Vec<usize> = std::env::var_os("FLEET_STREAMS")
        .and_then(|v| v.into_string().ok())
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!(
        "streams across {TEAMS} teams, {CHANGES} changes (alternately one team / global), change -> last stream's receipt (ACK follows)\n"
    );
    println!(
        "| streams | connections | team p50 ms | team p99 ms | global p50 ms | global p99 ms | operator RSS idle MB | RSS connected MB | KiB per stream | RSS after changes MB | operator CPU s / change | subscribe all s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for streams in sizes {
        let per_connection = if streams <= 1_000 { 1 } else { 100 };
        runtime.block_on(run(&bin, streams, per_connection, false));
        if streams <= 1_000 {
            // The same fleet with every connection over TLS (the in-cluster default).
            runtime.block_on(run(&bin, streams, per_connection, true));
        }
    }
}
