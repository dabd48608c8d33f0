//! The request type of an adaptive group's request, from the body: only adaptive groups pay
//! for this second, fuller parse.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// What an adaptive group reads of a request: its type, its session key when no
/// `x-llmroute-session-id` names one (a hash of the first user message), and the last user
/// message (cut to what the classifier reads), for signals from the next turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Turn {
    pub kind: llmroute_router::RequestType,
    /// Hex SHA-256 of the first user message ("" when there is none).
    pub conversation: String,
    pub last_user: String,
}

/// The request type of `body` (see [`turn`]).
#[cfg(test)]
pub(crate) fn classify_body(body: &[u8]) -> llmroute_router::RequestType {
    turn(body).kind
}

/// The texts an adaptive group classifies by: the system prompt and the last user message
/// (chat `messages`, completions `prompt`, Responses `instructions` and `input`), each cut to
/// what the classifier reads. Only adaptive groups pay for this parse.
pub(crate) fn turn(body: &[u8]) -> Turn {
    // Borrowed and raw: only the texts read are decoded, whatever else the body holds.
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow)]
        content: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Texts<'a> {
        #[serde(borrow)]
        messages: Option<Vec<Message<'a>>>,
        #[serde(borrow)]
        prompt: Option<&'a RawValue>,
        #[serde(borrow)]
        instructions: Option<&'a RawValue>,
        #[serde(borrow)]
        input: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
    }
    fn text(value: Option<&RawValue>) -> String {
        let limit = llmroute_router::CLASSIFY_MAX_CHARS;
        let Some(raw) = value else { return String::new() };
        let json = raw.get();
        if json.starts_with('"') {
            let s: Cow<'_, str> = serde_json::from_str(json).unwrap_or_default();
            return s.chars().take(limit).collect();
        }
        if !json.starts_with('[') {
            return String::new();
        }
        // Content parts: the text ones, in order, until the classifier has enough.
        let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(json) else { return String::new() };
        let mut out = String::new();
        let mut taken = 0;
        for part in parts {
            let piece: Option<Cow<'_, str>> = match part.get().as_bytes().first() {
                Some(b'"') => serde_json::from_str(part.get()).ok(),
                Some(b'{') => serde_json::from_str::<Part<'_>>(part.get()).ok().and_then(|p| p.text),
                _ => None,
            };
            for c in piece.unwrap_or_default().chars().take(limit.saturating_sub(taken)) {
                out.push(c);
                taken += 1;
            }
            if taken >= limit {
                break;
            }
        }
        out
    }
    let general =
        || Turn { kind: llmroute_router::RequestType::General, conversation: String::new(), last_user: String::new() };
    let Ok(texts) = serde_json::from_slice::<Texts<'_>>(body) else { return general() };
    let (system, user, first) = match &texts.messages {
        Some(messages) => {
            let by_role = |role: &str| messages.iter().rev().find(|m| m.role.as_deref() == Some(role));
            let system = by_role("system").or_else(|| by_role("developer"));
            let first = messages.iter().find(|m| m.role.as_deref() == Some("user"));
            (
                text(system.and_then(|m| m.content)),
                text(by_role("user").and_then(|m| m.content)),
                text(first.and_then(|m| m.content)),
            )
        }
        None => {
            let user = text(texts.prompt.or(texts.input));
            (text(texts.instructions), user.clone(), user)
        }
    };
    let conversation = if first.is_empty() {
        String::new()
    } else {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(first.as_bytes()))
    };
    Turn { kind: llmroute_router::classify_request(&system, &user), conversation, last_user: user }
}

#[cfg(test)]
mod tests {
    use llmroute_router::RequestType;

    use super::classify_body;

    #[test]
    fn every_endpoint_shape_is_read() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"You are a poet."},
            {"role":"user","content":"Write a python function that sorts a list"}]}"#;
        assert_eq!(classify_body(chat), RequestType::CodeGeneration);
        let parts = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"Draft an email"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert_eq!(classify_body(parts), RequestType::Writing);
        let responses = br#"{"model":"m","instructions":"be brief","input":"What is the capital of Peru?"}"#;
        assert_eq!(classify_body(responses), RequestType::FactualLookup);
        let completion = br#"{"model":"m","prompt":"Prove that sqrt 2 is irrational"}"#;
        assert_eq!(classify_body(completion), RequestType::AnalyticalReasoning);
    }

    #[test]
    fn odd_bodies_are_general_never_a_crash() {
        for body in [&b""[..], b"[]", b"{\"messages\": 5}", b"{\"messages\":[{\"content\":{}}]}", b"\xff\xfe"] {
            assert_eq!(classify_body(body), RequestType::General, "{:?}", String::from_utf8_lossy(body));
        }
        let huge = format!(r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#, "word ".repeat(200_000));
        assert_eq!(classify_body(huge.as_bytes()), RequestType::General);
        // A million content parts: read until the classifier has its 2,000 characters.
        let parts = vec![r#"{"type":"text","text":"Write a python function "}"#; 1_000_000].join(",");
        let body = format!(r#"{{"messages":[{{"role":"user","content":[{parts}]}}]}}"#);
        assert_eq!(classify_body(body.as_bytes()), RequestType::CodeGeneration);
        // Escaped text and odd parts.
        let escaped = br#"{"messages":[{"role":"user","content":[5, null, "Draft an email", {"text": 7}]}]}"#;
        assert_eq!(classify_body(escaped), RequestType::Writing);
    }
}
