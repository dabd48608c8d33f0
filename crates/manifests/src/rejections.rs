//! Logging the compile's rejections once per change, not on every build.

use std::collections::BTreeMap;

use llmroute_snapshot::Diagnostic;

/// The rejections logged so far, by object.
#[derive(Debug, Default)]
pub struct RejectionLog {
    reported: BTreeMap<String, String>,
}

impl RejectionLog {
    /// Logs each rejected object whose verdict is new or changed; forgets accepted ones.
    pub fn report(&mut self, diagnostics: &[Diagnostic]) {
        let mut now = BTreeMap::new();
        for d in diagnostics.iter().filter(|d| !d.accepted()) {
            let id = format!("{} {}", d.kind, d.key);
            let line = format!("{}: {}", d.reason, d.message);
            if self.reported.get(&id) != Some(&line) {
                tracing::warn!(object = %id, reason = %d.reason, message = %d.message, "object rejected and excluded");
            }
            now.insert(id, line);
        }
        self.reported = now;
    }
}
