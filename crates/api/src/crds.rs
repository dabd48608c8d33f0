//! The generated CustomResourceDefinitions, as written to `crds/` by `crdgen`.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{ModelDeployment, RoutingConfigResource, TeamModel};

/// The Helm release the checked-in CRDs belong to. `kubectl apply -f crds/` first, then
/// `helm install llmroute charts/llmroute -n llmroute`: Helm adopts objects that carry its
/// ownership metadata (and refuses those that do not), so the chart then upgrades them.
pub const RELEASE: (&str, &str) = ("llmroute", "llmroute");

fn owned(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let (name, namespace) = RELEASE;
    crd.metadata.labels = Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "Helm".to_owned())]));
    crd.metadata.annotations = Some(BTreeMap::from([
        ("helm.sh/resource-policy".to_owned(), "keep".to_owned()),
        ("meta.helm.sh/release-name".to_owned(), name.to_owned()),
        ("meta.helm.sh/release-namespace".to_owned(), namespace.to_owned()),
    ]));
    crd
}

/// `(file name, YAML)` of every CRD, in a stable order.
pub fn rendered() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    Ok(vec![
        ("modeldeployments.yaml", serde_yaml::to_string(&owned(ModelDeployment::crd()))?),
        ("teammodels.yaml", serde_yaml::to_string(&owned(TeamModel::crd()))?),
        ("routingconfigs.yaml", serde_yaml::to_string(&owned(RoutingConfigResource::crd()))?),
    ])
}
