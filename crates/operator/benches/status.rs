//! The leader's status pass at DESIGN §7 scale (10,000 ModelDeployments + 2,000 TeamModels
//! across 1,000 teams, 10,000 acknowledging sidecars): computing every object's desired status
//! and comparing it with what it has, as the leader does every tick. Two cases: the first pass
//! (every object differs) and the steady state (nothing to write, the common tick). Baseline in
//! the same run: the compile of the same store, which every change costs anyway.

use std::collections::BTreeMap;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use k8s_openapi::jiff::Timestamp;
use llmroute_api::{ModelDeployment, ModelDeploymentSpec, ResourceStatus, TeamModel, TeamModelSpec};
use llmroute_operator::cluster::writer::StatusWriter;
use llmroute_operator::hub::Built;
use llmroute_operator::registry::TeamCounts;
use llmroute_snapshot::{Kind, ObjectKey, ResourceStore, compile};

const TEAMS: usize = 1_000;
const GLOBAL: usize = 2_000;
const PRIVATE_PER_TEAM: usize = 8;
const SIDECARS_PER_TEAM: u64 = 10;

fn store() -> ResourceStore {
    let spec = |model: String, team: Option<String>| -> ModelDeploymentSpec {
        let mut s: ModelDeploymentSpec = serde_yaml::from_str(&format!(
            "{{modelName: '{model}', upstream: {{baseUrl: 'http://10.0.0.1:8000/v1'}}}}"
        ))
        .unwrap();
        s.team = team;
        s
    };
    let mut store = ResourceStore::default();
    for i in 0..GLOBAL {
        let mut md = ModelDeployment::new(&format!("global-{i}"), spec(format!("model-{}", i / 10), None));
        md.metadata.namespace = Some("llmroute".into());
        md.metadata.generation = Some(1);
        store.apply_model_deployment(md);
    }
    for t in 0..TEAMS {
        let team = format!("team-{t}");
        for j in 0..PRIVATE_PER_TEAM {
            let mut md =
                ModelDeployment::new(&format!("{team}-d{j}"), spec(format!("private-{j}"), Some(team.clone())));
            md.metadata.namespace = Some(team.clone());
            md.metadata.generation = Some(1);
            store.apply_model_deployment(md);
        }
        for k in 0..2 {
            let alias: TeamModelSpec = serde_yaml::from_str(&format!(
                "{{team: {team}, publicName: smart-{k}, modelName: model-{}}}",
                (t + k) % 200
            ))
            .unwrap();
            let mut tm = TeamModel::new(&format!("smart-{k}"), alias);
            tm.metadata.namespace = Some(team.clone());
            tm.metadata.generation = Some(1);
            store.apply_team_model(tm);
        }
    }
    store
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let (service, _handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    let writer = StatusWriter::new(kube::Client::new(service, "default"), "bench", 5.0, 0.99);
    let store = store();
    let built = Built::new(compile(&store), 1, Instant::now(), None);
    assert_eq!(built.compiled.diagnostics().len(), GLOBAL + TEAMS * (PRIVATE_PER_TEAM + 2));
    let teams: BTreeMap<String, TeamCounts> = (0..TEAMS)
        .map(|t| {
            let team = format!("team-{t}");
            let mut counts = TeamCounts { connected: SIDECARS_PER_TEAM, ..Default::default() };
            counts.acked.insert(built.compiled.version(&team), SIDECARS_PER_TEAM);
            (team, counts)
        })
        .collect();
    let now = Timestamp::now();
    let none = |_: Kind, _: &ObjectKey| None;
    let first = writer.pending(&built, &teams, &[], &none, now);
    assert_eq!(first.len(), built.compiled.diagnostics().len());
    let current: std::collections::HashMap<(Kind, ObjectKey), ResourceStatus> =
        first.into_iter().map(|p| ((p.kind, p.key), p.status)).collect();
    let steady = |kind: Kind, key: &ObjectKey| current.get(&(kind, key.clone())).cloned();
    assert!(writer.pending(&built, &teams, &[], &steady, now).is_empty(), "steady state writes nothing");

    let mut group = c.benchmark_group("status_12k_objects_1k_teams");
    group.sample_size(10);
    group.bench_function("baseline: compile", |b| b.iter(|| compile(&store)));
    group.bench_function("first pass: every status differs", |b| {
        b.iter(|| writer.pending(&built, &teams, &[], &none, now))
    });
    group.bench_function("steady tick: nothing to write", |b| {
        b.iter(|| writer.pending(&built, &teams, &[], &steady, now))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
