//! The request type of an adaptive group's request, from the body: only adaptive groups pay
//! for this second, fuller parse.

use serde::Deserialize;
use serde_json::Value;

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
    #[derive(Deserialize)]
    struct Message {
        role: Option<String>,
        content: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Texts {
        messages: Option<Vec<Message>>,
        prompt: Option<Value>,
        instructions: Option<Value>,
        input: Option<Value>,
    }
    fn text(value: Option<&Value>) -> String {
        let limit = llmroute_router::CLASSIFY_MAX_CHARS;
        match value {
            Some(Value::String(s)) => s.chars().take(limit).collect(),
            // Content parts: the text ones, in order.
            Some(Value::Array(parts)) => {
                let mut out = String::new();
                for part in parts {
                    let piece = part.get("text").and_then(Value::as_str).or_else(|| part.as_str()).unwrap_or_default();
                    out.extend(piece.chars().take(limit.saturating_sub(out.len())));
                    if out.len() >= limit {
                        break;
                    }
                }
                out
            }
            _ => String::new(),
        }
    }
    let general =
        || Turn { kind: llmroute_router::RequestType::General, conversation: String::new(), last_user: String::new() };
    let Ok(texts) = serde_json::from_slice::<Texts>(body) else { return general() };
    let (system, user, first) = match &texts.messages {
        Some(messages) => {
            let by_role = |role: &str| messages.iter().rev().find(|m| m.role.as_deref() == Some(role));
            let system = by_role("system").or_else(|| by_role("developer"));
            let first = messages.iter().find(|m| m.role.as_deref() == Some("user"));
            (
                text(system.and_then(|m| m.content.as_ref())),
                text(by_role("user").and_then(|m| m.content.as_ref())),
                text(first.and_then(|m| m.content.as_ref())),
            )
        }
        None => {
            let user = text(texts.prompt.as_ref().or(texts.input.as_ref()));
            (text(texts.instructions.as_ref()), user.clone(), user)
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
    }
}
