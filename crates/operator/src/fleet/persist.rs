//! The merged posteriors on disk (manifests mode, `--fleet-state`): one JSON document written
//! atomically (a temporary file, synced, then renamed over the old one), so that a crash
//! mid-write leaves the previous state, never half of one.

use std::io::Write as _;
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
        .map(|c| ((c.group, c.request_type, c.deployment), Posterior { alpha: c.alpha, beta: c.beta }))
        .collect())
}

/// Writes `cells` atomically.
pub fn save(path: &Path, cells: &[(Cell, Posterior)]) -> Result<(), PersistError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(PersistError::NotAFile);
    }
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
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
