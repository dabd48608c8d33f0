//! Streams the sidecar asked for usage on the client's behalf (`stream_options.include_usage`,
//! which the client did not set): what the client receives is what it would have received
//! without the sidecar. The extra last chunk (no choices, the usage) is removed, and so is the
//! `"usage":null` field the option adds to every other chunk. The usage itself was already
//! read by the relay's scan before this transform sees the bytes.
//!
//! Events are cut at their blank line; a partial event is held until the next frame, at most
//! [`MAX_EVENT`] bytes (a larger one passes through unfiltered, never held without bound).

use bytes::{Bytes, BytesMut};

use super::transform::ChunkTransform;
use crate::body::Body;

/// Largest event held to be filtered, bytes.
const MAX_EVENT: usize = 1 << 20;

#[derive(Default)]
struct StripUsage {
    held: BytesMut,
}

/// Whether an event's data is the usage-only chunk.
fn is_usage_chunk(event: &[u8]) -> bool {
    let compact = |needle: &[u8]| memchr::memmem::find(event, needle).is_some();
    (compact(b"\"choices\":[]") || compact(b"\"choices\": []")) && (compact(b"\"usage\":{") || compact(b"\"usage\": {"))
}

/// The event without the `usage: null` field the option added.
fn without_null_usage(event: &[u8]) -> Vec<u8> {
    let mut out = event.to_vec();
    for pattern in [&b",\"usage\":null"[..], b",\"usage\": null", b"\"usage\":null,", b"\"usage\": null,"] {
        while let Some(at) = memchr::memmem::find(&out, pattern) {
            out.drain(at..at + pattern.len());
        }
    }
    out
}

impl StripUsage {
    fn filter(&self, event: &[u8], out: &mut BytesMut) {
        if is_usage_chunk(event) {
            return;
        }
        out.extend_from_slice(&without_null_usage(event));
    }
}

impl ChunkTransform for StripUsage {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        self.held.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        while let Some(end) = memchr::memmem::find(&self.held, b"\n\n") {
            let event = self.held.split_to(end + 2);
            self.filter(&event, &mut out);
        }
        if self.held.len() > MAX_EVENT {
            out.extend_from_slice(&self.held.split());
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
    fn a_huge_event_passes_through_rather_than_being_held() {
        let big = format!("data: {}", "x".repeat(MAX_EVENT + 10));
        let mut t = StripUsage::default();
        let out = t.feed(Bytes::from(big.clone()));
        assert_eq!(out.len(), big.len());
        assert!(t.held.is_empty());
    }
}
