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
