//! The canonical form of a JSON part, written as it is parsed into a bounded buffer: no
//! whitespace, strings escaped as serde_json escapes them, numbers as serde_json writes them,
//! and object keys sorted (in the first levels, and up to a number of entries). Parsing stops as soon as the budget is full, so a
//! hostile part costs about one read of what precedes the cut, never a parse of the whole.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Objects this deep (from the part's root) or shallower have their keys sorted; deeper ones
/// are written in the order sent. Sorting reads an object whole before descending into it,
/// so each sorting level reads its bytes once more: the depth bounds what nesting can cost.
const SORTED_DEPTH: u32 = 4;
/// Past this depth there is no key (the strategy picks).
const MAX_DEPTH: u32 = 64;
/// An object with more entries than this is written in the order sent, not sorted: sorting
/// holds its entries, and a hostile object has millions.
const MAX_SORTED_ENTRIES: usize = 256;

/// Why writing stopped before the part ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// The budget is full: the key is made.
    Full,
    /// Nested past [`MAX_DEPTH`]: no key.
    TooDeep,
}

/// The canonical text written so far, up to its budget.
pub(super) struct Canonical {
    text: Vec<u8>,
    budget: usize,
    stop: Option<Stop>,
}

impl Canonical {
    pub fn new(budget: usize) -> Self {
        Self { text: Vec::with_capacity(budget.min(64 * 1024)), budget, stop: None }
    }

    /// The budget is full.
    pub fn full(&self) -> bool {
        self.text.len() >= self.budget
    }

    /// The text, when the budget was filled by parts that were not too deep.
    pub fn done(&self) -> Option<&[u8]> {
        (self.full() && self.stop != Some(Stop::TooDeep)).then_some(&self.text)
    }

    /// Appends `raw` in canonical form (nothing once the budget is full).
    pub fn part(&mut self, raw: &RawValue) {
        self.json(raw.get(), 0);
    }

    /// Appends an object's `entries` (sorted by [`object`]) as the part it is.
    pub fn entries(&mut self, entries: &[(String, &RawValue)]) {
        if self.stop.is_none() && !self.full() {
            self.put(b"{");
            if self.sorted_entries(entries, 1) {
                self.put(b"}");
                self.go_on();
            }
        }
    }

    /// Writes `key:value` pairs; whether to go on.
    fn sorted_entries(&mut self, entries: &[(String, &RawValue)], depth: u32) -> bool {
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                self.put(b",");
            }
            let _ = serde_json::to_writer(&mut *self, key);
            self.put(b":");
            if !self.json(value.get(), depth) {
                return false;
            }
        }
        true
    }

    fn json(&mut self, text: &str, depth: u32) -> bool {
        if self.stop.is_some() || self.full() {
            return false;
        }
        if text.starts_with('"') {
            self.raw_string(text);
            return self.go_on();
        }
        let mut de = serde_json::Deserializer::from_str(text);
        Seed { out: self, depth, comma: false }.deserialize(&mut de).is_ok()
    }

    /// Writes the JSON string token `text` (valid, quotes included) as serde_json writes its
    /// value, decoding escapes only as far as the budget goes: a huge string costs the
    /// budget, not its length.
    fn raw_string(&mut self, text: &str) {
        let inner = text.as_bytes().get(1..text.len().saturating_sub(1)).unwrap_or_default();
        self.put(b"\"");
        let (mut i, mut run) = (0, 0);
        while i < inner.len() && !self.full() {
            if inner[i] != b'\\' {
                i += 1;
                // A run longer than what is left is cut where the budget ends.
                if i - run >= self.budget - self.text.len() {
                    break;
                }
                continue;
            }
            self.put(&inner[run..i]);
            let (len, c) = escape(&inner[i..]);
            match c {
                Some(c) => self.put_char(c),
                // A lone surrogate: kept as written (serde_json would refuse the string).
                None => self.put(&inner[i..i + len]),
            }
            i += len;
            run = i;
        }
        self.put(&inner[run..i.min(inner.len())]);
        self.put(b"\"");
    }

    /// `c` as serde_json writes it inside a string.
    fn put_char(&mut self, c: char) {
        match c {
            '"' => self.put(b"\\\""),
            '\\' => self.put(b"\\\\"),
            '\u{8}' => self.put(b"\\b"),
            '\u{c}' => self.put(b"\\f"),
            '\n' => self.put(b"\\n"),
            '\r' => self.put(b"\\r"),
            '\t' => self.put(b"\\t"),
            c if u32::from(c) < 0x20 => self.put(format!("\\u{:04x}", u32::from(c)).as_bytes()),
            c => self.put(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.budget.saturating_sub(self.text.len()));
        self.text.extend_from_slice(&bytes[..take]);
    }

    /// Whether to go on; when not, why is recorded.
    fn go_on(&mut self) -> bool {
        if self.stop.is_none() && self.full() {
            self.stop = Some(Stop::Full);
        }
        self.stop.is_none()
    }
}

impl std::io::Write for Canonical {
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

/// The entries of `raw` sorted by key, when it is an object small enough to sort (else
/// `None`: [`Canonical::part`] writes it as sent).
pub(super) fn object(raw: &RawValue) -> Option<Vec<(String, &RawValue)>> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, &'de RawValue)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                if entries.len() == MAX_SORTED_ENTRIES {
                    return Err(de::Error::custom("large"));
                }
                entries.push(entry);
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(Entries).ok()
}

/// The escape at the start of `bytes` (which starts with a backslash): its length, and the
/// character it stands for (`None`: a lone surrogate).
fn escape(bytes: &[u8]) -> (usize, Option<char>) {
    let hex = |at: usize| {
        let digits = bytes.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    match bytes.get(1) {
        Some(b'"') => (2, Some('"')),
        Some(b'\\') => (2, Some('\\')),
        Some(b'/') => (2, Some('/')),
        Some(b'b') => (2, Some('\u{8}')),
        Some(b'f') => (2, Some('\u{c}')),
        Some(b'n') => (2, Some('\n')),
        Some(b'r') => (2, Some('\r')),
        Some(b't') => (2, Some('\t')),
        Some(b'u') => match hex(2) {
            Some(high @ 0xD800..=0xDBFF) => match (bytes.get(6..8), hex(8)) {
                (Some(b"\\u"), Some(low @ 0xDC00..=0xDFFF)) => {
                    (12, char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)))
                }
                _ => (6, None),
            },
            Some(n) => (6, char::from_u32(n)),
            None => (bytes.len().min(6), None),
        },
        _ => (bytes.len().min(2), None),
    }
}

/// Calls `each` on the elements of the array `raw`, in order, until it returns `false`; the
/// elements after that are not parsed. Anything but an array has no elements.
pub(super) fn each_element<'a>(raw: &'a RawValue, each: impl FnMut(&'a RawValue) -> bool) {
    struct Elements<F>(F);
    impl<'de, F: FnMut(&'de RawValue) -> bool> Visitor<'de> for Elements<F> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }

        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if !(self.0)(item) {
                    return Err(de::Error::custom("stop"));
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let _ = de.deserialize_seq(Elements(each));
}

/// Writes what it visits into `out` (after a comma when `comma`).
struct Seed<'o> {
    out: &'o mut Canonical,
    depth: u32,
    comma: bool,
}

impl Seed<'_> {
    fn begin(&mut self) {
        if self.comma {
            self.out.put(b",");
        }
    }

    fn end<E: de::Error>(self) -> Result<(), E> {
        if self.out.go_on() { Ok(()) } else { Err(E::custom("stop")) }
    }

    fn scalar<E: de::Error, T: serde::Serialize + ?Sized>(mut self, v: &T) -> Result<(), E> {
        self.begin();
        let _ = serde_json::to_writer(&mut *self.out, v);
        self.end()
    }

    fn deeper<E: de::Error>(&mut self) -> Result<u32, E> {
        if self.depth >= MAX_DEPTH {
            self.out.stop = Some(Stop::TooDeep);
            return Err(E::custom("too deep"));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(v)
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.begin();
        self.out.put(b"null");
        self.end()
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        self.begin();
        self.out.put(b"[");
        let mut comma = false;
        while self.out.go_on() {
            let seed = Seed { out: &mut *self.out, depth, comma };
            if seq.next_element_seed(seed)?.is_none() {
                self.out.put(b"]");
                return self.end();
            }
            comma = true;
        }
        Err(de::Error::custom("stop"))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        self.begin();
        self.out.put(b"{");
        let mut entries: Vec<(String, &'de RawValue)> = Vec::new();
        let mut whole = false;
        if self.depth < SORTED_DEPTH {
            // Read whole (values left unparsed), then written in key order; an object with
            // more than MAX_SORTED_ENTRIES is written as sent.
            while entries.len() <= MAX_SORTED_ENTRIES {
                match map.next_entry::<String, &'de RawValue>()? {
                    Some(entry) => entries.push(entry),
                    None => {
                        entries.sort_by(|a, b| a.0.cmp(&b.0));
                        whole = true;
                        break;
                    }
                }
            }
        }
        if !self.out.sorted_entries(&entries, depth) {
            return Err(de::Error::custom("stop"));
        }
        let mut first = entries.is_empty();
        if whole {
            self.out.put(b"}");
            return self.end();
        }
        // The rest (all of a deep or large object), streamed as sent.
        while self.out.go_on() {
            let Some(key) = map.next_key::<String>()? else {
                self.out.put(b"}");
                return self.end();
            };
            if !first {
                self.out.put(b",");
            }
            first = false;
            let _ = serde_json::to_writer(&mut *self.out, &key);
            self.out.put(b":");
            map.next_value_seed(Seed { out: &mut *self.out, depth, comma: false })?;
        }
        Err(de::Error::custom("stop"))
    }
}
