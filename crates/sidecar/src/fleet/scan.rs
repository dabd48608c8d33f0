//! Reading a few fields out of an answer's bytes as they stream by, without parsing it: the
//! answer's `id` (first frame), `finish_reason: "length"` and `usage.total_tokens` (anywhere,
//! usually the end). A bounded window is carried across frames, so a field split between two
//! frames is still found; memory stays constant whatever the answer's size.

use std::sync::LazyLock;

use memchr::memmem::Finder;

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

/// The usage fields read from an answer, in [`KEYS`] order.
const KEYS: [&[u8]; 6] = [b"\"total", b"\"prompt", b"\"input", b"\"completion", b"\"output", b"\"cached"];

/// Every usage key ends so: one search finds them all.
static TOKENS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"_tokens\""));
static FINISH_REASON: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));

/// For each of [`KEYS`], the value of the last `"<key>_tokens": <integer>` field in `bytes`
/// (a number that does not fit is skipped).
fn last_usage(bytes: &[u8]) -> [Option<u64>; 6] {
    let mut last = [None; 6];
    for found in TOKENS.find_iter(bytes) {
        let Some(key) = KEYS.iter().position(|k| bytes[..found].ends_with(k)) else { continue };
        let mut i = found + b"_tokens\"".len();
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace() || *b == b':') {
            i += 1;
        }
        let digits = bytes[i.min(bytes.len())..].iter().take(20).take_while(|b| b.is_ascii_digit()).count();
        if digits > 0
            && let Some(n) = std::str::from_utf8(&bytes[i..i + digits]).ok().and_then(|t| t.parse().ok())
        {
            last[key] = Some(n);
        }
    }
    last
}

/// What an answer said about itself, gathered frame by frame.
#[derive(Debug, Default)]
pub(crate) struct AnswerScan {
    /// The last [`CARRY`] bytes read, then the frame being read: one buffer, kept.
    window: Vec<u8>,
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
        let window = &mut self.window;
        window.extend_from_slice(&frame[frame.len().saturating_sub(64 * 1024)..]);
        if !self.truncated {
            self.truncated = contains_length_finish(window);
        }
        let [total, prompt, input, completion, output, cached] = last_usage(window);
        let take = |slot: &mut Option<u64>, found: Option<u64>| {
            if found.is_some() {
                *slot = found;
            }
        };
        take(&mut self.total_tokens, total);
        take(&mut self.input_tokens, prompt.or(input));
        take(&mut self.output_tokens, completion.or(output));
        take(&mut self.cached_tokens, cached);
        let keep = window.len().saturating_sub(CARRY);
        window.drain(..keep);
    }
}

fn contains_length_finish(bytes: &[u8]) -> bool {
    FINISH_REASON.find_iter(bytes).any(|at| {
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

    /// The scan as first written, a search per key per frame: the single pass must agree.
    fn reference(frames: &[Vec<u8>]) -> (bool, [Option<u64>; 4]) {
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
        let (mut carry, mut truncated, mut slots) = (Vec::new(), false, [None; 4]);
        for frame in frames {
            let mut window = std::mem::take(&mut carry);
            window.extend_from_slice(&frame[frame.len().saturating_sub(64 * 1024)..]);
            truncated = truncated || contains_length_finish(&window);
            let keys: [&[&str]; 4] = [
                &["total_tokens"],
                &["prompt_tokens", "input_tokens"],
                &["completion_tokens", "output_tokens"],
                &["cached_tokens"],
            ];
            for (slot, keys) in slots.iter_mut().zip(keys) {
                if let Some(n) = keys.iter().find_map(|k| last_number(&window, k)) {
                    *slot = Some(n);
                }
            }
            let keep = window.len().saturating_sub(CARRY);
            carry = window.split_off(keep);
        }
        (truncated, slots)
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "total",
            "prompt",
            "input",
            "completion",
            "output",
            "cached",
            "subtotal",
            "reasoning",
            "x\\\"total",
        ]);
        prop_oneof![
            (key, prop::sample::select(vec!["", " ", ": ", " :\n"]), "[0-9]{0,22}")
                .prop_map(|(k, sep, n)| format!("\"{k}_tokens\"{sep}:{n}")),
            prop::sample::select(vec![
                "\"finish_reason\": \"length\"",
                "\"finish_reason\":\"stop\"",
                ",",
                "{",
                "}",
                "_tokens\""
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,40}",
        ]
    }

    proptest::proptest! {
        /// Whatever the answer and however it is cut into frames, the single pass finds what a
        /// search per key finds.
        #[test]
        fn one_pass_finds_what_a_search_per_key_finds(
            pieces in proptest::collection::vec(piece(), 0..40),
            cuts in proptest::collection::vec(0usize..2_000, 0..8),
        ) {
            let answer = pieces.concat().into_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(answer.len())).collect();
            cuts.sort_unstable();
            let mut frames = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([answer.len()]) {
                frames.push(answer[at..cut].to_vec());
                at = cut;
            }
            let mut scan = AnswerScan::default();
            for frame in &frames {
                scan.feed(frame);
            }
            let got = (scan.truncated, [scan.total_tokens, scan.input_tokens, scan.output_tokens, scan.cached_tokens]);
            proptest::prop_assert_eq!(got, reference(&frames));
            proptest::prop_assert!(scan.window.len() <= CARRY);
        }
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
