//! Prompt-cache affinity through the real binaries: two sidecars of one team, fake upstreams
//! that keep a prompt cache and report `cached_tokens` for prefixes they have seen.

use std::collections::BTreeSet;
use std::time::Duration;

use llmroute_e2e::{Env, Options, Sidecar, md, via_operator};
use llmroute_testkit::http_client::{Reply, get, post_json};
use llmroute_testkit::process::eventually;
use serde_json::{Value, json};

const INSTANCES: [&str; 4] = ["a", "b", "c", "d"];

async fn env(config: &str) -> Env {
    let manifests: String = INSTANCES.iter().map(|i| md(i, "m", i, "")).collect();
    let env = Env::start(Options { instances: &INSTANCES, manifests, config, ..Default::default() }).await;
    for i in INSTANCES {
        env.behaviour(i, json!({"prompt_cache": true})).await;
    }
    env
}

async fn chat(api: &str, body: &Value) -> Reply {
    post_json(&format!("{api}/v1/chat/completions"), body, &[]).await.expect("the sidecar answers")
}

fn cached(reply: &Reply) -> u64 {
    reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)
}

async fn debug_route(admin: &str, key: &str) -> Value {
    get(&format!("{admin}/debug/route?model=m&prompt_cache_key={key}")).await.expect("admin answers").json()
}

fn fleet_load(route: &Value, deployment: &str) -> u64 {
    let candidates = route["candidates"].as_array().cloned().unwrap_or_default();
    candidates.iter().find(|c| c["deployment"] == deployment).and_then(|c| c["fleetLoad"].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conversation_stays_on_one_deployment_across_two_sidecars_and_hits_its_cache() {
    let env = env("modelGroups: {m: {affinity: [prefix], prefixBytes: 1024}}\n").await;
    let other = env.another_sidecar().await;
    let sidecars = [env.api.clone(), other.api.clone()];
    let mut homes = BTreeSet::new();
    let (mut follow_ups, mut hits) = (0, 0);
    for conversation in 0..8 {
        let system = format!("You are agent {conversation} of the support desk. ").repeat(40);
        let mut messages = vec![json!({"role": "system", "content": system})];
        let mut served = BTreeSet::new();
        for turn in 0..5 {
            messages
                .push(json!({"role": "user", "content": format!("question {turn} of conversation {conversation}")}));
            // The turns alternate between the two sidecars.
            let r = chat(&sidecars[turn % 2], &json!({"model": "m", "messages": messages})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-llmroute-affinity"), "prefix");
            served.insert(r.header("x-llmroute-deployment"));
            if turn > 0 {
                follow_ups += 1;
                hits += u32::from(cached(&r) > 0);
            }
            let answer = r.json()["choices"][0]["message"].clone();
            messages.push(answer);
        }
        assert_eq!(served.len(), 1, "conversation {conversation} moved: {served:?}");
        homes.extend(served);
    }
    assert!(homes.len() >= 2, "different prompts spread over the deployments: {homes:?}");
    assert!(hits * 10 >= follow_ups * 9, "{hits} of {follow_ups} follow-up turns hit the prompt cache");
    // Cached input tokens are counted on both sidecars.
    for admin in [&env.admin, &other.admin] {
        let text = get(&format!("{admin}/metrics")).await.unwrap().text();
        let cached: f64 = text
            .lines()
            .filter(|l| l.starts_with("llmroute_tokens_total{") && l.contains("kind=\"cached\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(cached > 0.0, "no cached tokens counted:\n{text}");
    }
}

#[tokio::test]
async fn a_prompt_cache_key_pins_across_sidecars_and_explicit_keys_come_first() {
    let env = env("modelGroups: {m: {affinity: [session, prefix]}}\n").await;
    let other = env.another_sidecar().await;
    let keyed =
        |key: &str| json!({"model": "m", "prompt_cache_key": key, "messages": [{"role": "user", "content": "hi"}]});
    for key in ["tenant-1", "tenant-2", "tenant-3"] {
        let first = chat(&env.api, &keyed(key)).await;
        assert_eq!(first.header("x-llmroute-affinity"), "prefix");
        for _ in 0..3 {
            let again = chat(&other.api, &keyed(key)).await;
            assert_eq!(again.header("x-llmroute-deployment"), first.header("x-llmroute-deployment"), "{key}");
        }
    }
    // A short prompt without a key: no prefix affinity; a session key wins over the prefix.
    let short = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(chat(&env.api, &short).await.header("x-llmroute-affinity"), "none");
    let r =
        post_json(&format!("{}/v1/chat/completions", env.api), &keyed("tenant-1"), &[("x-llmroute-session-id", "s-1")])
            .await
            .unwrap();
    assert_eq!(r.header("x-llmroute-affinity"), "session");
    // /debug/route shows the same decision for a prompt_cache_key.
    let route = debug_route(&env.admin, "tenant-1").await;
    assert_eq!(route["affinity"], "prefix");
    assert_eq!(route["route"]["policy"]["prefixBytes"], 4096);
    assert_eq!(route["route"]["policy"]["boundedLoadEpsilon"], 0.25);
    let first = chat(&env.api, &keyed("tenant-1")).await;
    assert_eq!(route["pick"], first.header("x-llmroute-deployment"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_rendezvous_winner_spills_to_the_next_and_the_fleet_sees_the_load() {
    let env = env("modelGroups: {m: {affinity: [prefix]}}\n").await;
    let other: Sidecar = env.another_sidecar().await;
    let winner = debug_route(&other.admin, "hot").await["pick"].as_str().expect("a pick").to_owned();
    let instance = winner.trim_start_matches("llm/").to_owned();
    env.behaviour(&instance, json!({"latency_ms": 8_000})).await;
    // One request in flight on the winner, through the first sidecar.
    let api = env.api.clone();
    let held = tokio::spawn(async move {
        let body = json!({"model": "m", "prompt_cache_key": "hot", "messages": [{"role": "user", "content": "hi"}]});
        chat(&api, &body).await
    });
    // That sidecar sees its own load at once: with 1 of 1 in flight, the winner's bound
    // (ceil(1.25 x 2 / 4) = 1) is full and the next in rendezvous order takes the key.
    let spilled = eventually(Duration::from_secs(2), || async {
        let route = debug_route(&env.admin, "hot").await;
        fleet_load(&route, &winner) == 1 && route["pick"] != winner.as_str()
    })
    .await;
    assert!(spilled, "{}", debug_route(&env.admin, "hot").await);
    // The other sidecar learns it from the operator (about once a second); a standalone
    // sidecar knows its own requests only.
    if via_operator() {
        let seen = eventually(Duration::from_secs(5), || async {
            let route = debug_route(&other.admin, "hot").await;
            fleet_load(&route, &winner) == 1 && route["pick"] != winner.as_str()
        })
        .await;
        assert!(seen, "{}", debug_route(&other.admin, "hot").await);
    } else {
        let route = debug_route(&other.admin, "hot").await;
        assert_eq!((fleet_load(&route, &winner), route["pick"].as_str()), (0, Some(winner.as_str())));
    }
    let r = held.await.unwrap();
    assert_eq!((r.status, r.header("x-llmroute-deployment")), (200, winner.clone()));
    // Once it is done, the key is back home everywhere.
    let home = eventually(Duration::from_secs(5), || async {
        debug_route(&env.admin, "hot").await["pick"] == winner.as_str()
            && debug_route(&other.admin, "hot").await["pick"] == winner.as_str()
    })
    .await;
    assert!(home);
}
