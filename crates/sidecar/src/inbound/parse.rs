//! Reading a client request: only what routing needs; the rest is forwarded as sent.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use llmroute_router::{RequestKeys, unwrap_response_id};
use llmroute_upstream::Endpoint;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;

/// A request body read into memory, holding its share of the sidecar's body memory until
/// the request is done.
#[derive(Debug)]
pub(crate) struct ReadBody {
    /// The bytes.
    pub bytes: Bytes,
    /// The memory reservation (None when nothing had to be reserved).
    pub reservation: Option<OwnedSemaphorePermit>,
}

/// A parsed client request.
#[derive(Debug)]
pub(crate) struct ClientRequest {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The body as sent (model and previous_response_id are rewritten per attempt when needed).
    pub raw: Bytes,
    /// Requested model name.
    pub model: String,
    /// `"stream": true`.
    pub stream: bool,
    /// Routing keys.
    pub keys: RequestKeys,
    /// The upstream id inside an llmroute `previous_response_id`.
    pub previous_upstream_id: Option<String>,
    /// The body has a `stream_options` field (the client chose; it is left alone).
    pub has_stream_options: bool,
    /// The body's memory reservation, released with the request.
    pub _reservation: Option<OwnedSemaphorePermit>,
}

/// Rough prompt-size estimate: 4 bytes of request JSON per token.
const BYTES_PER_TOKEN: u64 = 4;

/// The fields routing reads; everything else in the body is skipped without being built.
#[derive(Deserialize)]
pub(crate) struct Peek {
    model: Option<Value>,
    stream: Option<Value>,
    user: Option<Value>,
    previous_response_id: Option<Value>,
    /// Present whatever its value (`null` included: the client chose, and a second key spliced
    /// beside its own would leave the upstream to pick one).
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<()>,
}

/// `Some` for a field that is there, whatever its value.
fn present<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<()>, D::Error> {
    serde::de::IgnoredAny::deserialize(field).map(|_| Some(()))
}

const SESSION: HeaderName = HeaderName::from_static("x-llmroute-session-id");
const USER: HeaderName = HeaderName::from_static("x-llmroute-user");
const MIN_TIER: HeaderName = HeaderName::from_static("x-llmroute-min-quality-tier");

/// The routing keys the `x-llmroute-*` request headers carry: session, user, minimum quality
/// tier (a malformed tier is an error, whatever its bytes).
pub(crate) fn header_keys(headers: &HeaderMap) -> Result<RequestKeys, ApiError> {
    let raw = |name: &HeaderName| headers.get(name).map(http::HeaderValue::as_bytes).filter(|v| !v.is_empty());
    let min_quality_tier = match raw(&MIN_TIER) {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|t| (1..=5).contains(t))
            .ok_or(ApiError::InvalidHeader("x-llmroute-min-quality-tier must be an integer from 1 to 5."))?,
    };
    let key = |name: &HeaderName| raw(name).map(opaque_key);
    Ok(RequestKeys { session: key(&SESSION), user: key(&USER), min_quality_tier, ..RequestKeys::default() })
}

/// An affinity key from a header's bytes, none lost: UTF-8 as it is, other bytes each as the
/// character of the same number (a header value is bytes; visible ASCII reads the same
/// either way).
fn opaque_key(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes).map_or_else(|_| bytes.iter().copied().map(char::from).collect(), str::to_owned)
}

/// Reads the routing fields; everything else is skipped without being built.
pub(crate) fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    serde_json::from_slice::<Peek>(body).map_err(|e| {
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
        if is_json && !body.trim_ascii_start().starts_with(b"{") {
            ApiError::InvalidRequest("The request body must be a JSON object.".into())
        } else if is_json {
            ApiError::InvalidRequest(format!("The request body is not a valid request: {e}"))
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })
}

/// Parses the body and headers of a routed request.
pub(crate) fn parse(endpoint: Endpoint, headers: &HeaderMap, body: ReadBody) -> Result<ClientRequest, ApiError> {
    let ReadBody { bytes: body, reservation } = body;
    let peeked = peek(&body)?;
    let model = match peeked.model {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => return Err(ApiError::InvalidModel),
        None => return Err(ApiError::MissingModel),
    };
    let wrong = |field: &str, kind: &str| ApiError::InvalidRequest(format!("`{field}` must be {kind}."));
    let stream = match &peeked.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong("stream", "a boolean")),
    };
    if peeked.user.as_ref().is_some_and(|u| !u.is_string() && !u.is_null()) {
        return Err(wrong("user", "a string"));
    }
    if peeked.previous_response_id.as_ref().is_some_and(|p| !p.is_string() && !p.is_null()) {
        return Err(wrong("previous_response_id", "a string"));
    }
    let mut keys = header_keys(headers)?;
    if keys.user.is_none() {
        keys.user = peeked.user.as_ref().and_then(Value::as_str).map(str::to_owned);
    }
    let previous = peeked.previous_response_id.as_ref().and_then(Value::as_str).and_then(unwrap_response_id);
    let (previous_deployment, previous_upstream_id) = match previous {
        Some((deployment, upstream)) => (Some(deployment), Some(upstream.to_owned())),
        None => (None, None),
    };
    Ok(ClientRequest {
        endpoint,
        model,
        stream,
        keys: RequestKeys { previous_deployment, prompt_tokens: body.len() as u64 / BYTES_PER_TOKEN, ..keys },
        previous_upstream_id,
        has_stream_options: peeked.stream_options.is_some(),
        raw: body,
        _reservation: reservation,
    })
}

/// Whether the sidecar asks a stream's upstream for usage on the client's behalf: a chat or
/// completion stream whose client set no `stream_options`, to a deployment that accepts it.
pub(crate) fn asks_usage(request: &ClientRequest, deployment_accepts: bool) -> bool {
    request.stream
        && !request.has_stream_options
        && deployment_accepts
        && matches!(request.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
}

/// The field asking for usage in a stream.
const ASK_USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// The body sent to one upstream: the model replaced, an llmroute previous_response_id
/// replaced by the upstream's own id, and `stream_options.include_usage` added when
/// `ask_usage`. When nothing changes, the client's bytes go as sent; otherwise every other
/// member keeps its order and its value's bytes (a 30-digit seed stays 30 digits, `1e400`
/// stays `1e400`: the body is not decoded into numbers and encoded again). A body that must be
/// rewritten and cannot be (text that is not UTF-8, which JSON requires) is refused: sent as
/// it is, it would name the public model or an llmroute id to the upstream.
pub(crate) fn upstream_body(request: &ClientRequest, upstream_model: &str, ask_usage: bool) -> Result<Bytes, ApiError> {
    let rewrite = upstream_model != request.model || request.previous_upstream_id.is_some();
    if !rewrite && !ask_usage {
        return Ok(request.raw.clone());
    }
    if !rewrite {
        // A parsed request body is a JSON object with at least `model`: `{` then a member; the
        // option is spliced in after the brace, the client's bytes otherwise as sent.
        if let Some(open) = request.raw.iter().position(|b| *b == b'{') {
            let mut body = Vec::with_capacity(request.raw.len() + ASK_USAGE.len());
            body.extend_from_slice(&request.raw[..=open]);
            body.extend_from_slice(ASK_USAGE);
            body.extend_from_slice(&request.raw[open + 1..]);
            return Ok(Bytes::from(body));
        }
    }
    let model = (upstream_model != request.model).then_some(upstream_model);
    let replace = Replace { model, previous: request.previous_upstream_id.as_deref(), ask_usage };
    rewritten(&request.raw, &replace).map(Bytes::from).ok_or_else(|| {
        ApiError::InvalidJson("the request body is not UTF-8 JSON, so it cannot be rewritten for the upstream".into())
    })
}

/// What a rewrite replaces and adds.
struct Replace<'a> {
    model: Option<&'a str>,
    previous: Option<&'a str>,
    ask_usage: bool,
}

/// Writes a JSON object's members into `out` as they are read, each value as its bytes but
/// for the replaced ones: no member list is built, whatever the body holds.
struct Rewrite<'r, 'a> {
    out: &'r mut Vec<u8>,
    replace: &'r Replace<'a>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Rewrite<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Rewrite<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        use serde::de::Error as _;
        let Rewrite { out, replace } = self;
        out.push(b'{');
        let mut first = true;
        if replace.ask_usage {
            out.extend_from_slice(&ASK_USAGE[..ASK_USAGE.len() - 1]);
            first = false;
        }
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: &'de serde_json::value::RawValue = map.next_value()?;
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, &key).map_err(M::Error::custom)?;
            out.push(b':');
            match (key.as_ref(), replace.model, replace.previous) {
                ("model", Some(model), _) => serde_json::to_writer(&mut *out, model).map_err(M::Error::custom)?,
                ("previous_response_id", _, Some(id)) => {
                    serde_json::to_writer(&mut *out, id).map_err(M::Error::custom)?
                }
                _ => out.extend_from_slice(value.get().as_bytes()),
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// `raw` rewritten as `replace` says; `None` when `raw` is not an object whose members can be
/// read (its text not UTF-8).
fn rewritten(raw: &[u8], replace: &Replace<'_>) -> Option<Vec<u8>> {
    use serde::de::DeserializeSeed as _;
    let mut out = Vec::with_capacity(raw.len() + ASK_USAGE.len() + replace.model.map_or(0, str::len));
    let mut reader = serde_json::Deserializer::from_slice(raw);
    Rewrite { out: &mut out, replace }.deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str, headers: &[(&'static str, &str)]) -> Result<ClientRequest, ApiError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        parse(Endpoint::ChatCompletions, &map, ReadBody { bytes: Bytes::from(body.to_owned()), reservation: None })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        #[test]
        fn arbitrary_bodies_and_headers_never_panic(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            session in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            tier in "[ -~]{0,8}",
        ) {
            let mut map = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(&session) {
                map.insert("x-llmroute-session-id", v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&tier) {
                map.insert("x-llmroute-min-quality-tier", v);
            }
            let read = ReadBody { bytes: Bytes::from(body.clone()), reservation: None };
            if let Ok(r) = parse(Endpoint::Responses, &map, read) {
                proptest::prop_assert!(!r.model.is_empty());
                proptest::prop_assert!(r.keys.min_quality_tier <= 5);
                // A rewrite for another model stays valid JSON holding that model.
                let rewritten: Value = serde_json::from_slice(&upstream_body(&r, "other", false).unwrap()).unwrap();
                proptest::prop_assert_eq!(&rewritten["model"], "other");
            }
            let _ = peek(&body);
        }
    }

    #[test]
    fn reads_model_stream_user_and_keys() {
        let r =
            parse_str(r#"{"model":"m","stream":true,"user":"u1","messages":[]}"#, &[("x-llmroute-session-id", "s1")])
                .unwrap();
        assert_eq!((r.model.as_str(), r.stream), ("m", true));
        assert_eq!(r.keys.user.as_deref(), Some("u1"));
        assert_eq!(r.keys.session.as_deref(), Some("s1"));
        let r = parse_str(r#"{"model":"m","user":"body"}"#, &[("x-llmroute-user", "header")]).unwrap();
        assert_eq!(r.keys.user.as_deref(), Some("header"), "the header wins");
    }

    #[test]
    fn bad_requests_are_400_with_a_code() {
        for (body, code) in [
            (r#"{"model":"m","stream":"yes"}"#, "invalid_request"),
            (r#"{"model":"m","stream":1}"#, "invalid_request"),
            (r#"{"model":"m","user":5}"#, "invalid_request"),
            (r#"{"model":"m","previous_response_id":["a"]}"#, "invalid_request"),
            ("{", "invalid_json"),
            ("[1]", "invalid_request"),
            ("{}", "missing_model"),
            (r#"{"model":1}"#, "invalid_model"),
        ] {
            let e = parse_str(body, &[]).unwrap_err();
            assert_eq!((e.status().as_u16(), e.code()), (400, code), "{body}");
        }
        let e = parse_str(r#"{"model":"m"}"#, &[("x-llmroute-min-quality-tier", "9")]).unwrap_err();
        assert_eq!(e.code(), "invalid_header");
    }

    #[test]
    fn routing_headers_of_any_bytes_are_read_not_dropped() {
        let with = |name: &'static str, bytes: &[u8]| {
            let mut map = HeaderMap::new();
            map.insert(name, http::HeaderValue::from_bytes(bytes).unwrap());
            header_keys(&map)
        };
        // A tier that is not visible ASCII is still a malformed tier: 400, not ignored.
        for bytes in [&b"\xff"[..], b"\xe9", "3\u{e9}".as_bytes()] {
            assert_eq!(with("x-llmroute-min-quality-tier", bytes).unwrap_err().code(), "invalid_header", "{bytes:?}");
        }
        // Session and user keys keep every byte: UTF-8 as written, other bytes one to one.
        assert_eq!(with("x-llmroute-session-id", "été".as_bytes()).unwrap().session.as_deref(), Some("été"));
        let a = with("x-llmroute-user", b"\xff\xfe").unwrap().user.unwrap();
        let b = with("x-llmroute-user", b"\xfe\xff").unwrap().user.unwrap();
        assert_ne!(a, b, "distinct bytes, distinct keys");
        assert_eq!(with("x-llmroute-session-id", b"s-1").unwrap().session.as_deref(), Some("s-1"));
    }

    #[test]
    fn an_unchanged_model_forwards_the_bytes_as_sent() {
        let body = r#"{"model":"m",  "messages":[{"role":"user","content":"hi"}], "extra": {"kept": true}}"#;
        let r = parse_str(body, &[]).unwrap();
        assert_eq!(upstream_body(&r, "m", false).unwrap(), body.as_bytes());
        let rewritten: Value = serde_json::from_slice(&upstream_body(&r, "other", false).unwrap()).unwrap();
        assert_eq!(rewritten["model"], "other");
        assert_eq!(rewritten["extra"]["kept"], true);
    }

    #[test]
    fn usage_is_asked_only_for_streams_whose_client_did_not_choose() {
        let stream = parse_str(r#" {"model":"m","stream":true,"messages":[]}"#, &[]).unwrap();
        assert!(asks_usage(&stream, true) && !asks_usage(&stream, false), "a deployment can opt out");
        let spliced: Value = serde_json::from_slice(&upstream_body(&stream, "m", true).unwrap()).unwrap();
        assert_eq!(spliced["stream_options"], serde_json::json!({"include_usage": true}));
        assert_eq!(spliced["messages"], serde_json::json!([]));
        let renamed: Value = serde_json::from_slice(&upstream_body(&stream, "other", true).unwrap()).unwrap();
        assert_eq!(
            (renamed["model"].as_str(), renamed["stream_options"]["include_usage"].as_bool()),
            (Some("other"), Some(true))
        );
        let null = parse_str(r#"{"model":"m","stream":true,"stream_options":null}"#, &[]).unwrap();
        assert!(null.has_stream_options && !asks_usage(&null, true), "a null stream_options is the client's choice");
        let chose = parse_str(r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#, &[]).unwrap();
        assert!(!asks_usage(&chose, true), "the client's own choice stands");
        assert!(!asks_usage(&parse_str(r#"{"model":"m"}"#, &[]).unwrap(), true), "not a stream");
        let body = ReadBody { bytes: Bytes::from_static(br#"{"model":"m","stream":true}"#), reservation: None };
        let embeddings = parse(Endpoint::Embeddings, &HeaderMap::new(), body).unwrap();
        assert!(!asks_usage(&embeddings, true));
    }

    #[test]
    fn a_rewritten_body_keeps_every_other_member_as_sent() {
        let id = llmroute_router::wrap_response_id("ns/d", "resp_up");
        let body = format!(
            r#"{{"seed":123456789012345678901234567890, "x":1e400,"model":"m","previous_response_id":"{id}","s":"\ud83d\ude00 \u00e9","t":"\ud800","stream":true}}"#
        );
        let r = parse_str(&body, &[]).unwrap();
        let sent = upstream_body(&r, "real", true).unwrap();
        assert_eq!(
            std::str::from_utf8(&sent).unwrap(),
            r#"{"stream_options":{"include_usage":true},"seed":123456789012345678901234567890,"x":1e400,"model":"real","previous_response_id":"resp_up","s":"\ud83d\ude00 \u00e9","t":"\ud800","stream":true}"#
        );
        // Only the usage option: spliced, the rest as sent.
        let plain = parse_str(r#"{"model":"m","stream":true,"n":1.50}"#, &[]).unwrap();
        assert_eq!(
            &upstream_body(&plain, "m", true).unwrap()[..],
            br#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"n":1.50}"#
        );
        // A rewrite of an empty-membered object cannot happen (a body names its model), but
        // the option alone is a whole object.
        let replace = Replace { model: Some("x"), previous: None, ask_usage: true };
        assert_eq!(rewritten(b"{}", &replace).unwrap(), br#"{"stream_options":{"include_usage":true}}"#);
        // Text that is not UTF-8 (JSON requires it) cannot be rewritten: refused, not sent as is.
        let latin1 = parse(
            Endpoint::ChatCompletions,
            &HeaderMap::new(),
            ReadBody {
                bytes: Bytes::from_static(b"{\"model\":\"m\",\"messages\":[{\"content\":\"caf\xe9\"}]}"),
                reservation: None,
            },
        )
        .unwrap();
        assert_eq!(upstream_body(&latin1, "real", false).unwrap_err().code(), "invalid_json");
        assert!(upstream_body(&latin1, "m", false).is_ok(), "unchanged, it goes as sent");
    }

    #[test]
    fn upstream_body_rewrites_model_and_previous_response() {
        let id = llmroute_router::wrap_response_id("ns/d", "resp_up");
        let r = parse_str(&format!(r#"{{"model":"m","previous_response_id":"{id}","input":"hi"}}"#), &[]).unwrap();
        assert_eq!(r.keys.previous_deployment.as_deref(), Some("ns/d"));
        let body: Value = serde_json::from_slice(&upstream_body(&r, "real-model", false).unwrap()).unwrap();
        assert_eq!(body["model"], "real-model");
        assert_eq!(body["previous_response_id"], "resp_up");
        assert_eq!(body["input"], "hi");
    }
}
