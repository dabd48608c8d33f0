//! Responses-API affinity: llmroute wraps an upstream response id into one that names the
//! deployment that holds the conversation, and unwraps it from `previous_response_id`.
//!
//! Format: `resp_llmr1.<hex(deployment id)>.<upstream id>` (keeps OpenAI's `resp_` prefix).

const PREFIX: &str = "resp_llmr1.";
/// Longest hex deployment part decoded (a `namespace/name` is at most 317 bytes).
const MAX_DEPLOYMENT_HEX: usize = 1024;

/// The id returned to the client for `upstream_id` served by `deployment_id`.
pub fn wrap_response_id(deployment_id: &str, upstream_id: &str) -> String {
    format!("{PREFIX}{}.{upstream_id}", hex::encode(deployment_id))
}

/// `(deployment id, upstream id)` of an id issued by llmroute; `None` for any other id.
pub fn unwrap_response_id(id: &str) -> Option<(String, &str)> {
    let rest = id.strip_prefix(PREFIX)?;
    let (deployment, upstream) = rest.split_once('.')?;
    if deployment.len() > MAX_DEPLOYMENT_HEX {
        return None;
    }
    let deployment = String::from_utf8(hex::decode(deployment).ok()?).ok()?;
    (!upstream.is_empty()).then_some((deployment, upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = wrap_response_id("llm/gpt4o-east", "resp_abc.123");
        assert!(id.starts_with("resp_"));
        assert_eq!(unwrap_response_id(&id), Some(("llm/gpt4o-east".into(), "resp_abc.123")));
    }

    proptest::proptest! {
        #[test]
        fn wrap_then_unwrap_is_the_identity(deployment in "[a-z0-9-]{1,63}/[a-z0-9.-]{1,253}", upstream in "[ -~]{1,300}") {
            let id = wrap_response_id(&deployment, &upstream);
            proptest::prop_assert_eq!(unwrap_response_id(&id), Some((deployment, upstream.as_str())));
        }

        #[test]
        fn arbitrary_ids_never_panic(id in ".{0,2000}", tail in "[0-9a-f.]{0,3000}") {
            let _ = unwrap_response_id(&id);
            let _ = unwrap_response_id(&format!("{PREFIX}{tail}"));
        }
    }

    #[test]
    fn foreign_or_broken_ids_are_none() {
        let long = format!("{PREFIX}{}.x", "61".repeat(MAX_DEPLOYMENT_HEX));
        for id in ["resp_abc", "resp_llmr1.zz.x", "resp_llmr1.6162", "resp_llmr1.6162.", "", long.as_str()] {
            assert_eq!(unwrap_response_id(id), None, "{id}");
        }
    }
}
