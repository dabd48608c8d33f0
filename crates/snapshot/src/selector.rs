//! Kubernetes label-selector matching (matchLabels and matchExpressions).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// A selector that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector: {0}")]
pub struct InvalidSelector(String);

/// Whether `labels` satisfy `selector` (an empty selector matches everything).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, InvalidSelector> {
    let by_label = selector.match_labels.iter().flatten().all(|(key, value)| labels.get(key) == Some(value));
    if !by_label {
        return Ok(false);
    }
    for requirement in selector.match_expressions.iter().flatten() {
        if !requirement_matches(requirement, labels)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn requirement_matches(
    r: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, InvalidSelector> {
    let value = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let needs_values = |ok: bool| {
        if values.is_empty() == ok {
            Ok(())
        } else {
            Err(InvalidSelector(format!("operator {} on key {:?}: wrong number of values", r.operator, r.key)))
        }
    };
    match r.operator.as_str() {
        "In" => needs_values(false).map(|()| value.is_some_and(|v| values.contains(v))),
        "NotIn" => needs_values(false).map(|()| value.is_none_or(|v| !values.contains(v))),
        "Exists" => needs_values(true).map(|()| value.is_some()),
        "DoesNotExist" => needs_values(true).map(|()| value.is_none()),
        other => Err(InvalidSelector(format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("model", "gpt-4o"), ("region", "east")]);
        let mut s = LabelSelector { match_labels: Some(labels(&[("model", "gpt-4o")])), ..Default::default() };
        assert_eq!(matches(&s, &l), Ok(true));
        s.match_expressions = Some(vec![expr("region", "In", &["west"])]);
        assert_eq!(matches(&s, &l), Ok(false));
        s.match_expressions = Some(vec![expr("region", "NotIn", &["west"]), expr("tier", "DoesNotExist", &[])]);
        assert_eq!(matches(&s, &l), Ok(true));
        s.match_expressions = Some(vec![expr("region", "Exists", &[])]);
        assert_eq!(matches(&s, &l), Ok(true));
    }

    #[test]
    fn bad_operators_are_errors() {
        let s = LabelSelector { match_expressions: Some(vec![expr("a", "Near", &["b"])]), ..Default::default() };
        assert!(matches(&s, &labels(&[])).is_err());
        let s = LabelSelector { match_expressions: Some(vec![expr("a", "In", &[])]), ..Default::default() };
        assert!(matches(&s, &labels(&[])).is_err());
    }
}
