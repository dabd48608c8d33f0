//! Properties of the compile over random resource sets and change sequences.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use llmroute_snapshot::{Kind, Reason, ResourceStore, compile};
use proptest::prelude::*;
use support::*;

const TEAMS: [&str; 3] = ["team-a", "team-b", "team-c"];
const MODELS: [&str; 4] = ["m0", "m1", "p/*", "*"];

/// One change to the store.
#[derive(Clone, Debug)]
enum Op {
    ApplyDeployment { name: u8, model: u8, team: Option<u8>, weight: u32, order: u32, secret: bool, label: u8 },
    DeleteDeployment(u8),
    ApplyTeamModel { name: u8, team: u8, public: u8, target: Target, fallback: Option<u8>, created: u8 },
    DeleteTeamModel(u8),
    ApplySecret { team: u8 },
    DeleteSecret { team: u8 },
}

#[derive(Clone, Debug)]
enum Target {
    Names(Vec<u8>),
    Label(u8),
    Alias(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, 0..4u8, prop::option::of(0..3u8), 0..4u32, 0..3u32, any::<bool>(), 0..2u8)
            .prop_map(|(name, model, team, weight, order, secret, label)| Op::ApplyDeployment { name, model, team, weight, order, secret, label }),
        1 => (0..6u8).prop_map(Op::DeleteDeployment),
        3 => (0..4u8, 0..3u8, 0..4u8, target(), prop::option::of(0..4u8), 0..4u8)
            .prop_map(|(name, team, public, target, fallback, created)| Op::ApplyTeamModel { name, team, public, target, fallback, created }),
        1 => (0..4u8).prop_map(Op::DeleteTeamModel),
        1 => (0..4u8).prop_map(|team| Op::ApplySecret { team }),
        1 => (0..4u8).prop_map(|team| Op::DeleteSecret { team }),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        prop::collection::vec(0..7u8, 1..3).prop_map(Target::Names),
        (0..2u8).prop_map(Target::Label),
        (0..4u8).prop_map(Target::Alias),
    ]
}

/// Owner index 0..3 is a team; 3 is the secret global deployments use.
fn owner_name(owner: u8) -> &'static str {
    TEAMS.get(owner as usize).copied().unwrap_or("global")
}

fn secret_name(owner: u8) -> String {
    format!("secret-{}", owner_name(owner))
}

/// The credential of an owner's secret: unique per owner, so leaks are detectable.
fn credential(owner: u8) -> String {
    format!("sk-{}-credential", owner_name(owner))
}

fn apply(store: &mut ResourceStore, op: &Op) {
    apply_reusing(store, op, None);
}

fn apply_reusing(store: &mut ResourceStore, op: &Op, previous: Option<&ResourceStore>) {
    match op {
        Op::ApplyDeployment { name, model, team, weight, order, secret, label } => {
            let name = format!("d{name}");
            let mut d = match team {
                Some(t) => private_md(&name, MODELS[*model as usize], TEAMS[*t as usize]),
                None => md(&name, MODELS[*model as usize]),
            };
            d.spec.weight = *weight;
            d.spec.order = *order; // 0 is invalid on purpose
            if *secret {
                let owner = team.unwrap_or(3);
                d = with_secret(d, &secret_name(owner), "api-key");
            }
            store.apply_model_deployment_reusing(labelled(d, "pool", &format!("l{label}")), previous);
        }
        Op::DeleteDeployment(name) => store.delete_model_deployment(&key(&format!("d{name}"))),
        Op::ApplyTeamModel { name, team, public, target, fallback, created } => {
            let target = match target {
                Target::Names(names) => {
                    let list: Vec<String> = names.iter().map(|n| format!("d{n}")).collect();
                    format!("deployments: [{}]", list.join(", "))
                }
                Target::Label(l) => format!("selector: {{matchLabels: {{pool: l{l}}}}}"),
                Target::Alias(m) => format!("modelName: '{}'", MODELS[*m as usize]),
            };
            let public = ["x", "y", "m0", "q/*"][*public as usize];
            let mut t = tm(&format!("t{name}"), TEAMS[*team as usize], public, &target);
            if let Some(f) = fallback {
                t = with_routing(t, &format!("{{fallbacks: ['{}']}}", ["x", "m1", "p/z", "nothing"][*f as usize]));
            }
            t.metadata.creation_timestamp = Some(created_at(*created));
            store.apply_team_model_reusing(t, previous);
        }
        Op::DeleteTeamModel(name) => store.delete_team_model(&key(&format!("t{name}"))),
        Op::ApplySecret { team } => {
            store.apply_secret(&secret(&secret_name(*team), &[("api-key", &credential(*team))]));
        }
        Op::DeleteSecret { team } => store.delete_secret(&key(&secret_name(*team))),
    }
}

/// The final state of each object after a sequence, as the list of ops that recreate it.
fn final_ops(ops: &[Op]) -> Vec<Op> {
    let mut last: BTreeMap<String, Option<Op>> = BTreeMap::new();
    for op in ops {
        let (id, keep) = match op {
            Op::ApplyDeployment { name, .. } => (format!("d{name}"), true),
            Op::DeleteDeployment(name) => (format!("d{name}"), false),
            Op::ApplyTeamModel { name, .. } => (format!("t{name}"), true),
            Op::DeleteTeamModel(name) => (format!("t{name}"), false),
            Op::ApplySecret { team } => (secret_name(*team), true),
            Op::DeleteSecret { team } => (secret_name(*team), false),
        };
        last.insert(id, keep.then(|| op.clone()));
    }
    last.into_values().flatten().collect()
}

/// A creation time: the name breaks ties among equal times, as in the compile's conflict rule.
fn created_at(minutes: u8) -> Time {
    Time(Timestamp::UNIX_EPOCH + std::time::Duration::from_secs(60 * u64::from(minutes)))
}

fn store_of(ops: &[Op]) -> ResourceStore {
    let mut s = ResourceStore::default();
    for op in ops {
        apply(&mut s, op);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn compile_is_independent_of_input_order(ops in prop::collection::vec(op(), 0..30), seed in any::<u64>()) {
        let objects = final_ops(&ops);
        let mut shuffled = objects.clone();
        // A deterministic permutation from the seed.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let a = compile(&store_of(&objects));
        let b = compile(&store_of(&shuffled));
        prop_assert_eq!(&a, &b);
        // The one place where order could leak in: of two claims on a team's public name, the
        // oldest by creationTimestamp (then name) wins, whatever order they were applied in.
        let mut claims: BTreeMap<(u8, u8), Vec<(u8, u8)>> = BTreeMap::new();
        for op in &objects {
            if let Op::ApplyTeamModel { name, team, public, created, .. } = op {
                claims.entry((*team, *public)).or_default().push((*created, *name));
            }
        }
        for group in claims.values().filter(|g| g.len() > 1) {
            let diagnostics: Vec<_> = group
                .iter()
                .map(|(created, name)| (created, name, diagnostic(&b, Kind::TeamModel, &format!("t{name}")).reason))
                .collect();
            let resolvable: Vec<_> = diagnostics.iter().filter(|d| matches!(d.2, Reason::Accepted | Reason::Conflict | Reason::UnknownFallback)).collect();
            if let Some(oldest) = resolvable.iter().min_by_key(|d| (d.0, d.1)) {
                prop_assert_ne!(oldest.2, Reason::Conflict, "the oldest claim never loses: {:?}", diagnostics);
                for other in resolvable.iter().filter(|d| (d.0, d.1) != (oldest.0, oldest.1)) {
                    prop_assert_eq!(other.2, Reason::Conflict, "younger claims lose: {:?}", diagnostics);
                }
            }
        }
    }

    #[test]
    fn any_change_sequence_equals_a_fresh_compile_of_the_final_set(ops in prop::collection::vec(op(), 0..40)) {
        let incremental = compile(&store_of(&ops));
        let fresh = compile(&store_of(&final_ops(&ops)));
        prop_assert_eq!(&incremental, &fresh);
        for team in TEAMS {
            prop_assert_eq!(incremental.view(team), fresh.view(team));
        }
    }

    #[test]
    fn no_team_sees_another_teams_private_entries(ops in prop::collection::vec(op(), 0..40)) {
        let c = compile(&store_of(&ops));
        for (i, team) in TEAMS.iter().enumerate() {
            let view = c.view(team);
            for d in &view.deployments {
                prop_assert!(d.team.is_empty() || d.team == *team, "{} in view of {}", d.id, team);
            }
            for r in &view.routes {
                if !r.source.is_empty() {
                    // Only the team's own TeamModels define named routes.
                    let owner = c.diagnostics().iter().find(|x| format!("TeamModel {}", x.key) == r.source);
                    prop_assert_eq!(owner.and_then(|o| o.team.as_deref()), Some(*team));
                }
                for id in &r.deployment_ids {
                    prop_assert!(view.deployments.iter().any(|d| &d.id == id), "route names {} outside the view", id);
                }
            }
            let text = format!("{:?}", view.deployments.iter().map(|d| &d.api_key).collect::<Vec<_>>());
            for (j, _) in TEAMS.iter().enumerate() {
                if j != i {
                    prop_assert!(!text.contains(&credential(j as u8)), "{} sees credential of {}", team, TEAMS[j]);
                }
            }
        }
    }

    #[test]
    fn reusing_verdicts_of_a_previous_store_equals_a_fresh_admission(a in prop::collection::vec(op(), 0..30), b in prop::collection::vec(op(), 0..30)) {
        let previous = store_of(&final_ops(&a));
        let mut reused = ResourceStore::default();
        for op in final_ops(&b) {
            apply_reusing(&mut reused, &op, Some(&previous));
        }
        let fresh = store_of(&final_ops(&b));
        prop_assert_eq!(&reused, &fresh);
        prop_assert_eq!(compile(&reused), compile(&fresh));
    }

    #[test]
    fn version_changes_exactly_when_the_view_changes(a in prop::collection::vec(op(), 0..25), b in prop::collection::vec(op(), 0..25)) {
        let (ca, cb) = (compile(&store_of(&a)), compile(&store_of(&b)));
        for team in TEAMS {
            let (mut va, mut vb) = (ca.view(team), cb.view(team));
            let same_version = va.version == vb.version;
            va.version.clear();
            vb.version.clear();
            prop_assert_eq!(same_version, va == vb, "team {}", team);
        }
    }
}
