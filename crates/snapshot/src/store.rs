//! The resource store: the current set of objects, each checked against its CRD's schema rules
//! once, when it is applied. A plain struct with synchronous apply/delete; compile reads it.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use llmroute_api::manifest::Document;
use llmroute_api::validation::{self, Violation};
use llmroute_api::{ModelDeployment, RoutingConfig, TeamModel};

use crate::{Kind, ObjectKey};

/// An object together with the verdict of its schema rules.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Admitted<T> {
    pub object: T,
    /// `Err` holds the schema violations, joined for the condition message.
    pub schema: Result<(), String>,
}

/// An object that could not even be read as its kind (e.g. `weight: -1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unreadable {
    pub generation: Option<i64>,
    pub message: String,
}

/// Secret data by key; values never appear in Debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct SecretData(pub BTreeMap<String, Vec<u8>>);

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Who may declare what, in a cluster: a namespace belongs to the team its
/// `llmroute.dev/team` label names, and global objects come only from trusted namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// Team of each labelled namespace.
    pub teams: BTreeMap<String, String>,
    /// Namespaces trusted for global objects (no `spec.team`).
    pub global_namespaces: std::collections::BTreeSet<String>,
}

/// Every input of the compile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceStore {
    pub(crate) deployments: BTreeMap<ObjectKey, Admitted<ModelDeployment>>,
    pub(crate) team_models: BTreeMap<ObjectKey, Admitted<TeamModel>>,
    pub(crate) secrets: BTreeMap<ObjectKey, SecretData>,
    /// Secrets that are gone but kept for a grace period, with the note for `Degraded`.
    pub(crate) lingering: BTreeMap<ObjectKey, String>,
    pub(crate) unreadable: BTreeMap<(Kind, ObjectKey), Unreadable>,
    pub(crate) config: RoutingConfig,
    /// `None` (manifests mode): every namespace may declare any team and global objects.
    pub(crate) tenancy: Option<Tenancy>,
}

fn joined(violations: Vec<Violation>) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Checks `object` against its schema rules, unless `known` holds the identical object, whose
/// verdict is reused.
fn admit<T: PartialEq>(
    object: T,
    known: Option<&Admitted<T>>,
    validate: impl FnOnce(&T) -> Result<(), Vec<Violation>>,
) -> Admitted<T> {
    let schema = match known.filter(|k| k.object == object) {
        Some(k) => k.schema.clone(),
        None => validate(&object).map_err(joined),
    };
    Admitted { object, schema }
}

impl ResourceStore {
    /// An empty store with the given routing config.
    pub fn new(config: RoutingConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// Replaces the routing config.
    pub fn set_config(&mut self, config: RoutingConfig) {
        self.config = config;
    }

    /// Adds or replaces a ModelDeployment, checking its schema rules.
    pub fn apply_model_deployment(&mut self, md: ModelDeployment) {
        self.apply_model_deployment_reusing(md, None);
    }

    /// Like [`Self::apply_model_deployment`], but an object identical to the one `previous`
    /// holds keeps that verdict instead of being checked again (a reload of unchanged files).
    pub fn apply_model_deployment_reusing(&mut self, md: ModelDeployment, previous: Option<&ResourceStore>) {
        let key = ObjectKey::of(&md.metadata);
        self.unreadable.remove(&(Kind::ModelDeployment, key.clone()));
        let known = previous.and_then(|p| p.deployments.get(&key));
        self.deployments.insert(key, admit(md, known, validation::validate_model_deployment));
    }

    /// Removes a ModelDeployment (and any unreadable version of it).
    pub fn delete_model_deployment(&mut self, key: &ObjectKey) {
        self.deployments.remove(key);
        self.unreadable.remove(&(Kind::ModelDeployment, key.clone()));
    }

    /// Adds or replaces a TeamModel, checking its schema rules.
    pub fn apply_team_model(&mut self, tm: TeamModel) {
        self.apply_team_model_reusing(tm, None);
    }

    /// Like [`Self::apply_team_model`], reusing the verdict of an identical object in `previous`.
    pub fn apply_team_model_reusing(&mut self, tm: TeamModel, previous: Option<&ResourceStore>) {
        let key = ObjectKey::of(&tm.metadata);
        self.unreadable.remove(&(Kind::TeamModel, key.clone()));
        let known = previous.and_then(|p| p.team_models.get(&key));
        self.team_models.insert(key, admit(tm, known, validation::validate_team_model));
    }

    /// Removes a TeamModel (and any unreadable version of it).
    pub fn delete_team_model(&mut self, key: &ObjectKey) {
        self.team_models.remove(key);
        self.unreadable.remove(&(Kind::TeamModel, key.clone()));
    }

    /// Records an object that could not be read as its kind; it replaces any readable version.
    pub fn apply_unreadable(
        &mut self,
        kind: Kind,
        key: ObjectKey,
        generation: Option<i64>,
        message: impl Into<String>,
    ) {
        match kind {
            Kind::ModelDeployment => drop(self.deployments.remove(&key)),
            Kind::TeamModel => drop(self.team_models.remove(&key)),
        }
        self.unreadable.insert((kind, key), Unreadable { generation, message: message.into() });
    }

    /// Adds or replaces a Secret (`data` and `stringData`, the latter winning as in the API server).
    pub fn apply_secret(&mut self, secret: &Secret) {
        let mut data: BTreeMap<String, Vec<u8>> =
            secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        for (k, v) in secret.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        let key = ObjectKey::of(&secret.metadata);
        self.lingering.remove(&key);
        self.secrets.insert(key, SecretData(data));
    }

    /// Removes a Secret.
    pub fn delete_secret(&mut self, key: &ObjectKey) {
        self.secrets.remove(key);
        self.lingering.remove(key);
    }

    /// Keeps the last good state of a Secret that is gone, for a grace period: deployments
    /// using it stay in their views, their `Degraded` condition carrying `note`.
    pub fn apply_lingering_secret(&mut self, secret: &Secret, note: impl Into<String>) {
        self.apply_secret(secret);
        self.lingering.insert(ObjectKey::of(&secret.metadata), note.into());
    }

    /// Binds teams to namespaces (cluster mode); `None` lifts the rule (manifests mode).
    pub fn set_tenancy(&mut self, tenancy: Option<Tenancy>) {
        self.tenancy = tenancy;
    }

    /// Applies one parsed manifest document (skipped kinds are ignored).
    pub fn apply_document(&mut self, document: Document) {
        self.apply_document_reusing(document, None);
    }

    /// Applies one parsed manifest document, reusing verdicts of identical objects in `previous`.
    pub fn apply_document_reusing(&mut self, document: Document, previous: Option<&ResourceStore>) {
        match document {
            Document::ModelDeployment(md) => self.apply_model_deployment_reusing(*md, previous),
            Document::TeamModel(tm) => self.apply_team_model_reusing(*tm, previous),
            Document::Secret(secret) => self.apply_secret(&secret),
            Document::Unreadable(u) => {
                let kind = if u.kind == "TeamModel" { Kind::TeamModel } else { Kind::ModelDeployment };
                let key = ObjectKey::new(u.namespace.unwrap_or_else(|| "default".into()), u.name);
                self.apply_unreadable(kind, key, u.generation, u.message);
            }
            Document::Skipped { .. } | Document::UnreadableSecret { .. } => {}
        }
    }

    /// Number of objects held (ModelDeployments, TeamModels, unreadable objects; not Secrets).
    pub fn len(&self) -> usize {
        self.deployments.len() + self.team_models.len() + self.unreadable.len()
    }

    /// Whether no object is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The routing config in force.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// Names of the ModelDeployments held, for callers that diff directory listings.
    pub fn model_deployment_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.deployments.keys()
    }

    /// Names of the TeamModels held.
    pub fn team_model_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.team_models.keys()
    }
}

/// Team a ModelDeployment is private to.
pub(crate) fn team_of(md: &ModelDeployment) -> Option<&str> {
    md.spec.team.as_deref()
}

/// Creation order for conflicts: creationTimestamp, then namespace/name.
pub(crate) fn age_key(tm: &TeamModel) -> (Option<Time>, ObjectKey) {
    (tm.metadata.creation_timestamp.clone(), ObjectKey::of(&tm.metadata))
}
