//! The generated CustomResourceDefinitions, as written to `crds/` by `crdgen`.

use kube::CustomResourceExt;

use crate::{ModelDeployment, RoutingConfigResource, TeamModel};

/// `(file name, YAML)` of every CRD, in a stable order.
pub fn rendered() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    Ok(vec![
        ("modeldeployments.yaml", serde_yaml::to_string(&ModelDeployment::crd())?),
        ("teammodels.yaml", serde_yaml::to_string(&TeamModel::crd())?),
        ("routingconfigs.yaml", serde_yaml::to_string(&RoutingConfigResource::crd())?),
    ])
}
