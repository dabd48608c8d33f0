//! Reading YAML manifests (many documents per file) into typed resources. Pure: text in,
//! values out. A document of a known kind that does not fit its type is kept as
//! [`Document::Unreadable`] so it can be reported on its own name; other kinds are skipped.

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_yaml::Value;

use crate::{ModelDeployment, TeamModel};

/// One YAML document of a manifest.
#[derive(Clone, Debug)]
pub enum Document {
    /// A ModelDeployment that fits its type (its schema rules are checked later).
    ModelDeployment(Box<ModelDeployment>),
    /// A TeamModel that fits its type.
    TeamModel(Box<TeamModel>),
    /// A core/v1 Secret.
    Secret(Box<Secret>),
    /// A ModelDeployment or TeamModel that does not fit its type.
    Unreadable(Unreadable),
    /// A Secret that does not fit its type (e.g. `data` that is not base64). It has no status
    /// to report on: the file holding it is not applied.
    UnreadableSecret {
        /// `namespace/name` as written.
        name: String,
        /// Where it does not fit (a field path; never a value).
        message: String,
    },
    /// Another kind (ConfigMaps, Deployments...): not ours.
    Skipped {
        /// Its `kind`, or "" when absent.
        kind: String,
    },
}

/// A ModelDeployment or TeamModel document that does not fit its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// `ModelDeployment` or `TeamModel`.
    pub kind: String,
    /// `metadata.namespace`, if given.
    pub namespace: Option<String>,
    /// `metadata.name` ("" when absent).
    pub name: String,
    /// `metadata.generation`, if given.
    pub generation: Option<i64>,
    /// Why it does not fit.
    pub message: String,
}

/// A manifest file that is not YAML at all.
#[derive(Debug, thiserror::Error)]
#[error("document {index}: {source}")]
pub struct ManifestError {
    /// 0-based index of the document in the file.
    pub index: usize,
    /// The YAML error.
    #[source]
    pub source: serde_yaml::Error,
}

/// Parses every document of a manifest file. Syntax errors stop at the broken document
/// (YAML cannot resynchronise), returned with the documents read before it.
pub fn parse_documents(text: &str) -> (Vec<Document>, Option<ManifestError>) {
    let mut documents = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => documents.push(classify(value)),
            Err(source) => return (documents, Some(ManifestError { index, source })),
        }
    }
    (documents, None)
}

/// One document's value as what it is (a cluster object arrives as a value, not as text).
pub fn classify(value: Value) -> Document {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let ours = api_version == format!("{}/{}", crate::GROUP, crate::VERSION);
    match kind.as_str() {
        "ModelDeployment" if ours => typed(value, &kind, |md| Document::ModelDeployment(Box::new(md))),
        "TeamModel" if ours => typed(value, &kind, |tm| Document::TeamModel(Box::new(tm))),
        "Secret" if api_version == "v1" => {
            let meta = value.get("metadata").cloned();
            match serde_path_to_error::deserialize::<_, Secret>(value) {
                Ok(secret) => Document::Secret(Box::new(secret)),
                Err(error) => {
                    let field = |name: &str| {
                        meta.as_ref().and_then(|m| m.get(name)).and_then(Value::as_str).unwrap_or_default().to_owned()
                    };
                    // The path only: the error text of a bad value could quote the value.
                    let message = format!("field `{}` does not fit a Secret", error.path());
                    Document::UnreadableSecret { name: format!("{}/{}", field("namespace"), field("name")), message }
                }
            }
        }
        _ => Document::Skipped { kind },
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: Value, kind: &str, wrap: impl FnOnce(T) -> Document) -> Document {
    match crate::strict::from_value::<T>(value.clone()) {
        Ok(object) => wrap(object),
        Err(error) => {
            let meta = value.get("metadata");
            let field = |name: &str| meta.and_then(|m| m.get(name)).and_then(Value::as_str).map(str::to_owned);
            Document::Unreadable(Unreadable {
                kind: kind.to_owned(),
                namespace: field("namespace"),
                name: field("name").unwrap_or_default(),
                generation: meta.and_then(|m| m.get("generation")).and_then(Value::as_i64),
                message: error.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_and_skips_others() {
        let text = "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: a}\n\
                    spec: {modelName: m, upstream: {baseUrl: 'http://x'}}\n---\n\
                    apiVersion: llmroute.dev/v1alpha1\nkind: TeamModel\nmetadata: {name: t}\n\
                    spec: {team: a, publicName: m, modelName: m}\n---\n\
                    apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {api-key: k}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n";
        let (docs, error) = parse_documents(text);
        assert!(error.is_none());
        assert!(matches!(docs[0], Document::ModelDeployment(_)));
        assert!(matches!(docs[1], Document::TeamModel(_)));
        assert!(matches!(docs[2], Document::Secret(_)));
        assert!(matches!(&docs[3], Document::Skipped { kind } if kind == "ConfigMap"));
    }

    #[test]
    fn a_misfit_object_keeps_its_name() {
        let text = "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\n\
                    metadata: {name: bad, namespace: ns}\nspec: {modelName: m, weight: -1, upstream: {baseUrl: 'http://x'}}\n";
        let (docs, _) = parse_documents(text);
        let Document::Unreadable(u) = &docs[0] else { panic!("{docs:?}") };
        assert_eq!((u.name.as_str(), u.namespace.as_deref()), ("bad", Some("ns")));
        assert!(u.message.contains("weight"), "{}", u.message);
    }

    #[test]
    fn an_unknown_field_makes_the_object_unreadable_naming_it() {
        let text = "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\n\
                    metadata: {name: typo, namespace: ns}\nspec: {modelName: m, wieght: 3, upstream: {baseUrl: 'http://x'}}\n";
        let (docs, _) = parse_documents(text);
        let Document::Unreadable(u) = &docs[0] else { panic!("{docs:?}") };
        assert_eq!(u.name, "typo");
        assert!(u.message.contains("spec.wieght"), "{}", u.message);
        let nested = "apiVersion: llmroute.dev/v1alpha1\nkind: TeamModel\nmetadata: {name: t}\n\
                      spec: {team: a, publicName: m, modelName: m, routing: {maxAtempts: 2}}\n";
        let (docs, _) = parse_documents(nested);
        let Document::Unreadable(u) = &docs[0] else { panic!("{docs:?}") };
        assert!(u.message.contains("spec.routing.maxAtempts"), "{}", u.message);
    }

    #[test]
    fn a_secret_that_does_not_fit_names_its_field_not_its_value() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\ndata: {k: 'not_base64!'}\n";
        let (docs, _) = parse_documents(text);
        let Document::UnreadableSecret { name, message } = &docs[0] else { panic!("{docs:?}") };
        assert_eq!(name, "ns/s");
        assert!(message.contains("data") && !message.contains("not_base64"), "{message}");
    }

    #[test]
    fn broken_yaml_keeps_the_documents_before_it() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\nkind: [unclosed\n";
        let (docs, error) = parse_documents(text);
        assert_eq!(docs.len(), 1);
        assert_eq!(error.map(|e| e.index), Some(1));
    }
}
