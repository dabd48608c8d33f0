//! One ModelDeployment -> one wire `Deployment` (credential resolved, spec hash set).

use std::collections::BTreeMap;

use llmroute_api::{HealthCheckMode, ModelDeployment, Provider};
use llmroute_proto::v1;
use prost::Message;

use crate::store::SecretData;
use crate::{ObjectKey, Reason};

/// Why a ModelDeployment is not accepted.
pub(crate) type Rejection = (Reason, String);

/// Compiles an accepted-by-schema ModelDeployment; fails only on what the schema cannot see.
pub(crate) fn compile_deployment(
    key: &ObjectKey,
    md: &ModelDeployment,
    secrets: &BTreeMap<ObjectKey, SecretData>,
    secret_hint: Option<&str>,
) -> Result<v1::Deployment, Rejection> {
    let spec = &md.spec;
    check_port(&spec.upstream.base_url)?;
    // Azure puts the model in the URL path as one segment: a pattern whose fixed part holds
    // '/' with no upstream.model would send names that can never be a segment.
    if spec.provider == Provider::Azure
        && spec.upstream.model.is_none()
        && spec.model_name.contains('*')
        && spec.model_name.contains('/')
    {
        let message = "an azure deployment puts the model in the URL path, and names matching this pattern hold '/': set upstream.model (e.g. '*')";
        return Err((Reason::Invalid, message.into()));
    }
    let api_key =
        match &spec.upstream.api_key_secret_ref {
            None => String::new(),
            Some(r) => resolve_secret(&ObjectKey::new(&key.namespace, &r.name), &r.key, secrets).map_err(
                |(reason, message)| match (reason, secret_hint) {
                    (Reason::SecretNotFound, Some(hint)) => (reason, format!("{message}; {hint}")),
                    _ => (reason, message),
                },
            )?,
        };
    let cost = spec.cost.as_ref();
    let mut deployment = v1::Deployment {
        id: key.to_string(),
        model_name: spec.model_name.clone(),
        team: spec.team.clone().unwrap_or_default(),
        provider: match spec.provider {
            Provider::Openai => v1::Provider::Openai,
            Provider::Azure => v1::Provider::Azure,
        } as i32,
        base_url: spec.upstream.base_url.trim_end_matches('/').to_owned(),
        upstream_model: spec.upstream.model.clone().unwrap_or_default(),
        api_key,
        api_version: spec.upstream.api_version.clone().unwrap_or_default(),
        weight: spec.weight,
        order: spec.order,
        limits: Some(v1::Limits {
            rpm: spec.limits.rpm,
            tpm: spec.limits.tpm,
            max_concurrency: spec.limits.max_concurrency,
        }),
        context_window: spec.context_window,
        input_cost_per_million: cost.map_or(0.0, |c| decimal(&c.input_per_million_tokens)),
        output_cost_per_million: cost.map_or(0.0, |c| decimal(&c.output_per_million_tokens)),
        quality_tier: spec.quality_tier,
        health_check: Some(v1::HealthCheck {
            mode: match spec.health_check.mode {
                HealthCheckMode::None => v1::HealthCheckMode::None,
                HealthCheckMode::Models => v1::HealthCheckMode::Models,
                HealthCheckMode::Completion => v1::HealthCheckMode::Completion,
            } as i32,
            interval_seconds: spec.health_check.interval_seconds,
            timeout_seconds: spec.health_check.timeout_seconds,
            unhealthy_threshold: spec.health_check.unhealthy_threshold,
            healthy_threshold: spec.health_check.healthy_threshold,
        }),
        spec_hash: String::new(),
        no_stream_usage: spec.stream_usage == Some(false),
    };
    deployment.spec_hash = crate::version::short_hash(&deployment.encode_to_vec());
    Ok(deployment)
}

/// The credential under `key` of a Secret; the message never holds a secret value.
fn resolve_secret(
    secret: &ObjectKey,
    key: &str,
    secrets: &BTreeMap<ObjectKey, SecretData>,
) -> Result<String, Rejection> {
    let data =
        secrets.get(secret).ok_or_else(|| (Reason::SecretNotFound, format!("Secret {secret} does not exist")))?;
    let value =
        data.0.get(key).ok_or_else(|| (Reason::SecretNotFound, format!("Secret {secret} has no key {key:?}")))?;
    let unusable = || {
        let message = format!(
            "Secret {secret} key {key:?} holds a newline, control or non-ASCII character, which an upstream \
             header cannot carry"
        );
        (Reason::SecretInvalid, message)
    };
    let text = std::str::from_utf8(value).map_err(|_| unusable())?.trim();
    // Visible ASCII and spaces only: what an HTTP header value can carry verbatim.
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(unusable());
    }
    Ok(text.to_owned())
}

/// The port of a schema-checked `http(s)://host[:port]/...` URL, when given, is 1..65535.
fn check_port(base_url: &str) -> Result<(), Rejection> {
    let rest = base_url.split_once("://").map_or(base_url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    let Some((_, port)) = authority[host_end..].rsplit_once(':') else { return Ok(()) };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err((Reason::Invalid, format!("upstream.baseUrl: port {port:?} is not a number from 1 to 65535"))),
    }
}

/// A schema-checked decimal string ("2.50") as a number.
fn decimal(text: &str) -> f64 {
    text.parse().unwrap_or(0.0)
}
