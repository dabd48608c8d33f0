//! A seeded prompt-cache simulation through the real planner: 1,000 conversations of 20
//! turns over 50 system prompts, 64 conversations at a time, on 4 deployments that each keep
//! an LRU prompt cache. Weighted random (the baseline), prefix affinity, and prefix affinity
//! with bounded load, in the same run. `cargo test -p llmroute-router --test prefix_cache --
//! --nocapture` prints the table.

mod support;

use std::collections::VecDeque;

use llmroute_proto::v1;
use llmroute_router::{LiveState, Planner, RequestKeys, RouteTable};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use support::*;

const CONVERSATIONS: usize = 1_000;
const TURNS: usize = 20;
const PROMPTS: u64 = 50;
const CONCURRENT: usize = 64;
const DEPLOYMENTS: usize = 4;
/// Prefixes each deployment's cache holds (a system prompt or a conversation so far).
const CACHE: usize = 48;

/// A deployment's prompt cache: prefixes, most recently used last.
#[derive(Default)]
struct Lru(VecDeque<(u8, u64)>);

impl Lru {
    fn touch(&mut self, entry: (u8, u64)) -> bool {
        let hit = match self.0.iter().position(|e| *e == entry) {
            Some(at) => {
                self.0.remove(at);
                true
            }
            None => false,
        };
        self.0.push_back(entry);
        if self.0.len() > CACHE {
            self.0.pop_front();
        }
        hit
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    WeightedRandom,
    Prefix,
    PrefixBounded,
}

struct Outcome {
    hit_rate: f64,
    /// Requests served by the busiest deployment over the mean.
    imbalance: f64,
    /// Largest in-flight count any deployment reached over the mean in flight then.
    peak: f64,
}

fn setup(mode: Mode) -> RouteTable {
    let ids: Vec<String> = (0..DEPLOYMENTS).map(|i| format!("llm/d{i}")).collect();
    let mut p = policy();
    match mode {
        Mode::WeightedRandom => {}
        Mode::Prefix => {
            p.affinity = vec![v1::Affinity::Prefix as i32];
            // As good as unbounded: (1 + 10) x the mean.
            p.bounded_load_epsilon = 10.0;
        }
        Mode::PrefixBounded => {
            p.affinity = vec![v1::Affinity::Prefix as i32];
            p.bounded_load_epsilon = 0.25;
        }
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    table(
        ids.iter().map(|id| dep(id, "m", 1, 1)).collect(),
        vec![route("m", v1::RouteKind::GlobalDeployment, &refs, p)],
    )
}

struct Slot {
    conversation: u64,
    prompt: u64,
    turn: usize,
    /// The request in flight: its deployment and ticks left.
    busy: Option<(u32, u32)>,
}

fn simulate(mode: Mode, seed: u64) -> Outcome {
    let t = setup(mode);
    let state = LiveState::for_table(&t, None);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut caches: Vec<Lru> = (0..DEPLOYMENTS).map(|_| Lru::default()).collect();
    let mut served = [0u64; DEPLOYMENTS];
    let (mut hits, mut requests) = (0u64, 0u64);
    let mut peak: f64 = 0.0;
    let mut started = 0u64;
    let new_slot = |rng: &mut StdRng, started: &mut u64| {
        *started += 1;
        Slot { conversation: *started, prompt: rng.random_range(0..PROMPTS), turn: 0, busy: None }
    };
    let mut slots: Vec<Slot> = (0..CONCURRENT).map(|_| new_slot(&mut rng, &mut started)).collect();
    let mut tick = 0u64;
    while requests < (CONVERSATIONS * TURNS) as u64 {
        tick += 1;
        let now_ms = tick * 1_000;
        for slot in &mut slots {
            if let Some((d, left)) = slot.busy {
                if left > 1 {
                    slot.busy = Some((d, left - 1));
                    continue;
                }
                state.get(d).finish();
                slot.busy = None;
                slot.turn += 1;
                if slot.turn == TURNS {
                    if started as usize >= CONVERSATIONS {
                        continue;
                    }
                    *slot = new_slot(&mut rng, &mut started);
                }
            }
            if slot.turn >= TURNS {
                continue;
            }
            // The key the sidecar derives from a system prompt longer than prefixBytes.
            let keys = RequestKeys { prefix: Some(u128::from(slot.prompt) << 64 | 0x5eed), ..Default::default() };
            let mut planner = Planner::new(&t, "m", keys).expect("m resolves");
            let pick = planner.next(&state, now_ms, &mut rng).expect("a deployment is eligible");
            let d = pick.deployment;
            state.get(d).start(now_ms, 0);
            let cache = &mut caches[d as usize];
            let conversation_hit = slot.turn > 0 && cache.touch((1, slot.conversation));
            let prompt_hit = cache.touch((0, slot.prompt));
            if slot.turn == 0 {
                cache.touch((1, slot.conversation));
            }
            hits += u64::from(conversation_hit || prompt_hit);
            requests += 1;
            served[d as usize] += 1;
            slot.busy = Some((d, rng.random_range(1..=10)));
            let loads: Vec<f64> = (0..DEPLOYMENTS).map(|i| f64::from(state.get(i as u32).in_flight())).collect();
            let mean = loads.iter().sum::<f64>() / DEPLOYMENTS as f64;
            if mean >= 4.0 {
                peak = peak.max(loads.iter().copied().fold(0.0, f64::max) / mean);
            }
        }
    }
    let mean = served.iter().sum::<u64>() as f64 / DEPLOYMENTS as f64;
    Outcome { hit_rate: hits as f64 / requests as f64, imbalance: *served.iter().max().unwrap() as f64 / mean, peak }
}

#[test]
fn prefix_affinity_keeps_prompt_caches_warm_and_bounded_load_keeps_deployments_even() {
    println!("\n| routing | cache-hit rate | requests max / mean | peak in flight max / mean |");
    println!("| --- | --- | --- | --- |");
    let mut results = Vec::new();
    for mode in [Mode::WeightedRandom, Mode::Prefix, Mode::PrefixBounded] {
        let o = simulate(mode, 42);
        println!("| {mode:?} | {:.1}% | {:.2} | {:.2} |", o.hit_rate * 100.0, o.imbalance, o.peak);
        results.push(o);
    }
    let (random, prefix, bounded) = (&results[0], &results[1], &results[2]);
    assert!(prefix.hit_rate >= 0.90, "prefix affinity hit rate {}", prefix.hit_rate);
    assert!(bounded.imbalance <= 1.3, "bounded load imbalance {}", bounded.imbalance);
    assert!(random.hit_rate < prefix.hit_rate - 0.2, "the baseline is far below: {}", random.hit_rate);
    assert!(bounded.hit_rate > random.hit_rate, "bounded load keeps most of the gain: {}", bounded.hit_rate);
    assert!(bounded.peak < prefix.peak, "bounded load lowers the peak: {} vs {}", bounded.peak, prefix.peak);
}

#[test]
fn the_simulation_is_seeded() {
    let (a, b) = (simulate(Mode::PrefixBounded, 9), simulate(Mode::PrefixBounded, 9));
    assert_eq!((a.hit_rate, a.imbalance), (b.hit_rate, b.imbalance));
}
