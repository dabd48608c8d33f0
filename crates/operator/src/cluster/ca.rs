//! The operator's CA in a cluster: kept in a Secret of its namespace (created once by whichever
//! replica comes first, stable across restarts and GitOps syncs), a serving certificate issued
//! from it and re-issued before it expires, and the CA bundle published as a ConfigMap into
//! every team namespace (as Istio does with its root certificate).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use crate::tls::pki::{self, Ca, SERVING_VALIDITY};
use crate::tls::{ServingCert, TlsError};

/// Why the CA cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The API refused.
    #[error("CA Secret {0}: {1}")]
    Api(String, kube::Error),
    /// The Secret holds no usable CA.
    #[error("CA Secret {0} holds no usable ca.crt/ca.key")]
    Unusable(String),
    /// Issuing failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The CA in `namespace/name`, created if it does not exist yet.
pub async fn ensure_ca(client: &Client, namespace: &str, name: &str) -> Result<Ca, CaError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("{namespace}/{name}");
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(name).await.map_err(|e| CaError::Api(what.clone(), e))? {
            return read(&secret).ok_or(CaError::Unusable(what));
        }
        let ca = pki::new_ca(OffsetDateTime::now_utc())?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "llmroute-operator".into())])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                ("ca.crt".into(), ByteString(ca.cert_pem.clone().into_bytes())),
                ("ca.key".into(), ByteString(ca.key_pem.clone().into_bytes())),
            ])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %what, "created the operator CA");
                return Ok(ca);
            }
            // Another replica made it first: use theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(CaError::Api(what, e)),
        }
    }
    Err(CaError::Unusable(what))
}

fn read(secret: &Secret) -> Option<Ca> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
    Some(Ca { cert_pem: text("ca.crt")?, key_pem: text("ca.key")? })
}

/// A serving certificate for `names` from `ca`, re-issued every third of its validity.
pub fn serve_from(ca: Ca, names: Vec<String>) -> Result<Arc<ServingCert>, TlsError> {
    let (cert, key) = pki::issue(&ca, &names, OffsetDateTime::now_utc(), SERVING_VALIDITY)?;
    let serving = ServingCert::new(cert.as_bytes(), key.as_bytes())?;
    let rotating = serving.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SERVING_VALIDITY / 3).await;
            match pki::issue(&ca, &names, OffsetDateTime::now_utc(), SERVING_VALIDITY)
                .and_then(|(cert, key)| rotating.set(cert.as_bytes(), key.as_bytes()))
            {
                Ok(()) => tracing::info!("serving certificate re-issued"),
                Err(e) => tracing::warn!(error = %e, "re-issuing the serving certificate failed; retrying in a minute"),
            }
        }
    });
    Ok(serving)
}

/// Publishes the CA bundle into namespaces, remembering where it is already current.
pub struct BundlePublisher {
    client: Client,
    name: String,
    bundle: String,
    done: BTreeSet<String>,
}

impl BundlePublisher {
    /// Publishes `bundle` as ConfigMap `name` (key `ca.crt`).
    pub fn new(client: Client, name: impl Into<String>, bundle: String) -> Self {
        Self { client, name: name.into(), bundle, done: BTreeSet::new() }
    }

    /// Applies the ConfigMap in every namespace of `namespaces` not done yet (server-side apply:
    /// created or corrected in one call). Failures are retried on the next call.
    pub async fn publish<'a>(&mut self, namespaces: impl Iterator<Item = &'a String>) {
        let wanted: BTreeSet<String> = namespaces.cloned().collect();
        self.done.retain(|ns| wanted.contains(ns));
        for ns in wanted {
            if self.done.contains(&ns) {
                continue;
            }
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "llmroute-operator"}},
                "data": {"ca.crt": self.bundle},
            });
            let params = PatchParams::apply(super::writer::FIELD_MANAGER).force();
            match tokio::time::timeout(Duration::from_secs(10), api.patch(&self.name, &params, &Patch::Apply(&body)))
                .await
            {
                Ok(Ok(_)) => {
                    self.done.insert(ns);
                }
                Ok(Err(e)) => tracing::warn!(namespace = %ns, error = %e, "publishing the CA bundle failed"),
                Err(_) => tracing::warn!(namespace = %ns, "publishing the CA bundle timed out"),
            }
        }
    }
}
