use proptest::prelude::*;
use serde_json::json;

use super::*;

const SYSTEM: &str = "You are a careful assistant for the accounts team. Follow the house rules. ";

fn system() -> String {
    SYSTEM.repeat(20)
}

fn chat(system: &str, turns: &[&str]) -> Vec<u8> {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (i, t) in turns.iter().enumerate() {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": t}));
    }
    serde_json::to_vec(&json!({"model": "m", "messages": messages})).unwrap()
}

fn chat_key(body: &[u8], bytes: usize) -> Option<u128> {
    key(Endpoint::ChatCompletions, body, bytes)
}

#[test]
fn the_turns_of_a_conversation_share_a_key() {
    let first = chat_key(&chat(&system(), &["hello"]), 1024);
    let later = chat_key(&chat(&system(), &["hello", "hi, how can I help?", "pay invoice 42"]), 1024);
    assert!(first.is_some());
    assert_eq!(first, later);
}

#[test]
fn conversations_with_the_same_long_system_prompt_share_a_key_and_others_do_not() {
    let a = chat_key(&chat(&system(), &["question one"]), 1024);
    let b = chat_key(&chat(&system(), &["a different question"]), 1024);
    let other = chat_key(&chat(&system().replace("accounts", "billing"), &["question one"]), 1024);
    assert_eq!(a, b);
    assert_ne!(a, other);
}

#[test]
fn a_short_system_prompt_keys_on_the_conversation_so_far() {
    let short = "Be brief. ".repeat(10);
    let a = chat_key(&chat(&short, &[&"first question ".repeat(80)]), 1024);
    let b = chat_key(&chat(&short, &[&"other question ".repeat(80)]), 1024);
    assert!(a.is_some() && b.is_some());
    assert_ne!(a, b, "the first user message is part of the prefix");
}

#[test]
fn a_prompt_shorter_than_prefix_bytes_has_no_key() {
    assert_eq!(chat_key(&chat("Be brief.", &["hi"]), 4096), None);
    assert_eq!(key(Endpoint::Embeddings, br#"{"model":"m","input":"x"}"#, 64), None);
    assert_eq!(chat_key(b"not json", 64), None);
}

#[test]
fn key_order_and_whitespace_do_not_matter() {
    let s = system();
    let a = format!(r#"{{"model":"m","messages":[{{"role":"system","content":"{s}"}}]}}"#);
    let b = format!("{{ \"messages\" : [ {{ \"content\" : \"{s}\" , \"role\" : \"system\" }} ], \"model\": \"x\" }}");
    assert!(chat_key(a.as_bytes(), 512).is_some());
    assert_eq!(chat_key(a.as_bytes(), 512), chat_key(b.as_bytes(), 512));
}

#[test]
fn leading_system_and_developer_messages_then_tools_then_the_conversation() {
    let s = system();
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]);
    let body = |messages: serde_json::Value, tools: &serde_json::Value| {
        serde_json::to_vec(&json!({"model": "m", "messages": messages, "tools": tools})).unwrap()
    };
    let size = s.len() + 100;
    let with_tools =
        chat_key(&body(json!([{"role": "developer", "content": s}, {"role": "user", "content": "q"}]), &tools), size);
    assert!(with_tools.is_some());
    // The tools come right after the leading developer message: they are in the key even when
    // the conversation after them is long.
    let other_tools = json!([{"type": "function", "function": {"name": "other", "parameters": {}}}]);
    let long_user = "q".repeat(500);
    let a = chat_key(
        &body(json!([{"role": "developer", "content": s}, {"role": "user", "content": long_user}]), &tools),
        size,
    );
    let b = chat_key(
        &body(json!([{"role": "developer", "content": s}, {"role": "user", "content": long_user}]), &other_tools),
        size,
    );
    assert_ne!(a, b);
    // A system message after the conversation started is part of it, in order.
    let late =
        chat_key(&body(json!([{"role": "user", "content": "q"}, {"role": "developer", "content": s}]), &tools), size);
    assert_ne!(late, with_tools);
}

#[test]
fn prompt_cache_key_is_the_key_whatever_the_prompt() {
    let a = json!({"model": "m", "prompt_cache_key": "tenant-7", "messages": [{"role": "user", "content": "hi"}]});
    let b = json!({"model": "m", "prompt_cache_key": "tenant-7", "messages": [{"role": "user", "content": "bye"}]});
    let c = json!({"model": "m", "prompt_cache_key": "tenant-8", "messages": [{"role": "user", "content": "hi"}]});
    let k = |v: &serde_json::Value| chat_key(&serde_json::to_vec(v).unwrap(), 4096);
    assert!(k(&a).is_some(), "a prompt_cache_key applies below prefixBytes");
    assert_eq!(k(&a), k(&b));
    assert_ne!(k(&a), k(&c));
    // A prompt whose canonical text is the key's own text does not collide with it.
    let prompt = json!({"model": "m", "prompt": "tenant-7"});
    assert_ne!(key(Endpoint::Completions, &serde_json::to_vec(&prompt).unwrap(), 8), k(&a));
}

#[test]
fn responses_and_completions_key_on_their_prompt_fields() {
    let s = system();
    let r1 = json!({"model": "m", "instructions": s, "input": "first"});
    let r2 = json!({"model": "m", "instructions": s, "input": [{"role": "user", "content": "second"}]});
    let k = |e, v: &serde_json::Value| key(e, &serde_json::to_vec(v).unwrap(), 1024);
    assert!(k(Endpoint::Responses, &r1).is_some());
    assert_eq!(k(Endpoint::Responses, &r1), k(Endpoint::Responses, &r2));
    let c1 = json!({"model": "m", "prompt": format!("{s} one")});
    let c2 = json!({"model": "m", "prompt": format!("{s} two"), "max_tokens": 5});
    assert!(k(Endpoint::Completions, &c1).is_some());
    assert_eq!(k(Endpoint::Completions, &c1), k(Endpoint::Completions, &c2));
}

#[test]
fn a_huge_prompt_is_hashed_only_up_to_the_budget() {
    let huge = "é".repeat(4 << 20);
    let a = chat_key(&chat(&huge, &["x"]), 4096);
    let b = chat_key(&chat(&format!("{huge}tail"), &["y"]), 4096);
    assert!(a.is_some());
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any body, any budget: an answer, never a panic.
    #[test]
    fn any_body_gets_an_answer(body in proptest::collection::vec(any::<u8>(), 0..512), bytes in 1usize..600) {
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Responses, Endpoint::Completions] {
            let _ = key(endpoint, &body, bytes);
        }
    }

    /// Any text in a message, any budget, cut anywhere (multi-byte characters included).
    #[test]
    fn any_text_is_cut_safely(text in "\\PC{0,200}", bytes in 1usize..300) {
        let body = chat(&text, &[&text]);
        let again = chat(&text, &[&text]);
        prop_assert_eq!(chat_key(&body, bytes), chat_key(&again, bytes));
    }
}

#[test]
fn hostile_shapes_are_read_only_up_to_the_budget_and_too_deep_has_no_key() {
    // 2.5 million tiny nested arrays as tools: the key comes from the first of them.
    let tools = vec!["[[[[[[]]]]]]"; 2_500_000].join(",");
    let body = format!(r#"{{"model":"m","messages":[],"tools":[{tools}]}}"#);
    let short = format!(r#"{{"model":"m","messages":[],"tools":[{}]}}"#, vec!["[[[[[[]]]]]]"; 200].join(","));
    assert!(chat_key(body.as_bytes(), 1024).is_some());
    assert_eq!(chat_key(body.as_bytes(), 1024), chat_key(short.as_bytes(), 1024), "nothing past the cut counts");
    // A million empty messages after a long system prompt.
    let empties = vec![r#"{"role":"user","content":""}"#; 1_000_000].join(",");
    let system = system();
    let many = format!(r#"{{"model":"m","messages":[{{"role":"system","content":"{system}"}},{empties}]}}"#);
    assert!(chat_key(many.as_bytes(), 1024).is_some());
    assert_eq!(chat_key(many.as_bytes(), 1024), chat_key(&chat(&system, &["x"]), 1024));
    // Nested past the depth limit before the budget is full: no key, no crash.
    let deep = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":{}"x"{}}}]}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(chat_key(deep.as_bytes(), 1024), None);
}

#[test]
fn keys_are_sorted_near_the_root_and_kept_as_sent_deeper() {
    let s = system();
    let tool = |inner: &str| {
        format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{s}"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object","properties":{{"x":{inner}}}}}}}}}]}}"#
        )
    };
    // The cut falls inside the property's schema (the whole is about s + 160 bytes).
    let size = s.len() + 100;
    // The tool, its function and its parameters are sorted: these two agree.
    let a = format!(
        r#"{{"model":"m","messages":[{{"role":"system","content":"{s}"}}],"tools":[{{"function":{{"parameters":{{"properties":{{"x":{{"type":"string"}}}},"type":"object"}},"name":"f"}},"type":"function"}}]}}"#
    );
    let sorted = chat_key(tool(r#"{"type":"string"}"#).as_bytes(), size);
    assert!(sorted.is_some());
    assert_eq!(sorted, chat_key(a.as_bytes(), size));
    // Deeper objects (a property's schema) are written as sent: their order shows.
    let x1 = chat_key(tool(r#"{"type":"string","description":"d"}"#).as_bytes(), size);
    assert!(x1.is_some());
    assert_ne!(x1, chat_key(tool(r#"{"description":"d","type":"string"}"#).as_bytes(), size));
}

#[test]
fn a_large_object_is_written_as_sent_and_duplicate_keys_cost_no_sorting() {
    let s = system();
    let object = |keys: &mut dyn Iterator<Item = usize>| {
        let fields: Vec<String> = keys.map(|k| format!(r#""k{k:07}":0"#)).collect();
        format!(r#"{{"model":"m","messages":[{{"role":"system","content":"{s}",{}}}]}}"#, fields.join(","))
    };
    // Up to 256 entries, sorted: the order sent does not matter.
    let few = object(&mut (0..200));
    let few_reversed = object(&mut (0..200).rev());
    assert_eq!(chat_key(few.as_bytes(), 4096), chat_key(few_reversed.as_bytes(), 4096));
    // More: as sent (deterministic), and a million keys are no trouble.
    let many = object(&mut (0..1_000_000));
    assert_eq!(chat_key(many.as_bytes(), 4096), chat_key(many.as_bytes(), 4096));
    assert!(chat_key(many.as_bytes(), 4096).is_some());
    let dup =
        format!(r#"{{"model":"m","messages":[{{"role":"system",{}"content":"{s}"}}]}}"#, r#""z":0,"#.repeat(1_000_000));
    assert!(chat_key(dup.as_bytes(), 1024).is_some());
}

/// `s` as JSON with every non-ASCII character and every control character as `\uXXXX`
/// (surrogate pairs for the astral planes), and `/` as `\/`: another client's spelling.
fn ascii_json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04X}", u));
                }
            }
        }
    }
    out.push('"');
    out
}

fn canonical_of(json: &str, budget: usize) -> Vec<u8> {
    let raw = serde_json::value::RawValue::from_string(json.to_owned()).unwrap();
    let mut out = super::canonical::Canonical::new(budget);
    out.part(&raw);
    out.done().map(<[u8]>::to_vec).unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A string decoded only as far as the budget goes reads exactly as serde_json writes the
    /// whole string, cut at the budget, whichever way the client escaped it.
    #[test]
    fn strings_are_written_as_serde_json_writes_them(s in "\\PC{0,60}|[\\x00-\\x7f]{0,60}|.{0,60}", budget in 1usize..200) {
        let expected = serde_json::to_string(&s).unwrap().into_bytes();
        let want = if expected.len() >= budget { expected[..budget].to_vec() } else { Vec::new() };
        prop_assert_eq!(canonical_of(&serde_json::to_string(&s).unwrap(), budget), want.clone());
        prop_assert_eq!(canonical_of(&ascii_json(&s), budget), want);
    }
}

#[test]
fn a_lone_surrogate_is_kept_as_written_and_a_huge_escaped_string_is_read_to_the_budget() {
    assert_eq!(canonical_of(r#""\ud800xyz""#, 11), br#""\ud800xyz""#.to_vec());
    let huge = format!("\"{}\"", "\\u00e9".repeat(1_000_000));
    assert_eq!(canonical_of(&huge, 9), "\"éééé".as_bytes().to_vec());
}

#[test]
fn a_prompt_cache_key_that_is_not_a_non_empty_string_is_not_a_key() {
    let s = system();
    for bad in ["7", "{\"a\":1}", "[\"k\"]", "null", "true", "\"\""] {
        let body =
            format!(r#"{{"model":"m","prompt_cache_key":{bad},"messages":[{{"role":"system","content":"{s}"}}]}}"#);
        let prompt = chat_key(&chat(&s, &[]), 1024);
        assert!(prompt.is_some());
        assert_eq!(chat_key(body.as_bytes(), 1024), prompt, "{bad}: the prompt decides");
    }
}
