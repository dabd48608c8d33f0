//! The merged posteriors on disk (manifests mode, `--fleet-state`): one JSON document written
//! atomically (a new temporary file of a random name, created exclusively so that nothing
//! planted there is followed, synced, then renamed over the old one), so that a crash
//! mid-write leaves the previous state, never half of one. A file that cannot be read is
//! moved aside, never overwritten.

use std::path::Path;

use llmroute_fleet::learning::Cell;
use llmroute_router::adaptive::Posterior;
use serde::{Deserialize, Serialize};

/// Largest state file read, bytes.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The document's format revision.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    format: u32,
    cells: Vec<SavedCell>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SavedCell {
    group: String,
    request_type: String,
    deployment: String,
    alpha: f64,
    beta: f64,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a state document of this format.
    #[error("not an llmroute adaptive state (format {FORMAT}): {0}")]
    Format(String),
    /// Not a regular file of bounded size.
    #[error("not a regular file of at most {MAX_BYTES} bytes")]
    NotAFile,
}

/// The saved cells; none when the file does not exist yet.
pub fn load(path: &Path) -> Result<Vec<(Cell, Posterior)>, PersistError> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if !metadata.is_file() || metadata.len() > MAX_BYTES {
        return Err(PersistError::NotAFile);
    }
    let text = std::fs::read(path)?;
    let doc: Document = serde_json::from_slice(&text).map_err(|e| PersistError::Format(e.to_string()))?;
    if doc.format != FORMAT {
        return Err(PersistError::Format(format!("format {}", doc.format)));
    }
    Ok(doc
        .cells
        .into_iter()
        // A cell of a request type this build does not know can never be used.
        .filter(|c| llmroute_router::RequestType::parse(&c.request_type).is_some())
        .map(|c| ((c.group, c.request_type, c.deployment), Posterior { alpha: c.alpha, beta: c.beta }))
        .collect())
}

/// Moves an unreadable state file aside (`<path>.bad-<unix ms>`), so the next save does not
/// destroy what a newer version or an operator might still recover. Returns the new name.
pub fn set_aside(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".bad-{}", crate::clock::now_ms()));
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Writes `cells` atomically.
pub fn save(path: &Path, cells: &[(Cell, Posterior)]) -> Result<(), PersistError> {
    let doc = Document {
        format: FORMAT,
        cells: cells
            .iter()
            .map(|((group, kind, deployment), p)| SavedCell {
                group: group.clone(),
                request_type: kind.clone(),
                deployment: deployment.clone(),
                alpha: p.alpha,
                beta: p.beta,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&doc).map_err(|e| PersistError::Format(e.to_string()))?;
    Ok(llmroute_manifests::write_private(path, &bytes)?)
}
