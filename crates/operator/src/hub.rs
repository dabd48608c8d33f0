//! The views the operator serves, built once per compile: the global part and every team's
//! overlay, each encoded and gzip-compressed once (the same bytes go to every subscriber),
//! re-used from the previous build when its digest did not change.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use llmroute_proto::v1;
use llmroute_snapshot::Compiled;

/// One part, encoded and compressed.
#[derive(Debug, PartialEq, Eq)]
pub struct EncodedPart {
    /// Hex digest of the part's canonical encoding.
    pub digest: String,
    /// gzip of that encoding.
    pub gzip: Bytes,
}

impl EncodedPart {
    fn new(digest: String, part: &v1::Part) -> Self {
        Self { digest, gzip: Bytes::from(llmroute_proto::part::compress(part)) }
    }
}

/// What one team's subscribers get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamView {
    /// The view's version (content hash).
    pub version: String,
    /// The shared global part.
    pub global: Arc<EncodedPart>,
    /// The team's overlay (empty for a team with no entries of its own).
    pub overlay: Arc<EncodedPart>,
}

/// Every view of one build.
#[derive(Debug)]
pub struct Built {
    /// Increases with every build: a sidecar never moves to a lower one.
    pub watermark: u64,
    /// When the change behind this build was first detected (for propagation latency).
    pub detected: std::time::Instant,
    /// The compile the views come from (diagnostics, versions).
    pub compiled: Arc<Compiled>,
    global: Arc<EncodedPart>,
    overlays: HashMap<String, Arc<EncodedPart>>,
    empty: Arc<EncodedPart>,
}

impl Built {
    /// Encodes `compiled`'s parts, re-using those of `previous` whose digest is unchanged.
    pub fn new(compiled: Compiled, watermark: u64, detected: std::time::Instant, previous: Option<&Built>) -> Self {
        let reuse = |digest: &str, part: &dyn Fn() -> v1::Part| -> Arc<EncodedPart> {
            previous
                .and_then(|p| p.find(digest))
                .unwrap_or_else(|| Arc::new(EncodedPart::new(digest.to_owned(), &part())))
        };
        let (digest, _) = compiled.global_part();
        let global = reuse(&digest, &|| compiled.global_part().1);
        let (digest, _) = compiled.team_part("");
        let empty = reuse(&digest, &|| v1::Part::default());
        let overlays = compiled
            .teams()
            .map(|team| {
                let (digest, part) = compiled.team_part(team);
                (team.to_owned(), reuse(&digest, &|| part.clone()))
            })
            .collect();
        Self { watermark, detected, compiled: Arc::new(compiled), global, overlays, empty }
    }

    fn find(&self, digest: &str) -> Option<Arc<EncodedPart>> {
        if self.global.digest == digest {
            return Some(self.global.clone());
        }
        if self.empty.digest == digest {
            return Some(self.empty.clone());
        }
        self.overlays.values().find(|p| p.digest == digest).cloned()
    }

    /// Every deployment of every part.
    pub fn all_deployments(&self) -> impl Iterator<Item = &v1::Deployment> {
        self.compiled.parts().flat_map(|(_, deployments, _)| deployments.iter())
    }

    /// Every route of every part, with its team ("" for global routes).
    pub fn all_routes(&self) -> impl Iterator<Item = (&str, &v1::Route)> {
        self.compiled.parts().flat_map(|(team, _, routes)| routes.iter().map(move |r| (team, r)))
    }

    /// The view of `team` (any team: one with no entries of its own sees the global part).
    pub fn view(&self, team: &str) -> TeamView {
        TeamView {
            version: self.compiled.version(team),
            global: self.global.clone(),
            overlay: self.overlays.get(team).unwrap_or(&self.empty).clone(),
        }
    }
}

#[cfg(test)]
mod tests;
