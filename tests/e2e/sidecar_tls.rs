//! https upstreams: verified against the webpki roots plus `--upstream-ca-file`.

use std::path::{Path, PathBuf};

use llmroute_e2e::{Env, Options, md};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A private CA and a `localhost` server certificate it signed: (ca.pem, cert.pem, key.pem).
fn private_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "llmroute test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn https_manifests() -> String {
    md("secure", "m", "secure", "").replace("'http://{secure}/v1'", "'https://localhost:{secure_port}/v1'")
}

async fn start(pki: &Path, trust: bool) -> Env {
    let (ca, cert, key) = private_pki(pki);
    let fake_flags =
        vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()];
    let ca = ca.display().to_string();
    let flags: Vec<&str> = if trust { vec!["--upstream-ca-file", &ca] } else { Vec::new() };
    let options =
        Options { instances: &["secure"], manifests: String::new(), flags: &flags, fake_flags, ..Default::default() };
    let env = Env::start(options).await;
    let port = env.addrs["secure"].port().to_string();
    env.change_manifests(&https_manifests().replace("{secure_port}", &port)).await;
    env
}

#[tokio::test]
async fn an_https_upstream_signed_by_a_trusted_private_ca_serves() {
    let pki = tempfile::tempdir().unwrap();
    let env = start(pki.path(), true).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("served by secure"));
    assert_eq!(env.stats("secure").await["last_host"], format!("localhost:{}", env.addrs["secure"].port()));
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connect_failure_not_a_crash() {
    let pki = tempfile::tempdir().unwrap();
    let env = start(pki.path(), false).await;
    let r = env.chat("m", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let attempt = r.json()["error"]["attempts"][0]["outcome"].as_str().unwrap_or_default().to_owned();
    assert!(attempt.contains("tls") || attempt.contains("certificate"), "{attempt}");
    assert_eq!(env.requests("secure").await, 0);
}
