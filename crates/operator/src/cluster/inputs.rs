//! The cluster's objects, as the reflector stores hold them, turned into the compile's input:
//! our kinds read one by one (a misfit object is reported on itself, never fails the list),
//! namespaces bound to teams, the routing config checked, and Secrets that just disappeared
//! kept for a grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use llmroute_api::RoutingConfig;
use llmroute_api::manifest::{Document, classify};
use llmroute_snapshot::{ObjectKey, ResourceStore, TEAM_LABEL, Tenancy};

/// One reading of every store.
pub struct Objects<'a> {
    /// ModelDeployments (any namespace).
    pub deployments: &'a [Arc<DynamicObject>],
    /// TeamModels (any namespace).
    pub team_models: &'a [Arc<DynamicObject>],
    /// Labelled credential Secrets.
    pub secrets: &'a [Arc<Secret>],
    /// Namespaces (metadata only).
    pub namespaces: &'a [Arc<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>],
    /// The RoutingConfig objects of the operator's namespace.
    pub configs: &'a [Arc<DynamicObject>],
}

/// What the sources need besides the objects.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces trusted for global objects.
    pub global_namespaces: BTreeSet<String>,
    /// The RoutingConfig's name (in the operator's namespace).
    pub config_name: String,
    /// The operator's namespace.
    pub namespace: String,
    /// How long a vanished Secret is kept.
    pub grace: Duration,
}

/// The team of every labelled namespace.
pub fn namespace_teams(
    namespaces: &[Arc<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>],
) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .filter_map(|ns| {
            let team = ns.metadata.labels.as_ref()?.get(TEAM_LABEL)?;
            Some((ns.metadata.name.clone()?, team.clone()))
        })
        .collect()
}

/// Builds compile inputs, remembering Secrets across builds for the grace period.
#[derive(Default)]
pub struct Assembler {
    /// Secrets of the previous build.
    last: BTreeMap<ObjectKey, Secret>,
    /// Secrets gone, kept until their deadline.
    gone: BTreeMap<ObjectKey, (Secret, SystemTime)>,
    /// The last good routing config (a broken one never replaces it).
    config: Option<RoutingConfig>,
    previous: Option<ResourceStore>,
}

/// A build's input and what it says beyond the store.
pub struct Assembled {
    /// The compile's input.
    pub store: ResourceStore,
    /// When the earliest kept Secret expires (a rebuild is due then).
    pub next_expiry: Option<SystemTime>,
    /// Why the newest routing config is not in force, if it is not.
    pub config_problem: Option<String>,
}

impl Assembler {
    /// The compile input for `objects` at `now`.
    pub fn assemble(&mut self, objects: &Objects<'_>, settings: &Settings, now: SystemTime) -> Assembled {
        let config_problem = self.read_config(objects.configs, settings);
        let mut store = ResourceStore::new(self.config.clone().unwrap_or_default());
        store.set_tenancy(Some(Tenancy {
            teams: namespace_teams(objects.namespaces),
            global_namespaces: settings.global_namespaces.clone(),
        }));
        let previous = self.previous.as_ref();
        for object in objects.deployments {
            store.apply_document_reusing(read(object, "ModelDeployment"), previous);
        }
        for object in objects.team_models {
            store.apply_document_reusing(read(object, "TeamModel"), previous);
        }
        // Secrets: the present ones; those that vanished since the last build are kept (with a
        // deadline) until they come back or the grace period ends.
        let present: BTreeMap<ObjectKey, Secret> =
            objects.secrets.iter().map(|s| (ObjectKey::of(&s.metadata), Secret::clone(s))).collect();
        for (key, secret) in std::mem::take(&mut self.last) {
            if !present.contains_key(&key) && !settings.grace.is_zero() {
                self.gone.entry(key).or_insert((secret, now + settings.grace));
            }
        }
        self.gone.retain(|key, (_, deadline)| !present.contains_key(key) && *deadline > now);
        for secret in present.values() {
            store.apply_secret(secret);
        }
        for (key, (secret, deadline)) in &self.gone {
            let left = deadline.duration_since(now).unwrap_or_default().as_secs();
            let note = format!("Secret {key} was deleted; its last good value is used for {left} s more");
            store.apply_lingering_secret(secret, note);
        }
        let next_expiry = self.gone.values().map(|(_, d)| *d).min();
        self.last = present;
        self.previous = Some(store.clone());
        Assembled { store, next_expiry, config_problem }
    }

    fn read_config(&mut self, configs: &[Arc<DynamicObject>], settings: &Settings) -> Option<String> {
        let mine = configs.iter().find(|c| {
            c.metadata.name.as_deref() == Some(settings.config_name.as_str())
                && c.metadata.namespace.as_deref() == Some(settings.namespace.as_str())
        });
        let Some(object) = mine else {
            // No RoutingConfig: the built-in defaults.
            self.config = None;
            return None;
        };
        let spec = object.data.get("spec").cloned().unwrap_or(serde_json::Value::Null);
        let text = serde_json::to_string(&spec).unwrap_or_default();
        match RoutingConfig::parse(if spec.is_null() { "" } else { &text }) {
            Ok(config) => {
                self.config = Some(config);
                None
            }
            Err(e) => {
                let problem = format!(
                    "RoutingConfig {}/{}: {e}; the last good config keeps serving",
                    settings.namespace, settings.config_name
                );
                Some(problem)
            }
        }
    }
}

/// A dynamic object read as a `kind` document (unreadable when it does not fit its type).
fn read(object: &DynamicObject, kind: &str) -> Document {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), format!("{}/{}", llmroute_api::GROUP, llmroute_api::VERSION).into());
        map.insert("kind".into(), kind.into());
    }
    match serde_yaml::to_value(&value) {
        Ok(value) => classify(value),
        Err(_) => Document::Skipped { kind: String::new() },
    }
}

#[cfg(test)]
mod tests;
