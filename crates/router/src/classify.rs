//! What an upstream outcome means for the request (DESIGN §4 step 5).

/// What happened on one upstream attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The connection could not be made.
    ConnectError,
    /// No response byte arrived before the deadline.
    Timeout,
    /// The upstream answered with a status and (the start of) a body.
    Status {
        /// HTTP status.
        code: u16,
        /// Response body, or its first bytes.
        body: &'a [u8],
    },
}

/// The consequence of an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2xx/3xx: return it to the client.
    Success,
    /// Charged toward cooldown; failover, then fallbacks.
    Retryable,
    /// The prompt does not fit: `contextWindowFallbacks`, never in-group failover.
    ContextWindow,
    /// Any other 4xx: returned to the client at once.
    ClientError,
}

/// Phrases upstreams use for an exceeded context window (OpenAI, Azure, vLLM, TGI, Anthropic).
const CONTEXT_PHRASES: [&str; 6] = [
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "context length",
    "prompt is too long",
    "input is too long",
];

/// Classifies an upstream outcome.
pub fn classify(outcome: Outcome<'_>) -> Class {
    match outcome {
        Outcome::ConnectError | Outcome::Timeout => Class::Retryable,
        Outcome::Status { code, body } => match code {
            100..=399 => Class::Success,
            400 | 413 | 422 if mentions_context_window(body) => Class::ContextWindow,
            401 | 403 | 404 | 408 | 429 => Class::Retryable,
            500..=599 => Class::Retryable,
            _ => Class::ClientError,
        },
    }
}

fn mentions_context_window(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    CONTEXT_PHRASES.iter().any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, body: &str) -> Class {
        classify(Outcome::Status { code, body: body.as_bytes() })
    }

    #[test]
    fn transport_failures_are_retryable() {
        assert_eq!(classify(Outcome::ConnectError), Class::Retryable);
        assert_eq!(classify(Outcome::Timeout), Class::Retryable);
    }

    #[test]
    fn statuses_per_design() {
        assert_eq!(status(200, ""), Class::Success);
        for code in [429, 500, 502, 503, 504, 401, 403, 404] {
            assert_eq!(status(code, "{}"), Class::Retryable, "{code}");
        }
        for code in [400, 405, 409, 413, 415, 422] {
            assert_eq!(status(code, r#"{"error":{"message":"bad"}}"#), Class::ClientError, "{code}");
        }
    }

    #[test]
    fn context_window_errors_are_recognised() {
        let openai = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#;
        assert_eq!(status(400, openai), Class::ContextWindow);
        assert_eq!(status(400, "Input is too long for requested model."), Class::ContextWindow);
        assert_eq!(status(500, openai), Class::Retryable, "a 5xx stays retryable");
    }
}
