//! Compile 10,000 ModelDeployments + 2,000 TeamModels across 1,000 teams (DESIGN §7: <= 100 ms).
//! Baseline in the same run: cloning the input store (a lower bound for touching every object).
//! Also measured: admitting every object (CEL schema check, done once per object change) and
//! materializing + encoding one team view.

use criterion::{Criterion, criterion_group, criterion_main};
use llmroute_api::{ModelDeployment, ModelDeploymentSpec, TeamModel, TeamModelSpec};
use llmroute_snapshot::{ResourceStore, compile};
use prost::Message;

const TEAMS: usize = 1_000;
const GLOBAL: usize = 2_000;
const PRIVATE_PER_TEAM: usize = 8;

fn objects() -> (Vec<ModelDeployment>, Vec<TeamModel>) {
    let spec = |model: String, team: Option<String>, port: usize| -> ModelDeploymentSpec {
        let mut s: ModelDeploymentSpec = serde_yaml::from_str(&format!(
            "{{modelName: '{model}', upstream: {{baseUrl: 'http://10.0.{}.{}:8000/v1'}}}}",
            port / 250,
            port % 250
        ))
        .unwrap();
        s.team = team;
        s.weight = (port % 5) as u32;
        s.order = 1 + (port % 2) as u32;
        s
    };
    let mut mds = Vec::new();
    for i in 0..GLOBAL {
        mds.push(ModelDeployment::new(&format!("global-{i}"), spec(format!("model-{}", i / 10), None, i)));
    }
    let mut tms = Vec::new();
    for t in 0..TEAMS {
        let team = format!("team-{t}");
        for j in 0..PRIVATE_PER_TEAM {
            let name = format!("{team}-d{j}");
            mds.push(ModelDeployment::new(&name, spec(format!("private-{}", j / 2), Some(team.clone()), t * 8 + j)));
        }
        let alias: TeamModelSpec =
            serde_yaml::from_str(&format!("{{team: {team}, publicName: smart, modelName: model-{}}}", t % 200))
                .unwrap();
        let named: TeamModelSpec = serde_yaml::from_str(&format!(
            "{{team: {team}, publicName: 'own/*', deployments: [{team}-d0, {team}-d1, global-{t}]}}"
        ))
        .unwrap();
        tms.push(TeamModel::new(&format!("{team}-smart"), alias));
        tms.push(TeamModel::new(&format!("{team}-own"), named));
    }
    for md in &mut mds {
        md.metadata.namespace = Some("llm".into());
    }
    for tm in &mut tms {
        tm.metadata.namespace = Some("llm".into());
    }
    (mds, tms)
}

fn admitted(mds: &[ModelDeployment], tms: &[TeamModel]) -> ResourceStore {
    let mut store = ResourceStore::default();
    for md in mds {
        store.apply_model_deployment(md.clone());
    }
    for tm in tms {
        store.apply_team_model(tm.clone());
    }
    store
}

fn bench(c: &mut Criterion) {
    let (mds, tms) = objects();
    let store = admitted(&mds, &tms);
    let compiled = compile(&store);
    assert!(compiled.diagnostics().iter().all(|d| d.accepted()), "benchmark input is valid");
    let view = compiled.view("team-7");
    println!(
        "team view: {} deployments, {} routes, {} bytes encoded",
        view.deployments.len(),
        view.routes.len(),
        view.encoded_len()
    );
    let mut group = c.benchmark_group("compile_10k_md_2k_tm_1k_teams");
    group.sample_size(10);
    group.bench_function("baseline_clone_store", |b| b.iter(|| std::hint::black_box(store.clone())));
    group.bench_function("compile", |b| b.iter(|| std::hint::black_box(compile(&store))));
    group.bench_function("admit_all_objects_cel", |b| b.iter(|| std::hint::black_box(admitted(&mds, &tms))));
    group.bench_function("readmit_unchanged_objects_reusing_verdicts", |b| {
        b.iter(|| {
            let mut again = ResourceStore::default();
            for md in &mds {
                again.apply_model_deployment_reusing(md.clone(), Some(&store));
            }
            for tm in &tms {
                again.apply_team_model_reusing(tm.clone(), Some(&store));
            }
            std::hint::black_box(again)
        })
    });
    group.bench_function("view_and_encode_one_team", |b| {
        b.iter(|| std::hint::black_box(compiled.view("team-7").encode_to_vec()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
