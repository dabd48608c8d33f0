//! Resolving a TeamModel's target to deployment ids, with the checks a schema cannot make.

use std::collections::BTreeMap;

use llmroute_api::{ModelDeployment, TeamModel};

use crate::store::{Admitted, team_of};
use crate::{ObjectKey, Reason, selector};

/// What the compile knows about each ModelDeployment when resolving TeamModels.
pub(crate) struct DeploymentIndex<'a> {
    /// Every ModelDeployment held, with whether the compile accepted it.
    pub all: BTreeMap<&'a ObjectKey, (&'a Admitted<ModelDeployment>, bool)>,
    /// Accepted global deployments by modelName.
    pub global_by_model: BTreeMap<&'a str, Vec<&'a ObjectKey>>,
}

/// The ids of the deployments a TeamModel targets, or why it is rejected.
pub(crate) fn resolve_targets(
    key: &ObjectKey,
    tm: &TeamModel,
    index: &DeploymentIndex<'_>,
) -> Result<Vec<String>, (Reason, String)> {
    let spec = &tm.spec;
    let team = spec.team.as_str();
    let mut ids = if let Some(names) = &spec.deployments {
        by_name(key, team, names, index)?
    } else if let Some(sel) = &spec.selector {
        by_selector(key, team, sel, index)?
    } else {
        let model = spec.model_name.as_deref().unwrap_or_default();
        let ids: Vec<String> = index.global_by_model.get(model).into_iter().flatten().map(|k| k.to_string()).collect();
        if ids.is_empty() {
            return Err((Reason::NoDeployments, format!("no accepted global ModelDeployment has modelName {model:?}")));
        }
        ids
    };
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn cross_team(team: &str, key: &ObjectKey, md: &ModelDeployment) -> Option<(Reason, String)> {
    let owner = team_of(md)?;
    (owner != team).then(|| {
        (Reason::CrossTeamReference, format!("ModelDeployment {key} is private to team {owner:?}, not {team:?}"))
    })
}

fn by_name(
    tm: &ObjectKey,
    team: &str,
    names: &[String],
    index: &DeploymentIndex<'_>,
) -> Result<Vec<String>, (Reason, String)> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let key = ObjectKey::new(&tm.namespace, name);
        let Some((admitted, accepted)) = index.all.get(&key) else {
            return Err((Reason::DeploymentNotFound, format!("ModelDeployment {key} does not exist")));
        };
        if let Some(rejection) = cross_team(team, &key, &admitted.object) {
            return Err(rejection);
        }
        if !accepted {
            return Err((
                Reason::DeploymentNotAccepted,
                format!("ModelDeployment {key} is not accepted; see its status"),
            ));
        }
        ids.push(key.to_string());
    }
    Ok(ids)
}

fn by_selector(
    tm: &ObjectKey,
    team: &str,
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    index: &DeploymentIndex<'_>,
) -> Result<Vec<String>, (Reason, String)> {
    let mut ids = Vec::new();
    let in_namespace = index.all.iter().filter(|(k, _)| k.namespace == tm.namespace);
    for (key, (admitted, accepted)) in in_namespace {
        let labels = admitted.object.metadata.labels.clone().unwrap_or_default();
        if !selector::matches(sel, &labels).map_err(|e| (Reason::Invalid, e.to_string()))? {
            continue;
        }
        if let Some(rejection) = cross_team(team, key, &admitted.object) {
            return Err(rejection);
        }
        if *accepted {
            ids.push(key.to_string());
        }
    }
    if ids.is_empty() {
        return Err((
            Reason::NoDeployments,
            format!("selector matches no accepted ModelDeployment in namespace {}", tm.namespace),
        ));
    }
    Ok(ids)
}
