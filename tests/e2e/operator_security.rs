//! The stream between sidecar and operator, secured: TLS verified against a CA made here
//! (trusted, wrong CA, expired, rotated) and the shared token of manifests mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use llmroute_e2e::fleet::{Fakes, FedSidecar, Operator, write_atomic};
use llmroute_e2e::md;
use llmroute_testkit::process::eventually;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA that signs `localhost` certificates.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes `ca.pem` into `dir`; its path.
    fn write_ca(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// Writes a `localhost` serving certificate and key (expired when `expired`).
    fn write_cert(&self, cert: &Path, key_path: &Path, expired: bool) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let signed = params.signed_by(&key, &self.ca).unwrap();
        // Key first, then the certificate: the operator reloads once both changed.
        std::fs::write(key_path, key.serialize_pem()).unwrap();
        std::fs::write(cert, signed.pem()).unwrap();
    }
}

struct Setup {
    _fakes: Fakes,
    dir: tempfile::TempDir,
    operator: Operator,
}

/// Fake upstreams, a manifests directory and an empty config in a temp dir; with `pki`, a
/// `localhost` certificate in `tls.crt` / `tls.key` there too.
struct Prepared {
    fakes: Fakes,
    dir: tempfile::TempDir,
    manifests: PathBuf,
    config: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn prepare(pki: Option<&Pki>) -> Prepared {
    let fakes = Fakes::start(&["x"]);
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_atomic(&manifests.join("all.yaml"), &fakes.fill(&md("shared", "m", "x", "")));
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    if let Some(pki) = pki {
        pki.write_cert(&cert, &key, false);
    }
    Prepared { fakes, dir, manifests, config, cert, key }
}

fn setup(pki: Option<&Pki>, extra: &[&str]) -> Setup {
    let Prepared { fakes, dir, manifests, config, cert, key } = prepare(pki);
    let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if pki.is_some() {
        flags.extend(["--tls-mode", "files", "--tls-cert-file"].map(String::from));
        flags.push(cert.display().to_string());
        flags.push("--tls-key-file".into());
        flags.push(key.display().to_string());
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&manifests, &config, "127.0.0.1:0", &flags);
    Setup { _fakes: fakes, dir, operator }
}

fn sidecar(s: &Setup, ca: &Path, extra: &[&str]) -> FedSidecar {
    let url = format!("https://localhost:{}", s.operator.grpc.port());
    let ca = ca.display().to_string();
    let mut flags = vec!["--operator-ca-file", ca.as_str()];
    flags.extend_from_slice(extra);
    FedSidecar::start_url("team-a", &url, s.dir.path().join("cache"), &flags)
}

async fn ready(sidecar: &FedSidecar, within: Duration) -> bool {
    eventually(within, || async { sidecar.version().await.is_some() }).await
}

#[tokio::test]
async fn a_trusted_operator_certificate_carries_the_stream() {
    let pki = Pki::new("test CA");
    let s = setup(Some(&pki), &[]);
    let ca = pki.write_ca(s.dir.path(), "ca.pem");
    let sidecar = sidecar(&s, &ca, &[]);
    assert!(ready(&sidecar, Duration::from_secs(10)).await, "{}", sidecar.proc.logs());
    assert_eq!(sidecar.served_by("m").await, "llm/shared");
    assert!(s.operator.converged("team-a", 1).await);
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_with_a_clear_log_line() {
    let (real, other) = (Pki::new("real CA"), Pki::new("other CA"));
    let s = setup(Some(&real), &[]);
    let wrong = other.write_ca(s.dir.path(), "other.pem");
    let sidecar = sidecar(&s, &wrong, &[]);
    assert!(!ready(&sidecar, Duration::from_secs(3)).await, "a sidecar trusted an unknown CA");
    let logs = sidecar.proc.logs();
    assert!(logs.contains("TLS certificate is refused"), "{logs}");
    assert!(logs.contains("UnknownIssuer") || logs.contains("unknown issuer"), "{logs}");
    let r = llmroute_testkit::http_client::get(&format!("{}/readyz", sidecar.admin)).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(s.operator.team("team-a").await["connected"].as_u64().unwrap_or(0), 0);
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new("test CA");
    let s = setup(Some(&pki), &[]);
    pki.write_cert(&s.dir.path().join("tls.crt"), &s.dir.path().join("tls.key"), true);
    // The operator re-reads changed files every 5 s.
    assert!(
        eventually(Duration::from_secs(10), || async { s.operator.proc.log_count("serving certificate reloaded") > 0 })
            .await,
        "{}",
        s.operator.proc.logs()
    );
    let ca = pki.write_ca(s.dir.path(), "ca.pem");
    let sidecar = sidecar(&s, &ca, &[]);
    assert!(!ready(&sidecar, Duration::from_secs(3)).await, "an expired certificate was accepted");
    assert!(sidecar.proc.logs().to_lowercase().contains("expired"), "{}", sidecar.proc.logs());
}

#[tokio::test]
async fn a_rotated_certificate_and_ca_bundle_are_picked_up_without_restarts() {
    let (old, new) = (Pki::new("old CA"), Pki::new("new CA"));
    // Streams end after 1 s (jittered), so the sidecar reconnects on fresh TLS sessions.
    let s = setup(Some(&old), &["--max-stream-age-seconds", "1"]);
    let ca = old.write_ca(s.dir.path(), "ca.pem");
    let sidecar = sidecar(&s, &ca, &[]);
    assert!(ready(&sidecar, Duration::from_secs(10)).await, "{}", sidecar.proc.logs());
    // Rotate: the operator's certificate from the new CA, the sidecar's bundle to the new CA only.
    new.write_cert(&s.dir.path().join("tls.crt"), &s.dir.path().join("tls.key"), false);
    std::fs::write(&ca, new.ca.pem()).unwrap();
    assert!(
        eventually(Duration::from_secs(12), || async { s.operator.proc.log_count("serving certificate reloaded") > 0 })
            .await,
        "{}",
        s.operator.proc.logs()
    );
    let connects = sidecar.proc.log_count("connected to the operator");
    assert!(
        eventually(Duration::from_secs(10), || async {
            sidecar.proc.log_count("connected to the operator") > connects + 1
        })
        .await,
        "no reconnect on the rotated certificate:\n{}",
        sidecar.proc.logs()
    );
    assert!(s.operator.converged("team-a", 1).await);
}

#[tokio::test]
async fn manifests_mode_token_is_required_when_set() {
    let s = setup(None, &["--token", "s3cret-token"]);
    let url = format!("http://{}", s.operator.grpc);
    let (good, bad) = (s.dir.path().join("good"), s.dir.path().join("bad"));
    std::fs::write(&good, "s3cret-token\n").unwrap();
    std::fs::write(&bad, "guess").unwrap();
    let (good, bad) = (good.display().to_string(), bad.display().to_string());
    let refused = FedSidecar::start_url("team-a", &url, s.dir.path().join("c1"), &["--operator-token-file", &bad]);
    let missing = FedSidecar::start_url("team-b", &url, s.dir.path().join("c2"), &[]);
    let admitted = FedSidecar::start_url("team-c", &url, s.dir.path().join("c3"), &["--operator-token-file", &good]);
    assert!(ready(&admitted, Duration::from_secs(10)).await, "{}", admitted.proc.logs());
    assert!(!ready(&refused, Duration::from_secs(1)).await);
    assert!(!ready(&missing, Duration::from_millis(200)).await);
    assert!(refused.proc.logs().contains("bearer token is not valid"), "{}", refused.proc.logs());
    assert!(!s.operator.proc.logs().contains("s3cret-token") && !refused.proc.logs().contains("s3cret-token"));
}

#[tokio::test]
async fn connections_that_never_handshake_do_not_hold_back_a_sidecar() {
    let pki = Pki::new("test CA");
    let s = setup(Some(&pki), &[]);
    // More silent connections than a small handshake pool would hold, and some that speak
    // plaintext HTTP/2 to the TLS port.
    let mut idle = Vec::new();
    for i in 0..600 {
        let mut c = tokio::net::TcpStream::connect(s.operator.grpc).await.unwrap();
        if i % 10 == 0 {
            use tokio::io::AsyncWriteExt as _;
            let _ = c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        }
        idle.push(c);
    }
    let ca = pki.write_ca(s.dir.path(), "ca.pem");
    let sidecar = sidecar(&s, &ca, &[]);
    // Well within the 5 s handshake deadline the silent ones get.
    assert!(ready(&sidecar, Duration::from_secs(4)).await, "{}", s.operator.proc.logs());
    drop(idle);
}

#[tokio::test]
async fn certificate_files_that_are_not_files_keep_the_served_one_and_a_fixed_ca_file_is_picked_up() {
    let pki = Pki::new("test CA");
    let s = setup(Some(&pki), &[]);
    let cert = s.dir.path().join("tls.crt");
    let saved = std::fs::read(&cert).unwrap();
    std::fs::remove_file(&cert).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&cert).status().unwrap();
    assert!(made.success());
    assert!(
        eventually(Duration::from_secs(12), || async { s.operator.proc.log_count("not a regular file") > 0 }).await,
        "{}",
        s.operator.proc.logs()
    );
    // The sidecar's CA file is a FIFO too: refused with a clear line, never a hang.
    let ca = s.dir.path().join("ca.pem");
    let made = std::process::Command::new("mkfifo").arg(&ca).status().unwrap();
    assert!(made.success());
    let sidecar = sidecar(&s, &ca, &[]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            sidecar.proc.log_count("not a regular file of at most 4 MiB") > 0
        })
        .await,
        "{}",
        sidecar.proc.logs()
    );
    assert!(!ready(&sidecar, Duration::from_millis(300)).await);
    // Fixed: the next connection reads the new CA file; the operator still serves its old
    // certificate, unaffected by the FIFO.
    std::fs::remove_file(&ca).unwrap();
    pki.write_ca(s.dir.path(), "ca.pem");
    assert!(ready(&sidecar, Duration::from_secs(10)).await, "{}", sidecar.proc.logs());
    std::fs::remove_file(&cert).unwrap();
    std::fs::write(&cert, saved).unwrap();
}

#[tokio::test]
async fn certificate_files_alone_turn_tls_on_and_a_token_file_works() {
    let pki = Pki::new("test CA");
    let Prepared { fakes: _fakes, dir, manifests, config, cert, key } = prepare(Some(&pki));
    let token = dir.path().join("token");
    std::fs::write(&token, "from-a-file\n").unwrap();
    let (cert_s, key_s, token_s) = (cert.display().to_string(), key.display().to_string(), token.display().to_string());
    let flags =
        ["--tls-cert-file", cert_s.as_str(), "--tls-key-file", key_s.as_str(), "--token-file", token_s.as_str()];
    let operator = Operator::start_with(&manifests, &config, "127.0.0.1:0", &flags);
    assert!(operator.proc.logs().contains("tls=true"), "{}", operator.proc.logs());
    let ca = pki.write_ca(dir.path(), "ca.pem").display().to_string();
    let url = format!("https://localhost:{}", operator.grpc.port());
    let sidecar = FedSidecar::start_url(
        "team-a",
        &url,
        dir.path().join("c"),
        &["--operator-ca-file", &ca, "--operator-token-file", &token_s],
    );
    assert!(ready(&sidecar, Duration::from_secs(10)).await, "{}", sidecar.proc.logs());
}

#[tokio::test]
async fn callers_without_a_valid_token_never_spend_the_admission_budget() {
    let s = setup(None, &["--token", "good-token", "--new-streams-per-second", "2"]);
    // 200 streams with a wrong token, as fast as they come.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.operator.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for _ in 0..200 {
        let mut client = llmroute_proto::v1::routing_discovery_client::RoutingDiscoveryClient::new(channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(tx);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
        let status = client.stream_routes(request).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let url = format!("http://{}", s.operator.grpc);
    let token = s.dir.path().join("token");
    std::fs::write(&token, "good-token").unwrap();
    let token = token.display().to_string();
    let sidecar = FedSidecar::start_url("team-a", &url, s.dir.path().join("c"), &["--operator-token-file", &token]);
    assert!(ready(&sidecar, Duration::from_secs(5)).await, "{}", sidecar.proc.logs());
}

#[tokio::test]
async fn a_token_too_large_for_a_header_is_a_clear_local_error_with_backoff() {
    let s = setup(None, &["--token", "good-token"]);
    let token = s.dir.path().join("huge-token");
    std::fs::write(&token, "X".repeat(60 * 1024)).unwrap();
    let token = token.display().to_string();
    let url = format!("http://{}", s.operator.grpc);
    let sidecar = FedSidecar::start_url("team-a", &url, s.dir.path().join("c"), &["--operator-token-file", &token]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = sidecar.proc.log_count("at most 8 KiB");
    // Backoff 100 ms doubling (jittered): a handful of tries in 2 s, never a tight loop.
    assert!((1..=8).contains(&tries), "{tries} tries:\n{}", sidecar.proc.logs());
    assert_eq!(sidecar.proc.log_count("connected to the operator"), 0);
}

#[tokio::test]
async fn a_replica_at_its_stream_limit_refuses_more() {
    let s = setup(None, &["--max-streams", "1"]);
    let url = format!("http://{}", s.operator.grpc);
    let first = FedSidecar::start_url("team-a", &url, s.dir.path().join("c1"), &[]);
    assert!(ready(&first, Duration::from_secs(10)).await);
    let second = FedSidecar::start_url("team-b", &url, s.dir.path().join("c2"), &[]);
    assert!(!ready(&second, Duration::from_secs(1)).await);
    assert!(second.proc.logs().contains("maximum of streams"), "{}", second.proc.logs());
}

#[tokio::test]
async fn a_client_silent_after_its_tls_handshake_is_closed() {
    use tokio::io::AsyncReadExt as _;
    use tokio_rustls::rustls;
    let pki = Pki::new("test CA");
    let s = setup(Some(&pki), &[]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.operator.grpc).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    // Say nothing: the operator closes within its 10 s first-bytes deadline.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent connection was held past the deadline");
}
