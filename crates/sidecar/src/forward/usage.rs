//! Streams the sidecar asked for usage on the client's behalf (`stream_options.include_usage`,
//! which the client did not set): what the client receives is what it would have received
//! without the sidecar. The extra last chunk (no choices, the usage) is removed, and so is the
//! `"usage":null` field the option adds to every other chunk. The usage itself was already
//! read by the relay's scan before this transform sees the bytes.
//!
//! Events are cut at their blank line (lines end with `\r\n`, `\n` or `\r`, as SSE allows); a
//! partial event is held until the next frame, at most [`MAX_EVENT`] bytes (a larger one
//! passes through unfiltered, never held without bound). Each byte is searched once, and each
//! event filtered in one pass: a hostile upstream's frames cost time in their size.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

use super::transform::ChunkTransform;
use crate::body::Body;

/// Largest event held to be filtered, bytes.
const MAX_EVENT: usize = 1 << 20;

#[derive(Default)]
struct StripUsage {
    held: BytesMut,
    /// Where the search for the held event's end goes on (what precedes holds no end).
    searched: usize,
}

/// After the line end at `i` (`\r\n`, `\n` or `\r`); `None` for a `\r` that ends `b` (it may
/// be the start of `\r\n`).
fn after_line_end(b: &[u8], i: usize) -> Option<usize> {
    match (b[i], b.get(i + 1)) {
        (b'\n', _) => Some(i + 1),
        (_, None) => None,
        (_, Some(b'\n')) => Some(i + 2),
        (_, Some(_)) => Some(i + 1),
    }
}

/// The end (after its blank line) of the first event in `b`, searching from `from`; else
/// where to search from once more bytes came.
fn event_end(b: &[u8], from: usize) -> Result<usize, usize> {
    let mut at = from;
    while let Some(found) = memchr::memchr2(b'\r', b'\n', &b[at..]) {
        let i = at + found;
        let Some(next) = after_line_end(b, i) else { return Err(i) };
        match b.get(next) {
            None => return Err(i),
            Some(b'\r' | b'\n') => return after_line_end(b, next).ok_or(i),
            Some(_) => at = next,
        }
    }
    Err(b.len())
}

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

/// Whether an event is the usage-only chunk: its data, a JSON object, has top-level
/// `"choices": []` and a `usage` object (a nested `usage`, or one beside choices, is not it).
fn is_usage_chunk(event: &[u8]) -> bool {
    if USAGE_KEY.find(event).is_none() || memchr::memmem::find(event, b"\"choices\"").is_none() {
        return false;
    }
    let mut data = Vec::new();
    // Lines end with `\r\n`, `\n` or `\r`: split at either byte (a `\r\n` leaves an empty
    // line between, which is no data line).
    for line in event.split(|b| *b == b'\n' || *b == b'\r') {
        if let Some(value) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    let Ok(serde_json::Value::Object(chunk)) = serde_json::from_slice(&data) else { return false };
    chunk.get("choices").and_then(serde_json::Value::as_array).is_some_and(Vec::is_empty)
        && chunk.get("usage").is_some_and(serde_json::Value::is_object)
}

/// The position after `"usage"`'s `null` value (`:` with any whitespace around it), if that is
/// its value.
fn null_value(b: &[u8], key_end: usize) -> Option<usize> {
    let skip = |at: usize| at + b[at.min(b.len())..].iter().take_while(|c| c.is_ascii_whitespace()).count();
    let colon = skip(key_end);
    (b.get(colon) == Some(&b':')).then_some(())?;
    let value = skip(colon + 1);
    let ends = b.get(value + 4).is_none_or(|c| c.is_ascii_whitespace() || matches!(c, b',' | b'}'));
    (b[value.min(b.len())..].starts_with(b"null") && ends).then_some(value + 4)
}

/// Appends `event` without the `"usage": null` fields the option added (with the comma before
/// them, or else the one after), in one pass.
fn without_null_usage(event: &[u8], out: &mut BytesMut) {
    let mut written = 0;
    for at in USAGE_KEY.find_iter(event) {
        if at < written {
            continue;
        }
        let Some(end) = null_value(event, at + 7) else { continue };
        let before = event[written..at].iter().rposition(|c| !c.is_ascii_whitespace()).map(|p| written + p);
        if let Some(comma) = before.filter(|p| event[*p] == b',') {
            out.extend_from_slice(&event[written..comma]);
            written = end;
        } else {
            let after = end + event[end..].iter().take_while(|c| c.is_ascii_whitespace()).count();
            if event.get(after) == Some(&b',') {
                out.extend_from_slice(&event[written..at]);
                written = after + 1;
            }
        }
    }
    out.extend_from_slice(&event[written..]);
}

impl StripUsage {
    fn filter(&self, event: &[u8], out: &mut BytesMut) {
        if !is_usage_chunk(event) {
            without_null_usage(event, out);
        }
    }
}

impl ChunkTransform for StripUsage {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        self.held.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        loop {
            match event_end(&self.held, self.searched) {
                Ok(end) => {
                    let event = self.held.split_to(end);
                    self.searched = 0;
                    self.filter(&event, &mut out);
                }
                Err(from) => {
                    self.searched = from;
                    break;
                }
            }
        }
        if self.held.len() > MAX_EVENT {
            out.extend_from_slice(&self.held.split());
            self.searched = 0;
        }
        out.freeze()
    }

    fn finish(&mut self) -> Bytes {
        let rest = self.held.split();
        let mut out = BytesMut::new();
        if !rest.is_empty() {
            self.filter(&rest, &mut out);
        }
        out.freeze()
    }

    fn held(&self) -> Option<u64> {
        None
    }
}

/// `body` without what asking for usage added.
pub(crate) fn strip(body: Body) -> Body {
    super::transform::transform(body, StripUsage::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(frames: &[&str]) -> String {
        let mut t = StripUsage::default();
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&t.feed(Bytes::copy_from_slice(f.as_bytes())));
        }
        out.extend_from_slice(&t.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_usage_chunk_and_null_usage_fields_are_removed_wherever_frames_split() {
        let asked = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                     data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":4}}\n\n\
                     data: [DONE]\n\n";
        let plain = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(run(&[asked]), plain);
        // Split at every position: the same result.
        for at in 1..asked.len() {
            assert_eq!(run(&[&asked[..at], &asked[at..]]), plain, "split at {at}");
        }
    }

    #[test]
    fn events_end_at_any_blank_line_sse_allows() {
        let asked = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{}}], \"usage\": null}\n\n\
                     data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\n\
                     data: [DONE]\n\n";
        let plain = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n";
        for eol in ["\r\n", "\r"] {
            let (asked, plain) = (asked.replace('\n', eol), plain.replace('\n', eol));
            for at in 0..=asked.len() {
                assert_eq!(run(&[&asked[..at], &asked[at..]]), plain, "{eol:?} split at {at}");
            }
        }
        // A usage event of several lines, CR-ended: found all the same.
        let cr = "event: chunk\rdata: {\"choices\":[],\rdata: \"usage\":{\"n\":1}}\r\rdata: [DONE]\r\r";
        assert_eq!(run(&[cr]), "data: [DONE]\r\r");
        assert_eq!(run(&["data: {\"a\":1,\"usage\":nullx}\n\n"]), "data: {\"a\":1,\"usage\":nullx}\n\n", "not a null");
        // Not the usage chunk: a nested usage, a usage beside choices, a non-JSON body.
        for kept in [
            "data: {\"choices\":[],\"meta\":{\"usage\":{\"n\":1}}}\n\n",
            "data: {\"choices\":[{\"x\":1}],\"usage\":{\"n\":1}}\n\n",
            "{\"choices\":[],\"usage\":{\"n\":1}}",
        ] {
            assert_eq!(run(&[kept]), kept);
        }
    }

    #[test]
    fn a_hostile_event_costs_time_in_its_size() {
        // 70,000 null usages in one event, and a 1 MB event in 1-byte frames: linear work
        // (quadratic, they took seconds).
        let many = format!("data: {{{}\"x\":1}}\n\n", "\"usage\":null,".repeat(70_000));
        let started = std::time::Instant::now();
        assert_eq!(run(&[&many]), "data: {\"x\":1}\n\n");
        let long = format!("data: {}\n\n", "y".repeat(1 << 19));
        let mut t = StripUsage::default();
        let mut out = 0;
        for b in long.as_bytes().chunks(1) {
            out += t.feed(Bytes::copy_from_slice(b)).len();
        }
        assert_eq!(out, long.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }

    #[test]
    fn a_huge_event_passes_through_rather_than_being_held() {
        let big = format!("data: {}", "x".repeat(MAX_EVENT + 10));
        let mut t = StripUsage::default();
        let out = t.feed(Bytes::from(big.clone()));
        assert_eq!(out.len(), big.len());
        assert!(t.held.is_empty());
    }
}
