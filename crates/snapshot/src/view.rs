//! The compile's result: a shared global part, one part per team, and the diagnostics.
//! A team view is the global part plus the team's own part, materialized on demand.

use std::collections::BTreeMap;
use std::sync::Arc;

use llmroute_proto::v1;
use prost::Message;

use crate::Diagnostic;
use crate::version::{self, Digest32};

/// Deployments and routes of one part, with the digest of their canonical encoding.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Part {
    /// Sorted by id.
    pub deployments: Vec<v1::Deployment>,
    /// Sorted by (kind, public_name).
    pub routes: Vec<v1::Route>,
    pub digest: Digest32,
}

impl Part {
    pub fn new(deployments: Vec<v1::Deployment>, routes: Vec<v1::Route>) -> Self {
        let canonical = v1::Snapshot { deployments, routes, ..Default::default() };
        let digest = version::digest(&canonical.encode_to_vec());
        Self { deployments: canonical.deployments, routes: canonical.routes, digest }
    }

    fn empty() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    /// The part as its wire message (its encoding has this part's digest).
    pub fn wire(&self) -> v1::Part {
        v1::Part { deployments: self.deployments.clone(), routes: self.routes.clone() }
    }
}

/// Everything one compile produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    pub(crate) global: Arc<Part>,
    pub(crate) teams: BTreeMap<String, Part>,
    pub(crate) empty: Part,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub(crate) fn new(global: Part, teams: BTreeMap<String, Part>, diagnostics: Vec<Diagnostic>) -> Self {
        Self { global: Arc::new(global), teams, empty: Part::empty(), diagnostics }
    }

    /// One verdict per object, sorted by kind and namespace/name.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Teams that have entries of their own (TeamModels or private deployments).
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.teams.keys().map(String::as_str)
    }

    fn own(&self, team: &str) -> &Part {
        self.teams.get(team).unwrap_or(&self.empty)
    }

    /// Version of `team`'s view (any team may ask: one with no entries sees the global part).
    pub fn version(&self, team: &str) -> String {
        version::view_version(team, &self.global.digest, &self.own(team).digest)
    }

    /// Every part without copying: the global one (team "") first, then each team's own.
    pub fn parts(&self) -> impl Iterator<Item = (&str, &[v1::Deployment], &[v1::Route])> {
        std::iter::once(("", self.global.as_ref()))
            .chain(self.teams.iter().map(|(team, part)| (team.as_str(), part)))
            .map(|(team, part)| (team, part.deployments.as_slice(), part.routes.as_slice()))
    }

    /// Whether `team`'s view holds deployment `id`.
    pub fn holds(&self, team: &str, id: &str) -> bool {
        let find = |part: &Part| part.deployments.binary_search_by(|d| d.id.as_str().cmp(id)).is_ok();
        find(&self.global) || find(self.own(team))
    }

    /// The whole view of `team`: every global entry plus the team's own.
    pub fn view(&self, team: &str) -> v1::Snapshot {
        let (global, own) = (self.global.wire(), self.own(team).wire());
        llmroute_proto::view::assemble(self.version(team), team, &global, &own)
    }

    /// Digest (hex) of the global part.
    pub fn global_digest(&self) -> String {
        hex::encode(self.global.digest)
    }

    /// The global part, shared by every team's view, and its digest (hex).
    pub fn global_part(&self) -> (String, v1::Part) {
        (hex::encode(self.global.digest), self.global.wire())
    }

    /// `team`'s own part (empty for a team with no entries of its own) and its digest (hex).
    pub fn team_part(&self, team: &str) -> (String, v1::Part) {
        let own = self.own(team);
        (hex::encode(own.digest), own.wire())
    }
}
