//! What identifies a version of a file without reading it.

use std::path::Path;
use std::time::SystemTime;

/// Size, modification time and inode of a file: a change of any means "changed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self { len: metadata.len(), modified: metadata.modified().ok(), inode }
    }

    /// The stamp of `path` now (symlinks followed), `None` when it cannot be read.
    pub fn read(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }

    pub fn len(&self) -> u64 {
        self.len
    }
}
