//! Reading a few fields out of an answer's bytes as they stream by, without parsing it: the
//! answer's `id` (first frame), `finish_reason: "length"` and `usage.total_tokens` (anywhere,
//! usually the end). A bounded window is carried across frames, so a field split between two
//! frames is still found; memory stays constant whatever the answer's size.

/// Bytes carried from one frame to the next.
const CARRY: usize = 256;
/// Longest answer id kept, bytes.
pub(crate) const MAX_ID: usize = 256;

/// The value of the first `"key": "value"` string field in `bytes`.
pub(crate) fn string_field(bytes: &[u8], key: &str) -> Option<String> {
    let mut at = 0;
    let pattern = format!("\"{key}\"");
    while let Some(found) = memchr::memmem::find(&bytes[at..], pattern.as_bytes()) {
        let mut i = at + found + pattern.len();
        at = i;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'"') {
            continue;
        }
        let start = i + 1;
        let end = start + bytes[start..].iter().take(MAX_ID + 1).position(|b| *b == b'"' || *b == b'\\')?;
        if end - start > MAX_ID || bytes[end] == b'\\' {
            return None;
        }
        return std::str::from_utf8(&bytes[start..end]).ok().map(str::to_owned);
    }
    None
}

/// The value of the last `"key": <integer>` field in `bytes`.
fn last_number(bytes: &[u8], key: &str) -> Option<u64> {
    let pattern = format!("\"{key}\"");
    let mut last = None;
    for found in memchr::memmem::find_iter(bytes, pattern.as_bytes()) {
        let mut i = found + pattern.len();
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace() || *b == b':') {
            i += 1;
        }
        let digits = bytes[i.min(bytes.len())..].iter().take(20).take_while(|b| b.is_ascii_digit()).count();
        if digits > 0
            && let Some(n) = std::str::from_utf8(&bytes[i..i + digits]).ok().and_then(|t| t.parse().ok())
        {
            last = Some(n);
        }
    }
    last
}

/// What an answer said about itself, gathered frame by frame.
#[derive(Debug, Default)]
pub(crate) struct AnswerScan {
    carry: Vec<u8>,
    /// `finish_reason` was `length` somewhere: the answer was cut by its token limit.
    pub truncated: bool,
    /// The last `total_tokens` seen (the answer's real usage).
    pub total_tokens: Option<u64>,
    /// The last `prompt_tokens` / `input_tokens` seen.
    pub input_tokens: Option<u64>,
    /// The last `completion_tokens` / `output_tokens` seen.
    pub output_tokens: Option<u64>,
    /// The last `cached_tokens` seen (part of the input).
    pub cached_tokens: Option<u64>,
}

impl AnswerScan {
    /// Reads one frame.
    pub fn feed(&mut self, frame: &[u8]) {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(&frame[frame.len().saturating_sub(64 * 1024)..]);
        if !self.truncated {
            self.truncated = contains_length_finish(&window);
        }
        let take = |slot: &mut Option<u64>, keys: &[&str]| {
            if let Some(n) = keys.iter().find_map(|k| last_number(&window, k)) {
                *slot = Some(n);
            }
        };
        take(&mut self.total_tokens, &["total_tokens"]);
        take(&mut self.input_tokens, &["prompt_tokens", "input_tokens"]);
        take(&mut self.output_tokens, &["completion_tokens", "output_tokens"]);
        take(&mut self.cached_tokens, &["cached_tokens"]);
        let keep = window.len().saturating_sub(CARRY);
        self.carry = window.split_off(keep);
    }
}

fn contains_length_finish(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"\"finish_reason\"").any(|at| {
        let rest = &bytes[at + 15..];
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace() || **b == b':').count()..];
        rest.starts_with(b"\"length\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_first_string_id_field() {
        let chat = br#"{"id" : "chatcmpl-123","object":"chat.completion","choices":[{"id":"x"}]}"#;
        assert_eq!(string_field(chat, "id").as_deref(), Some("chatcmpl-123"));
        let sse = b"data: {\"id\":\"chatcmpl-9\",\"choices\":[]}\n\n";
        assert_eq!(string_field(sse, "id").as_deref(), Some("chatcmpl-9"));
        assert_eq!(string_field(br#"{"id":5,"x":{"id":"inner"}}"#, "id").as_deref(), Some("inner"));
        for odd in [&b""[..], b"\"id\"", b"\"id\":\"unterminated", b"\"id\":\"esc\\\"aped\""] {
            assert_eq!(string_field(odd, "id"), None, "{:?}", String::from_utf8_lossy(odd));
        }
        let long = format!("{{\"id\":\"{}\"}}", "a".repeat(MAX_ID + 1));
        assert_eq!(string_field(long.as_bytes(), "id"), None, "an absurd id is not remembered");
    }

    #[test]
    fn truncation_and_usage_are_found_across_frames() {
        let mut scan = AnswerScan::default();
        scan.feed(b"data: {\"choices\":[{\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"finish_re");
        scan.feed(b"ason\": \"length\"}],\"usage\":{\"prompt_tokens\":5,\"total_t");
        scan.feed(b"okens\":  42}}\n\ndata: [DONE]\n\n");
        assert!(scan.truncated);
        assert_eq!(scan.total_tokens, Some(42));
        assert_eq!((scan.input_tokens, scan.output_tokens), (Some(5), None));
        let mut responses = AnswerScan::default();
        responses.feed(br#"{"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"total_tokens":17}}"#);
        assert_eq!(
            (responses.input_tokens, responses.output_tokens, responses.cached_tokens, responses.total_tokens),
            (Some(10), Some(7), Some(4), Some(17))
        );
        let mut fine = AnswerScan::default();
        fine.feed(br#"{"choices":[{"finish_reason":"stop"}],"usage":{"total_tokens":99999999999999999999999}}"#);
        assert!(!fine.truncated);
        assert_eq!(fine.total_tokens, None, "a number that does not fit is not usage");
    }
}
