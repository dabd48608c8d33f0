//! What prefix affinity adds to a request: its key, from a chat body with a 6 KB system
//! prompt and a 20-turn conversation (about 12 KB), from a 40-turn one with a 400 KB
//! history, and from hostile bodies (2.5 million tiny nested arrays as tools, a system message
//! with 4.9 million duplicate keys, one of 4.9 million escaped characters), against the
//! routing peek every request already pays (baseline, same run).

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn body(turns: usize, turn_bytes: usize) -> Vec<u8> {
    let mut messages = vec![json!({"role": "system", "content": "You are the support desk. ".repeat(240)})];
    for t in 0..turns {
        let role = if t % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": format!("turn {t} ").repeat(turn_bytes / 7)}));
    }
    serde_json::to_vec(&json!({"model": "gpt-4o", "messages": messages, "stream": true})).expect("a body")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefix_key");
    let hostile = format!(r#"{{"model":"m","messages":[],"tools":[{}]}}"#, vec!["[[[[[[]]]]]]"; 2_500_000].join(","))
        .into_bytes();
    let duplicate_keys =
        format!(r#"{{"model":"m","messages":[{{"role":"system",{}"content":"x"}}]}}"#, r#""z":0,"#.repeat(4_900_000))
            .into_bytes();
    let escaped =
        format!(r#"{{"model":"m","messages":[{{"role":"system","content":"{}"}}]}}"#, r"\u00e9".repeat(4_900_000))
            .into_bytes();
    for (name, body) in [
        ("20_turns_12kb", body(20, 300)),
        ("40_turns_400kb", body(40, 10_000)),
        ("hostile_31mb_nested_tools", hostile),
        ("hostile_29mb_duplicate_keys", duplicate_keys),
        ("hostile_29mb_escaped_string", escaped),
    ] {
        group.bench_function(format!("baseline_peek_{name}"), |b| {
            b.iter(|| llmroute_sidecar::bench_peek(std::hint::black_box(&body)))
        });
        group.bench_function(format!("key_4096_{name}"), |b| {
            b.iter(|| llmroute_sidecar::bench_prefix_key(std::hint::black_box(&body), 4096))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
