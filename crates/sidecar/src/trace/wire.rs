//! The OTLP protobuf wire format, written straight from borrowed values: a span costs one
//! pass over its fields and no intermediate message, no allocation per attribute. The
//! `opentelemetry-proto` messages decode what this writes in the tests.

/// Protobuf wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// An attribute's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

#[inline(always)]
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline(always)]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Field keys here are all below 16: one byte.
#[inline(always)]
fn key(buf: &mut Vec<u8>, field: u8, wire: u8) {
    debug_assert!(field < 16);
    buf.push(field << 3 | wire);
}

/// The encoded size of a length-delimited field holding `n` bytes.
#[inline(always)]
fn len_field(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

#[inline(always)]
fn bytes(buf: &mut Vec<u8>, field: u8, data: &[u8]) {
    key(buf, field, LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

#[inline(always)]
fn fixed64(buf: &mut Vec<u8>, field: u8, v: u64) {
    key(buf, field, I64);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline(always)]
fn any_value_len(value: &Value<'_>) -> usize {
    match value {
        Value::Str(s) => len_field(s.len()),
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Bool(_) => 2,
        Value::Double(_) => 9,
    }
}

/// The encoded size of a `KeyValue` field written by [`attribute`].
#[inline(always)]
pub(crate) fn attribute_len(name: &str, value: &Value<'_>) -> usize {
    len_field(len_field(name.len()) + len_field(any_value_len(value)))
}

/// Appends a `KeyValue` as field `field` of the enclosing message (a span's or a resource's
/// attributes).
pub(crate) fn attribute(buf: &mut Vec<u8>, field: u8, name: &str, value: &Value<'_>) {
    let any = any_value_len(value);
    let kv = len_field(name.len()) + len_field(any);
    buf.reserve(len_field(kv));
    key(buf, field, LEN);
    varint(buf, kv as u64);
    bytes(buf, 1, name.as_bytes());
    key(buf, 2, LEN);
    varint(buf, any as u64);
    match value {
        Value::Str(s) => bytes(buf, 1, s.as_bytes()),
        Value::Bool(b) => {
            key(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::Int(i) => {
            key(buf, 3, VARINT);
            varint(buf, *i as u64);
        }
        Value::Double(d) => {
            key(buf, 4, I64);
            buf.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// The `attributes` field number of a `Span` and of a `Resource`.
pub(crate) const SPAN_ATTRIBUTES: u8 = 9;
pub(crate) const RESOURCE_ATTRIBUTES: u8 = 1;

/// `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Server = 2,
    Client = 3,
}

/// One span's fields: its name in parts (joined by spaces), its attributes as `KeyValue`s
/// already encoded (field 9) and as values still to encode.
pub(crate) struct Span<'a> {
    pub trace: u128,
    pub id: u64,
    pub parent: Option<u64>,
    /// The parent came from another process (a client's `traceparent`).
    pub remote_parent: bool,
    pub sampled: bool,
    pub trace_state: &'a str,
    pub name: &'a [&'a str],
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: &'a [&'a [u8]],
    pub extra: &'a [(&'a str, Value<'a>)],
    /// A failed span's status message (status code ERROR).
    pub error: Option<&'a str>,
}

/// `SpanFlags`: the trace flags, and whether the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Appends `span` as a `spans` entry (field 2) of a `ScopeSpans`.
pub(crate) fn span(buf: &mut Vec<u8>, span: &Span<'_>) {
    let status = span.error.map(|message| len_field(message.len()) + 2);
    let name_len = span.name.iter().map(|p| p.len()).sum::<usize>() + span.name.len().saturating_sub(1);
    let attributes_len = span.attributes.iter().map(|a| a.len()).sum::<usize>()
        + span.extra.iter().map(|(k, v)| attribute_len(k, v)).sum::<usize>();
    let len = 18
        + 10
        + if span.trace_state.is_empty() { 0 } else { len_field(span.trace_state.len()) }
        + if span.parent.is_some() { 10 } else { 0 }
        + len_field(name_len)
        + 2
        + 9
        + 9
        + attributes_len
        + status.map_or(0, len_field)
        + 6;
    buf.reserve(len_field(len));
    key(buf, 2, LEN);
    varint(buf, len as u64);
    bytes(buf, 1, &span.trace.to_be_bytes());
    bytes(buf, 2, &span.id.to_be_bytes());
    if !span.trace_state.is_empty() {
        bytes(buf, 3, span.trace_state.as_bytes());
    }
    if let Some(parent) = span.parent {
        bytes(buf, 4, &parent.to_be_bytes());
    }
    key(buf, 5, LEN);
    varint(buf, name_len as u64);
    for (i, part) in span.name.iter().enumerate() {
        if i > 0 {
            buf.push(b' ');
        }
        buf.extend_from_slice(part.as_bytes());
    }
    key(buf, 6, VARINT);
    buf.push(span.kind as u8);
    fixed64(buf, 7, span.start_ns);
    fixed64(buf, 8, span.end_ns);
    for encoded in span.attributes {
        buf.extend_from_slice(encoded);
    }
    for (name, value) in span.extra {
        attribute(buf, SPAN_ATTRIBUTES, name, value);
    }
    if let (Some(message), Some(status)) = (span.error, status) {
        key(buf, 15, LEN);
        varint(buf, status as u64);
        bytes(buf, 2, message.as_bytes());
        key(buf, 3, VARINT);
        buf.push(2); // STATUS_CODE_ERROR
    }
    let flags = u32::from(span.sampled) | HAS_IS_REMOTE | if span.remote_parent { IS_REMOTE } else { 0 };
    // Field 16 does not fit the one-byte key: its key is two bytes.
    varint(buf, u64::from(16u32 << 3 | u32::from(I32)));
    buf.extend_from_slice(&flags.to_le_bytes());
}

/// An `InstrumentationScope` message body.
pub(crate) fn scope(name: &str, version: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    bytes(&mut buf, 1, name.as_bytes());
    bytes(&mut buf, 2, version.as_bytes());
    buf
}

/// Everything of an `ExportTraceServiceRequest` before its spans: one `ResourceSpans` of
/// `resource` (a `Resource` body) with one `ScopeSpans` of `scope`, whose spans, `spans_len`
/// bytes written by [`span`], follow.
pub(crate) fn request_head(resource: &[u8], scope: &[u8], spans_len: usize) -> Vec<u8> {
    let scope_spans = len_field(scope.len()) + spans_len;
    let resource_spans = len_field(resource.len()) + len_field(scope_spans);
    let mut head = Vec::with_capacity(len_field(resource_spans) - scope_spans + scope.len() + 16);
    key(&mut head, 1, LEN);
    varint(&mut head, resource_spans as u64);
    bytes(&mut head, 1, resource);
    key(&mut head, 2, LEN);
    varint(&mut head, scope_spans as u64);
    bytes(&mut head, 1, scope);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use proptest::prelude::*;
    use prost::Message as _;

    fn request(spans: &[Span<'_>], resource: &[(&str, Value<'_>)]) -> ExportTraceServiceRequest {
        let mut body = Vec::new();
        for s in spans {
            span(&mut body, s);
        }
        let mut res = Vec::new();
        for (k, v) in resource {
            attribute(&mut res, RESOURCE_ATTRIBUTES, k, v);
        }
        let mut bytes = request_head(&res, &scope("llmroute-sidecar", "1.2.3"), body.len());
        bytes.extend_from_slice(&body);
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("valid OTLP")
    }

    fn any_of(v: &Value<'_>) -> Any {
        match *v {
            Value::Str(s) => Any::StringValue(s.to_owned()),
            Value::Int(i) => Any::IntValue(i),
            Value::Bool(b) => Any::BoolValue(b),
            Value::Double(d) => Any::DoubleValue(d),
        }
    }

    fn value() -> impl Strategy<Value = (String, i64, bool, f64, u8)> {
        (".{0,300}", any::<i64>(), any::<bool>(), -1e300f64..1e300, 0u8..4)
    }

    proptest! {
        /// Whatever the fields, the writer produces the message prost reads back, field for field.
        #[test]
        fn spans_decode_as_written(
            trace in any::<u128>(), id in any::<u64>(), parent in proptest::option::of(any::<u64>()),
            remote in any::<bool>(), sampled in any::<bool>(), state in "[a-z0-9=,]{0,200}",
            name in ".{0,200}", client in any::<bool>(), start in any::<u64>(), end in any::<u64>(),
            error in proptest::option::of(".{0,100}"), attrs in proptest::collection::vec((".{0,40}", value()), 0..12),
        ) {
            let values: Vec<(String, Value<'_>)> = attrs.iter().map(|(k, (s, i, b, d, which))| (k.clone(), match which {
                0 => Value::Str(s), 1 => Value::Int(*i), 2 => Value::Bool(*b), _ => Value::Double(*d),
            })).collect();
            // The first attributes encoded in two blocks, the rest left to the span's writer.
            let (blocks, extra) = values.split_at(values.len() / 2);
            let (mut one, mut two) = (Vec::new(), Vec::new());
            for (i, (k, v)) in blocks.iter().enumerate() {
                attribute(if i % 2 == 0 { &mut one } else { &mut two }, SPAN_ATTRIBUTES, k, v);
            }
            let mut encoded = Vec::new();
            for (k, v) in blocks.iter().step_by(2).chain(blocks.iter().skip(1).step_by(2)) {
                encoded.push((k.clone(), *v));
            }
            encoded.extend(extra.iter().cloned());
            let values = encoded;
            let extra: Vec<(&str, Value<'_>)> = extra.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let parts: Vec<&str> = name.split(' ').collect();
            let kind = if client { Kind::Client } else { Kind::Server };
            let s = Span { trace, id, parent, remote_parent: remote, sampled, trace_state: &state, name: &parts, kind,
                start_ns: start, end_ns: end, attributes: &[&one, &two], extra: &extra, error: error.as_deref() };
            let decoded = request(&[s], &[("service.name", Value::Str("x")), ("n", Value::Int(-1))]);
            let rs = &decoded.resource_spans[0];
            let res = rs.resource.as_ref().unwrap();
            prop_assert_eq!(res.attributes.len(), 2);
            prop_assert_eq!(&res.attributes[0].key, "service.name");
            let scope = rs.scope_spans[0].scope.as_ref().unwrap();
            prop_assert_eq!((scope.name.as_str(), scope.version.as_str()), ("llmroute-sidecar", "1.2.3"));
            let got = &rs.scope_spans[0].spans[0];
            prop_assert_eq!(got.trace_id.as_slice(), &trace.to_be_bytes());
            prop_assert_eq!(got.span_id.as_slice(), &id.to_be_bytes());
            prop_assert_eq!(got.parent_span_id.clone(), parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default());
            prop_assert_eq!(&got.trace_state, &state);
            prop_assert_eq!(&got.name, &name);
            prop_assert_eq!(got.kind, kind as i32);
            prop_assert_eq!((got.start_time_unix_nano, got.end_time_unix_nano), (start, end));
            prop_assert_eq!(got.flags, u32::from(sampled) | 0x100 | if remote { 0x200 } else { 0 });
            match &error {
                Some(m) => {
                    let status = got.status.as_ref().unwrap();
                    prop_assert_eq!((status.code, status.message.as_str()), (2, m.as_str()));
                }
                None => prop_assert!(got.status.is_none()),
            }
            prop_assert_eq!(got.attributes.len(), values.len());
            for (kv, (k, v)) in got.attributes.iter().zip(&values) {
                prop_assert_eq!(&kv.key, k);
                prop_assert_eq!(kv.value.as_ref().and_then(|a| a.value.clone()), Some(any_of(v)));
            }
        }
    }

    #[test]
    fn several_spans_share_one_request() {
        let s = |id| Span {
            trace: 1,
            id,
            parent: None,
            remote_parent: false,
            sampled: true,
            trace_state: "",
            name: &["chat", "m"],
            kind: Kind::Server,
            start_ns: 1,
            end_ns: 2,
            attributes: &[],
            extra: &[],
            error: None,
        };
        let decoded = request(&[s(1), s(2), s(3)], &[]);
        let ids: Vec<u64> = decoded.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }
}
