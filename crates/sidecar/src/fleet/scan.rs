//! Reading a few fields out of an answer's bytes as they stream by, without parsing it: the
//! answer's `id` (first frame), `finish_reason: "length"` and the usage counts (anywhere,
//! usually the end). Every byte of every frame is searched; the last [`CARRY`] bytes are kept
//! for the next frame, so a field split between frames is read whole, and memory stays
//! constant whatever the answer's size. However an answer is cut into frames, what is read is
//! what reading it in one piece would read.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Bytes kept from one frame for the next: more than a field's longest readable form.
const CARRY: usize = 256;
/// Whitespace and the colon between a key and its value, at most (a longer gap is not read).
const MAX_GAP: usize = 64;
/// Backslashes counted before a key's opening quote, at most.
const MAX_ESCAPES: usize = 32;
/// A field this far into a frame is read from the frame alone (what precedes it that
/// matters is within the frame); nearer the frame's start, with the carry in front of it.
const LOOKBACK: usize = 64;
/// Token counts above this are not usage: no answer has a billion tokens, and an absurd
/// number from a broken or hostile upstream would swamp the counters and the cost for good.
pub(crate) const MAX_TOKENS: u64 = 1_000_000_000;
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

/// The usage keys read, in [`Usage`] order; every one ends `_tokens"`, so one search finds them all.
const KEYS: [&[u8]; 6] = [b"\"total", b"\"prompt", b"\"input", b"\"completion", b"\"output", b"\"cached"];
const TOKENS_END: &[u8] = b"_tokens\"";
static TOKENS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(TOKENS_END));
static FINISH_REASON: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));

/// A field read from a window of bytes.
#[derive(Debug, PartialEq)]
enum Read<T> {
    /// Read to its end: its value, or `None` when it is not one (not a number, too large, ...).
    Done(Option<T>),
    /// The window ended before the field did: read it again with the next frame.
    More,
}

/// Whether the quote at `at` opens a string: not escaped by an odd run of backslashes.
fn opens(w: &[u8], at: usize) -> bool {
    w[..at].iter().rev().take(MAX_ESCAPES).take_while(|b| **b == b'\\').count() % 2 == 0
}

/// Past the gap at `start` (whitespace, one colon, whitespace: at most [`MAX_GAP`] bytes), the
/// position of the value.
fn value_start(w: &[u8], start: usize) -> Read<usize> {
    let mut colon = false;
    for (i, b) in w.iter().enumerate().skip(start) {
        if i - start > MAX_GAP {
            return Read::Done(None);
        }
        match b {
            b':' if !colon => colon = true,
            b if b.is_ascii_whitespace() => {}
            _ => return Read::Done(colon.then_some(i)),
        }
    }
    Read::More
}

/// The integer at `at`: at most 20 digits, not followed by a fraction or an exponent, at most
/// [`MAX_TOKENS`].
fn count(w: &[u8], at: usize) -> Read<u64> {
    let digits = w[at..].iter().take(21).take_while(|b| b.is_ascii_digit()).count();
    match w.get(at + digits) {
        _ if digits > 20 => Read::Done(None),
        None => Read::More,
        Some(b'.' | b'e' | b'E') => Read::Done(None),
        Some(_) if digits == 0 => Read::Done(None),
        Some(_) => {
            let n = std::str::from_utf8(&w[at..at + digits]).ok().and_then(|t| t.parse::<u64>().ok());
            Read::Done(n.filter(|n| *n <= MAX_TOKENS))
        }
    }
}

/// The usage field whose `_tokens"` is at `end`: which of [`KEYS`], and its count.
fn usage_at(w: &[u8], end: usize) -> Read<(usize, u64)> {
    let Some(key) = KEYS.iter().position(|k| w[..end].ends_with(k)) else { return Read::Done(None) };
    if !opens(w, end - KEYS[key].len()) {
        return Read::Done(None);
    }
    match value_start(w, end + TOKENS_END.len()) {
        Read::Done(Some(at)) => match count(w, at) {
            Read::Done(n) => Read::Done(n.map(|n| (key, n))),
            Read::More => Read::More,
        },
        Read::Done(None) => Read::Done(None),
        Read::More => Read::More,
    }
}

/// Whether the `"finish_reason"` at `at` is `"length"`.
fn length_at(w: &[u8], at: usize) -> Read<bool> {
    const LENGTH: &[u8] = b"\"length\"";
    if !opens(w, at) {
        return Read::Done(Some(false));
    }
    match value_start(w, at + 15) {
        Read::Done(Some(v)) if w.len() - v < LENGTH.len() && LENGTH.starts_with(&w[v..]) => Read::More,
        Read::Done(Some(v)) => Read::Done(Some(w[v..].starts_with(LENGTH))),
        Read::Done(None) => Read::Done(Some(false)),
        Read::More => Read::More,
    }
}

/// What an answer said about itself, gathered frame by frame.
#[derive(Debug, Default)]
pub(crate) struct AnswerScan {
    /// The last [`CARRY`] bytes fed (the buffer is kept: a frame's head is read behind them).
    carry: Vec<u8>,
    /// Bytes fed so far.
    fed: u64,
    /// Stream offsets from which usage and `finish_reason` fields are still to be read.
    next_usage: u64,
    next_finish: u64,
    /// The last count read for each of [`KEYS`].
    last: [Option<u64>; 6],
    /// `finish_reason` was `length` somewhere: the answer was cut by its token limit.
    pub truncated: bool,
    /// The last `total_tokens` read (the answer's real usage).
    pub total_tokens: Option<u64>,
    /// The last `prompt_tokens` read, else the last `input_tokens`.
    pub input_tokens: Option<u64>,
    /// The last `completion_tokens` read, else the last `output_tokens`.
    pub output_tokens: Option<u64>,
    /// The last `cached_tokens` read (part of the input).
    pub cached_tokens: Option<u64>,
}

impl AnswerScan {
    /// Reads one frame.
    pub fn feed(&mut self, frame: &[u8]) {
        // The carry with the frame's head behind it, for the fields that start near the
        // frame's start; then the frame itself, for the rest.
        let mut edge = std::mem::take(&mut self.carry);
        let (carried, start) = (edge.len(), self.fed - edge.len() as u64);
        // Room for the carry and a frame's head, once: the buffer never grows past it.
        edge.reserve_exact(2 * CARRY - carried);
        edge.extend_from_slice(&frame[..frame.len().min(CARRY)]);
        self.read(&edge, start, 0, carried + LOOKBACK.min(frame.len()));
        if frame.len() > LOOKBACK {
            self.read(frame, self.fed, LOOKBACK, frame.len());
        }
        if frame.len() >= CARRY {
            edge.clear();
            edge.extend_from_slice(&frame[frame.len() - CARRY..]);
        } else if edge.len() > CARRY {
            edge.drain(..edge.len() - CARRY);
        }
        self.carry = edge;
        self.fed += frame.len() as u64;
        let [total, prompt, input, completion, output, cached] = self.last;
        self.total_tokens = total;
        self.input_tokens = prompt.or(input);
        self.output_tokens = completion.or(output);
        self.cached_tokens = cached;
    }

    /// Reads the fields of `w` (whose first byte is stream offset `start`) found at positions
    /// `from..to` and not read before. A field that runs past `w`'s end is left for the next
    /// frame (nothing after it can be a field: it is all gap or digits).
    fn read(&mut self, w: &[u8], start: u64, from: usize, to: usize) {
        for at in TOKENS.find_iter(w).filter(|at| (from..to).contains(at)) {
            let offset = start + at as u64;
            if offset < self.next_usage {
                continue;
            }
            if let Read::Done(found) = usage_at(w, at) {
                if let Some((key, n)) = found {
                    self.last[key] = Some(n);
                }
                self.next_usage = offset + 1;
            }
        }
        for at in FINISH_REASON.find_iter(w).filter(|at| (from..to).contains(at)) {
            let offset = start + at as u64;
            if offset < self.next_finish {
                continue;
            }
            if let Read::Done(length) = length_at(w, at) {
                self.truncated |= length == Some(true);
                self.next_finish = offset + 1;
            }
        }
    }
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

    fn scanned(frames: &[&[u8]]) -> (bool, [Option<u64>; 4]) {
        let mut scan = AnswerScan::default();
        for frame in frames {
            scan.feed(frame);
            assert!(scan.carry.len() <= CARRY && scan.carry.capacity() <= 2 * CARRY, "the carry stays small");
        }
        (scan.truncated, [scan.total_tokens, scan.input_tokens, scan.output_tokens, scan.cached_tokens])
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "\"total_tokens\"",
            "\"prompt_tokens\"",
            "\"input_tokens\"",
            "\"completion_tokens\"",
            "\"output_tokens\"",
            "\"cached_tokens\"",
            "\"subtotal_tokens\"",
            "\"x\\\"total_tokens\"",
            "\\\\\"total_tokens\"",
            "_tokens\"",
            "\"finish_reason\"",
        ]);
        let gap = prop::sample::select(vec!["", " ", ":", ": ", " :\n", "::", "\t:\t"]);
        let value = prop_oneof![
            "[0-9]{1,4}",
            "[0-9]{18,23}",
            prop::sample::select(vec![
                "1000000000",
                "1000000001",
                "12.9",
                "1e6",
                "-3",
                "\"5\"",
                "\"length\"",
                "\"stop\"",
                "null"
            ])
            .prop_map(str::to_owned),
        ];
        prop_oneof![
            4 => (key, gap, value).prop_map(|(k, g, v)| format!("{k}{g}{v}")),
            1 => (0usize..100).prop_map(|n| format!("\"prompt_tokens\":{}7,", " ".repeat(n))),
            1 => prop::sample::select(vec![",", "{", "}", "\\", "\"", "\n\n"]).prop_map(str::to_owned),
            1 => "[ -~]{0,40}",
            1 => (0usize..3_000).prop_map(|n| "x".repeat(n)),
        ]
    }

    proptest::proptest! {
        /// However an answer is cut into frames, what is read is what reading it whole reads.
        #[test]
        fn frames_read_what_the_whole_answer_reads(
            pieces in proptest::collection::vec(piece(), 0..40),
            cuts in proptest::collection::vec(0.0f64..1.0, 0..24),
        ) {
            let answer = pieces.concat().into_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| (c * answer.len() as f64) as usize).collect();
            cuts.sort_unstable();
            let mut frames = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([answer.len()]) {
                frames.push(&answer[at..cut]);
                at = cut;
            }
            proptest::prop_assert_eq!(scanned(&frames), scanned(&[&answer]));
        }
    }

    #[test]
    fn what_is_not_a_token_count_is_not_read() {
        let input = |answer: &str| scanned(&[answer.as_bytes()]).1[1];
        assert_eq!(input(r#"{"prompt_tokens":1000000000,"x":1}"#), Some(MAX_TOKENS));
        for not_usage in [
            r#"{"prompt_tokens":123456789012345678901234}"#, // does not fit: not its first 20 digits
            r#"{"prompt_tokens":18446744073709551615}"#,     // fits u64, absurd as usage
            r#"{"prompt_tokens":1000000001}"#,
            r#"{"prompt_tokens":12.9}"#,
            r#"{"prompt_tokens":1e6}"#,
            r#"{"prompt_tokens":-3}"#,
            r#"{"prompt_tokens":"5"}"#,
            r#"{"prompt_tokens" 5}"#,
            r#"{"x\"prompt_tokens":77}"#, // a key that only ends so
            r#"{"content":"say \"prompt_tokens\": 9 then"}"#,
        ] {
            assert_eq!(input(not_usage), None, "{not_usage}");
        }
        let gap = format!(r#"{{"prompt_tokens":{}1234}}"#, " ".repeat(300));
        assert_eq!(input(&gap), None, "a gap longer than a field's longest readable form is not read");
        let (escaped, _) = scanned(&[br#"{"content":"\"finish_reason\": \"length\""}"#]);
        assert!(!escaped, "a finish reason quoted inside a string is not the answer's");
    }

    #[test]
    fn usage_in_a_large_frame_is_read_wherever_it_is() {
        // Usage before a large field (vLLM's `prompt_logprobs`), the whole in one frame.
        let answer = format!(
            r#"{{"x":"{}","usage":{{"prompt_tokens":111,"completion_tokens":222}},"prompt_logprobs":"{}"}}"#,
            "a".repeat(5 << 20),
            "b".repeat(300 << 10)
        );
        assert_eq!(scanned(&[answer.as_bytes()]).1, [None, Some(111), Some(222), None]);
        // The last count read wins, across frames of any size.
        let first = format!(r#"{{"prompt_tokens":1,"x":"{}","#, "a".repeat(5 << 20));
        let second = format!(r#""usage":{{"prompt_tokens":999}},"y":"{}"}}"#, "b".repeat(200 << 10));
        assert_eq!(scanned(&[first.as_bytes(), second.as_bytes()]).1[1], Some(999));
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
