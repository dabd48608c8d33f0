//! Every file in deploy/examples parses and compiles with no rejected object, read through
//! the same manifests source the binaries use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use llmroute_manifests::ManifestDir;
use llmroute_snapshot::compile;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

fn load() -> ManifestDir {
    let source =
        ManifestDir::open(&examples().join("manifests"), Some(&examples().join("routing-config.yaml")), Duration::ZERO)
            .expect("examples open");
    assert_eq!(source.problems(), Default::default(), "no file, config or path problem");
    source
}

#[test]
fn every_example_compiles_with_no_rejected_object() {
    let compiled = compile(load().store());
    let rejected: Vec<_> = compiled.diagnostics().iter().filter(|d| !d.accepted()).collect();
    assert!(rejected.is_empty(), "{rejected:#?}");
    assert!(compiled.diagnostics().len() >= 12);
}

#[test]
fn examples_cover_the_documented_features() {
    let compiled = compile(load().store());
    let a = compiled.view("team-a");
    let names = |v: &llmroute_proto::v1::Snapshot| v.routes.iter().map(|r| r.public_name.clone()).collect::<Vec<_>>();
    let a_names = names(&a);
    for expected in ["openai/*", "smart", "llama-3-70b", "gpt-4o", "gpt-4o-mini", "gpt-4.1"] {
        assert!(a_names.iter().any(|n| n == expected), "team-a lacks {expected}: {a_names:?}");
    }
    let b_names = names(&compiled.view("team-b"));
    assert!(b_names.contains(&"chat".to_string()) && !b_names.contains(&"smart".to_string()));
    let orders: Vec<u32> = a.deployments.iter().filter(|d| d.model_name == "gpt-4o").map(|d| d.order).collect();
    assert!(orders.contains(&1) && orders.contains(&2), "two order levels");
    assert!(a.deployments.iter().any(|d| d.weight == 0), "a zero-weight backup");
}

/// Every YAML document under `dir`, recursively.
fn documents_under(dir: &Path) -> Vec<(PathBuf, serde_yaml::Value)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(documents_under(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for de in serde_yaml::Deserializer::from_str(&text) {
                let value = <serde_yaml::Value as serde::Deserialize>::deserialize(de)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if !value.is_null() {
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out
}

/// The cluster examples (`deploy/`, outside the demo's `deploy/examples`): every custom
/// resource fits its generated schema and CEL rules, and together, with the namespaces bound
/// to teams as the examples label them, they compile with nothing rejected.
#[test]
fn every_cluster_example_is_valid_and_accepted_under_tenancy() {
    use llmroute_api::manifest::{Document, classify};
    let deploy = examples().join("..");
    let mut store = llmroute_snapshot::ResourceStore::default();
    let mut tenancy = llmroute_snapshot::Tenancy::default();
    tenancy.global_namespaces.insert("llmroute".into());
    let mut ours = 0;
    for dir in ["cluster", "app"] {
        for (path, value) in documents_under(&deploy.join(dir)) {
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
            if kind == "Namespace"
                && let Some(team) = value["metadata"]["labels"]["llmroute.dev/team"].as_str()
            {
                tenancy.teams.insert(value["metadata"]["name"].as_str().unwrap().to_owned(), team.to_owned());
            }
            if kind == "RoutingConfig" {
                let spec = serde_yaml::to_string(&value["spec"]).unwrap();
                llmroute_api::RoutingConfig::parse(&spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            match classify(value) {
                Document::ModelDeployment(md) => {
                    llmroute_api::validation::validate_model_deployment(&md)
                        .unwrap_or_else(|v| panic!("{}: {v:?}", path.display()));
                    store.apply_model_deployment(*md);
                    ours += 1;
                }
                Document::TeamModel(tm) => {
                    llmroute_api::validation::validate_team_model(&tm)
                        .unwrap_or_else(|v| panic!("{}: {v:?}", path.display()));
                    store.apply_team_model(*tm);
                    ours += 1;
                }
                Document::Secret(secret) => {
                    let labels = secret.metadata.labels.clone().unwrap_or_default();
                    assert_eq!(
                        labels.get("llmroute.dev/credentials").map(String::as_str),
                        Some("true"),
                        "{}: a credential Secret must carry the label the operator watches",
                        path.display()
                    );
                    store.apply_secret(&secret);
                }
                Document::Unreadable(u) => panic!("{}: {} {}: {}", path.display(), u.kind, u.name, u.message),
                Document::UnreadableSecret { name, message } => panic!("{}: Secret {name}: {message}", path.display()),
                Document::Skipped { .. } => {}
            }
        }
    }
    assert!(ours >= 3, "deploy/cluster holds the example custom resources");
    assert!(!tenancy.teams.is_empty(), "the examples label a namespace with its team");
    store.set_tenancy(Some(tenancy));
    let compiled = compile(&store);
    let rejected: Vec<_> = compiled.diagnostics().iter().filter(|d| !d.accepted()).collect();
    assert!(rejected.is_empty(), "{rejected:#?}");
}
