//! The verdict of the compile on one object: what its `Accepted` condition says.

use std::fmt;

use crate::ObjectKey;

/// Kind of a reported object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A ModelDeployment.
    ModelDeployment,
    /// A TeamModel.
    TeamModel,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ModelDeployment => "ModelDeployment",
            Self::TeamModel => "TeamModel",
        })
    }
}

/// One-word reason of an `Accepted` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Valid and resolvable.
    Accepted,
    /// Breaks a schema rule, or did not parse.
    Invalid,
    /// The referenced Secret or key does not exist.
    SecretNotFound,
    /// The referenced Secret value cannot be sent as a header (newline, control character).
    SecretInvalid,
    /// A named ModelDeployment does not exist.
    DeploymentNotFound,
    /// A named ModelDeployment exists but is itself rejected.
    DeploymentNotAccepted,
    /// The target selects another team's private deployment.
    CrossTeamReference,
    /// The selector or alias matches no accepted deployment.
    NoDeployments,
    /// An older object already claims this team/public name.
    Conflict,
    /// A fallback names nothing this team can call.
    UnknownFallback,
    /// The object's team is not its namespace's team (or a global object lives in a namespace
    /// not trusted for global objects).
    TeamMismatch,
}

impl Reason {
    /// The reason string written to the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Invalid => "Invalid",
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretInvalid => "SecretInvalid",
            Self::DeploymentNotFound => "DeploymentNotFound",
            Self::DeploymentNotAccepted => "DeploymentNotAccepted",
            Self::CrossTeamReference => "CrossTeamReference",
            Self::NoDeployments => "NoDeployments",
            Self::Conflict => "Conflict",
            Self::UnknownFallback => "UnknownFallback",
            Self::TeamMismatch => "TeamMismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The compile's verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Kind of the object.
    pub kind: Kind,
    /// Its namespace/name.
    pub key: ObjectKey,
    /// `metadata.generation` the verdict is about, when known.
    pub generation: Option<i64>,
    /// The team whose view includes it; `None` = every view (a global deployment).
    pub team: Option<String>,
    /// Why it is (not) accepted.
    pub reason: Reason,
    /// What the user must fix; never holds a credential.
    pub message: String,
    /// Accepted on borrowed time: a dependency is gone and its last good state is kept for a
    /// grace period (the `Degraded` condition's message).
    pub degraded: Option<String>,
}

impl Diagnostic {
    /// Whether the object is in the snapshot.
    pub fn accepted(&self) -> bool {
        self.reason == Reason::Accepted
    }
}
