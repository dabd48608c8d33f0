//! The prefix-affinity key of a request: its `prompt_cache_key` when it carries one,
//! otherwise a hash of the first `prefixBytes` of a canonical serialisation of the stable
//! part of its prompt, in the order a provider's prompt cache sees it:
//!
//! - chat: the leading system and developer messages, tool (and function) definitions, then
//!   the other messages in order;
//! - Responses: `instructions`, tool definitions, then `input`;
//! - completions: `prompt`.
//!
//! The serialisation is canonical (object keys sorted, no whitespace; see [`canonical`]), so
//! clients that order keys differently still share a key; it is written as the prompt is
//! parsed and stops at `prefixBytes`, so a long or hostile prompt is never parsed whole. A prompt shorter than `prefixBytes` has no key: below that, the
//! providers' caches do not apply (OpenAI caches from 1,024 tokens, about 4,096 bytes).

mod canonical;

use canonical::{Canonical, each_element};

use llmroute_upstream::Endpoint;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Digest as _;

/// The fields the key is made of, left unparsed until the budget needs them; everything else
/// in the body is skipped without being built.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Prompt<'a> {
    #[serde(borrow)]
    prompt_cache_key: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    functions: Option<&'a RawValue>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
}

/// A message's role, its other fields skipped.
#[derive(Deserialize)]
struct Role<'a> {
    #[serde(borrow)]
    role: Option<std::borrow::Cow<'a, str>>,
}

/// The role of a message too large to sort.
fn role(message: &RawValue) -> Option<String> {
    serde_json::from_str::<Role<'_>>(message.get()).ok()?.role.map(std::borrow::Cow::into_owned)
}

/// The prefix key of a request to `endpoint` with body `body`, hashing `bytes` bytes of its
/// canonical prompt; `None` when it has neither a `prompt_cache_key` nor that much prompt.
pub(crate) fn key(endpoint: Endpoint, body: &[u8], bytes: usize) -> Option<u128> {
    let prompt: Prompt = serde_json::from_slice(body).ok()?;
    // Domain-separated: a prompt whose text is some request's cache key has another key.
    let digest = |domain: &[u8], text: &[u8]| {
        let mut h = sha2::Sha256::new_with_prefix(domain);
        h.update([0]);
        h.update(text);
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        u128::from_le_bytes(first)
    };
    // Only a non-empty string is a key (anything else is left to the upstream to judge).
    if let Some(k) = prompt.prompt_cache_key.filter(|k| k.get().starts_with('"'))
        && let Ok(k) = serde_json::from_str::<String>(k.get())
        && !k.is_empty()
    {
        return Some(digest(b"prompt_cache_key", k.as_bytes()));
    }
    let mut out = Canonical::new(bytes);
    match endpoint {
        Endpoint::ChatCompletions => {
            // The leading system and developer messages, the tools, then the rest in order;
            // messages are read one at a time, and none past the budget.
            let mut leading = 0usize;
            let mut first_other = None;
            if let Some(messages) = prompt.messages {
                each_element(messages, |m| {
                    // A message is read once: its entries tell its role and are written.
                    let entries = canonical::object(m);
                    let role = match &entries {
                        Some(entries) => entries
                            .iter()
                            .find(|(k, _)| k == "role")
                            .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok()),
                        None => role(m),
                    };
                    if !matches!(role.as_deref(), Some("system" | "developer")) {
                        first_other = Some(m);
                        return false;
                    }
                    match &entries {
                        Some(entries) => out.entries(entries),
                        None => out.part(m),
                    }
                    leading += 1;
                    !out.full()
                });
            }
            for tools in [prompt.tools, prompt.functions].into_iter().flatten() {
                out.part(tools);
            }
            if let (Some(messages), Some(_)) = (prompt.messages, first_other)
                && !out.full()
            {
                let mut at = 0usize;
                each_element(messages, |m| {
                    at += 1;
                    if at > leading {
                        out.part(m);
                    }
                    !out.full()
                });
            }
        }
        Endpoint::Responses => {
            for part in [prompt.instructions, prompt.tools, prompt.input].into_iter().flatten() {
                out.part(part);
            }
        }
        Endpoint::Completions => {
            if let Some(p) = prompt.prompt {
                out.part(p);
            }
        }
        Endpoint::Embeddings => return None,
    }
    out.done().map(|text| digest(b"prefix", text))
}

#[cfg(test)]
mod tests;
