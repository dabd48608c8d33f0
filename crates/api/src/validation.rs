//! Client-side evaluation of the CRDs' own schema rules, as an API server would apply them.
//!
//! The CEL rules (`x-kubernetes-validations`) are compiled once from the generated CRD and
//! evaluated with kube's CEL support; the structural bounds of the same schema (`minimum`,
//! `maximum`, `maxItems`, `maxLength`, `minItems`) are checked by walking it. No rule is
//! written a second time here.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde::Serialize;
use serde_json::Value;

use crate::{ModelDeployment, RoutingConfig, RoutingConfigResource, TeamModel};

/// One schema rule an object breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Violation {
    /// JSON path of the offending field, e.g. `spec.order`.
    pub path: String,
    /// The rule's own message.
    pub message: String,
}

struct KindSchema {
    raw: Value,
    compiled: CompiledSchema,
}

impl KindSchema {
    fn of<K: CustomResourceExt>() -> Self {
        let crd = K::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(serde_json::to_value)
            .and_then(Result::ok)
            .unwrap_or(Value::Null);
        let compiled = compile_schema(&schema);
        Self { raw: schema, compiled }
    }
}

static MODEL_DEPLOYMENT: LazyLock<KindSchema> = LazyLock::new(KindSchema::of::<ModelDeployment>);
static TEAM_MODEL: LazyLock<KindSchema> = LazyLock::new(KindSchema::of::<TeamModel>);
static ROUTING_CONFIG: LazyLock<KindSchema> = LazyLock::new(KindSchema::of::<RoutingConfigResource>);
static VALIDATOR: LazyLock<std::sync::Mutex<Validator>> = LazyLock::new(|| std::sync::Mutex::new(Validator::new()));

/// Checks a ModelDeployment against the rules of its CRD.
pub fn validate_model_deployment(md: &ModelDeployment) -> Result<(), Vec<Violation>> {
    validate(&MODEL_DEPLOYMENT, md)
}

/// Checks a TeamModel against the rules of its CRD.
pub fn validate_team_model(tm: &TeamModel) -> Result<(), Vec<Violation>> {
    validate(&TEAM_MODEL, tm)
}

/// Checks a routing config against the rules of the `RoutingConfig` CRD (the same rules as a
/// TeamModel's `routing`); paths are relative to the config (`defaults.maxAttempts`).
pub fn validate_routing_config(config: &RoutingConfig) -> Result<(), Vec<Violation>> {
    let resource = RoutingConfigResource::new("config", config.clone());
    validate(&ROUTING_CONFIG, &resource).map_err(|violations| {
        violations
            .into_iter()
            .map(|v| Violation { path: v.path.trim_start_matches("spec.").to_owned(), message: v.message })
            .collect()
    })
}

fn validate<T: Serialize>(kind: &KindSchema, object: &T) -> Result<(), Vec<Violation>> {
    let value = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(error) => return Err(vec![Violation { path: String::new(), message: error.to_string() }]),
    };
    let mut violations = Vec::new();
    check_bounds(&kind.raw, &value, "", &mut violations);
    let validator = VALIDATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(errors) = validator.validate_compiled(&kind.compiled, &value, None) {
        violations.extend(errors.iter().map(|e| Violation { path: e.field_path.clone(), message: e.message.clone() }));
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

/// Walks `schema` alongside `value`, reporting the structural bounds `value` breaks.
fn check_bounds(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let mut fail = |message: String| out.push(Violation { path: path.to_owned(), message });
    match value {
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(0.0);
            if let Some(min) = bound("minimum").filter(|min| n < *min) {
                fail(format!("must be >= {min}"));
            }
            if let Some(max) = bound("maximum").filter(|max| n > *max) {
                fail(format!("must be <= {max}"));
            }
        }
        Value::String(s) => {
            if let Some(max) = bound("maxLength").filter(|max| s.chars().count() as f64 > *max) {
                fail(format!("must be at most {max} characters"));
            }
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            if let Some(max) = bound("maxItems").filter(|max| len > *max) {
                fail(format!("must have at most {max} items"));
            }
            if let Some(min) = bound("minItems").filter(|min| len < *min) {
                fail(format!("must have at least {min} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_bounds(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            // A map's values (`modelGroups`) share one schema.
            let values = schema.get("additionalProperties").filter(|v| v.is_object());
            for (name, field) in fields {
                if let Some(field_schema) = properties.and_then(|p| p.get(name)).or(values) {
                    let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                    check_bounds(field_schema, field, &child, out);
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests;
