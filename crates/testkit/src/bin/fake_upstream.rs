//! `fake-upstream`: fake OpenAI-compatible upstreams for the demo, tests and benchmarks.
//!
//! `fake-upstream --control 127.0.0.1:18100 --instance gpt4o-east=127.0.0.1:18101 ...`
//! Behaviour per instance at start: `--behaviour NAME='{"latency_ms": 5}'`; at run time:
//! `POST http://CONTROL/NAME/behaviour` with a partial JSON object.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use llmroute_testkit::{Behaviour, serve_fakes};

#[derive(Parser, Debug)]
#[command(name = "fake-upstream", about = "Fake OpenAI-compatible upstreams on loopback")]
struct Flags {
    /// Control address (behaviour, stats, reset of every instance).
    #[arg(long, default_value = "127.0.0.1:18100")]
    control: SocketAddr,
    /// An instance: NAME=ADDR. Repeat for more.
    #[arg(long = "instance", required = true)]
    instances: Vec<String>,
    /// Start behaviour of an instance: NAME=JSON (partial). Repeatable.
    #[arg(long = "behaviour")]
    behaviours: Vec<String>,
    /// Serve the instances over https with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let mut instances = Vec::new();
    for spec in &flags.instances {
        let (name, addr) = spec.split_once('=').context("--instance takes NAME=ADDR")?;
        let mut behaviour = serde_json::to_value(Behaviour::default())?;
        for b in flags.behaviours.iter().filter_map(|b| b.split_once('=')).filter(|(n, _)| *n == name) {
            let update: serde_json::Value =
                serde_json::from_str(b.1).with_context(|| format!("--behaviour {name}: not JSON"))?;
            if let (Some(base), Some(update)) = (behaviour.as_object_mut(), update.as_object()) {
                base.extend(update.clone());
            }
        }
        let behaviour: Behaviour = serde_json::from_value(behaviour).with_context(|| format!("--behaviour {name}"))?;
        instances.push((
            name.to_owned(),
            addr.parse().with_context(|| format!("--instance {name}: bad address"))?,
            behaviour,
        ));
    }
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).context("loading --tls-cert/--tls-key")?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let fakes = serve_fakes(instances, flags.control, tls).await?;
        // One JSON line with the bound addresses (ports may be given as 0).
        let addrs: serde_json::Map<String, serde_json::Value> =
            fakes.addrs.iter().map(|(name, addr)| (name.clone(), addr.to_string().into())).collect();
        eprintln!(
            "{}",
            serde_json::json!({"fake_upstream": {"control": fakes.control.to_string(), "instances": addrs}})
        );
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
