//! Responses-API affinity on the way back: the upstream's response id is wrapped into an
//! llmroute id naming the deployment, as bytes stream through, in bounded memory. A plain
//! answer's top-level `id` is rewritten; in a stream, the `response.id` of each `data:` event.
//! Nothing is buffered but the id itself (at most [`MAX_ID_BYTES`]); once a plain answer's id
//! is rewritten, the rest passes through untouched.

use bytes::Bytes;
use llmroute_router::wrap_response_id;

use crate::body::Body;

/// Longest upstream id rewritten; a longer one passes through as it is.
pub(crate) const MAX_ID_BYTES: usize = 256;
/// Container depth whose kind (object or array) is remembered; deeper levels are only counted.
const TRACKED_DEPTH: u32 = 64;

/// Which string value is the response id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `id` of the top-level object (a plain answer).
    TopId,
    /// `response.id` (a stream event).
    ResponseId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Id,
    Response,
    Other,
}

/// A streaming scanner of one JSON value that finds the target string.
#[derive(Debug)]
struct Json {
    target: Target,
    depth: u32,
    /// Bit d-1 set: the container at depth d is an object.
    objects: u64,
    expect_key: bool,
    in_string: bool,
    escaped: bool,
    /// The string being read is a key: its first bytes, and whether it is longer.
    key: Option<(Vec<u8>, bool)>,
    key_d1: Key,
    key_d2: Key,
    /// The target value being read: its bytes so far.
    capture: Option<Vec<u8>>,
    /// The target was rewritten (or given up on): the rest passes through.
    done: bool,
}

impl Json {
    fn new(target: Target) -> Self {
        Self {
            target,
            depth: 0,
            objects: 0,
            expect_key: false,
            in_string: false,
            escaped: false,
            key: None,
            key_d1: Key::Other,
            key_d2: Key::Other,
            capture: None,
            done: false,
        }
    }

    fn is_object(&self, depth: u32) -> bool {
        (1..=TRACKED_DEPTH).contains(&depth) && self.objects & (1 << (depth - 1)) != 0
    }

    fn at_target(&self) -> bool {
        match self.target {
            Target::TopId => self.depth == 1 && self.key_d1 == Key::Id,
            Target::ResponseId => {
                self.depth == 2 && self.key_d1 == Key::Response && self.key_d2 == Key::Id && self.is_object(2)
            }
        }
    }

    /// Feeds one byte; what to emit goes to `out`.
    fn byte(&mut self, b: u8, deployment: &str, out: &mut Vec<u8>) {
        if self.in_string {
            self.string_byte(b, deployment, out);
            return;
        }
        out.push(b);
        match b {
            b'"' => {
                self.in_string = true;
                if self.expect_key {
                    self.key = Some((Vec::with_capacity(8), false));
                } else if self.at_target() {
                    self.capture = Some(Vec::with_capacity(64));
                }
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                if self.depth <= TRACKED_DEPTH {
                    let bit = 1u64 << (self.depth - 1);
                    self.objects = if b == b'{' { self.objects | bit } else { self.objects & !bit };
                }
                if self.depth == 2 {
                    self.key_d2 = Key::Other;
                }
                self.expect_key = b == b'{';
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                self.expect_key = false;
            }
            b',' => self.expect_key = self.is_object(self.depth),
            b':' => self.expect_key = false,
            _ => {}
        }
    }

    fn string_byte(&mut self, b: u8, deployment: &str, out: &mut Vec<u8>) {
        let closing = b == b'"' && !self.escaped;
        self.escaped = !self.escaped && b == b'\\';
        if let Some(capture) = &mut self.capture {
            if closing {
                // An empty id is passed on as it is: wrapped, it would name no upstream id.
                let id = std::str::from_utf8(capture).ok().filter(|id| !id.is_empty() && !capture.contains(&b'\\'));
                match id {
                    Some(id) => out.extend_from_slice(wrap_response_id(deployment, id).as_bytes()),
                    None => out.extend_from_slice(capture),
                }
                self.capture = None;
                self.done = true;
            } else if capture.len() < MAX_ID_BYTES {
                capture.push(b);
                return;
            } else {
                // Too long to be an id we wrap: give it back unchanged and stop looking.
                out.extend_from_slice(capture);
                self.capture = None;
                self.done = true;
            }
        }
        out.push(b);
        if closing {
            self.in_string = false;
            if let Some((key, long)) = self.key.take() {
                let key = match (long, key.as_slice()) {
                    (false, b"id") => Key::Id,
                    (false, b"response") => Key::Response,
                    _ => Key::Other,
                };
                match self.depth {
                    1 => self.key_d1 = key,
                    2 => self.key_d2 = key,
                    _ => {}
                }
            }
        } else if let Some((key, long)) = &mut self.key {
            if key.len() < 16 {
                key.push(b);
            } else {
                *long = true;
            }
        }
    }
}

/// Where a stream scanner is within the current line.
#[derive(Debug)]
enum Line {
    /// At the start of a line: how much of `data:` matched so far.
    Start(usize),
    /// In a `data:` line's JSON.
    Data(Json),
    /// Passing the rest of the line through.
    Skip,
}

/// The rewriting state of one answer.
#[derive(Debug)]
pub(crate) struct IdRewriter {
    deployment: String,
    stream: Option<Line>,
    plain: Json,
}

impl IdRewriter {
    /// A rewriter for an answer of `deployment`; `stream` for SSE.
    pub fn new(deployment: String, stream: bool) -> Self {
        Self { deployment, stream: stream.then_some(Line::Start(0)), plain: Json::new(Target::TopId) }
    }

    /// Rewrites one chunk. Returns the chunk itself when nothing in it can change.
    pub fn feed(&mut self, input: Bytes) -> Bytes {
        if self.stream.is_none() && self.plain.done {
            return input;
        }
        let mut out = Vec::with_capacity(input.len() + 64);
        match &mut self.stream {
            None => {
                let mut rest = input.as_ref();
                while let Some((&b, tail)) = rest.split_first() {
                    if self.plain.done {
                        break;
                    }
                    self.plain.byte(b, &self.deployment, &mut out);
                    rest = tail;
                }
                out.extend_from_slice(rest);
            }
            Some(line) => feed_stream(line, &input, &self.deployment, &mut out),
        }
        Bytes::from(out)
    }

    /// Bytes held back at the end of the answer (an unterminated id), given back unchanged.
    pub fn finish(&mut self) -> Bytes {
        let held = match &mut self.stream {
            Some(Line::Data(json)) => json.capture.take(),
            _ => self.plain.capture.take(),
        };
        held.map(Bytes::from).unwrap_or_default()
    }
}

fn feed_stream(line: &mut Line, mut input: &[u8], deployment: &str, out: &mut Vec<u8>) {
    const DATA: &[u8] = b"data:";
    while !input.is_empty() {
        match line {
            Line::Skip => match input.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    out.extend_from_slice(&input[..=end]);
                    input = &input[end + 1..];
                    *line = Line::Start(0);
                }
                None => {
                    out.extend_from_slice(input);
                    return;
                }
            },
            Line::Start(matched) => {
                let b = input[0];
                input = &input[1..];
                out.push(b);
                if b == b'\n' {
                    *matched = 0;
                } else if b == DATA[*matched] {
                    *matched += 1;
                    if *matched == DATA.len() {
                        *line = Line::Data(Json::new(Target::ResponseId));
                    }
                } else {
                    *line = Line::Skip;
                }
            }
            Line::Data(json) => {
                let b = input[0];
                if b == b'\n' && json.capture.is_none() {
                    *line = Line::Start(0);
                    out.push(b);
                    input = &input[1..];
                } else if json.done {
                    *line = Line::Skip;
                } else {
                    json.byte(b, deployment, out);
                    input = &input[1..];
                }
            }
        }
    }
}

impl super::transform::ChunkTransform for IdRewriter {
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        IdRewriter::feed(self, chunk)
    }

    fn finish(&mut self) -> Bytes {
        IdRewriter::finish(self)
    }

    fn held(&self) -> Option<u64> {
        // A wrapped id is longer than the upstream's.
        None
    }
}

/// `body` with its Responses ids wrapped for `deployment`.
pub(crate) fn rewrite(body: Body, deployment: String, stream: bool) -> Body {
    super::transform::transform(body, IdRewriter::new(deployment, stream))
}

#[cfg(test)]
mod tests;
