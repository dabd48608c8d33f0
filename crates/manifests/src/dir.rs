//! A manifests directory and its routing config, polled into a resource store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llmroute_api::RoutingConfig;
use llmroute_snapshot::ResourceStore;

use crate::config::{self, ConfigProblem};
use crate::file::{self, FileProblem, FileState, Read};
use crate::listing;
use crate::stamp::Stamp;

/// Why a manifests source cannot start: a bad routing config is an operator error to fix,
/// not something to serve around. (A directory that does not exist yet is not an error: it
/// may be a mount or a git checkout still on its way; see [`ManifestDir::listed`].)
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The routing config file is invalid.
    #[error("{0}")]
    Config(#[from] ConfigProblem),
}

/// What is currently not in force, for logs, status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Files whose newest version is not in force.
    pub files: Vec<FileProblem>,
    /// The rejected routing config, if the newest one is not in force.
    pub config: Option<ConfigProblem>,
    /// Paths skipped, with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Objects defined in more than one file: what, and the files (the last one wins).
    pub duplicates: Vec<(String, Vec<PathBuf>)>,
}

/// A watched routing config file.
#[derive(Debug, Default)]
struct ConfigFile {
    read: Option<Stamp>,
    pending: Option<(Stamp, Instant)>,
    problem: Option<ConfigProblem>,
}

/// A manifests directory (not recursive: `*.yaml`, `*.yml`, `*.json`) and routing config.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    config_path: Option<PathBuf>,
    settle: Duration,
    files: BTreeMap<PathBuf, FileState>,
    skipped: BTreeMap<PathBuf, String>,
    config: RoutingConfig,
    config_file: ConfigFile,
    config_rejections: u64,
    listing_failed: bool,
    listed: bool,
    duplicates: Vec<(String, Vec<PathBuf>)>,
    store: ResourceStore,
}

/// Whether a file whose current stamp is `current` should be read now: it differs from what
/// was read and has stayed the same for `settle` (at once when `settle` is zero).
fn due(
    read: Option<Stamp>,
    pending: &mut Option<(Stamp, Instant)>,
    current: Stamp,
    now: Instant,
    settle: Duration,
) -> bool {
    if read == Some(current) {
        *pending = None;
        return false;
    }
    match pending {
        Some((stamp, since)) if *stamp == current => now.saturating_duration_since(*since) >= settle,
        _ => {
            *pending = Some((current, now));
            settle.is_zero()
        }
    }
}

impl ManifestDir {
    /// Reads the directory and config once, at once (no settle). An invalid config is an
    /// error; a file that does not parse is a [`Problems`] entry; a directory that cannot be
    /// listed yet is read on a later poll.
    pub fn open(dir: &Path, config_path: Option<&Path>, settle: Duration) -> Result<Self, OpenError> {
        let config = match config_path {
            Some(path) => config::read(path)?,
            None => RoutingConfig::default(),
        };
        let mut source = Self {
            dir: dir.to_owned(),
            config_path: config_path.map(Path::to_owned),
            settle,
            files: BTreeMap::new(),
            skipped: BTreeMap::new(),
            config,
            config_file: ConfigFile { read: config_path.and_then(Stamp::read), ..ConfigFile::default() },
            config_rejections: 0,
            listing_failed: false,
            listed: false,
            duplicates: Vec::new(),
            store: ResourceStore::default(),
        };
        source.list(Instant::now());
        source.rebuild();
        Ok(source)
    }

    /// Whether the directory has been listed at least once: before that the store holds
    /// nothing yet, which is not the same as a directory that holds nothing.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Checks for changes; returns whether the store changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        let config_changed = self.poll_config(now);
        let files_changed = self.list(now);
        let changed = config_changed || files_changed;
        if changed {
            self.rebuild();
        }
        changed
    }

    /// The resources in force.
    pub fn store(&self) -> &ResourceStore {
        &self.store
    }

    /// The routing config in force.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// Routing configs rejected since start (each rejected version counts once).
    pub fn config_rejections(&self) -> u64 {
        self.config_rejections
    }

    /// What is currently not in force.
    pub fn problems(&self) -> Problems {
        Problems {
            files: self.files.values().filter_map(|f| f.problem.clone()).collect(),
            config: self.config_file.problem.clone(),
            skipped: self.skipped.iter().map(|(p, why)| (p.clone(), why.clone())).collect(),
            duplicates: self.duplicates.clone(),
        }
    }

    fn poll_config(&mut self, now: Instant) -> bool {
        let Some(path) = self.config_path.clone() else { return false };
        let Some(current) = Stamp::read(&path) else {
            if self.config_file.problem.is_none() {
                tracing::error!(config = %path.display(), "routing config cannot be read; the last good one keeps serving");
            }
            let error = llmroute_api::ConfigError::Syntax("cannot be read".into());
            self.config_file.problem = Some(ConfigProblem { path, error });
            self.config_file.read = None;
            return false;
        };
        let watch = &mut self.config_file;
        if !due(watch.read, &mut watch.pending, current, now, self.settle) {
            return false;
        }
        let parsed = config::read(&path);
        if Stamp::read(&path) != Some(current) {
            return false;
        }
        watch.read = Some(current);
        watch.pending = None;
        match parsed {
            Ok(config) => {
                if watch.problem.take().is_some() {
                    tracing::info!(config = %path.display(), "routing config accepted again");
                }
                let changed = config != self.config;
                self.config = config;
                changed
            }
            Err(problem) => {
                tracing::error!(error = %problem, "routing config rejected; the last good one keeps serving");
                self.config_rejections += 1;
                watch.problem = Some(problem);
                false
            }
        }
    }

    /// Lists the directory and syncs the files; returns whether any file's documents changed
    /// (the first successful listing always counts as a change).
    fn list(&mut self, now: Instant) -> bool {
        match listing::list(&self.dir) {
            Ok(listing) => {
                if self.listing_failed {
                    tracing::info!(dir = %self.dir.display(), "manifests directory readable");
                }
                self.listing_failed = false;
                let first = !self.listed;
                self.listed = true;
                self.sync_files(listing, now, first) || first
            }
            Err(e) => {
                if !self.listing_failed {
                    tracing::error!(dir = %self.dir.display(), error = %e, "manifests directory cannot be listed; everything read so far keeps serving");
                }
                self.listing_failed = true;
                false
            }
        }
    }

    /// Brings the per-file states up to `listing`; returns whether any file's documents changed.
    fn sync_files(&mut self, listing: listing::Listing, now: Instant, initial: bool) -> bool {
        for (path, why) in &listing.skipped {
            if self.skipped.get(path) != Some(why) {
                tracing::warn!(path = %path.display(), reason = %why, "skipping manifest path");
            }
        }
        self.skipped = listing.skipped;
        let before = self.files.len();
        self.files.retain(|path, _| listing.files.contains_key(path));
        let mut changed = self.files.len() != before;
        let settle = if initial { Duration::ZERO } else { self.settle };
        for (path, stamp) in listing.files {
            let state = self.files.entry(path.clone()).or_default();
            if !due(state.read, &mut state.pending, stamp, now, settle) {
                continue;
            }
            let Read::Parsed(stamp, parsed) = file::read(&path, stamp) else { continue };
            state.read = Some(stamp);
            state.pending = None;
            match parsed {
                Ok(documents) => {
                    if state.problem.take().is_some() {
                        tracing::info!(file = %path.display(), "manifest file parses again");
                    }
                    state.documents = documents;
                    changed = true;
                }
                Err(problem) => {
                    tracing::error!(error = %problem, kept = state.documents.len(), "manifest file not applied; its last good documents keep serving");
                    state.problem = Some(problem);
                }
            }
        }
        changed
    }

    fn rebuild(&mut self) {
        let mut store = ResourceStore::new(self.config.clone());
        let mut defined: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for (path, state) in &self.files {
            for document in &state.documents {
                if let Some(id) = identity(document) {
                    let paths = defined.entry(id).or_default();
                    if paths.last() != Some(path) {
                        paths.push(path.clone());
                    }
                }
                store.apply_document_reusing(document.clone(), Some(&self.store));
            }
        }
        let duplicates: Vec<(String, Vec<PathBuf>)> =
            defined.into_iter().filter(|(_, paths)| paths.len() > 1).collect();
        for (id, paths) in duplicates.iter().filter(|d| !self.duplicates.contains(d)) {
            let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            tracing::warn!(object = %id, files = %files.join(", "), "object defined in more than one file; the last file wins");
        }
        self.duplicates = duplicates;
        self.store = store;
    }
}

/// `Kind namespace/name` of a document that defines an object.
fn identity(document: &llmroute_api::manifest::Document) -> Option<String> {
    use llmroute_api::manifest::Document;
    use llmroute_snapshot::ObjectKey;
    match document {
        Document::ModelDeployment(md) => Some(format!("ModelDeployment {}", ObjectKey::of(&md.metadata))),
        Document::TeamModel(tm) => Some(format!("TeamModel {}", ObjectKey::of(&tm.metadata))),
        Document::Secret(secret) => Some(format!("Secret {}", ObjectKey::of(&secret.metadata))),
        Document::Unreadable(u) => {
            Some(format!("{} {}/{}", u.kind, u.namespace.as_deref().unwrap_or("default"), u.name))
        }
        Document::UnreadableSecret { .. } | Document::Skipped { .. } => None,
    }
}

#[cfg(test)]
mod tests;
