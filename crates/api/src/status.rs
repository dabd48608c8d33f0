//! Status shared by both kinds: conditions, observed generation, snapshot and sidecar counts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `status` of a ModelDeployment or TeamModel.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `Ready` and (ModelDeployment only) `Healthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Version of the newest snapshot that includes this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<String>,
    /// Sidecars of the affected team(s) that are connected / have acknowledged that snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars: Option<SidecarCounts>,
}

/// How many sidecars are connected and how many acknowledged the current snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SidecarCounts {
    /// Sidecars that acknowledged `snapshotVersion`.
    pub acknowledged: u32,
    /// Sidecars currently connected.
    pub connected: u32,
}

/// The condition types llmroute writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Valid and resolvable.
    Accepted,
    /// Included in the snapshot the connected sidecars have acknowledged.
    Ready,
    /// Latest active probe (ModelDeployment only).
    Healthy,
}

impl ConditionType {
    /// The `type` string of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Ready => "Ready",
            Self::Healthy => "Healthy",
        }
    }
}
