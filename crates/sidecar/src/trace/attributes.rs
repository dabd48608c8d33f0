//! A deployment's span attributes that hold for a whole snapshot (its address, provider,
//! group, upstream model, the snapshot's version), encoded once, on the deployment's first
//! traced attempt, instead of on every request: a traced request then copies two blocks where
//! it wrote nine attributes.

use std::sync::{Arc, OnceLock};

use super::wire::{self, Value};
use super::{MAX_NAME_PART, MAX_VALUE, clip};

/// Where an attempt goes: what its span and its request's span say of the deployment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptTarget<'a> {
    pub deployment: &'a str,
    pub model_group: &'a str,
    pub upstream_model: &'a str,
    pub provider: &'static str,
    /// `server.address` and `server.port`: the upstream's host and port.
    pub server_address: &'a str,
    pub server_port: u16,
    /// The version of the snapshot routing the request.
    pub snapshot: &'a str,
}

/// One deployment's attributes, encoded.
#[derive(Debug)]
pub(crate) struct DeploymentAttributes {
    /// The group and upstream model they were encoded for: a pick naming others (a wildcard
    /// route resolves the upstream model per request) encodes its own.
    model_group: Box<str>,
    upstream_model: Box<str>,
    /// The deployment, as a span name's part.
    pub(super) name: Box<str>,
    /// The attempt span's: `gen_ai.request.model`, `gen_ai.provider.name`,
    /// `server.address`, `server.port`, `llmroute.deployment`, `llmroute.model_group`.
    pub(super) attempt: Box<[u8]>,
    /// The request span's, once the deployment answered: `gen_ai.response.model`,
    /// `llmroute.deployment`, `llmroute.model_group`, `llmroute.snapshot`.
    pub(super) answer: Box<[u8]>,
}

/// A deployment's slot, in each applied view: filled on its first traced attempt.
pub(crate) type AttributeCache = OnceLock<Arc<DeploymentAttributes>>;

fn encode(attributes: &[(&str, Value<'_>)]) -> Box<[u8]> {
    let mut buf = Vec::new();
    for (name, value) in attributes {
        let value = match value {
            Value::Str(s) => Value::Str(clip(s, MAX_VALUE)),
            other => *other,
        };
        wire::attribute(&mut buf, wire::SPAN_ATTRIBUTES, name, &value);
    }
    buf.into_boxed_slice()
}

impl DeploymentAttributes {
    pub fn new(target: &AttemptTarget<'_>) -> Self {
        let t = target;
        Self {
            model_group: t.model_group.into(),
            upstream_model: t.upstream_model.into(),
            name: clip(t.deployment, MAX_NAME_PART).into(),
            attempt: encode(&[
                ("gen_ai.request.model", Value::Str(t.upstream_model)),
                ("gen_ai.provider.name", Value::Str(t.provider)),
                ("server.address", Value::Str(t.server_address)),
                ("server.port", Value::Int(i64::from(t.server_port))),
                ("llmroute.deployment", Value::Str(t.deployment)),
                ("llmroute.model_group", Value::Str(t.model_group)),
            ]),
            answer: encode(&[
                ("gen_ai.response.model", Value::Str(t.upstream_model)),
                ("llmroute.deployment", Value::Str(t.deployment)),
                ("llmroute.model_group", Value::Str(t.model_group)),
                ("llmroute.snapshot", Value::Str(t.snapshot)),
            ]),
        }
    }

    /// The attributes of `target` from `cache` (a deployment's slot in the current view),
    /// encoded there on first use.
    pub fn cached(cache: &AttributeCache, target: &AttemptTarget<'_>) -> Arc<Self> {
        let cached = cache.get_or_init(|| Arc::new(Self::new(target)));
        if *cached.model_group == *target.model_group && *cached.upstream_model == *target.upstream_model {
            cached.clone()
        } else {
            Arc::new(Self::new(target))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(group: &'a str, model: &'a str) -> AttemptTarget<'a> {
        AttemptTarget {
            deployment: "team/d",
            model_group: group,
            upstream_model: model,
            provider: "openai",
            server_address: "127.0.0.1",
            server_port: 1,
            snapshot: "v1",
        }
    }

    #[test]
    fn a_deployment_is_encoded_once_per_view_unless_a_pick_names_another_model() {
        let cache = AttributeCache::new();
        let first = DeploymentAttributes::cached(&cache, &target("g", "gpt-4o"));
        let again = DeploymentAttributes::cached(&cache, &target("g", "gpt-4o"));
        assert!(Arc::ptr_eq(&first, &again), "encoded once");
        // A wildcard route resolves another upstream model: its own attributes, the cache kept.
        let other = DeploymentAttributes::cached(&cache, &target("g", "gpt-4o-mini"));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(&*other.upstream_model, "gpt-4o-mini");
        let group = DeploymentAttributes::cached(&cache, &target("h", "gpt-4o"));
        assert_eq!(&*group.model_group, "h");
        assert!(Arc::ptr_eq(&first, &DeploymentAttributes::cached(&cache, &target("g", "gpt-4o"))));
    }
}
