//! Small builders for compile tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use llmroute_api::{ModelDeployment, ModelDeploymentSpec, RoutingPolicy, TeamModel, TeamModelSpec};
use llmroute_proto::v1;
use llmroute_snapshot::{Compiled, Diagnostic, Kind, ObjectKey};

pub const NS: &str = "llm";

pub fn md(name: &str, model: &str) -> ModelDeployment {
    let spec: ModelDeploymentSpec =
        serde_yaml::from_str(&format!("{{modelName: '{model}', upstream: {{baseUrl: 'http://127.0.0.1:9/v1'}}}}"))
            .unwrap();
    let mut md = ModelDeployment::new(name, spec);
    md.metadata.namespace = Some(NS.into());
    md
}

pub fn private_md(name: &str, model: &str, team: &str) -> ModelDeployment {
    let mut d = md(name, model);
    d.spec.team = Some(team.into());
    d
}

pub fn with_secret(mut d: ModelDeployment, secret: &str, key: &str) -> ModelDeployment {
    d.spec.upstream.api_key_secret_ref = Some(llmroute_api::SecretKeyRef { name: secret.into(), key: key.into() });
    d
}

pub fn labelled(mut d: ModelDeployment, key: &str, value: &str) -> ModelDeployment {
    d.metadata.labels.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
    d
}

pub fn tm(name: &str, team: &str, public: &str, target: &str) -> TeamModel {
    let spec: TeamModelSpec =
        serde_yaml::from_str(&format!("{{team: {team}, publicName: '{public}', {target}}}")).unwrap();
    let mut tm = TeamModel::new(name, spec);
    tm.metadata.namespace = Some(NS.into());
    tm
}

pub fn with_routing(mut t: TeamModel, yaml: &str) -> TeamModel {
    t.spec.routing = Some(serde_yaml::from_str::<RoutingPolicy>(yaml).unwrap());
    t
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    }
}

pub fn key(name: &str) -> ObjectKey {
    ObjectKey::new(NS, name)
}

pub fn diagnostic<'a>(c: &'a Compiled, kind: Kind, name: &str) -> &'a Diagnostic {
    c.diagnostics()
        .iter()
        .find(|d| d.kind == kind && d.key == key(name))
        .unwrap_or_else(|| panic!("no diagnostic for {kind} {name}: {:?}", c.diagnostics()))
}

pub fn ids(view: &v1::Snapshot) -> Vec<&str> {
    view.deployments.iter().map(|d| d.id.as_str()).collect()
}

pub fn route<'a>(view: &'a v1::Snapshot, public: &str) -> Option<&'a v1::Route> {
    view.routes.iter().find(|r| r.public_name == public)
}
