use llmroute_snapshot::{ResourceStore, compile};

use super::*;

fn store(objects: &str) -> ResourceStore {
    let mut store = ResourceStore::default();
    let (docs, error) = llmroute_api::manifest::parse_documents(objects);
    assert!(error.is_none());
    for d in docs {
        store.apply_document(d);
    }
    store
}

fn md(name: &str, team: Option<&str>) -> String {
    let team = team.map(|t| format!(", team: {t}")).unwrap_or_default();
    format!(
        "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}, namespace: llm}}\n\
         spec: {{modelName: m-{name}{team}, upstream: {{baseUrl: 'http://127.0.0.1:9/v1'}}}}\n---\n"
    )
}

#[test]
fn parts_are_encoded_once_and_reused_while_their_digest_holds() {
    let first =
        Built::new(compile(&store(&(md("g", None) + &md("a", Some("team-a"))))), 1, std::time::Instant::now(), None);
    let view = first.view("team-a");
    let decoded = llmroute_proto::part::decompress(&view.overlay.gzip, 1 << 20).unwrap();
    assert_eq!(decoded.deployments[0].id, "llm/a");
    // A change to team-b only: the global part and team-a's overlay are the same objects.
    let second = Built::new(
        compile(&store(&(md("g", None) + &md("a", Some("team-a")) + &md("b", Some("team-b"))))),
        2,
        std::time::Instant::now(),
        Some(&first),
    );
    assert!(Arc::ptr_eq(&first.view("team-a").global, &second.view("team-a").global));
    assert!(Arc::ptr_eq(&first.view("team-a").overlay, &second.view("team-a").overlay));
    assert_eq!(first.view("team-a").version, second.view("team-a").version);
    assert_ne!(second.view("team-b").version, first.view("team-b").version);
}

#[test]
fn a_team_without_entries_sees_the_global_part_and_no_other_teams() {
    let built =
        Built::new(compile(&store(&(md("g", None) + &md("a", Some("team-a"))))), 1, std::time::Instant::now(), None);
    let view = built.view("nobody");
    let overlay = llmroute_proto::part::decompress(&view.overlay.gzip, 1 << 20).unwrap();
    assert!(overlay.deployments.is_empty() && overlay.routes.is_empty());
    let global = llmroute_proto::part::decompress(&view.global.gzip, 1 << 20).unwrap();
    assert_eq!(global.deployments.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["llm/g"]);
}
