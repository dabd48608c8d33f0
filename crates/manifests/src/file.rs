//! One manifest file: its last good documents, and what went wrong with its newest version.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use llmroute_api::manifest::{Document, parse_documents};

use crate::MAX_FILE_BYTES;
use crate::stamp::Stamp;

/// Why the newest version of a file is not in force (its last good documents are).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct FileProblem {
    /// The file.
    pub path: PathBuf,
    /// Line and column (1-based) of a syntax error.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// A file's state between polls.
#[derive(Debug, Default)]
pub(crate) struct FileState {
    /// Stamp of the version last read (good or not).
    pub read: Option<Stamp>,
    /// A newer stamp waiting to settle, and since when it has been seen.
    pub pending: Option<(Stamp, Instant)>,
    /// The documents of the last version that parsed.
    pub documents: Vec<Document>,
    /// What is wrong with the last version read, if anything.
    pub problem: Option<FileProblem>,
}

/// What reading a file's current version gave.
pub(crate) enum Read {
    /// The file changed while it was read: try again later.
    Moving,
    /// The version's documents, or why they are not usable (with any documents before a
    /// syntax error, which are not used: the file keeps its last good state whole).
    Parsed(Stamp, Result<Vec<Document>, FileProblem>),
}

fn problem(path: &Path, location: Option<(usize, usize)>, message: impl Into<String>) -> FileProblem {
    FileProblem { path: path.to_owned(), location, message: message.into() }
}

/// Reads and parses `path`; `stamp` is its stamp as listed just before.
pub(crate) fn read(path: &Path, stamp: Stamp) -> Read {
    if stamp.len() > MAX_FILE_BYTES {
        return Read::Parsed(stamp, Err(problem(path, None, format!("larger than {MAX_FILE_BYTES} bytes"))));
    }
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text));
    if Stamp::read(path) != Some(stamp) {
        return Read::Moving;
    }
    if let Err(e) = read {
        return Read::Parsed(stamp, Err(problem(path, None, format!("cannot be read: {e}"))));
    }
    let (documents, error) = parse_documents(&text);
    let unreadable_secret = documents.iter().find_map(|d| match d {
        Document::UnreadableSecret { name, message } => Some(format!("Secret {name}: {message}")),
        _ => None,
    });
    let parsed = match (error, unreadable_secret) {
        // A Secret has no status to report on: the file is not applied, and keeps what it held
        // (the Secret's last good version with it).
        (None, Some(secret)) => Err(problem(path, None, secret)),
        (None, None) => Ok(documents),
        (Some(e), _) => {
            let location = e.source.location().map(|l| (l.line(), l.column()));
            Err(problem(path, location, format!("document {}: {}", e.index + 1, e.source)))
        }
    };
    Read::Parsed(stamp, parsed)
}
