//! The prefix-affinity key of a request: its `prompt_cache_key` when it carries one,
//! otherwise a hash of the first `prefixBytes` of a canonical serialisation of the stable
//! part of its prompt, in the order a provider's prompt cache sees it:
//!
//! - chat: system and developer messages, tool (and function) definitions, then the other
//!   messages in order;
//! - Responses: `instructions`, tool definitions, then `input`;
//! - completions: `prompt`.
//!
//! The serialisation is canonical (object keys sorted, no whitespace), so clients that
//! order keys differently still share a key; it stops at `prefixBytes`, so a long prompt is
//! never serialised whole. A prompt shorter than `prefixBytes` has no key: below that, the
//! providers' caches do not apply (OpenAI caches from 1,024 tokens, about 4,096 bytes).

use llmroute_upstream::Endpoint;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Digest as _;

/// The fields the key is made of, left unparsed until the budget needs them; everything else
/// in the body is skipped without being built.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Prompt<'a> {
    prompt_cache_key: Option<Value>,
    #[serde(borrow)]
    messages: Option<Vec<&'a RawValue>>,
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
struct Role {
    role: Option<String>,
}

/// Hashes what it is written, up to a budget.
struct Prefix {
    hasher: sha2::Sha256,
    left: usize,
}

impl Prefix {
    fn write(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.left);
        self.hasher.update(&bytes[..take]);
        self.left -= take;
    }

    fn full(&self) -> bool {
        self.left == 0
    }

    /// A part of the body, parsed only when the budget is not spent yet.
    fn raw(&mut self, raw: &RawValue) {
        if !self.full()
            && let Ok(value) = serde_json::from_str::<Value>(raw.get())
        {
            self.value(&value);
        }
    }

    /// `value` in canonical JSON: keys sorted, no whitespace, strings escaped as serde_json
    /// does. Stops as soon as the budget is spent.
    fn value(&mut self, value: &Value) {
        if self.full() {
            return;
        }
        match value {
            Value::Null => self.write(b"null"),
            Value::Bool(b) => self.write(if *b { b"true" } else { b"false" }),
            Value::Number(n) => self.write(n.to_string().as_bytes()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.write(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.write(b",");
                    }
                    self.value(item);
                    if self.full() {
                        return;
                    }
                }
                self.write(b"]");
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                self.write(b"{");
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        self.write(b",");
                    }
                    self.string(key);
                    self.write(b":");
                    self.value(&map[key]);
                    if self.full() {
                        return;
                    }
                }
                self.write(b"}");
            }
        }
    }

    fn string(&mut self, s: &str) {
        // Escaped in pieces, so that a huge string costs no more than the budget.
        self.write(b"\"");
        let mut rest = s;
        while !rest.is_empty() && !self.full() {
            let mut end = rest.len().min(self.left.max(64));
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            let encoded = serde_json::to_string(&rest[..end]).unwrap_or_default();
            self.write(encoded.trim_matches('"').as_bytes());
            rest = &rest[end..];
        }
        self.write(b"\"");
    }
}

/// The prefix key of a request to `endpoint` with body `body`, hashing `bytes` bytes of its
/// canonical prompt; `None` when it has neither a `prompt_cache_key` nor that much prompt.
pub(crate) fn key(endpoint: Endpoint, body: &[u8], bytes: usize) -> Option<u128> {
    let prompt: Prompt = serde_json::from_slice(body).ok()?;
    let digest = |domain: &[u8], hasher: sha2::Sha256| {
        let mut h = sha2::Sha256::new_with_prefix(domain);
        h.update(hasher.finalize());
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        u128::from_le_bytes(first)
    };
    if let Some(Value::String(k)) = &prompt.prompt_cache_key
        && !k.is_empty()
    {
        return Some(digest(b"prompt_cache_key", sha2::Sha256::new_with_prefix(k.as_bytes())));
    }
    let mut prefix = Prefix { hasher: sha2::Sha256::new(), left: bytes };
    let stable = |m: &RawValue| {
        serde_json::from_str::<Role>(m.get()).is_ok_and(|r| matches!(r.role.as_deref(), Some("system" | "developer")))
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = prompt.messages.unwrap_or_default();
            let (system, rest): (Vec<&RawValue>, Vec<&RawValue>) = messages.into_iter().partition(|m| stable(m));
            let tools = [prompt.tools, prompt.functions].into_iter().flatten();
            for part in system.into_iter().chain(tools).chain(rest) {
                prefix.raw(part);
            }
        }
        Endpoint::Responses => {
            for part in [prompt.instructions, prompt.tools, prompt.input].into_iter().flatten() {
                prefix.raw(part);
            }
        }
        Endpoint::Completions => {
            if let Some(p) = prompt.prompt {
                prefix.raw(p);
            }
        }
        Endpoint::Embeddings => return None,
    }
    prefix.full().then(|| digest(b"prefix", prefix.hasher))
}

#[cfg(test)]
mod tests;
