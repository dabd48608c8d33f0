//! The manifests-directory source: every ModelDeployment, TeamModel and Secret document of the
//! YAML/JSON files in a directory, plus the routing config file, kept as a
//! [`llmroute_snapshot::ResourceStore`] that the sidecar (standalone) and the operator compile.
//!
//! Nothing serving is lost while files change:
//! - a file is read only once its size and modification time have stayed the same for the
//!   settle period, and the read is discarded if the file changed while it was read, so an
//!   editor's slow in-place save is never seen half-written;
//! - each file keeps its own last good documents: a file that stops parsing (or becomes
//!   unreadable or too large) keeps what it held, its error names file, line and column, and
//!   every other file still reloads;
//! - the routing config is strict (unknown fields, broken rules) and a rejected one leaves the
//!   last good config in force;
//! - paths that cannot be read as files (FIFOs, symlink loops, unreadable files) are skipped
//!   and logged once per path, not on every poll.

#![forbid(unsafe_code)]

mod config;
mod dir;
mod file;
mod listing;
mod private_file;
mod rejections;
mod stamp;

pub use config::ConfigProblem;
pub use dir::{ManifestDir, OpenError, Problems};
pub use file::FileProblem;
pub use private_file::write_private;
pub use rejections::RejectionLog;

/// Largest manifest or config file read, bytes; a larger file keeps its last good state.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
