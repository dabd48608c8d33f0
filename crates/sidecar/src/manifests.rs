//! Standalone mode: compile the resources of a directory with `llmroute-snapshot`, exactly as
//! the operator does, re-reading the directory whenever a file changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use llmroute_api::RoutingConfig;
use llmroute_api::manifest::parse_documents;
use llmroute_proto::v1;
use llmroute_snapshot::{Diagnostic, ResourceStore, compile};

use crate::health::HealthProber;
use crate::routing::RoutingHandle;

/// Why a directory could not be compiled (the previous snapshot keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The routing config does not parse.
    #[error("routing config {path}: {source}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The YAML error.
        source: serde_yaml::Error,
    },
}

/// A manifests directory and routing config.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    /// Directory of YAML manifests (`*.yaml`, `*.yml`, `*.json`, not recursive).
    pub dir: PathBuf,
    /// Optional routing config file.
    pub config: Option<PathBuf>,
    /// Team whose view is served.
    pub team: String,
}

/// The result of one load.
#[derive(Debug)]
pub struct Loaded {
    /// The team's view.
    pub snapshot: v1::Snapshot,
    /// Every object's verdict.
    pub diagnostics: Vec<Diagnostic>,
    /// Files or documents that were not YAML at all.
    pub file_errors: Vec<String>,
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl ManifestSource {
    fn files(&self) -> Result<Vec<PathBuf>, LoadError> {
        let read = std::fs::read_dir(&self.dir).map_err(|source| LoadError::Read { path: self.dir.clone(), source })?;
        let mut files: Vec<PathBuf> = read
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Size and modification time of every input: a change means reload.
    pub fn fingerprint(&self) -> Result<Fingerprint, LoadError> {
        let mut files = self.files()?;
        files.extend(self.config.clone());
        Ok(files
            .into_iter()
            .map(|p| {
                let meta = std::fs::metadata(&p).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (p, len, modified)
            })
            .collect())
    }

    /// Reads and compiles everything. Objects identical to those in `previous` keep their
    /// schema verdict (no second CEL evaluation); the new store is returned for the next load.
    pub fn load(&self, previous: Option<&ResourceStore>) -> Result<(Loaded, ResourceStore), LoadError> {
        let config = match &self.config {
            None => RoutingConfig::default(),
            Some(path) => {
                let text = read(path)?;
                RoutingConfig::from_yaml(&text).map_err(|source| LoadError::Config { path: path.clone(), source })?
            }
        };
        let mut store = ResourceStore::new(config);
        let mut file_errors = Vec::new();
        for file in self.files()? {
            let (documents, error) = parse_documents(&read(&file)?);
            if let Some(e) = error {
                file_errors.push(format!("{}: {e}", file.display()));
            }
            for document in documents {
                store.apply_document_reusing(document, previous);
            }
        }
        let compiled = compile(&store);
        let loaded =
            Loaded { snapshot: compiled.view(&self.team), diagnostics: compiled.diagnostics().to_vec(), file_errors };
        Ok((loaded, store))
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })
}

/// What a watcher remembers between loads.
#[derive(Default)]
pub struct Memory {
    /// Rejections already logged, by object.
    reported: BTreeMap<String, String>,
    /// The previous load's store (its verdicts are reused for unchanged objects).
    store: Option<ResourceStore>,
}

/// Loads once and applies; logs what was rejected. Returns whether a snapshot was applied.
pub fn reload(source: &ManifestSource, routing: &RoutingHandle, prober: &HealthProber, memory: &mut Memory) -> bool {
    let loaded = match source.load(memory.store.as_ref()) {
        Ok((loaded, store)) => {
            memory.store = Some(store);
            loaded
        }
        Err(e) => {
            tracing::error!(error = %e, "manifests not applied; the previous snapshot keeps serving");
            return false;
        }
    };
    for e in &loaded.file_errors {
        tracing::error!(error = %e, "manifest file is not valid YAML; documents after the error are ignored");
    }
    let mut now_reported = BTreeMap::new();
    for d in loaded.diagnostics.iter().filter(|d| !d.accepted()) {
        let id = format!("{} {}", d.kind, d.key);
        let line = format!("{}: {}", d.reason, d.message);
        if memory.reported.get(&id) != Some(&line) {
            tracing::warn!(object = %id, reason = %d.reason, message = %d.message, "object rejected and excluded");
        }
        now_reported.insert(id, line);
    }
    memory.reported = now_reported;
    let version = loaded.snapshot.version.clone();
    let deployments = loaded.snapshot.deployments.clone();
    match routing.apply(loaded.snapshot) {
        Ok(true) => {
            tracing::info!(%version, deployments = deployments.len(), "snapshot applied");
            prober.reconcile(&deployments);
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::error!(error = %e, %version, "snapshot rejected; the previous one keeps serving");
            false
        }
    }
}

/// Polls the directory every `interval` and reloads on any change.
pub async fn watch(source: ManifestSource, routing: Arc<RoutingHandle>, prober: Arc<HealthProber>, interval: Duration) {
    let mut memory = Memory::default();
    let mut last = source.fingerprint().ok();
    reload(&source, &routing, &prober, &mut memory);
    loop {
        tokio::time::sleep(interval).await;
        let current = source.fingerprint().ok();
        if current != last {
            last = current;
            reload(&source, &routing, &prober, &mut memory);
        }
    }
}
