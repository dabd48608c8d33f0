//! Writing a file that holds state (a sidecar's snapshot cache, the operator's adaptive
//! state) so that a crash leaves the old version or the new, never half of one, and nothing
//! planted beside it is followed.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary names within one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path`: a new temporary file beside it (a fresh name, created exclusively
/// and mode 0600, so an existing file, symlink or FIFO of that name is an error, never
/// followed), synced, then renamed over `path`. A `path` that exists and is not a regular file
/// (a directory, a FIFO, a symlink) is never replaced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(std::io::Error::other(format!("{} is not a regular file", path.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{unique:x}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_file_whole_and_never_writes_through_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            let victim = dir.path().join("victim");
            std::fs::write(&victim, "VICTIM").unwrap();
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&victim, &link).unwrap();
            assert!(write_private(&link, b"x").is_err());
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "VICTIM");
        }
        assert!(write_private(dir.path(), b"x").is_err(), "a directory is not replaced");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).collect();
        assert!(left.iter().all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")), "no temporary file left");
    }
}
