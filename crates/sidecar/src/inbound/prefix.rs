//! The prefix-affinity key of a request: its `prompt_cache_key` when it carries one,
//! otherwise a hash of the first `prefixBytes` of a canonical serialisation of the stable
//! part of its prompt, in the order a provider's prompt cache sees it:
//!
//! - chat: the leading system and developer messages, tool (and function) definitions, then
//!   the other messages in order;
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

/// The canonical prompt, up to a budget (hashed once it is written).
struct Prefix {
    text: Vec<u8>,
    budget: usize,
}

impl Prefix {
    fn put(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.budget - self.text.len());
        self.text.extend_from_slice(&bytes[..take]);
    }

    fn full(&self) -> bool {
        self.text.len() >= self.budget
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
            Value::Null => self.put(b"null"),
            Value::Bool(b) => self.put(if *b { b"true" } else { b"false" }),
            Value::Number(n) => self.put(n.to_string().as_bytes()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.put(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.put(b",");
                    }
                    self.value(item);
                    if self.full() {
                        return;
                    }
                }
                self.put(b"]");
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                self.put(b"{");
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        self.put(b",");
                    }
                    self.string(key);
                    self.put(b":");
                    self.value(&map[key]);
                    if self.full() {
                        return;
                    }
                }
                self.put(b"}");
            }
        }
    }

    fn string(&mut self, s: &str) {
        // Escaped straight into the text; a full budget stops the writer (its error is the
        // stop, not a failure).
        let _ = serde_json::to_writer(&mut *self, s);
    }
}

impl std::io::Write for Prefix {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.full() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let take = buf.len().min(self.budget - self.text.len());
        self.put(&buf[..take]);
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    if let Some(Value::String(k)) = &prompt.prompt_cache_key
        && !k.is_empty()
    {
        return Some(digest(b"prompt_cache_key", k.as_bytes()));
    }
    let mut prefix = Prefix { text: Vec::with_capacity(bytes.min(64 * 1024)), budget: bytes };
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = prompt.messages.unwrap_or_default();
            // The leading system and developer messages, the tools, then the rest in order:
            // each message is parsed once, and nothing past the budget is looked at.
            let mut rest = messages.iter();
            let mut first_other = None;
            for m in rest.by_ref() {
                let Ok(value) = serde_json::from_str::<Value>(m.get()) else { continue };
                if matches!(value.get("role").and_then(Value::as_str), Some("system" | "developer")) {
                    prefix.value(&value);
                } else {
                    first_other = Some(value);
                    break;
                }
            }
            for tools in [prompt.tools, prompt.functions].into_iter().flatten() {
                prefix.raw(tools);
            }
            if let Some(value) = first_other {
                prefix.value(&value);
            }
            for m in rest {
                if prefix.full() {
                    break;
                }
                prefix.raw(m);
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
    prefix.full().then(|| digest(b"prefix", &prefix.text))
}

#[cfg(test)]
mod tests;
