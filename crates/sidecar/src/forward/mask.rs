//! An upstream may echo the credential it was sent (in a header, in an error, in a debug field
//! of a success). Nothing the client receives may hold it: header values holding it are
//! replaced, and bodies are relayed with every occurrence masked by `*` of the same length, as
//! they stream (the length, hence `Content-Length`, is unchanged; only a tail that could be
//! the start of the credential is held back until the next chunk).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use memchr::memmem::Finder;

use crate::body::Body;

/// Replaces every header value that holds `secret`, and removes every header whose name
/// holds it (names are lower case: so is the secret looked for in them).
pub(crate) fn scrub_headers(headers: &mut HeaderMap, secret: &str) {
    if secret.is_empty() {
        return;
    }
    let finder = Finder::new(secret.as_bytes());
    for value in headers.values_mut() {
        if finder.find(value.as_bytes()).is_some() {
            *value = HeaderValue::from_static("<redacted>");
        }
    }
    let lower = secret.to_ascii_lowercase();
    let named: Vec<_> = headers.keys().filter(|name| name.as_str().contains(lower.as_str())).cloned().collect();
    for name in named {
        headers.remove(name);
    }
}

/// Masks `secret` in a stream of chunks.
pub(crate) struct Masker {
    finder: Finder<'static>,
    carry: BytesMut,
}

impl Masker {
    /// A masker of `secret` (not empty).
    pub fn new(secret: &str) -> Self {
        Self { finder: Finder::new(secret.as_bytes()).into_owned(), carry: BytesMut::new() }
    }

    fn needle(&self) -> &[u8] {
        self.finder.needle()
    }

    /// The bytes of `chunk` that can be sent now, masked.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() && self.finder.find(&chunk).is_none() && self.partial_tail(&chunk) == 0 {
            return chunk;
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(&chunk);
        let len = self.needle().len();
        let mut at = 0;
        while let Some(found) = self.finder.find(&buf[at..]) {
            let start = at + found;
            buf[start..start + len].fill(b'*');
            at = start + len;
        }
        let keep = self.partial_tail(&buf);
        self.carry = buf.split_off(buf.len() - keep);
        buf.freeze()
    }

    /// What is held back at the end of the body (no credential can follow).
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.carry).freeze()
    }

    /// Length of the longest proper suffix of `buf` that starts the credential.
    fn partial_tail(&self, buf: &[u8]) -> usize {
        let needle = self.needle();
        (1..needle.len().min(buf.len() + 1)).rev().find(|n| buf.ends_with(&needle[..*n])).unwrap_or(0)
    }
}

impl super::transform::ChunkTransform for Masker {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        Masker::feed(self, chunk)
    }

    fn finish(&mut self) -> Bytes {
        Masker::finish(self)
    }

    fn held(&self) -> Option<u64> {
        // Masking keeps the length.
        Some(self.carry.len() as u64)
    }
}

/// `bytes` (a whole body) with `secret` masked; the same bytes when it holds none.
pub(crate) fn mask_bytes(bytes: Bytes, secret: &str) -> Bytes {
    if secret.is_empty() {
        return bytes;
    }
    let mut masker = Masker::new(secret);
    let head = masker.feed(bytes);
    let tail = masker.finish();
    if tail.is_empty() {
        return head;
    }
    [head, tail].concat().into()
}

/// `body` with `secret` masked; `body` itself when there is no secret.
pub(crate) fn mask(body: Body, secret: &str) -> Body {
    if secret.is_empty() {
        return body;
    }
    super::transform::transform(body, Masker::new(secret))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(secret: &str, chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = Masker::new(secret);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&m.feed(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&m.finish());
        out
    }

    #[test]
    fn masks_in_and_across_chunks_keeping_the_length() {
        assert_eq!(run("sk-123", &[b"key sk-123 and sk-1", b"23!"]), b"key ****** and ******!");
        assert_eq!(run("sk-123", &[b"sk", b"-", b"12", b"3"]), b"******");
        assert_eq!(run("sk-123", &[b"sk-12 no"]), b"sk-12 no");
    }

    #[test]
    fn whole_bodies_are_masked_and_untouched_ones_not_copied() {
        let body = Bytes::from_static(b"{\"error\": \"bad key sk-123 (sk-123)\"}");
        assert_eq!(mask_bytes(body, "sk-123"), "{\"error\": \"bad key ****** (******)\"}");
        let untouched = Bytes::from_static(b"nothing here");
        assert_eq!(mask_bytes(untouched.clone(), "sk-123").as_ptr(), untouched.as_ptr());
        assert_eq!(mask_bytes(Bytes::from_static(b"ends with sk-1"), "sk-123"), "ends with sk-1");
        assert_eq!(mask_bytes(Bytes::from_static(b"abc"), ""), "abc");
    }

    #[test]
    fn a_chunk_ending_an_sse_event_is_not_held_back() {
        let mut m = Masker::new("sk-123");
        let chunk = Bytes::from_static(b"data: {\"x\":1}\n\n");
        assert_eq!(m.feed(chunk.clone()).as_ptr(), chunk.as_ptr(), "passed through untouched, nothing held");
    }

    #[test]
    fn header_values_holding_the_secret_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("got sk-123"));
        h.insert("x-fine", HeaderValue::from_static("ok"));
        h.insert("x-echo-sk-abc123", HeaderValue::from_static("1"));
        h.insert("sk-abc123", HeaderValue::from_static("1"));
        scrub_headers(&mut h, "sk-123");
        assert_eq!((h["x-echo"].to_str().unwrap(), h["x-fine"].to_str().unwrap()), ("<redacted>", "ok"));
        // A header named by the secret (a lower-case one can be a header name) is removed.
        scrub_headers(&mut h, "sk-ABC123");
        assert_eq!(h.len(), 2, "{h:?}");
    }

    proptest! {
        #[test]
        fn never_leaks_and_keeps_length(body in "[a-z -]{0,80}", cuts in prop::collection::vec(1..10usize, 1..8)) {
            let secret = "sk-ab";
            let text = format!("{body}sk-ab{body}sk-sk-ab");
            let mut chunks = Vec::new();
            let mut rest = text.as_bytes();
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
            let out = run(secret, &chunks);
            prop_assert_eq!(out.len(), text.len());
            prop_assert!(!out.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}
