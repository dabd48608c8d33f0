//! Debug output of messages that carry credentials: the credential is never printed.

use std::fmt;

use crate::v1::Deployment;

impl fmt::Debug for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployment")
            .field("id", &self.id)
            .field("model_name", &self.model_name)
            .field("team", &self.team)
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("upstream_model", &self.upstream_model)
            .field("api_key", &if self.api_key.is_empty() { "" } else { "<redacted>" })
            .field("api_version", &self.api_version)
            .field("weight", &self.weight)
            .field("order", &self.order)
            .field("limits", &self.limits)
            .field("context_window", &self.context_window)
            .field("input_cost_per_million", &self.input_cost_per_million)
            .field("output_cost_per_million", &self.output_cost_per_million)
            .field("quality_tier", &self.quality_tier)
            .field("health_check", &self.health_check)
            .field("spec_hash", &self.spec_hash)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::v1::{Deployment, Snapshot};

    #[test]
    fn debug_never_prints_the_credential() {
        let d = Deployment { id: "ns/a".into(), api_key: "sk-very-secret".into(), ..Default::default() };
        let snapshot = Snapshot { deployments: vec![d], ..Default::default() };
        let text = format!("{snapshot:?} {snapshot:#?}");
        assert!(!text.contains("sk-very-secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
