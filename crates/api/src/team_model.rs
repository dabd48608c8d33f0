//! TeamModel: what a team's applications may call, and how.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{routing_policy::RoutingPolicy, status::ResourceStatus};

/// A public model name offered to one team (`kubectl get tm`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmroute.dev",
    version = "v1alpha1",
    kind = "TeamModel",
    namespaced,
    cel,
    derive = "PartialEq",
    status = "ResourceStatus",
    shortname = "tm",
    category = "llmroute",
    printcolumn(json_path = ".spec.team", name = "Team", type_ = "string"),
    printcolumn(json_path = ".spec.publicName", name = "Public Name", type_ = "string"),
    printcolumn(json_path = ".spec.deployments", name = "Deployments", type_ = "string"),
    printcolumn(json_path = ".status.conditions[?(@.type==\"Accepted\")].status", name = "Accepted", type_ = "string"),
    printcolumn(json_path = ".status.conditions[?(@.type==\"Ready\")].status", name = "Ready", type_ = "string"),
    printcolumn(json_path = ".status.snapshotVersion", name = "Snapshot", type_ = "string"),
    printcolumn(
        json_path = ".status.sidecars.acknowledged",
        name = "Sidecars",
        type_ = "integer",
        description = "Connected sidecars that acknowledged the view holding this object"
    ),
    printcolumn(
        json_path = ".status.sidecars.connected",
        name = "Connected",
        type_ = "integer",
        priority = 1,
        description = "Connected sidecars whose views hold this object"
    ),
    printcolumn(json_path = ".metadata.creationTimestamp", name = "Age", type_ = "date")
)]
#[x_kube(validation = Rule::new("(has(self.deployments) ? 1 : 0) + (has(self.selector) ? 1 : 0) + (has(self.modelName) ? 1 : 0) == 1").message("exactly one target is required: deployments, selector or modelName"))]
#[serde(rename_all = "camelCase")]
pub struct TeamModelSpec {
    /// Team whose applications may call `publicName`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("team must be a DNS label (lowercase letters, digits, '-')"))]
    pub team: String,
    /// Name the team's applications request: exact, or a pattern with one `*`.
    #[x_kube(validation = Rule::new("self.size() >= 1 && self.size() <= 253").message("publicName must be 1..253 characters"))]
    #[x_kube(validation = Rule::new("self.indexOf('*') == self.lastIndexOf('*')").message("publicName may hold at most one '*'"))]
    pub public_name: String,
    /// Target: ModelDeployment names in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.size() >= 1").message("deployments must name at least one ModelDeployment"))]
    pub deployments: Option<Vec<String>>,
    /// Target: a label selector over ModelDeployments in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Target (alias): every global deployment whose `modelName` is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() >= 1").message("modelName must not be empty"))]
    pub model_name: Option<String>,
    /// Routing overrides for this team's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingPolicy>,
}
