//! Strict reading of YAML values into typed resources, as `kubectl apply` does with strict
//! field validation: a field the type does not know is an error naming its path.

use serde::de::DeserializeOwned;

/// Why a value does not fit its type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    /// A field the type does not know, by path (e.g. `spec.routing.maxAtempts`).
    #[error("unknown field {0}")]
    Unknown(String),
    /// A value of the wrong type or out of its type's range, with its path.
    #[error("{0}")]
    Type(String),
}

/// Deserializes `value` into `T`, rejecting unknown fields (the first, by path).
pub fn from_value<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, StrictError> {
    let mut unknown: Option<String> = None;
    let mut note = |path: serde_ignored::Path<'_>| {
        let path = dotted(&path);
        // The root of a custom resource reads `apiVersion` and `kind` itself.
        if path != "apiVersion" && path != "kind" {
            unknown.get_or_insert(path);
        }
    };
    let typed: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    match (typed, unknown) {
        (Err(e), _) => Err(StrictError::Type(e.to_string())),
        (Ok(_), Some(path)) => Err(StrictError::Unknown(path)),
        (Ok(object), None) => Ok(object),
    }
}

/// `spec.routing.maxAtempts`, `spec.deployments[2]`: the path as users write it.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoutingPolicy;

    #[test]
    fn unknown_fields_are_named_by_path() {
        let v: serde_yaml::Value = serde_yaml::from_str("{cooldown: {secnds: 3}}").unwrap();
        assert_eq!(from_value::<RoutingPolicy>(v), Err(StrictError::Unknown("cooldown.secnds".into())));
        let v: serde_yaml::Value = serde_yaml::from_str("{maxAttempts: 2}").unwrap();
        assert_eq!(from_value::<RoutingPolicy>(v).unwrap().max_attempts, Some(2));
    }

    #[test]
    fn type_errors_carry_the_path() {
        let v: serde_yaml::Value = serde_yaml::from_str("{maxAttempts: -1}").unwrap();
        let Err(StrictError::Type(m)) = from_value::<RoutingPolicy>(v) else { panic!() };
        assert!(m.contains("maxAttempts"), "{m}");
    }
}
