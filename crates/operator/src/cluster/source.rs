//! The cluster source: watchers and reflector stores for ModelDeployments, TeamModels, the
//! RoutingConfig, labelled credential Secrets and namespaces (metadata only). A change wakes the
//! build loop only when it matters: a new generation of our kinds (status writes do not bump
//! it), a new Secret revision, a namespace's team label, a deletion, or a relist.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use llmroute_api::{ModelDeployment, RoutingConfigResource, TeamModel};
use llmroute_snapshot::TEAM_LABEL;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::inputs::Objects;

/// The label a credential Secret carries; only such Secrets are watched.
pub const CREDENTIALS_LABEL: &str = "llmroute.dev/credentials";

/// Every store the compile reads.
#[derive(Clone)]
pub struct Stores {
    /// ModelDeployments.
    pub deployments: Store<DynamicObject>,
    /// TeamModels.
    pub team_models: Store<DynamicObject>,
    /// RoutingConfigs of the operator's namespace.
    pub configs: Store<DynamicObject>,
    /// Labelled credential Secrets.
    pub secrets: Store<Secret>,
    /// Namespaces (metadata).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// A snapshot of the stores' contents.
pub struct Contents {
    deployments: Vec<Arc<DynamicObject>>,
    team_models: Vec<Arc<DynamicObject>>,
    configs: Vec<Arc<DynamicObject>>,
    secrets: Vec<Arc<Secret>>,
    namespaces: Vec<Arc<PartialObjectMeta<Namespace>>>,
}

impl Contents {
    /// The compile's view of the contents.
    pub fn objects(&self) -> Objects<'_> {
        Objects {
            deployments: &self.deployments,
            team_models: &self.team_models,
            secrets: &self.secrets,
            namespaces: &self.namespaces,
            configs: &self.configs,
        }
    }
}

impl Stores {
    /// Starts every watcher; `changed` is notified on every change that matters.
    pub fn start(client: &Client, namespace: &str, changed: &Arc<Notify>) -> Self {
        let deployments =
            dynamic::<ModelDeployment>(Api::all_with(client.clone(), &resource::<ModelDeployment>()), changed);
        let team_models = dynamic::<TeamModel>(Api::all_with(client.clone(), &resource::<TeamModel>()), changed);
        let configs = dynamic::<RoutingConfigResource>(
            Api::namespaced_with(client.clone(), namespace, &resource::<RoutingConfigResource>()),
            changed,
        );
        let secrets = {
            let (reader, writer) = reflector::store::<Secret>();
            let config = watcher::Config::default().labels(&format!("{CREDENTIALS_LABEL}=true"));
            let stream = watcher(Api::<Secret>::all(client.clone()), config).default_backoff().reflect(writer);
            tokio::spawn(follow(stream, changed.clone(), |s: &Secret| s.metadata.resource_version.clone()));
            reader
        };
        let namespaces = {
            let (reader, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
            let stream = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .reflect(writer);
            let team =
                |n: &PartialObjectMeta<Namespace>| n.metadata.labels.as_ref().and_then(|l| l.get(TEAM_LABEL).cloned());
            tokio::spawn(follow(stream, changed.clone(), team));
            reader
        };
        Self { deployments, team_models, configs, secrets, namespaces }
    }

    /// Waits until every store has listed once.
    pub async fn ready(&self) {
        // A dropped writer means its watcher task ended: the process is stopping.
        let _ = tokio::join!(
            self.deployments.wait_until_ready(),
            self.team_models.wait_until_ready(),
            self.configs.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
    }

    /// What the stores hold now.
    pub fn contents(&self) -> Contents {
        Contents {
            deployments: self.deployments.state(),
            team_models: self.team_models.state(),
            configs: self.configs.state(),
            secrets: self.secrets.state(),
            namespaces: self.namespaces.state(),
        }
    }
}

/// The API resource of one of our kinds.
pub fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// A reflector over our kind `K`, read as dynamic objects (one misfit object must not fail the
/// whole list); a change is a new generation or a deletion.
fn dynamic<K: Resource<DynamicType = ()>>(api: Api<DynamicObject>, changed: &Arc<Notify>) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::<DynamicObject>::new(resource::<K>());
    let reader = writer.as_reader();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    let generation = |o: &DynamicObject| {
        o.metadata.generation.map(|g| g.to_string()).or_else(|| o.metadata.resource_version.clone())
    };
    tokio::spawn(follow(stream, changed.clone(), generation));
    reader
}

/// Drives a reflector stream, notifying `changed` when `fingerprint` of an object changes, an
/// object is deleted, or a (re)list completes.
async fn follow<K, S, F, P>(stream: S, changed: Arc<Notify>, fingerprint: F)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    F: Fn(&K) -> P,
    P: PartialEq,
{
    let mut seen: HashMap<(Option<String>, Option<String>), P> = HashMap::new();
    let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
    let mut listed = false;
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let key = key(&object);
                let print = fingerprint(&object);
                if seen.get(&key) != Some(&print) {
                    seen.insert(key, print);
                    if listed {
                        changed.notify_one();
                    }
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                seen.remove(&key(&object));
                changed.notify_one();
            }
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => {
                listed = true;
                changed.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying with backoff"),
        }
    }
}
