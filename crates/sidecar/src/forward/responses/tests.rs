use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Feeds `input` in chunks of the given sizes (cycled) and returns the whole output.
fn run(rewriter: &mut IdRewriter, input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.extend_from_slice(&rewriter.feed(Bytes::copy_from_slice(&rest[..n])));
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(&rewriter.finish());
    out
}

fn wrapped(id: &str) -> String {
    wrap_response_id("ns/d", id)
}

#[test]
fn a_plain_answer_gets_its_top_level_id_wrapped() {
    let body = json!({"object": "response", "output": [{"id": "msg_1", "type": "message"}], "id": "resp_1"});
    let text = serde_json::to_vec(&body).unwrap();
    for size in [1, 2, 7, 1000] {
        let out: Value =
            serde_json::from_slice(&run(&mut IdRewriter::new("ns/d".into(), false), &text, &[size])).unwrap();
        assert_eq!(out["id"], wrapped("resp_1"), "chunks of {size}");
        assert_eq!(out["output"][0]["id"], "msg_1", "nested ids stay");
    }
}

#[test]
fn stream_events_get_their_response_id_wrapped() {
    let text = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_2\",\"object\":\"response\"}}\n\n\
                event: response.output_item.added\ndata: {\"item\":{\"id\":\"msg_3\"},\"id\":\"x\"}\n\n\
                : comment data: {\"response\":{\"id\":\"no\"}}\n\ndata: [DONE]\n\n";
    let out = String::from_utf8(run(&mut IdRewriter::new("ns/d".into(), true), text.as_bytes(), &[3])).unwrap();
    assert!(out.contains(&format!("\"id\":\"{}\"", wrapped("resp_2"))), "{out}");
    assert!(out.contains("\"item\":{\"id\":\"msg_3\"},\"id\":\"x\""), "{out}");
    assert!(out.contains(": comment data: {\"response\":{\"id\":\"no\"}}"), "comments untouched: {out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn ids_too_long_or_escaped_pass_unchanged() {
    let long = "r".repeat(MAX_ID_BYTES + 10);
    for id in [long.as_str(), "resp\\u0041"] {
        let text = format!("{{\"id\":\"{id}\",\"object\":\"response\"}}");
        let out = run(&mut IdRewriter::new("ns/d".into(), false), text.as_bytes(), &[5]);
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}

#[test]
fn after_the_id_the_rest_passes_through_without_copying() {
    let mut r = IdRewriter::new("ns/d".into(), false);
    r.feed(Bytes::from_static(b"{\"id\":\"resp_1\","));
    let rest = Bytes::from(vec![b' '; 1 << 20]);
    let out = r.feed(rest.clone());
    assert_eq!(out.as_ptr(), rest.as_ptr(), "the same buffer, not a copy");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z\"\\\\{}\\[\\],: \u{e9}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("(id|response|[a-z]{1,6})", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(input in prop::collection::vec(any::<u8>(), 0..2048), sizes in prop::collection::vec(1..64usize, 1..5), stream in any::<bool>()) {
        let mut r = IdRewriter::new("ns/d".into(), stream);
        let out = run(&mut r, &input, &sizes);
        // At most one id per line can grow, each by the wrapper's length.
        let lines = input.iter().filter(|b| **b == b'\n').count() + 1;
        prop_assert!(out.len() <= input.len() + lines * 64);
    }

    #[test]
    fn a_plain_answer_equals_the_value_rewrite(mut value in json_value(), id in "[a-zA-Z0-9_]{1,40}", sizes in prop::collection::vec(1..40usize, 1..4)) {
        let Value::Object(map) = &mut value else { return Ok(()) };
        map.insert("id".into(), Value::String(id.clone()));
        let text = serde_json::to_vec(&value).unwrap();
        let out: Value = serde_json::from_slice(&run(&mut IdRewriter::new("ns/d".into(), false), &text, &sizes)).unwrap();
        let mut expected = value.clone();
        expected["id"] = Value::String(wrapped(&id));
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn stream_events_equal_the_value_rewrite(events in prop::collection::vec((json_value(), prop::option::of("[a-z0-9_]{1,20}")), 1..5), sizes in prop::collection::vec(1..40usize, 1..4)) {
        let mut text = Vec::new();
        let mut expected = Vec::new();
        for (value, id) in events {
            let mut value = json!({"type": "response.x", "payload": value});
            if let Some(id) = &id {
                value["response"] = json!({"id": id, "object": "response"});
            }
            text.extend_from_slice(b"event: e\ndata: ");
            text.extend_from_slice(&serde_json::to_vec(&value).unwrap());
            text.extend_from_slice(b"\n\n");
            if let Some(id) = &id {
                value["response"]["id"] = Value::String(wrapped(id));
            }
            expected.push(value);
        }
        let out = run(&mut IdRewriter::new("ns/d".into(), true), &text, &sizes);
        let got: Vec<Value> = String::from_utf8(out).unwrap().lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn an_empty_id_is_passed_on_unwrapped() {
    let text = br#"{"object":"response","id":""}"#;
    assert_eq!(run(&mut IdRewriter::new("ns/d".into(), false), text, &[3]), text, "a wrapped empty id names nothing");
}
