//! The routing config file: strict parse, last good kept on rejection.

use std::path::{Path, PathBuf};

use llmroute_api::{ConfigError, RoutingConfig};

use crate::MAX_FILE_BYTES;

/// Why the routing config file is not in force.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("routing config {}: {error}", path.display())]
pub struct ConfigProblem {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong, naming the field.
    pub error: ConfigError,
}

/// Reads and validates the config file.
pub(crate) fn read(path: &Path) -> Result<RoutingConfig, ConfigProblem> {
    let fail = |error: ConfigError| ConfigProblem { path: path.to_owned(), error };
    let metadata = std::fs::metadata(path).map_err(|e| fail(ConfigError::Syntax(format!("cannot be read: {e}"))))?;
    if !metadata.is_file() {
        return Err(fail(ConfigError::Syntax("not a regular file".into())));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(fail(ConfigError::Syntax(format!("larger than {MAX_FILE_BYTES} bytes"))));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(ConfigError::Syntax(format!("cannot be read: {e}"))))?;
    RoutingConfig::parse(&text).map_err(fail)
}
