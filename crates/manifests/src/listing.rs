//! Which paths of the directory are manifest files. Paths that look like manifests but cannot
//! be read as regular files are skipped and reported once per path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::stamp::Stamp;

/// The manifest files of a directory with their stamps, and the paths skipped with why.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub files: BTreeMap<PathBuf, Stamp>,
    pub skipped: BTreeMap<PathBuf, String>,
}

fn is_manifest_name(path: &Path) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
    !hidden && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// Lists `dir` (not recursively). Directories and other names are ignored silently.
pub(crate) fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if !is_manifest_name(&path) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                listing.files.insert(path, Stamp::of(&m));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                listing.skipped.insert(path, "not a regular file (FIFO, socket or device)".into());
            }
            Err(e) => {
                listing.skipped.insert(path, format!("cannot be read: {e}"));
            }
        }
    }
    Ok(listing)
}
